"""Graph answers that must never become an export (issue 10): each one fails the run and publishes nothing.

A redirect to another origin, items of ``value`` that are not users, a user id that comes twice, and a
page far larger than any page of users: scripted with the sandbox's fault plan, run through the real
export against the sandbox and Azurite over sockets. The first tests check the fault plan itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import requests

from graph_export import GraphError, load_settings, run_export
from graph_export.graph_stream import MAX_PAGE_BYTES
from sandbox.faults import FaultPlan
from sandbox.requestlog import RequestLog
from sandbox.server import Request, Response, ServiceServer, json_response, tls_context

from .helpers import REPO, blob_names, read_export

SLOT = datetime(2026, 4, 1, 2, tzinfo=timezone.utc)
MiB = 1024 * 1024


def nothing_published(env: dict) -> None:
    """No export blob, no manifest, no users/latest.json: nothing a consumer could read."""
    published = [name for name in blob_names(env) if name.startswith("users/")]
    assert published == [], published


def graph_get(sandbox, path: str, **kwargs) -> requests.Response:
    settings = sandbox.settings
    token = requests.post(
        f"{settings['AUTHORITY_HOST']}/{sandbox.tenant_id}/oauth2/v2.0/token", timeout=10,
        verify=settings["REQUESTS_CA_BUNDLE"],
        data={"grant_type": "client_credentials", "client_id": sandbox.client_id,
              "client_secret": sandbox.client_secret, "scope": f"{settings['GRAPH_ENDPOINT']}/.default"},
    ).json()["access_token"]
    return requests.get(f"{settings['GRAPH_ENDPOINT']}{path}", headers={"Authorization": f"Bearer {token}"},
                        verify=settings["REQUESTS_CA_BUNDLE"], timeout=30, **kwargs)


PAGE = "/v1.0/users?$select=id,displayName&$top=999"


# --- the fault plan can script these answers ----------------------------------------------------

def test_fault_plan_value_replaces_a_pages_users_and_keeps_its_next_link(sandbox):
    sandbox.faults.load_json('[{"service": "graph", "page": 1, "count": 1,'
                             ' "value": [1, "x", null, [], {"displayName": "no id"}, {"id": 5}]}]')
    page = graph_get(sandbox, PAGE).json()
    assert page["value"] == [1, "x", None, [], {"displayName": "no id"}, {"id": 5}]
    assert "$skiptoken=" in page["@odata.nextLink"]
    assert graph_get(sandbox, PAGE).json()["value"][0] == next(sandbox.expected_users(["id", "displayName"]))


def test_fault_plan_repeat_user_puts_an_earlier_user_first_again(sandbox):
    expected = list(sandbox.expected_users(["id", "displayName"]))
    rule = sandbox.faults.add("graph", page=2, repeat_user=7, count=1)
    first = graph_get(sandbox, PAGE).json()
    second = graph_get(sandbox, first["@odata.nextLink"].removeprefix(sandbox.settings["GRAPH_ENDPOINT"])).json()
    assert second["value"][0] == expected[7] and second["value"][1:] == expected[999:1998]
    assert rule.fired == 1 and rule.describe() == "graph page=2 -> repeat user 7"


@pytest.mark.parametrize("chunked", [False, True])
def test_fault_plan_pad_bytes_streams_a_huge_page_that_is_still_valid_json(sandbox, chunked):
    rule = sandbox.faults.add("graph", page=1, pad_bytes=5 * MiB + 3, chunked=chunked, count=1)
    answer = graph_get(sandbox, PAGE)
    assert len(answer.content) > 5 * MiB and len(answer.json()["value"]) == 999
    if chunked:
        assert answer.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in answer.headers
    else:
        assert int(answer.headers["Content-Length"]) == len(answer.content)
    assert rule.sent_bytes == len(answer.content)


@pytest.mark.parametrize("rule, why", [
    ({"service": "entra", "pad_bytes": 10}, "only apply to the 'graph' service"),
    ({"service": "keyvault", "chunked": True}, "only apply to the 'graph' service"),
    ({"service": "graph", "chunked": True, "status": 503}, "exactly one action"),
    ({"service": "graph", "pad_bytes": 5, "value": []}, "exactly one action"),
    ({"service": "graph", "value": {"id": "x"}}, "value must be a list"),
    ({"service": "graph", "repeat_user": -1}, "repeat_user must be a user index"),
    ({"service": "graph", "pad_bytes": 0}, "pad_bytes must be a number of bytes"),
])
def test_fault_plan_refuses_page_actions_it_cannot_apply(rule, why):
    with pytest.raises(ValueError, match=why):
        FaultPlan().load([rule])


# --- the export reads chunked pages whole, and refuses the rest ----------------------------------

def test_pages_sent_chunked_are_read_whole(export_env, sandbox):
    """No Content-Length: the body is read to its last chunk, not cut short after the nextLink's head."""
    rule = sandbox.faults.add("graph", from_page=1, chunked=True)
    summary = run_export(load_settings(), SLOT)
    assert rule.fired == 3 and summary.users == sandbox.users
    users, _ = read_export(export_env, summary.blob)
    assert users == list(sandbox.expected_users(load_settings().user_properties))


class _Elsewhere:
    """Another origin serving a page that looks like Graph's: what a followed redirect would export."""

    name = "elsewhere"

    def handle(self, request: Request) -> Response:
        return json_response(200, {"value": [{"id": "00000000-0000-0000-0000-00000000e5e5", "displayName": "Mallory"}]})

    def fault_response(self, request: Request, status: int) -> Response:
        return json_response(status, {})

    def page_of(self, request: Request) -> int | None:
        return None


@pytest.fixture
def elsewhere(sandbox):
    """An HTTPS server on another loopback port, trusted through the same CA as the sandbox."""
    log = RequestLog()
    server = ServiceServer(_Elsewhere(), request_log=log, faults=FaultPlan(),
                           ssl_context=tls_context(sandbox.tls.cert_file, sandbox.tls.key_file)).start()
    yield server, log
    server.stop()


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_another_origin_is_refused_and_publishes_nothing(export_env, sandbox, elsewhere, status):
    server, log = elsewhere
    sandbox.faults.add("graph", page=2, status=status,
                       headers={"Location": f"{server.base_url}/v1.0/users?$skiptoken=stolen-token"})
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert f"page 2 with HTTP {status}, a redirect to {server.base_url}:" in message
    assert "GRAPH_ENDPOINT" in message and "stolen-token" not in message and "/v1.0" not in message
    assert log.entries("elsewhere") == []  # never asked
    nothing_published(export_env)


@pytest.mark.parametrize("value, wrong", [
    ([7], "value[0] is a number, not a user object"),
    (["a user?"], "value[0] is a string, not a user object"),
    ([None], "value[0] is null, not a user object"),
    ([["id", "x"]], "value[0] is an array, not a user object"),
    ([{"id": "00000000-0000-0000-0000-000000000001"}, {"displayName": "Zoë"}], "value[1] is an object without an 'id'"),
    ([{"id": 12}], "value[0] has an 'id' that is a number, not a string"),
    ([{"id": ""}], "value[0] has an empty 'id'"),
])
def test_items_that_are_not_users_fail_the_run_and_publish_nothing(export_env, sandbox, value, wrong):
    sandbox.faults.add("graph", page=2, value=value)
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert f"Graph page 2 holds something that is not a user: {wrong};" in message
    assert "request-id " in message and "a user?" not in message and "Zoë" not in message
    nothing_published(export_env)


@pytest.mark.parametrize("page", [2, 3])  # 2,500 users: page 3 is the last
def test_a_user_id_of_an_earlier_page_fails_before_anything_is_committed(export_env, sandbox, page):
    rule = sandbox.faults.add("graph", page=page, repeat_user=0)
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    assert rule.fired >= 1
    message = str(info.value)
    assert f"same user twice in one listing, on page 1 and again on page {page}:" in message
    assert "request-id " in message
    nothing_published(export_env)


def test_an_oversized_page_fails_on_its_content_length_before_it_is_read(export_env, sandbox):
    rule = sandbox.faults.add("graph", page=2, pad_bytes=200 * MiB)
    started = time.monotonic()
    with pytest.raises(GraphError, match=r"Graph page 2 is larger than the 64 MiB .*\(Content-Length \d+\)"):
        run_export(load_settings(), SLOT)
    assert time.monotonic() - started < 30
    assert rule.sent_bytes < 100 * MiB  # the client hung up long before the end
    nothing_published(export_env)


def test_an_oversized_chunked_page_stops_at_the_cap_with_bounded_memory(export_env, sandbox, tmp_path):
    """No Content-Length: the bytes read are counted, and the CLI's peak memory stays near the cap."""
    rule = sandbox.faults.add("graph", page=2, pad_bytes=400 * MiB, chunked=True)
    hwm = tmp_path / "hwm"
    # The CLI's own high-water mark, read as it exits: wait4's ru_maxrss would also count the pytest
    # process it was forked from, which Linux carries over exec.
    measured = ("import atexit, runpy, sys\n"
                f"atexit.register(lambda: open({str(hwm)!r}, 'w').write(next(l for l in open('/proc/self/status')"
                " if l.startswith('VmHWM:')).split()[1]))\n"
                "sys.argv = ['graph_export', 'run', '--slot', '2026-04-01T02:00:00Z']\n"
                "runpy.run_module('graph_export', run_name='__main__', alter_sys=True)\n")
    cli = subprocess.run([sys.executable, "-c", measured], cwd=REPO, env=dict(os.environ), capture_output=True,
                         text=True, timeout=120)
    message = cli.stderr.strip()
    assert cli.returncode == 4, message
    assert len(message.splitlines()) == 1 and "Graph page 2 is larger than the 64 MiB" in message
    assert f"more than {MAX_PAGE_BYTES} bytes arrived" in message
    peak_mb = int(hwm.read_text()) / 1024
    print(f"\nCLI peak RSS with a 400 MiB page: {peak_mb:.0f} MB")
    # ~70 MB of interpreter and libraries, plus at most the cap of page bytes before it stops;
    # reading the whole page would need 400 MiB for the pieces and as much again to join them.
    assert peak_mb < 70 + MAX_PAGE_BYTES / MiB + 60
    assert rule.sent_bytes < 200 * MiB
    nothing_published(export_env)
