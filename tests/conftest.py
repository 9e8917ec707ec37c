"""Fixtures shared by the integration tests: Azurite once per session, a fresh sandbox tenant per test.

Everything runs over real sockets on 127.0.0.1: Azurite speaks the Blob protocol, the sandbox speaks
Entra ID, managed identity, Key Vault and Graph over HTTPS with a CA generated for the test run.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from graph_export.clients import warm_clients
from graph_export.settings import SETTINGS, StorageTarget
from graph_export.storage import open_container
from sandbox import Sandbox
from sandbox.azurite import Azurite

REPO = Path(__file__).resolve().parents[1]
TEST_USERS = 2_500

# Variables the export (or the libraries under it) read; cleared so the machine's own values never leak in.
_AMBIENT = {s.name for s in SETTINGS} | {
    "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
}


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    server = Azurite(tmp_path_factory.mktemp("azurite"), REPO)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def blob_container(azurite):
    """A fresh, empty container in Azurite, opened the way the export opens its own."""
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    return open_container(target, f"t-{uuid.uuid4().hex[:12]}", None, 0.01)


@pytest.fixture
def sandbox(tmp_path, request):
    """A fresh tenant per test; a module sets SANDBOX_USERS when it needs a bigger one."""
    tenant = Sandbox(users=getattr(request.module, "SANDBOX_USERS", TEST_USERS), workdir=tmp_path / "sandbox")
    tenant.start()
    yield tenant
    tenant.stop()


@pytest.fixture
def export_env(sandbox, azurite, monkeypatch):
    """The environment a deployed function would have, pointing at the sandbox and Azurite."""
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
    warm_clients.cache_clear()


def pytest_collection_modifyitems(items):
    """Everything under tests/integration and tests/infra is the integration layer."""
    for item in items:
        layer = Path(str(item.fspath)).resolve().relative_to(REPO / "tests").parts[0]
        if layer in ("integration", "infra"):
            item.add_marker(pytest.mark.integration)
