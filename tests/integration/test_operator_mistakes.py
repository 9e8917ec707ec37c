"""Operator mistakes that used to get the wrong answer, through the CLI against the sandbox and Azurite.

An endpoint whose TLS certificate this machine does not trust (Key Vault, Entra ID, Graph, storage),
an account key or SAS that storage refuses, a GRAPH_ENDPOINT Entra ID does not know, and storage that
nothing listens on: each ends in one line that says what it is and which setting to fix, within
seconds. A storage account that is slow but alive keeps its retries, and says that it is waiting.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from sandbox.azurite import ACCOUNT, ACCOUNT_KEY

from .helpers import blob_names
from .test_sign_in import run_cli

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
