"""The fault matrix: each fault a real tenant produces, one test each, against the sandbox over sockets.

Every survivable fault must give an export byte-identical to the fault-free one of the same tenant
(the gzip output depends only on the users, not on the slot), and retries must wait as told.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from graph_export import AuthError, GraphError, StorageError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB
from sandbox.blobproxy import BlobFaultProxy

from .helpers import blob_names, read_export, read_json, slot_files

CLEAN = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)
FAULTY = datetime(2026, 3, 2, 2, tzinfo=timezone.utc)


def records(sandbox, service):
    return sandbox.requests.entries(service)


def wait_after(sandbox, service, fault_record):
    """Seconds between the end of the faulty response and the client's next request to ``service``."""
    later = [r for r in records(sandbox, service) if r.number > fault_record.number]
    return later[0].at - (fault_record.at + fault_record.duration_ms / 1000)


@pytest.fixture
def baseline(export_env, sandbox):
    """The fault-free export of this tenant; then a cold instance and an empty request log."""
    clean = run_export(load_settings(), CLEAN)
    app_clients.cache_clear()  # the faulty run starts cold, so its sign-in path meets the faults too
    sandbox.requests.clear()
    return clean


def export_with(sandbox, export_env, baseline):
    """Run under the faults now configured; the export must be byte-identical to the baseline."""
    faulty = run_export(load_settings(), FAULTY)
    users, sha = read_export(export_env, faulty.blob)
    assert sha == faulty.sha256 == baseline.sha256
    assert users == list(sandbox.expected_users(load_settings().user_properties))
    return faulty


def fired(rule):
    return rule.fired


@pytest.mark.parametrize("status", [503, 504, 500, 502])
def test_graph_server_errors_are_retried(export_env, sandbox, baseline, status):
    rule = sandbox.faults.add("graph", page=2, status=status, count=2)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 2


def test_graph_429_honours_retry_after_seconds(export_env, sandbox, baseline):
    rule = sandbox.faults.add("graph", page=2, status=429, headers={"Retry-After": "1"}, count=1)
    export_with(sandbox, export_env, baseline)
    throttled = [r for r in records(sandbox, "graph") if r.status == 429]
    assert fired(rule) == 1 and len(throttled) == 1
    assert 0.9 <= wait_after(sandbox, "graph", throttled[0]) < 3.0  # backoff base is 0.01 s: only Retry-After explains 1 s


def test_graph_429_honours_retry_after_as_an_http_date(export_env, sandbox, baseline):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), usegmt=True)
    rule = sandbox.faults.add("graph", page=1, status=429, headers={"Retry-After": when}, count=1)
    export_with(sandbox, export_env, baseline)
    throttled = [r for r in records(sandbox, "graph") if r.status == 429]
    assert fired(rule) == 1
    assert 1.0 <= wait_after(sandbox, "graph", throttled[0]) < 5.0


def test_graph_429_without_retry_after_backs_off_exponentially(export_env, sandbox, baseline):
    rule = sandbox.faults.add("graph", page=3, status=429, count=3)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 3
    throttled = [r for r in records(sandbox, "graph") if r.status == 429]
    assert all(wait_after(sandbox, "graph", r) < 1.0 for r in throttled)  # base 0.01 s in the tests


def test_graph_dropped_connection_is_retried(export_env, sandbox, baseline):
    rule = sandbox.faults.add("graph", page=2, drop=True, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1


def test_graph_connection_cut_mid_page_is_asked_again(export_env, sandbox, baseline):
    head = sandbox.faults.add("graph", page=2, cut=True, count=1)   # breaks while the nextLink is read
    body = sandbox.faults.add("graph", page=3, cut=True, count=1)   # breaks while the users are read
    export_with(sandbox, export_env, baseline)
    assert fired(head) == fired(body) == 1
    assert [r.page for r in records(sandbox, "graph")].count(2) == 2


def test_graph_connection_cut_twice_on_a_page_publishes_nothing(export_env, sandbox, baseline):
    sandbox.faults.add("graph", page=2, cut=True, count=2)
    with pytest.raises(GraphError, match="broke off while page 2 was arriving .*twice"):
        run_export(load_settings(), FAULTY)
    assert slot_files(export_env, FAULTY) == []


def test_graph_slow_response_times_out_and_is_retried(export_env, sandbox, baseline, monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.5")
    rule = sandbox.faults.add("graph", page=2, delay_s=2.0, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1
    # The retry came after the 0.5 s read timeout, not after the server's 2 s: it gave up, then retried.
    page1 = next(r for r in records(sandbox, "graph") if r.page == 1)
    page2 = next(r for r in records(sandbox, "graph") if r.page == 2 and r.fault is None)
    assert 0.5 <= page2.at - page1.at < 2.0


def test_graph_401_expired_token_gets_one_fresh_token(export_env, sandbox, baseline):
    rule = sandbox.faults.add("graph", page=2, status=401, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1
    token_posts = [r for r in records(sandbox, "entra") if r.method == "POST" and r.status == 200]
    assert len(token_posts) == 2  # the first sign-in and exactly one refresh


def test_token_endpoint_outage_is_retried(export_env, sandbox, baseline):
    rule = sandbox.faults.add("entra", path_contains="/token", status=503, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1


def test_key_vault_500_once_is_retried_by_the_sdk(export_env, sandbox, baseline):
    rule = sandbox.faults.add("keyvault", path_contains="/secrets/", status=500, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1


def test_managed_identity_endpoint_fault_is_retried(export_env, sandbox, baseline):
    rule = sandbox.faults.add("identity", status=500, count=1)
    export_with(sandbox, export_env, baseline)
    assert fired(rule) == 1


def test_secret_rotated_between_two_warm_invocations(export_env, sandbox):
    sandbox.token_lifetime_s = 120  # under MSAL's 5-minute margin: every run asks Entra, as hours apart would
    first = run_export(load_settings(), CLEAN)
    sandbox.rotate_secret()  # new secret in Entra and the vault; the cached one stops working
    second = run_export(load_settings(), FAULTY)
    assert second.status == "succeeded" and second.sha256 == first.sha256
    rejected = [r for r in records(sandbox, "entra") if r.method == "POST" and r.status == 401]
    assert len(rejected) == 1  # the cached secret was refused once, then the vault was read again
    assert len([r for r in records(sandbox, "keyvault") if r.status == 200]) == 2


def test_a_rejected_secret_that_was_not_rotated_fails_without_looping(export_env, sandbox):
    sandbox.token_lifetime_s = 120
    run_export(load_settings(), CLEAN)
    sandbox.entra.expire_secrets()
    with pytest.raises(AuthError, match="AADSTS7000222"):
        run_export(load_settings(), FAULTY)
    assert len([r for r in records(sandbox, "entra") if r.method == "POST" and r.status == 401]) == 1


def test_persistent_503_exhausts_the_page_budget(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "3")
    run_export(load_settings(), CLEAN)
    latest = read_json(export_env, LATEST_BLOB)
    sandbox.requests.clear()
    sandbox.faults.add("graph", page=2, status=503)
    with pytest.raises(GraphError, match="page 2 with HTTP 503.*GRAPH_MAX_RETRIES_PER_PAGE"):
        run_export(load_settings(), FAULTY)
    assert len([r for r in records(sandbox, "graph") if r.page == 2]) == 1 + 3
    assert slot_files(export_env, FAULTY) == []
    assert read_json(export_env, LATEST_BLOB) == latest


def test_scattered_faults_exhaust_the_run_budget(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_RUN", "2")
    for page in (1, 2, 3):
        sandbox.faults.add("graph", page=page, status=503, count=1)  # each page alone would be fine
    with pytest.raises(GraphError, match="page 3 with HTTP 503"):
        run_export(load_settings(), FAULTY)
    assert blob_names(export_env) == []


# --- Blob faults, through a fault-injecting proxy in front of Azurite ---------------------------------

@pytest.fixture
def blob_proxy(azurite, export_env, monkeypatch):
    with BlobFaultProxy(azurite) as proxy:
        monkeypatch.setenv("EXPORT_STORAGE", proxy.connection_string)  # the export goes through it
        yield proxy


@pytest.mark.parametrize("action,operation", [("503", "comp=block&"), ("reset", "comp=block&"),
                                              ("503", "comp=blocklist"), ("reset", "comp=blocklist")])
def test_blob_faults_while_staging_and_committing_are_retried(export_env, sandbox, baseline, blob_proxy,
                                                               action, operation):
    rule = blob_proxy.add(action, query_contains=operation, count=1)
    export_with(sandbox, export_env, baseline)
    assert rule.fired == 1


def test_persistent_blob_failure_publishes_nothing(export_env, sandbox, baseline, blob_proxy):
    latest = read_json(export_env, LATEST_BLOB)
    blob_proxy.add("503", query_contains="comp=blocklist", count=None)
    with pytest.raises(StorageError, match="HTTP 503.*committing"):
        run_export(load_settings(), FAULTY)
    assert slot_files(export_env, FAULTY) == []
    assert read_json(export_env, LATEST_BLOB) == latest


def test_a_token_endpoint_that_stays_down_is_one_actionable_line(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    sandbox.faults.add("entra", path_contains="/token", status=503)
    with pytest.raises(AuthError, match="sign-in service .* kept failing.*run again later"):
        run_export(load_settings(), FAULTY)
    assert blob_names(export_env) == []
