"""Timer invocations as the host sends them, through the engine, against the sandbox tenant and Azurite.

Each test reads what the host would get back: the invocation's status and exception, and the RpcLog
messages tied to the invocation (``tests.engine.host``): what Application Insights and the portal's
invocation log show for the run.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from graph_export.naming import LATEST_BLOB, checkpoint_blob_name
from sandbox.blobproxy import BlobFaultProxy
from tests.integration.helpers import blob_names, published_manifest, read_json

from .host import timer_info

USERS = 2_500  # tests/conftest.py's tenant: 3 pages of 999
# Our own loggers, and the worker's (system) ones; everything else is a library's.
OURS = ("root", "graph_export")
WORKERS = ("azure.functions", "azure_functions_runtime", "proxy_worker")


def a_slot(days_ago: int = 1) -> datetime:
    """A 02:00 UTC occurrence in the past (a slot must not lie ahead of now)."""
    today = datetime.now(timezone.utc).replace(hour=2, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def dotnet(moment: datetime) -> str:
    """A time as Json.NET writes the host's DateTime: 7-digit fraction and an offset."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0+00:00"


def scheduled(slot: datetime, *, past_due: bool = False) -> str:
    """The TimerInfo of the invocation for occurrence ``slot``, the previous one having run a day before."""
    ran = slot - timedelta(days=1) + timedelta(microseconds=1_348_200)
    return timer_info(last=dotnet(ran), next_=f"{slot:%Y-%m-%dT%H:%M:%S}+00:00", last_updated=dotnet(ran),
                      past_due=past_due)


def library_logs(logs):
    return [log for log in logs if not log.category.startswith(OURS + WORKERS)]


def export_users(worker):
    return next(f for f in worker.functions if f.name == "export_users")


def test_a_first_scheduled_run_exports_its_slot_with_one_summary_and_no_library_chatter(worker, export_env):
    slot = a_slot()
    first = timer_info(last="0001-01-01T00:00:00", next_=f"{slot:%Y-%m-%dT%H:%M:%S}+00:00",
                       last_updated=dotnet(datetime.now(timezone.utc)))
    since = len(worker.handler.logs)
    run = worker.invoke(export_users(worker), first)
    assert run.status == "Success", run.exception
    manifest = published_manifest(export_env, slot)
    assert manifest["users"] == USERS and read_json(export_env, LATEST_BLOB)["blob"] == manifest["blob"]
    summaries = [log for log in run.logs if log.message.startswith("Export succeeded")]
    assert len(summaries) == 1 and summaries[0].category == "graph_export.runs" and summaries[0].level == "Information"
    assert any(log.category == "graph_export.progress" for log in run.logs)  # our INFO lines are all there
    # Item 3: azure-core's request and response headers (~36 INFO records for this run) are not sent at all.
    sent = worker.handler.logs[since:]
    assert library_logs(sent) == [], [(log.category, log.message[:80]) for log in library_logs(sent)]


def test_a_missing_setting_fails_the_invocation_with_one_export_failed_line(worker, export_env, monkeypatch):
    monkeypatch.delenv("TENANT_ID")
    run = worker.invoke(export_users(worker), timer_info(last=None, next_="", last_updated=None, status=False))
    assert run.status == "Failure" and "TENANT_ID is missing" in run.exception
    errors = [log for log in run.logs if log.level in ("Error", "Critical")]
    assert len(errors) == 1 and errors[0].message.startswith("Export failed: ") and "\n" not in errors[0].message
    assert "TENANT_ID is missing" in errors[0].message
    assert blob_names(export_env) == []  # nothing written, not even a lock


def test_a_retried_invocation_resumes_the_same_slot(worker, export_env, sandbox, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "1")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    slot = a_slot(days_ago=2)
    timer = scheduled(slot, past_due=True)  # the host sends the retry the same trigger data
    sandbox.faults.add("graph", from_page=3, status=503)
    failed = worker.invoke(export_users(worker), timer, max_retry_count=3)
    assert failed.status == "Failure" and "page 3" in failed.exception
    assert any(log.message.startswith("Timer is past due") for log in failed.logs)
    assert read_json(export_env, checkpoint_blob_name(slot))["pages"] == 2

    sandbox.faults.clear()
    sandbox.requests.clear()
    retried = worker.invoke(export_users(worker), timer, retry_count=1, max_retry_count=3)
    assert retried.status == "Success", retried.exception
    manifest = published_manifest(export_env, slot)
    assert manifest["users"] == USERS and manifest["resumed"] is True
    assert [r.page for r in sandbox.requests.entries("graph") if r.status == 200 and r.page is not None] == [3]  # no page read twice
    assert len([log for log in retried.logs if log.message.startswith("Export succeeded")]) == 1


@pytest.fixture
def blob_proxy(azurite, export_env, monkeypatch):
    with BlobFaultProxy(azurite) as proxy:
        monkeypatch.setenv("EXPORT_STORAGE", proxy.connection_string)  # the export goes through it
        yield proxy


def test_records_from_the_exports_own_threads_reach_the_invocation_log(worker, export_env, sandbox, blob_proxy,
                                                                        monkeypatch):
    """Item 2: the lease renewer's warning, the page fetcher's and the wait ticker's lines carry the invocation id."""
    monkeypatch.setenv("PROGRESS_EVERY_SECONDS", "1")
    sandbox.faults.add("graph", page=2, status=429, headers={"Retry-After": "7"}, count=1)  # a 7 s throttled wait

    def fail_renewals_once_the_slot_is_locked() -> None:  # the renewer first renews 5 s after the lock
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("comp=lease" in r[2] for r in blob_proxy.requests):
            time.sleep(0.05)
        rule = blob_proxy.add("503", query_contains="comp=lease", count=None)
        while time.monotonic() < deadline and rule.fired < 5:  # the renewal and its 4 retries
            time.sleep(0.05)
        blob_proxy.clear()

    saboteur = threading.Thread(target=fail_renewals_once_the_slot_is_locked, daemon=True)
    saboteur.start()
    since = len(worker.handler.logs)
    run = worker.invoke(export_users(worker), scheduled(a_slot(days_ago=3)))
    saboteur.join()
    assert run.status == "Success", run.exception
    threads = {log.thread for log in run.logs}
    renewals = [log for log in run.logs if log.message.startswith("Could not renew the lease of slot")]
    assert renewals and {log.thread for log in renewals} == {"slot-lease"}, threads
    assert any(log.thread == "progress-wait" for log in run.logs), threads
    assert any(log.thread == "graph-requests" for log in run.logs), threads
    # The ≤3.12 worker's rule too: the thread-local the Python developer reference tells threads to set.
    ours = [log for log in run.logs if log.thread in ("slot-lease", "progress-wait", "graph-requests")]
    assert {log.thread_local_id for log in ours} == {run.invocation_id}
    unclaimed = [log for log in worker.handler.logs[since:] if log.invocation_id is None and log.category.startswith(OURS)]
    assert unclaimed == [], [(log.thread, log.message[:80]) for log in unclaimed]


def test_library_log_level_asks_for_the_libraries_records_from_every_thread(worker, export_env, monkeypatch):
    """Item 3's setting, and item 2 for the writer thread: azure-core's request lines, the staging ones included."""
    monkeypatch.setenv("LIBRARY_LOG_LEVEL", "INFO")
    run = worker.invoke(export_users(worker), scheduled(a_slot(days_ago=4)))
    assert run.status == "Success", run.exception
    core = [log for log in run.logs if log.category.startswith("azure.core.pipeline.policies.http_logging_policy")]
    assert len(core) >= 10 and {log.level for log in core} == {"Information"}
    staged = [log for log in core if log.message.startswith("Request URL") and "blockid=" in log.message]
    assert staged and {log.thread for log in staged} == {"gzip-stage"}, staged  # the writer thread's Put Block
    assert all("sig=" not in log.message or "sig=REDACTED" in log.message for log in core)
