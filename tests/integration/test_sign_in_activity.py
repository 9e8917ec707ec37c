"""signInActivity: Graph serves it only with AuditLog.Read.All and an Entra ID P1/P2 licence; so does the sandbox,
and the export's one error line names the permission, the licence and USER_PROPERTIES."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from graph_export import GraphError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB

from .helpers import REPO, blob_names, published, read_export, read_json

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
PROPERTIES = "id,displayName,signInActivity"


@pytest.fixture
def sign_in_env(export_env, monkeypatch):
    monkeypatch.setenv("USER_PROPERTIES", PROPERTIES)
    return export_env


def test_without_audit_log_read_all_graph_refuses_and_the_line_says_what_to_grant(sign_in_env, sandbox):
    with pytest.raises(GraphError) as info:  # the app has User.Read.All only, as deploy.sh grants by default
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "HTTP 403 (Authentication_MSGraphPermissionMissing" in message
    assert "AuditLog.Read.All" in message and "P1 or P2" in message and "USER_PROPERTIES" in message
    assert "b0afded3-3588-46d8-8b3d-9842eff778da=Role" in message  # the application role to add
    assert blob_names(sign_in_env) == []
    done = subprocess.run([sys.executable, "-m", "graph_export", "run", "--slot", "2026-03-07T02:00:00Z"], cwd=REPO,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: Graph failed listing users on page 1 with HTTP 403 "
                           "(Authentication_MSGraphPermissionMissing: Calling principal does not have required MSGraph "
                           "permissions AuditLog.Read.All): USER_PROPERTIES selects signInActivity"), line


def test_with_audit_log_read_all_it_is_exported(sign_in_env, sandbox):
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    summary = run_export(load_settings(), SLOT)
    users, _ = read_export(sign_in_env, summary.blob)
    assert len(users) == summary.users == sandbox.graph.users
    assert all(list(user) == ["id", "displayName", "signInActivity"] for user in users)


def test_a_tenant_without_a_premium_licence_is_told_so(sign_in_env, sandbox):
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    sandbox.graph.premium_licence = False
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "HTTP 403 (Authentication_RequestFromNonPremiumTenantOrB2CTenant" in message
    assert "Entra ID P1 or P2 licence" in message and "USER_PROPERTIES" in message


# --- delta mode: users/delta does not track it, so each slot reads it for every user beside the changes ------

def _delta_slot(n: int):
    app_clients.cache_clear()
    return run_export(load_settings(), SLOT + timedelta(days=n))


def _sign_in(day: int) -> dict:
    at = f"2026-03-{day:02d}T08:00:00Z"
    return {"lastSignInDateTime": at, "lastSignInRequestId": f"req-{day}", "lastNonInteractiveSignInDateTime": at,
            "lastNonInteractiveSignInRequestId": f"nreq-{day}", "lastSuccessfulSignInDateTime": at,
            "lastSuccessfulSignInRequestId": f"sreq-{day}"}


def test_in_delta_mode_every_users_sign_in_activity_is_as_of_the_slot(sign_in_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    d = sandbox.directory
    d.update(d.id_of(1), signInActivity=_sign_in(6))
    assert _delta_slot(0).mode == "full"
    # Sign-ins change no user in users/delta; a rename does.
    d.update(d.id_of(1), signInActivity=_sign_in(7))
    d.update(d.id_of(2), signInActivity=_sign_in(7))
    d.update(d.id_of(3), displayName="Renamed")
    new = d.add(displayName="New Hire", signInActivity=_sign_in(7))
    sandbox.requests.clear()
    summary = _delta_slot(1)
    assert summary.mode == "delta"
    manifest, users = published(sign_in_env)
    by_id = {u["id"]: u for u in users}
    expected = {u["id"]: {"id": u["id"], "displayName": u["displayName"], "signInActivity": u["signInActivity"]}
                for u in sandbox.expected_users(PROPERTIES.split(","))}
    assert by_id == expected  # what a full export would publish now, sign-ins and all
    assert by_id[d.id_of(1)]["signInActivity"] == _sign_in(7) == by_id[new]["signInActivity"]
    assert manifest["delta"]["updated"] == 1 and manifest["delta"]["added"] == 1
    listed = [r for r in sandbox.requests.entries("graph") if r.path == "/v1.0/users"]
    assert len(listed) == -(-sandbox.graph.users // 500)  # the sign-in read: 500 users a page


def test_in_delta_mode_a_missing_audit_log_permission_is_one_line_and_nothing_is_published(sign_in_env, sandbox,
                                                                                           monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    _delta_slot(0)
    before = read_json(sign_in_env, LATEST_BLOB)
    sandbox.entra.set_roles(["User.Read.All"])
    with pytest.raises(GraphError) as info:
        _delta_slot(1)
    message = str(info.value)
    assert "\n" not in message and "AuditLog.Read.All" in message and "P1 or P2" in message
    assert read_json(sign_in_env, LATEST_BLOB) == before


def test_in_delta_mode_drift_is_measured_without_sign_in_activity(sign_in_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    d = sandbox.directory
    _delta_slot(0)
    d.update(d.id_of(1), signInActivity=_sign_in(8))  # not in the change feed: no drift for it
    d.update(d.id_of(2), displayName="Renamed")
    monkeypatch.setenv("FULL_SYNC_EVERY_DAYS", "0")
    summary = _delta_slot(1)
    manifest, users = published(sign_in_env)
    assert summary.mode == "full" and manifest["drift"] == 0
    assert {u["id"]: u for u in users}[d.id_of(1)]["signInActivity"] == _sign_in(8)


@pytest.mark.parametrize("fault, says", [({"skip_next": True}, "lacked 500 users of the snapshot"),
                                         ({"repeat_user": 7}, "listed a user twice")],
                         ids=["a listing page lost", "a user listed twice"])
def test_in_delta_mode_a_sign_in_listing_graph_got_wrong_publishes_nothing(sign_in_env, sandbox, monkeypatch, fault,
                                                                           says):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    sandbox.entra.set_roles(["User.Read.All", "AuditLog.Read.All"])
    _delta_slot(0)
    before = read_json(sign_in_env, LATEST_BLOB)
    sandbox.directory.update(sandbox.directory.id_of(3), displayName="Renamed")
    # The delta slot's only paged /users request is the sign-in listing (500 a page): its page 3.
    sandbox.faults.add("graph", path_contains="/v1.0/users", page=3, count=1, **fault)
    with pytest.raises(GraphError, match=says):
        _delta_slot(1)
    assert read_json(sign_in_env, LATEST_BLOB) == before
