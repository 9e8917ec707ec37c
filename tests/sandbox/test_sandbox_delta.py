"""The sandbox's mutable directory and its ``GET /v1.0/users/delta``, over real sockets (like test_sandbox.py)."""

from __future__ import annotations

import base64
import http.client
import random
import ssl
import time
from urllib.parse import urlsplit

import pytest
import requests

from sandbox import Sandbox
from sandbox.tenant import DEFAULT_PROPERTIES, USER_PROPERTIES, make_user, select, user_id
from tests.delta_client import expected, full, merge

PROPS = ["id", "displayName", "mail", "jobTitle", "businessPhones", "faxNumber", "accountEnabled"]
SYNC_STATE_NOT_FOUND = {"code": "syncStateNotFound", "message": "The sync state generation is not found. "
                        "The delta token is expired and data must be synchronized again."}


@pytest.fixture
def sbx(tmp_path, monkeypatch):
    with Sandbox(users=250, workdir=tmp_path / "sandbox") as sb:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_file))  # preset on these machines: must be overridden
        yield sb


@pytest.fixture
def token(sbx):
    return sbx.issue_token("graph")


def get(sb: Sandbox, url: str, token: str, prefer: str | list[str] | None = None) -> requests.Response:
    """GET with a bearer token; each item of a ``prefer`` list goes out as a header line of its own."""
    if not url.startswith("https://"):
        url = sb.url("graph") + url
    prefers = [prefer] if isinstance(prefer, str) else list(prefer or [])
    if len(prefers) > 1:   # requests folds repeated headers into one, so write these by hand
        return _get_repeating_prefer(sb, url, token, prefers)
    headers = {"Authorization": f"Bearer {token}", **({"Prefer": prefers[0]} if prefers else {})}
    return requests.get(url, headers=headers, timeout=10)


def _get_repeating_prefer(sb: Sandbox, url: str, token: str, prefers: list[str]) -> requests.Response:
    split = urlsplit(url)
    conn = http.client.HTTPSConnection(split.hostname, split.port, timeout=10,
                                       context=ssl.create_default_context(cafile=str(sb.ca_file)))
    try:
        conn.putrequest("GET", f"{split.path}?{split.query}")
        conn.putheader("Authorization", f"Bearer {token}")
        for p in prefers:
            conn.putheader("Prefer", p)
        conn.endheaders()
        answer = conn.getresponse()
        response = requests.Response()
        response.status_code, response._content = answer.status, answer.read()
        response.headers.update(answer.getheaders())
        return response
    finally:
        conn.close()


def delta_round(sb: Sandbox, token: str, url: str, prefer: str | list[str] | None = None
                ) -> tuple[list[dict], list[dict], str]:
    """Follow nextLinks to the deltaLink: (items, page bodies, deltaLink)."""
    items, pages = [], []
    for _ in range(1000):
        r = get(sb, url, token, prefer)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        items.extend(body["value"])
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, pages, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]
    raise AssertionError("no deltaLink")




def error(r: requests.Response) -> dict:
    body = r.json()["error"]
    return {"code": body["code"], "message": body["message"]}


# --- the directory ----------------------------------------------------------------------------------


def page_users(sb: Sandbox, token: str, query: str) -> list[dict]:
    url, users = f"/v1.0/users?{query}", []
    while url:
        r = get(sb, url, token)
        assert r.status_code == 200, r.text
        users.extend(r.json()["value"])
        url = r.json().get("@odata.nextLink")
    return users


def test_users_of_an_unchanged_tenant_are_make_user(sbx, token):
    users = page_users(sbx, token, f"$select={','.join(USER_PROPERTIES)}&$top=999")
    assert users == [select(make_user(i), USER_PROPERTIES) for i in range(250)]
    first = get(sbx, "/v1.0/users?$top=100", token)
    assert first.json()["value"] == [select(make_user(i)) for i in range(100)]
    assert sbx.directory.version == 0 and sbx.users == 250


def test_users_follow_the_directory(sbx, token):
    d = sbx.directory
    ids = [d.id_of(i) for i in range(250)]
    d.update(ids[10], jobTitle="Chief Sandbox Officer", mail=None)
    d.soft_delete(ids[0])
    d.hard_delete(ids[99])
    added = d.add(displayName="Added Later")
    assert sbx.users == 249
    users = page_users(sbx, token, f"$select={','.join(PROPS)}&$top=7")
    assert users == list(sbx.expected_users(PROPS)) == list(d.users(PROPS))
    assert [u["id"] for u in users][:2] == [ids[1], ids[2]] and users[-1]["id"] == added and len(users) == 249
    assert users[9] == {**select(make_user(10), PROPS), "jobTitle": "Chief Sandbox Officer", "mail": None}

    d.restore(ids[0])
    assert page_users(sbx, token, "$select=id&$top=999")[0] == {"id": ids[0]}
    sbx.users = 20          # a fresh tenant, no changes
    assert page_users(sbx, token, "$select=id&$top=999") == [{"id": user_id(i)} for i in range(20)]


# --- /users/delta ---------------------------------------------------------------------------------------


def test_initial_round_pages_and_page_size(sbx, token):
    items, pages, delta_link = delta_round(sbx, token, f"/v1.0/users/delta?$select={','.join(PROPS)}")
    assert [len(p["value"]) for p in pages] == [100, 100, 50]
    base = sbx.url("graph")
    assert all(p["@odata.context"] == f"{base}/v1.0/$metadata#users({','.join(PROPS)})" for p in pages)
    assert all(p["@odata.nextLink"].startswith(f"{base}/v1.0/users/delta?$skiptoken=") for p in pages[:2])
    assert delta_link.startswith(f"{base}/v1.0/users/delta?$deltatoken=")
    # Never-set properties are left out; set ones carry their value; id always.
    for i, item in enumerate(items):
        user = {**make_user(i), "faxNumber": None}
        assert item == {p: user[p] for p in PROPS if p == "id" or user[p] not in (None, [])}
    assert "jobTitle" not in items[3] and "faxNumber" not in items[0] and "businessPhones" not in items[0]
    assert [r.path for r in sbx.requests.entries("graph")] == ["/v1.0/users/delta"] * 3
    assert [r.page for r in sbx.requests.entries("graph")] == [1, 2, 3] and sbx.graph.delta_requests == 3

    r = get(sbx, "/v1.0/users/delta?$select=id", token, "odata.maxpagesize=40")
    assert len(r.json()["value"]) == 40 and r.headers["Preference-Applied"] == "odata.maxpagesize=40"
    raw = r.text
    assert raw.index('"@odata.context"') < raw.index('"@odata.nextLink"') < raw.index('"value"')
    r = get(sbx, "/v1.0/users/delta?$select=id", token, "odata.maxpagesize=999")
    assert len(r.json()["value"]) == 200 and r.headers["Preference-Applied"] == "odata.maxpagesize=200"
    nxt = get(sbx, r.json()["@odata.nextLink"], token, "odata.maxpagesize=999")
    assert len(nxt.json()["value"]) == 50 and "@odata.deltaLink" in nxt.json()
    raw = nxt.text
    assert raw.index('"@odata.deltaLink"') < raw.index('"value"')
    r = get(sbx, "/v1.0/users/delta", token)   # no $select: Graph's default set, context without a list
    assert "Preference-Applied" not in r.headers and len(r.json()["value"]) == 100
    assert r.json()["@odata.context"] == f"{base}/v1.0/$metadata#users"
    assert set(r.json()["value"][0]) <= set(DEFAULT_PROPERTIES)


@pytest.mark.parametrize("query, code, message", [
    ("$top=10", "Request_BadRequest", "'$top' is not supported with delta"),
    ("$select=id,signInActivity", "Request_BadRequest", "'signInActivity' is not supported in delta"),
    ("$select=id,SignInActivity", "Request_BadRequest", "'signInActivity' is not supported in delta"),
    ("$select=id,shoeSize", "BadRequest", "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'"),
    ("$filter=id eq 'x'", "Request_BadRequest", "'$filter' is not supported"),
])
def test_delta_rejects_bad_queries(sbx, token, query, code, message):
    r = get(sbx, f"/v1.0/users/delta?{query}", token)
    assert r.status_code == 400 and r.json()["error"]["code"] == code
    assert message in r.json()["error"]["message"]


def test_delta_select_is_case_insensitive_and_answers_in_graphs_spelling(sbx, token):
    body = get(sbx, "/v1.0/users/delta?$select=ID,Department,JobTitle", token).json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#users(id,department,jobTitle)")
    # A new user's never-set properties are omitted; the ones sent are in Graph's spelling.
    assert body["value"] and all(set(u) <= {"id", "department", "jobTitle"} for u in body["value"])
    assert any("department" in u for u in body["value"])


def test_delta_needs_the_same_token_and_role_as_users(sbx):
    assert get(sbx, "/v1.0/users/delta", sbx.issue_token(lifetime_s=-5)).status_code == 401
    r = get(sbx, "/v1.0/users/delta", sbx.issue_token(roles=[]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"


def test_deltatoken_latest_then_changes(sbx, token):
    r = get(sbx, f"/v1.0/users/delta?$deltatoken=latest&$select={','.join(PROPS)}", token)
    body = r.json()
    assert r.status_code == 200 and body["value"] == [] and list(body) == ["@odata.context", "@odata.deltaLink",
                                                                            "value"]
    assert sbx.requests.entries("graph")[-1].page == 1
    items, _, _ = delta_round(sbx, token, body["@odata.deltaLink"])
    assert items == []
    sbx.directory.update(sbx.directory.id_of(5), jobTitle="Now")
    items, pages, _ = delta_round(sbx, token, body["@odata.deltaLink"] + "&$select=id")   # $select ignored
    assert [i["id"] for i in items] == [user_id(5)] and items[0]["jobTitle"] == "Now" and "displayName" in items[0]
    assert pages[0]["@odata.context"].endswith(f"#users({','.join(PROPS)})")


def test_change_round_shapes_default_and_minimal(sbx, token):
    d = sbx.directory
    ids = [d.id_of(i) for i in range(250)]
    d.soft_delete(ids[7])                                     # before the token: restored below
    _, _, link = delta_round(sbx, token, f"/v1.0/users/delta?$select={','.join(PROPS)}")
    assert make_user(1)["mail"] and make_user(2)["jobTitle"] and make_user(8)["businessPhones"]
    d.update(ids[1], mail=None)                               # cleared
    d.update(ids[2], jobTitle="Principal Sandboxer")          # changed
    d.update(ids[3], faxNumber="+1 555 0199")                 # never set before (user 3 is a guest: no jobTitle)
    d.update(ids[8], businessPhones=None)
    new = d.add(displayName="Newcomer", mail=None)
    d.soft_delete(ids[4])
    d.restore(ids[7])
    d.hard_delete(ids[5])
    gone = d.add()
    d.hard_delete(gone)                                       # added and deleted within the round
    d.update(ids[2], jobTitle="Principal Sandboxer II")       # changed twice: listed once, at its last change

    items, _, _ = delta_round(sbx, token, link)
    by_id = {i["id"]: i for i in items}
    # Users 4 and 5 manage some of users 32 to 47: deleting them removed them from their reports, a change of
    # the manager, which this round does not select: those reports are not listed.
    assert {j for j in range(32, 48) if d.get(d.id_of(j)).get("manager") is None} > {33, 36}
    assert [i["id"] for i in items] == [ids[1], ids[3], ids[8], new, ids[4], ids[7], ids[5], gone, ids[2]]
    u = {i: {**make_user(i), "faxNumber": None} for i in range(10)}
    assert by_id[ids[1]] == {p: u[1][p] for p in PROPS if p != "faxNumber"} | {"mail": None}
    assert by_id[ids[2]] == {p: u[2][p] for p in PROPS if p != "faxNumber"} | {"jobTitle": "Principal Sandboxer II"}
    assert by_id[ids[3]] == {"id": ids[3], "displayName": u[3]["displayName"], "mail": u[3]["mail"],
                             "faxNumber": "+1 555 0199", "accountEnabled": u[3]["accountEnabled"]}
    assert by_id[ids[8]]["businessPhones"] == []              # ever set, cleared since: still there
    newcomer = select(make_user(250), PROPS)
    assert by_id[new] == {p: v for p, v in newcomer.items() if p in ("id", "jobTitle", "accountEnabled")} | {
        "displayName": "Newcomer", **({"businessPhones": newcomer["businessPhones"]}
                                      if newcomer["businessPhones"] else {})}
    assert by_id[ids[4]] == {"id": ids[4], "@removed": {"reason": "changed"}}
    assert by_id[ids[5]] == {"id": ids[5], "@removed": {"reason": "deleted"}}
    assert by_id[gone] == {"id": gone, "@removed": {"reason": "deleted"}}
    assert by_id[ids[7]] == {p: u[7][p] for p in PROPS if p == "id" or u[7][p] not in (None, [])}

    r = get(sbx, link, token, "return=minimal")
    assert r.headers["Preference-Applied"] == "return=minimal"
    minimal = {i["id"]: i for i in r.json()["value"]}
    assert minimal[ids[1]] == {"id": ids[1], "mail": None}
    assert minimal[ids[2]] == {"id": ids[2], "jobTitle": "Principal Sandboxer II"}
    assert minimal[ids[3]] == {"id": ids[3], "faxNumber": "+1 555 0199"}
    assert minimal[ids[8]] == {"id": ids[8], "businessPhones": []}
    assert minimal[new] == by_id[new] and minimal[ids[7]] == by_id[ids[7]]     # new and restored: whole
    assert minimal[ids[4]] == by_id[ids[4]] and minimal[ids[5]] == by_id[ids[5]]
    for prefer in (["odata.maxpagesize=3, return=minimal"], ["odata.maxpagesize=3", "return=minimal"]):
        r = get(sbx, link, token, prefer)
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=3, return=minimal", prefer
        assert r.json()["value"] == list(minimal.values())[:3] and "@odata.nextLink" in r.json()


def test_repeats_list_a_user_once_per_change(sbx, token):
    d = sbx.directory
    _, _, link = delta_round(sbx, token, "/v1.0/users/delta?$select=id,jobTitle")
    a, b = d.id_of(1), d.id_of(2)
    d.update(a, jobTitle="one")
    d.update(b, jobTitle="two")
    d.update(a, jobTitle="three")
    assert [(i["id"], i["jobTitle"]) for i in delta_round(sbx, token, link)[0]] == [(b, "two"), (a, "three")]
    sbx.graph.delta_repeats = True
    items, pages, _ = delta_round(sbx, token, link, "odata.maxpagesize=2")
    assert [(i["id"], i["jobTitle"]) for i in items] == [(a, "one"), (b, "two"), (a, "three")]
    assert [len(p["value"]) for p in pages] == [2, 1]          # the same id on two pages; the last one is current


def test_a_round_is_a_snapshot_of_its_start(sbx, token):
    d = sbx.directory
    first = get(sbx, "/v1.0/users/delta?$select=id,displayName", token).json()
    d.hard_delete(d.id_of(0))                                 # on page 1, already served
    d.update(d.id_of(150), displayName="Changed mid-round")   # on page 2, not yet served
    rest, _, link = delta_round(sbx, token, first["@odata.nextLink"])
    items = first["value"] + rest
    assert [i["id"] for i in items] == [user_id(i) for i in range(250)]     # nothing skipped, as of the start
    assert items[150]["displayName"] == make_user(150)["displayName"]
    changes, _, _ = delta_round(sbx, token, link)
    assert changes == [{"id": user_id(0), "@removed": {"reason": "deleted"}},
                       {"id": user_id(150), "displayName": "Changed mid-round"}]


def test_forged_expired_and_reset_tokens(sbx, token):
    body = get(sbx, "/v1.0/users/delta?$select=id", token).json()
    skiptoken = body["@odata.nextLink"].split("$skiptoken=")[1]
    _, _, link = delta_round(sbx, token, "/v1.0/users/delta?$select=id")
    issued_by = time.time()
    deltatoken = link.split("$deltatoken=")[1]
    users_skiptoken = get(sbx, "/v1.0/users?$top=5", token).json()["@odata.nextLink"].split("$skiptoken=")[1]
    raw = bytearray(base64.urlsafe_b64decode(skiptoken + "=" * (-len(skiptoken) % 4)))
    raw[-20] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for query in (f"$skiptoken={forged}", f"$skiptoken={skiptoken[:-3]}", f"$skiptoken={users_skiptoken}",
                  f"$skiptoken={deltatoken}", f"$deltatoken={skiptoken}", "$deltatoken=bm90IGEgdG9rZW4"):
        r = get(sbx, f"/v1.0/users/delta?{query}", token)
        assert r.status_code == 400 and error(r) == {"code": "Request_BadRequest",
                                                     "message": "Invalid page token specified."}, query
    assert get(sbx, f"/v1.0/users?$skiptoken={skiptoken}", token).status_code == 400

    # Age from issue, measured against the lifetime: a lifetime shorter than the tokens' age expires them,
    # a longer one does not (a fixed sleep against a short lifetime is a race on a loaded machine).
    sbx.graph.delta_token_lifetime_s = 3600
    assert get(sbx, link, token).status_code == 200
    sbx.graph.delta_token_lifetime_s = (time.time() - issued_by) / 2  # both tokens are older than that
    for url in (link, body["@odata.nextLink"]):
        r = get(sbx, url, token)
        assert r.status_code == 400 and error(r) == SYNC_STATE_NOT_FOUND
    sbx.graph.delta_token_lifetime_s = 7 * 86400
    assert get(sbx, link, token).status_code == 200
    sbx.graph.expire_delta_tokens()
    assert error(get(sbx, link, token)) == SYNC_STATE_NOT_FOUND
    _, _, fresh = delta_round(sbx, token, "/v1.0/users/delta?$select=id")
    assert get(sbx, fresh, token).status_code == 200
    sbx.users = 10                                            # a reset tenant has no sync state for old tokens
    assert error(get(sbx, fresh, token)) == SYNC_STATE_NOT_FOUND


def test_fault_rules_on_delta_pages(sbx, token):
    rule = sbx.faults.add("graph", path_contains="/users/delta", page=2, status=503,
                          headers={"Retry-After": "0"}, count=1)
    page_value = sbx.faults.add("graph", path_contains="/users/delta", page=3, value=[{"displayName": "no id"}],
                                count=1)
    assert get(sbx, "/v1.0/users?$top=100&$skiptoken=" + get(sbx, "/v1.0/users?$top=100", token).json()[
        "@odata.nextLink"].split("$skiptoken=")[1], token).status_code == 200   # /users page 2: not matched
    first = get(sbx, "/v1.0/users/delta?$select=id", token).json()
    assert get(sbx, first["@odata.nextLink"], token).status_code == 503
    second = get(sbx, first["@odata.nextLink"], token).json()
    third = get(sbx, second["@odata.nextLink"], token).json()
    assert third["value"] == [{"displayName": "no id"}] and "@odata.deltaLink" in third
    assert rule.fired == 1 and page_value.fired == 1
    log = [(r.path, r.page, r.status) for r in sbx.requests.entries("graph")]
    assert log == [("/v1.0/users", 1, 200), ("/v1.0/users", 2, 200), ("/v1.0/users/delta", 1, 200),
                   ("/v1.0/users/delta", 2, 503), ("/v1.0/users/delta", 2, 200), ("/v1.0/users/delta", 3, 200)]
    new = sbx.directory.add()  # (a change of displayName would not show: the round tracks $select=id only)
    sbx.faults.add("graph", path_contains="/users/delta", page=1, repeat_user=3, count=1)
    changes = get(sbx, third["@odata.deltaLink"], token).json()["value"]
    assert changes == [{"id": user_id(3)}, {"id": new}]
    assert sbx.requests.entries("graph")[-1].page == 1
    sbx.faults.add("graph", path_contains="/users/delta", page=2, pad_bytes=5000, chunked=True, count=1)
    padded = get(sbx, first["@odata.nextLink"], token)
    assert "Content-Length" not in padded.headers and padded.json()["value"] == second["value"]
    assert len(padded.content) > 5000


def test_random_changes_then_a_delta_round_over_http(sbx, token):
    sbx.users = 3_000
    state: dict[str, dict] = {}
    items, _, link = delta_round(sbx, token, f"/v1.0/users/delta?$select={','.join(PROPS)}", "odata.maxpagesize=200")
    merge(state, items)
    assert full(state, PROPS) == expected(sbx.directory, PROPS)
    before = sbx.directory.version
    sbx.directory.random_changes(random.Random(11), 300)
    for prefer, repeats in ((["odata.maxpagesize=200"], False), (["odata.maxpagesize=50", "return=minimal"], True)):
        sbx.graph.delta_repeats = repeats
        after = {uid: dict(v) for uid, v in state.items()}
        changes, _, _ = delta_round(sbx, token, link, prefer)
        assert len(changes) > 100 and len(changes) == sbx.directory.change_count(
            before, sbx.directory.version, repeats, PROPS)
        merge(after, changes)
        assert full(after, PROPS) == expected(sbx.directory, PROPS)
    assert list(full(after, PROPS).values()) != list(sbx.directory.users(PROPS))  # order: /users has its own
