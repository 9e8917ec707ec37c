"""Fixtures shared by the layers that use sockets: Azurite once per session, a fresh sandbox tenant per test.

Everything runs over real sockets on 127.0.0.1: Azurite speaks the Blob protocol, the sandbox speaks
Entra ID, managed identity, Key Vault and Graph over HTTPS with a CA generated for the test run.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB
from graph_export.settings import SETTINGS
from sandbox import Sandbox
from sandbox.azurite import Azurite
from tests.sandbox.tls_listener import UntrustedTls

REPO = Path(__file__).resolve().parents[1]
TEST_USERS = 2_500

# Variables the export (or the libraries under it) read; cleared so the machine's own values never leak in.
_AMBIENT = {s.name for s in SETTINGS} | {
    "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
}


@pytest.fixture(autouse=True)
def logging_as_it_was():
    """cli.main sets logger levels and handlers for the process (as a program's entry point should); a
    test that calls it in-process must not leave them to the tests after it."""
    loggers = [logging.getLogger(name) for name in ("", "graph_export", "urllib3", "requests", "azure", "msal",
                                                    "azure.functions", "opentelemetry")]
    levels, handlers = [lg.level for lg in loggers], list(logging.getLogger().handlers)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    logging.getLogger().handlers[:] = handlers


@pytest.fixture
def untrusted(tmp_path, monkeypatch):
    """A TLS listener whose certificate this machine does not trust (REQUESTS_CA_BUNDLE is another CA)."""
    listener = UntrustedTls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(listener.other_ca))
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    server = Azurite(tmp_path_factory.mktemp("azurite"), REPO)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(tmp_path, request):
    """A fresh tenant per test; a module sets SANDBOX_USERS when it needs a bigger one."""
    tenant = Sandbox(users=getattr(request.module, "SANDBOX_USERS", TEST_USERS), workdir=tmp_path / "sandbox")
    tenant.start()
    yield tenant
    tenant.stop()


@pytest.fixture
def export_env(sandbox, azurite, monkeypatch, request):
    """The environment a deployed function would have, pointing at the sandbox and Azurite.

    Afterwards every manifest and ``users/latest.json`` the test left in its container must match the
    published JSON Schemas (schemas/), unless the test is marked ``writes_invalid_records``.
    """
    for name in _AMBIENT & set(os.environ):
        monkeypatch.delenv(name)
    env = {
        **sandbox.settings,
        "EXPORT_STORAGE": azurite.connection_string,
        "EXPORT_CONTAINER": f"test-{uuid.uuid4().hex[:12]}",
        "RETRY_BACKOFF_BASE_SECONDS": "0.01",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    app_clients.cache_clear()
    if request.node.get_closest_marker("writes_invalid_records") is None:
        # A test may have moved the export elsewhere (monkeypatch, still in force here) or to a dead port.
        _check_published_records([(os.environ.get("EXPORT_STORAGE"), os.environ.get("EXPORT_CONTAINER")),
                                  (env["EXPORT_STORAGE"], env["EXPORT_CONTAINER"])])


def _schema_validator(name: str):
    import jsonschema

    schema = json.loads((REPO / "schemas" / name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check_published_records(targets: list[tuple[str | None, str | None]]) -> None:
    """Validate every ``*.manifest.json`` (format 2: the export writes no other) and ``users/latest.json``
    in each reachable (connection string, container); storage that is unreachable or not set is skipped."""
    validators = {"manifest": _schema_validator("manifest.schema.json"),
                  "latest": _schema_validator("latest.schema.json")}
    problems = []
    for connection_string, name in dict.fromkeys(targets):
        if not connection_string or not name:
            continue
        try:
            container = ContainerClient.from_connection_string(connection_string, name, retry_total=0,
                                                               connection_timeout=2, read_timeout=10)
            records = [b.name for b in container.list_blobs()
                       if b.name.endswith(".manifest.json") or b.name == LATEST_BLOB] if container.exists() else []
        except (AzureError, ValueError):  # a dead port, a deliberately broken setting: nothing to check
            continue
        for blob in records:
            kind = "latest" if blob == LATEST_BLOB else "manifest"
            try:
                document = json.loads(container.download_blob(blob).readall())
            except AzureError:  # gone since it was listed
                continue
            except ValueError as why:
                problems.append(f"{name}/{blob}: not JSON ({why})")
                continue
            for error in validators[kind].iter_errors(document):
                where = "/".join(str(p) for p in error.absolute_path) or "(document)"
                problems.append(f"{name}/{blob}: {where}: {error.message}")
    if problems:
        pytest.fail("Published records do not match schemas/ (a field changed without a schema change? or mark "
                    "the test writes_invalid_records if it wrote them itself):\n  " + "\n  ".join(problems),
                    pytrace=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "writes_invalid_records: the test writes a manifest or users/latest.json the export did not "
        "(export_env then skips checking its container against schemas/)")


#: The layers, one folder each under tests/ (docs/testing.md); each test is marked with its folder's name.
LAYERS = ("unit", "storage", "sandbox", "integration", "infra", "engine")


def pytest_collection_modifyitems(items):
    """Each test is marked with its layer, the folder under tests/ it is in: ``-m unit``, ``-m "not infra"``..."""
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(REPO / "tests").parts
        if len(parts) < 2 or parts[0] not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one layer's folder, tests/<layer>/ with "
                                    f"<layer> one of {', '.join(LAYERS)} (docs/testing.md)")
        item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture
def clean_environment(monkeypatch):
    """No setting from this machine's environment, and the loggers as they were afterwards (cli.main sets them)."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri"):
        monkeypatch.delenv(name, raising=False)
    loggers = [logging.getLogger(name) for name in ("", "graph_export", "urllib3", "requests", "azure", "msal")]
    levels, handlers = [lg.level for lg in loggers], list(logging.getLogger().handlers)
    yield monkeypatch
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    logging.getLogger().handlers[:] = handlers
