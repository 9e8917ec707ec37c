"""signInActivity: Graph serves it only with AuditLog.Read.All and an Entra ID P1/P2 licence; so does the sandbox,
and the export's one error line names the permission, the licence and USER_PROPERTIES."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from graph_export import GraphError, load_settings, run_export

from .helpers import REPO, blob_names, read_export

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
