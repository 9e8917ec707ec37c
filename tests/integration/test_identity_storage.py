"""Identity-based export storage, the way it runs in Azure: no key, a managed identity token.

Azurite serves HTTPS with the sandbox's certificate and accepts OAuth bearer tokens; the export
reaches it through EXPORT_STORAGE__blobServiceUri and DefaultAzureCredential (managed identity).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pytest
from azure.storage.blob import ContainerClient

from graph_export import StorageError, load_settings, run_export
from graph_export.naming import LATEST_BLOB
from sandbox.azurite import Azurite

from .helpers import REPO


@pytest.fixture
def oauth_azurite(sandbox, tmp_path):
    server = Azurite(tmp_path / "azurite-oauth", REPO, tls=sandbox.tls)
    server.start()
    yield server
    server.stop()


def test_export_with_a_managed_identity_and_no_storage_key(export_env, sandbox, oauth_azurite, monkeypatch):
    monkeypatch.delenv("EXPORT_STORAGE")
    monkeypatch.setenv("EXPORT_STORAGE__blobServiceUri", oauth_azurite.blob_endpoint)
    summary = run_export(load_settings(), datetime(2026, 3, 7, 2, tzinfo=timezone.utc))
    assert summary.url.startswith("https://127.0.0.1:")

    reader = ContainerClient.from_connection_string(oauth_azurite.connection_string, export_env["EXPORT_CONTAINER"])
    data = reader.download_blob(summary.blob).readall()
    assert gzip.decompress(data).count(b"\n") == 2_500
    assert json.loads(reader.download_blob(LATEST_BLOB).readall())["blob"] == summary.blob
    storage_tokens = [r for r in sandbox.requests if r.service == "identity" and r.status == 200]
    assert len(storage_tokens) >= 2  # one for Key Vault, one for Storage: both through the managed identity


def test_an_identity_without_tokens_is_told_to_enable_managed_identity(export_env, sandbox, oauth_azurite,
                                                                         monkeypatch):
    monkeypatch.delenv("EXPORT_STORAGE")
    monkeypatch.setenv("EXPORT_STORAGE__blobServiceUri", oauth_azurite.blob_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-identity-header")  # the identity cannot get tokens
    with pytest.raises(StorageError, match="Could not get a token for the export storage.*managed identity"):
        run_export(load_settings(), datetime(2026, 3, 7, 2, tzinfo=timezone.utc))
