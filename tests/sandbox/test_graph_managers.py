"""The sandbox Graph's managers as Microsoft Graph serves them: ``$expand=manager`` on /users, at most 100
users a page whatever ``$top`` asks, and ``manager@delta`` on users/delta when ``$select`` names it."""

from __future__ import annotations

import pytest
import requests

from sandbox import Sandbox
from sandbox.tenant import make_user


@pytest.fixture
def sbx(tmp_path):
    with Sandbox(users=300, workdir=tmp_path / "sandbox") as sb:
        yield sb


def get(sb: Sandbox, url: str, prefer: str | None = None) -> requests.Response:
    token = sb.issue_token("graph")
    url = url if url.startswith("https://") else sb.url("graph") + url
    headers = {"Authorization": f"Bearer {token}", **({"Prefer": prefer} if prefer else {})}
    return requests.get(url, headers=headers, verify=str(sb.ca_file), timeout=10)


def test_expanded_pages_hold_100_users_each_with_its_manager_reference(sbx):
    body = get(sbx, "/v1.0/users?$select=id,displayName&$expand=manager($select=id)&$top=999").json()
    users = body["value"]
    assert len(users) == 100 and "$expand=manager" in body["@odata.nextLink"]
    for i, user in enumerate(users):
        manager = make_user(i).get("manager")
        assert user.get("manager") == (None if manager is None else
                                       {"@odata.type": "#microsoft.graph.user", "id": manager})
    assert sum("manager" in u for u in users) > 50
    rest = get(sbx, body["@odata.nextLink"]).json()
    assert len(rest["value"]) == 100 and rest["value"][0]["id"] == make_user(100)["id"]


@pytest.mark.parametrize("query", ["$select=id,manager", "$select=id&$expand=memberOf",
                                   "$select=id&$expand=manager($select=displayName)"])
def test_the_manager_is_not_selectable_and_nothing_else_expands(sbx, query):
    assert get(sbx, f"/v1.0/users?{query}").status_code == 400


def test_delta_reports_a_manager_assigned_changed_and_removed_with_manager_delta(sbx):
    d = sbx.directory
    first = get(sbx, "/v1.0/users/delta?$select=id,displayName,manager", "odata.maxpagesize=200").json()
    assert first["value"][10]["manager@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": d.id_of(1)}]
    assert "manager" not in first["value"][10] and "manager@delta" not in first["value"][0]
    link = first["@odata.nextLink"]
    while "@odata.deltaLink" not in (page := get(sbx, link, "odata.maxpagesize=200").json()):
        link = page["@odata.nextLink"]
    link = page["@odata.deltaLink"]
    d.update(d.id_of(10), manager=d.id_of(2))   # changed
    d.update(d.id_of(11), manager=None)          # removed
    d.update(d.id_of(9), manager=d.id_of(3))     # assigned (user 9 had none)
    d.update(d.id_of(12), displayName="Renamed")  # its manager unchanged
    items = {i["id"]: i for i in get(sbx, link, "return=minimal").json()["value"]}
    ref = {"@odata.type": "#microsoft.graph.user"}
    assert items[d.id_of(10)]["manager@delta"] == [{**ref, "id": d.id_of(1), "@removed": {"reason": "deleted"}},
                                                   {**ref, "id": d.id_of(2)}]
    assert items[d.id_of(11)]["manager@delta"] == [{**ref, "id": d.id_of(1), "@removed": {"reason": "deleted"}}]
    assert items[d.id_of(9)]["manager@delta"] == [{**ref, "id": d.id_of(3)}]
    assert "manager@delta" not in items[d.id_of(12)]  # minimal: only what changed
    full = {i["id"]: i for i in get(sbx, link).json()["value"]}
    assert full[d.id_of(12)]["manager@delta"] == [{**ref, "id": d.id_of(1)}]  # default: the current one


def test_deleting_a_manager_removes_it_from_each_report(sbx):
    d = sbx.directory
    reports = [j for j in range(16, 24) if make_user(j).get("manager") == d.id_of(2)]
    assert len(reports) >= 5
    d.soft_delete(d.id_of(2))
    assert all(d.get(d.id_of(j))["manager"] is None for j in reports)
    d.restore(d.id_of(2))
    assert all(d.get(d.id_of(j))["manager"] is None for j in reports)  # a restore does not bring links back
    with pytest.raises(ValueError, match="manager"):
        d.update(d.id_of(20), manager=d.id_of(20))
