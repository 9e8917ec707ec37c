"""The sandbox's Graph serves /v1.0/users/$count as Graph does, and its fault plan can lose a page.

Over real sockets with plain ``requests``: the count needs ``ConsistencyLevel: eventual`` (Graph's
400 without it), a read permission as ``/users`` does, and follows the directory; ``skip_next``
moves a page's nextLink on by one page, in a users listing and in a delta round; a status fault on
the count's path answers it like any other.

(This folder has no ``__init__.py``: as a package it would be called ``sandbox`` and hide the
sandbox package itself.)
"""

from __future__ import annotations

import pytest
import requests

from sandbox import Sandbox

USERS = 2_500


@pytest.fixture
def sbx(tmp_path):
    with Sandbox(users=USERS, workdir=tmp_path / "sandbox") as sb:
        yield sb


def get(sb: Sandbox, path: str, *, roles: list[str] | None = None, **headers: str) -> requests.Response:
    url = path if path.startswith("https://") else sb.settings["GRAPH_ENDPOINT"] + path
    headers["Authorization"] = f"Bearer {sb.issue_token('graph', roles=roles)}"
    return requests.get(url, headers=headers, timeout=10, verify=sb.settings["REQUESTS_CA_BUNDLE"])


def test_count_with_consistency_level_eventual_is_the_users_now_as_text(sbx):
    answer = get(sbx, "/v1.0/users/$count", ConsistencyLevel="eventual")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/plain"
    assert answer.text == str(USERS)
    uid = sbx.directory.add(displayName="New")
    assert get(sbx, "/v1.0/users/%24count", ConsistencyLevel="Eventual").text == str(USERS + 1)
    sbx.directory.hard_delete(uid)
    sbx.directory.hard_delete(sbx.directory.id_of(0))
    assert get(sbx, "/v1.0/users/$count", ConsistencyLevel="eventual").text == str(USERS - 1)


def test_count_without_the_header_is_graphs_400(sbx):
    for headers in ({}, {"ConsistencyLevel": "session"}):
        answer = get(sbx, "/v1.0/users/$count", **headers)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "Request_BadRequest"
        assert answer.json()["error"]["message"] == "$count is not currently supported."


def test_count_needs_the_permission_users_need(sbx):
    answer = get(sbx, "/v1.0/users/$count", roles=["Mail.Read"], ConsistencyLevel="eventual")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "Authorization_RequestDenied"
    assert get(sbx, "/v1.0/users/$count", roles=["Directory.Read.All"], ConsistencyLevel="eventual").text == str(USERS)


def test_a_status_fault_on_the_counts_path_answers_it_and_leaves_pages_alone(sbx):
    rule = sbx.faults.add("graph", path_contains="/users/$count", status=503)
    assert get(sbx, "/v1.0/users/$count", ConsistencyLevel="eventual").status_code == 503
    assert get(sbx, "/v1.0/users?$top=999").status_code == 200
    assert rule.fired == 1


def pages(sb: Sandbox, url: str, **headers: str) -> list[list[dict]]:
    got = []
    while url:
        body = get(sb, url, **headers).json()
        got.append(body["value"])
        url = body.get("@odata.nextLink")
    return got


def test_skip_next_loses_the_page_after_it_silently(sbx):
    rule = sbx.faults.add("graph", page=1, skip_next=True, count=1)
    listed = pages(sbx, "/v1.0/users?$select=id&$top=999")
    assert [len(page) for page in listed] == [999, 502]  # page 2 (users 999-1997) never came
    assert listed[1][0]["id"] == sbx.directory.id_of(1998) and rule.fired == 1
    assert sbx.requests.entries("graph")[0].fault == "graph page=1 -> skip the next page"


def test_skip_next_before_the_last_page_makes_this_page_the_last(sbx):
    sbx.faults.add("graph", page=2, skip_next=True)
    assert [len(page) for page in pages(sbx, "/v1.0/users?$select=id&$top=999")] == [999, 999]


def test_skip_next_in_a_delta_round_loses_a_page_of_changes(sbx):
    first = pages(sbx, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=200")
    assert sum(map(len, first)) == USERS
    body = get(sbx, "/v1.0/users/delta?$select=id&$deltatoken=latest").json()
    link = body["@odata.deltaLink"]
    for n in range(500):
        sbx.directory.add(displayName=f"Added {n}")
    sbx.faults.add("graph", path_contains="/users/delta", page=1, skip_next=True, count=1)
    changes = []
    while link:
        body = get(sbx, link, Prefer="odata.maxpagesize=200").json()
        changes.append(body["value"])
        link = body.get("@odata.nextLink")
    assert [len(page) for page in changes] == [200, 100]  # the second page of 200 changes never came


def test_skip_next_is_a_graph_page_action_of_its_own():
    from sandbox.faults import FaultRule
    assert FaultRule("graph", skip_next=True).action == "skip_next"
    with pytest.raises(ValueError, match="exactly one action"):
        FaultRule("graph", skip_next=True, status=503)
    with pytest.raises(ValueError, match="only apply to the 'graph' service"):
        FaultRule("entra", skip_next=True)
    assert FaultRule("graph", skip_next=True, chunked=True).action == "skip_next"
