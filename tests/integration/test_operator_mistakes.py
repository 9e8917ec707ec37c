"""Operator mistakes that used to get the wrong answer, through the CLI against the sandbox and Azurite.

An endpoint whose TLS certificate this machine does not trust (Key Vault, Entra ID, Graph, storage),
an account key or SAS that storage refuses, a GRAPH_ENDPOINT Entra ID does not know, and storage that
nothing listens on: each ends in one line that says what it is and which setting to fix, within
seconds. A storage account that is slow but alive keeps its retries, and says that it is waiting.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from graph_export import load_settings, run_export
from graph_export.clients import app_clients
from sandbox.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from sandbox.blobproxy import BlobFaultProxy
from sandbox.ca import generate_tls
from sandbox.server import ServiceServer, tls_context

from .helpers import REPO, blob_names
from .test_sign_in import free_port, run_cli

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
#: The default RETRY_BACKOFF_BASE_SECONDS: what production waits between retries.
PRODUCTION_BACKOFF = "1"


def the_error_line(result, exit_code: int, *secrets: str) -> str:
    """The run's one ``error:`` line; nothing else on stderr but warnings, no traceback, no secret."""
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "unexpected" not in errors[0] and "StorageErrorCode" not in result.stderr
    for secret in secrets:
        assert secret not in result.stderr + result.stdout
    return errors[0]


# --- item 8: a certificate this machine does not trust ---------------------------------------------

@pytest.fixture
def other_ca(tmp_path):
    """A CA and server certificate the sandbox's clients do not trust (nor the sandbox's server this CA)."""
    return generate_tls(tmp_path / "other-ca")


@pytest.fixture
def served_elsewhere(sandbox, other_ca):
    """Serve one of the sandbox's services on another port with a certificate from ``other_ca``."""
    servers = []

    def serve(service: str) -> str:
        server = ServiceServer(getattr(sandbox, service), request_log=sandbox.requests, faults=sandbox.faults,
                               ssl_context=tls_context(other_ca.cert_file, other_ca.key_file))
        servers.append(server.start())
        return server.base_url

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture
def untrusted_storage(tmp_path, other_ca):
    """Azurite over HTTPS with a certificate from ``other_ca``."""
    with Azurite(tmp_path / "azurite-tls", REPO, tls=other_ca) as server:
        yield server


@pytest.mark.parametrize("service", ["keyvault", "entra", "graph", "storage"])
def test_an_untrusted_certificate_is_named_with_its_host_and_what_to_check(
        export_env, sandbox, other_ca, served_elsewhere, request, service):
    env = dict(os.environ, RETRY_BACKOFF_BASE_SECONDS=PRODUCTION_BACKOFF)
    if service == "keyvault":  # first in line after storage: trust another CA than the sandbox's
        env.update(REQUESTS_CA_BUNDLE=str(other_ca.ca_file), SSL_CERT_FILE=str(other_ca.ca_file))
        origin, setting, exit_code, what = sandbox.url("keyvault"), "KEY_VAULT_URL", 3, "Key Vault"
    elif service == "entra":
        origin = env["AUTHORITY_HOST"] = served_elsewhere("entra")
        setting, exit_code, what = "AUTHORITY_HOST", 3, "The sign-in service"
    elif service == "graph":
        origin = env["GRAPH_ENDPOINT"] = served_elsewhere("graph")
        sandbox.resources.add("graph", origin)  # Entra issues tokens for it: only the certificate is wrong
        setting, exit_code, what = "GRAPH_ENDPOINT", 4, "Graph"
    else:
        storage = request.getfixturevalue("untrusted_storage")
        env["EXPORT_STORAGE"] = storage.connection_string
        origin, setting, exit_code, what = f"https://127.0.0.1:{storage.port}", "EXPORT_STORAGE", 5, "Export storage"
    result, elapsed = run_cli(env)
    line = the_error_line(result, exit_code, sandbox.client_secret, ACCOUNT_KEY, "eyJ")
    assert line.startswith(f"error: {what} at {origin} failed TLS certificate verification (")
    assert f"check {setting}" in line and "REQUESTS_CA_BUNDLE" in line and "TLS-inspecting proxy" in line
    assert "not retried" in line and "unreachable" not in line and "Could not reach" not in line
    assert elapsed < 10, f"took {elapsed:.1f} s"  # the production backoff, and no retry
    assert blob_names(export_env) == []


# --- item 9: an account key or SAS that storage refuses ---------------------------------------------

WRONG_KEY = base64.b64encode(b"a key of the right shape that is not the account's, 64 bytes long").decode()


@pytest.mark.parametrize("kind", ["key", "sas"])
def test_a_refused_account_key_or_sas_names_export_storage_and_the_fix(export_env, azurite, sandbox, kind):
    if kind == "key":
        storage = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={WRONG_KEY};"
                   f"BlobEndpoint={azurite.blob_endpoint};")
        secret = WRONG_KEY
    else:  # expired an hour ago
        secret = generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(container=True, object=True),
                                      AccountSasPermissions(read=True, write=True, create=True, list=True),
                                      expiry=datetime.now(timezone.utc) - timedelta(hours=1))
        storage = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={secret}"
    result, elapsed = run_cli(dict(os.environ, EXPORT_STORAGE=storage))
    line = the_error_line(result, 5, secret, sandbox.client_secret)
    refused = "the account key" if kind == "key" else "the SAS"
    assert line.startswith(f"error: Export storage refused {refused} in EXPORT_STORAGE (AuthorizationFailure) "
                           f"while opening container '{export_env['EXPORT_CONTAINER']}'")
    assert "Storage Blob Data Contributor" not in line and "sig=" not in line and "\n" not in line
    assert ("show-connection-string" if kind == "key" else "generate-sas") in line
    assert elapsed < 20


# --- item 10: a GRAPH_ENDPOINT Entra ID does not know ----------------------------------------------

def test_a_graph_endpoint_entra_does_not_know_names_graph_endpoint(export_env, sandbox):
    result, elapsed = run_cli(dict(os.environ, GRAPH_ENDPOINT="https://graph.microsft.com"))  # a typo
    line = the_error_line(result, 3, sandbox.client_secret, "eyJ")
    assert "failed with AADSTS500011 (invalid_resource)" in line
    assert "no resource named https://graph.microsft.com" in line and "set GRAPH_ENDPOINT" in line
    assert "The resource principal named" not in line  # Entra's long text, once cut mid-word, is not needed
    assert elapsed < 20 and blob_names(export_env) == []


# --- item 11: storage nothing listens on, and storage that is slow but alive ------------------------

@pytest.mark.parametrize("endpoint, why", [
    (f"http://127.0.0.1:{free_port()}/{ACCOUNT}", "the connection was refused"),
    (f"http://export-storage.invalid/{ACCOUNT}", "its name does not resolve"),
], ids=["refused", "unresolved"])  # ids without the port: the same on every xdist worker
def test_storage_nothing_listens_on_fails_within_seconds(export_env, sandbox, endpoint, why):
    storage = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={endpoint};"
    result, elapsed = run_cli(dict(os.environ, EXPORT_STORAGE=storage, RETRY_BACKOFF_BASE_SECONDS=PRODUCTION_BACKOFF))
    line = the_error_line(result, 5, ACCOUNT_KEY)
    assert f"Export storage at {endpoint.rsplit('/', 1)[0]} is unreachable ({why}) while opening container" in line
    assert "EXPORT_STORAGE" in line
    assert elapsed < 10, f"took {elapsed:.1f} s"  # 43 s of retries before


@pytest.fixture
def blob_proxy(azurite, monkeypatch):
    with BlobFaultProxy(azurite) as proxy:
        monkeypatch.setenv("EXPORT_STORAGE", proxy.connection_string)
        yield proxy


def test_storage_that_is_slow_but_alive_keeps_its_retries_and_says_it_is_waiting(export_env, blob_proxy):
    # The production backoff: the first retry of storage waits 3-5 s, past "a few seconds".
    rule = blob_proxy.add("503", query_contains="restype=container", count=1)
    started = time.monotonic()
    result, _ = run_cli(dict(os.environ, RETRY_BACKOFF_BASE_SECONDS=PRODUCTION_BACKOFF))
    assert result.returncode == 0, result.stderr
    assert rule.fired == 1 and time.monotonic() - started >= 3
    waits = [line for line in result.stderr.splitlines() if "WARNING graph_export" in line]
    assert len(waits) == 1, result.stderr
    assert f"Export storage at http://127.0.0.1:{blob_proxy.port} answered HTTP 503; retry 1 in " in waits[0]


def test_every_service_that_keeps_a_run_waiting_says_so(export_env, sandbox, blob_proxy, monkeypatch, caplog):
    from graph_export import retrying

    monkeypatch.setattr(retrying, "PROGRESS_AFTER_S", 0.0)  # "a few seconds", shortened: backoff is 0.01 s here
    app_clients.cache_clear()
    storage = blob_proxy.add("503", query_contains="restype=container", count=3)
    vault = sandbox.faults.add("keyvault", status=503, count=2)
    graph = sandbox.faults.add("graph", page=1, status=503, count=2)
    caplog.set_level(logging.WARNING, logger="graph_export")
    summary = run_export(load_settings(), SLOT)
    assert summary.status == "succeeded" and summary.users == sandbox.users
    assert (storage.fired, vault.fired, graph.fired) == (3, 2, 2)
    waits = [r.getMessage() for r in caplog.records if r.name == "graph_export.retrying"]
    for service, origin in (("Export storage", f"http://127.0.0.1:{blob_proxy.port}"),
                            ("Key Vault", sandbox.url("keyvault")), ("Graph", sandbox.url("graph"))):
        assert any(w.startswith(f"{service} at {origin} answered HTTP 503; retry ") for w in waits), waits
