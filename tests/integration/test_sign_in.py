"""Getting the secret and signing in, against the sandbox: misconfiguration ends in one AuthError line.

Two kinds of mistakes are covered. A sign-in host or tenant that is wrong (unknown tenant, a host that
is not Entra ID or answers something else than Entra's documents, nothing listening) must end in
exit 3 with one line naming TENANT_ID or AUTHORITY_HOST, within seconds and without library warnings. And a host in KEY_VAULT_URL must never
choose the audience of the managed identity token it receives, whatever its 401 challenge asks for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests
from azure.keyvault.secrets._shared import http_challenge_cache

from graph_export import load_settings, run_export
from sandbox import GRAPH_RESOURCE, STORAGE_RESOURCE
from sandbox.keyvault import VAULT_RESOURCE
from sandbox.tokens import peek_claims

from .helpers import REPO, blob_names

SLOT = datetime(2026, 3, 7, 2, 0, tzinfo=timezone.utc)


def run_cli(env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "graph_export", "run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def free_port() -> int:
    """A loopback port nothing listens on (bound once to pick it, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_auth_error_line(result, elapsed, setting, sandbox, env):
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert setting in errors[0], errors[0]
    assert "unexpected" not in errors[0]
    assert not [line for line in lines if any(w in line for w in ("Traceback", "WARNING", "Retrying"))], \
        result.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert sandbox.client_secret not in result.stdout + result.stderr
    assert "eyJ" not in result.stdout + result.stderr  # no token either
    assert blob_names(env) == []


# --- sign-in misconfiguration ---------------------------------------------------------------------

def test_an_unknown_tenant_names_tenant_id(export_env, sandbox):
    env = dict(os.environ, TENANT_ID=str(uuid.uuid4()))
    result, elapsed = run_cli(env)
    assert_one_auth_error_line(result, elapsed, "TENANT_ID", sandbox, export_env)
    assert "AADSTS90002" in result.stderr


@pytest.mark.parametrize("service", ["graph", "keyvault"])
def test_an_authority_host_that_is_not_entra_names_authority_host(export_env, sandbox, service):
    env = dict(os.environ, AUTHORITY_HOST=sandbox.url(service))
    result, elapsed = run_cli(env)
    assert_one_auth_error_line(result, elapsed, "AUTHORITY_HOST", sandbox, export_env)
    assert sandbox.url(service) in result.stderr


@pytest.mark.parametrize("status, body", [
    (404, "<html><body>Not Found</body></html>"),       # a web server, not Entra
    (200, "<html><body>Welcome</body></html>"),         # a page that is not JSON
    (200, {"issuer": "https://example.com"}),           # JSON, but no endpoints in it
    (200, ["not", "a", "document"]),                    # JSON that is not an object
])
def test_sign_in_metadata_that_is_not_an_openid_configuration_names_authority_host(
        export_env, sandbox, status, body):
    sandbox.faults.add("entra", path_contains="/.well-known/openid-configuration", status=status, body=body,
                       headers={"Content-Type": "text/html" if isinstance(body, str) else "application/json"})
    result, elapsed = run_cli(dict(os.environ))
    assert_one_auth_error_line(result, elapsed, "AUTHORITY_HOST", sandbox, export_env)
    assert f"HTTP {status}" in result.stderr


def test_a_token_endpoint_answering_html_is_one_line(export_env, sandbox):
    # e.g. a proxy or firewall in the way: MSAL itself logs the body with a traceback at ERROR level.
    sandbox.faults.add("entra", path_contains="/oauth2/v2.0/token", status=403,
                       body="<html><body>Access denied by policy</body></html>",
                       headers={"Content-Type": "text/html"})
    result, elapsed = run_cli(dict(os.environ))
    assert_one_auth_error_line(result, elapsed, "AUTHORITY_HOST", sandbox, export_env)
    assert "HTTP 403" in result.stderr and "Access denied" not in result.stderr


def test_an_unreachable_authority_fails_fast_naming_authority_host(export_env, sandbox):
    unreachable = f"https://127.0.0.1:{free_port()}"
    # The default backoff, as in production: connection refused must not be retried for long.
    env = dict(os.environ, AUTHORITY_HOST=unreachable, RETRY_BACKOFF_BASE_SECONDS="1")
    result, elapsed = run_cli(env)
    assert_one_auth_error_line(result, elapsed, "AUTHORITY_HOST", sandbox, export_env)
    assert unreachable in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_a_dropped_sign_in_answer_is_retried_quietly(export_env, sandbox):
    rule = sandbox.faults.add("entra", path_contains="/oauth2/v2.0/token", drop=True, count=1)
    result, _ = run_cli(dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert rule.fired == 1
    assert "Retrying" not in result.stderr and "WARNING" not in result.stderr  # urllib3's warning is debug-only


def test_debug_still_shows_what_the_libraries_said(export_env, sandbox):
    env = dict(os.environ, AUTHORITY_HOST=f"https://127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-m", "graph_export", "run", "--debug"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "DEBUG urllib3" in result.stderr  # library logs are only quiet without --debug
    assert sandbox.client_secret not in result.stderr and "eyJ" not in result.stderr


# --- the vault gets a vault token, whatever its challenge asks for --------------------------------

@pytest.mark.parametrize("challenge", [STORAGE_RESOURCE, GRAPH_RESOURCE, "sandbox-graph"])
def test_a_challenge_for_another_audience_still_gets_only_a_vault_token(export_env, sandbox, challenge, caplog):
    http_challenge_cache.clear()  # process-wide: a port reused from an earlier test would skip the challenge
    resource = sandbox.url("graph") if challenge == "sandbox-graph" else challenge
    sandbox.vault.challenge_resource = resource

    summary = run_export(load_settings(), SLOT)

    assert summary.status == "succeeded" and summary.users == sandbox.users
    challenged = [r for r in sandbox.requests.entries("keyvault") if r.status == 401]
    assert challenged, "the vault's challenge was not exercised"
    assert sandbox.identity.issued == [VAULT_RESOURCE]  # the managed identity never handed out another audience
    assert sandbox.vault.presented_audiences == [VAULT_RESOURCE]
    assert any(resource in r.getMessage() and r.name.startswith("graph_export") for r in caplog.records)
    assert not any(t in caplog.text for t in ("eyJ", sandbox.client_secret))


def test_the_vault_records_the_audience_it_was_shown(sandbox):
    token = sandbox.issue_token(STORAGE_RESOURCE, principal_id=sandbox.principal_id)
    answer = requests.get(f"{sandbox.url('keyvault')}/secrets/{sandbox.secret_name}?api-version=7.5",
                          headers={"Authorization": f"Bearer {token}"}, verify=sandbox.ca_file, timeout=10)
    assert answer.status_code == 401 and "Invalid audience" in answer.text
    assert sandbox.vault.presented_audiences == [peek_claims(token)["aud"]] == [STORAGE_RESOURCE]


@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_redirected_token_request_is_never_followed(export_env, sandbox, status):
    elsewhere = sandbox.url("graph") + "/collect?from=token"
    sandbox.faults.add("entra", status=status, headers={"Location": elsewhere}, path_contains="/token")
    result, elapsed = run_cli(dict(os.environ))
    assert_one_auth_error_line(result, elapsed, "AUTHORITY_HOST", sandbox, export_env)
    assert f"redirect to {sandbox.url('graph')}:" in result.stderr and "/collect" not in result.stderr
    assert [r for r in sandbox.requests.entries("graph")] == []  # the form (and secret) went nowhere else
