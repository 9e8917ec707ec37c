"""The sandbox's parts that need no server: its fault rules (from JSON and the environment) and its synthetic
users. The sandbox over real sockets: tests/sandbox/test_sandbox.py.
"""

from __future__ import annotations

import json
import re

import pytest

from sandbox.faults import FaultPlan
from sandbox.tenant import DEFAULT_PROPERTIES, USER_EXTENSIONS, USER_PROPERTIES, make_user, select


def test_fault_rules_from_json_and_env(tmp_path):
    plan = FaultPlan()
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"service": "graph", "from_page": 2, "status": 503, "count": None},
                                {"service": "entra", "path_contains": "/token", "drop": True, "count": 1}]))
    rules = plan.load_env({"SANDBOX_FAULTS": str(path)})
    assert [r.describe() for r in rules] == ["graph from_page=2 -> 503", "entra path=/token -> drop"]
    assert plan.take("graph", 1, "/v1.0/users", page=1) is None
    assert all(plan.take("graph", n, "/v1.0/users", page=p) is rules[0] for n, p in ((2, 2), (3, 2), (4, 7)))
    assert plan.take("entra", 1, "/t/v2.0/.well-known/openid-configuration") is None
    assert plan.take("entra", 2, "/t/oauth2/v2.0/token") is rules[1]
    assert plan.take("entra", 3, "/t/oauth2/v2.0/token") is None  # count=1: fired already
    inline = FaultPlan().load_env({"SANDBOX_FAULTS": '{"service": "keyvault", "request": 1, "delay_s": 0.5}'})
    assert inline[0].action == "delay"
    with pytest.raises(ValueError):
        FaultPlan().add("graph", status=503, drop=True)
    with pytest.raises(ValueError):
        FaultPlan().load([{"service": "graph", "status": 503, "colour": "red"}])


def test_make_user_is_deterministic_and_realistic():
    users = [make_user(i) for i in range(1_000)]
    assert users == [make_user(i) for i in range(1_000)]
    assert all(list(u)[:len(USER_PROPERTIES)] == list(USER_PROPERTIES) for u in users)
    # then the manager's id (most members have one) and the extensions (a quarter of the members)
    assert {p for u in users for p in list(u)[len(USER_PROPERTIES):]} == {"manager", *USER_EXTENSIONS}
    assert len({u["id"] for u in users}) == len({u["userPrincipalName"] for u in users}) == 1_000
    guests = [u for u in users if u["userType"] == "Guest"]
    assert len(guests) == 100
    guest_upn = re.compile(r"[a-z.0-9]+_[a-z.]+#EXT#@contoso\.onmicrosoft\.com")
    assert all(guest_upn.fullmatch(g["userPrincipalName"]) for g in guests)
    assert all(not g["mail"].endswith("contoso.onmicrosoft.com") for g in guests)
    assert sum(not u["accountEnabled"] for u in users) == 50
    names = " ".join(u["displayName"] for u in users)
    assert all(n in names for n in ("Zoë", "Łukasz", "José", "李", "Müller"))
    for prop in ("mail", "jobTitle", "department", "mobilePhone", "onPremisesSyncEnabled"):
        assert any(u[prop] is None for u in users) and any(u[prop] is not None for u in users), prop
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", u["createdDateTime"]) for u in users)
    assert all(isinstance(u["businessPhones"], list) for u in users)
    assert list(select(users[0], ["mail", "id"])) == ["mail", "id"]
    assert list(select(users[0])) == list(DEFAULT_PROPERTIES)
