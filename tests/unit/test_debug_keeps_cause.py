"""``--debug`` keeps what a one-line error (raised ``from None``) leaves out: the underlying exception, at DEBUG.

Each test makes a real function fail and looks at the log twice: at DEBUG a record of ours carries the
original exception (its type named), at INFO nothing is added. Failures come from fake servers behind the
SDKs' own transports (requests adapters), never from replacing our own code; the two whose failures
come from Azurite are in tests/storage/test_debug_keeps_cause.py.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets._shared import http_challenge_cache
from azure.storage.blob import ContainerClient

from graph_export import cli, storage
from graph_export.credentials import make_secret_client, read_client_secret
from graph_export.errors import AuthError, StorageError
from tests.canned import Canned
from tests.logcheck import assert_cause_kept

SIG = "c2VjcmV0LXNpZ25hdHVyZS1vZi10aGUtc2Fz%3D"
SAS = f"sv=2024-11-04&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={SIG}"


# --- storage: the SDK's error behind StorageError -------------------------------------------------------


class FakeStorage(requests.adapters.BaseAdapter):
    """Answers as Azure Storage does with ``status`` and ``code``; or, with ``refuse``, fails to connect as
    requests reports it once urllib3 gives up (the request's path and query in the message)."""

    def __init__(self, status: int = 500, code: str = "InternalError", *, refuse: bool = False) -> None:
        super().__init__()
        self.status, self.code, self.refuse = status, code, refuse

    def send(self, request, **kwargs):
        if self.refuse:
            raise requests.exceptions.ConnectionError(
                f"HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443): Max retries exceeded with url: "
                f"{request.path_url} (Caused by NewConnectionError('Failed to establish a new connection: "
                "[Errno 111] Connection refused'))", request=request)
        response = requests.Response()
        response.status_code, response.url, response.request = self.status, request.url, request
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code><Message>No.</Message></Error>'
        response.raw = io.BytesIO(body.encode())
        response.headers.update({"x-ms-error-code": self.code, "Content-Type": "application/xml"})
        return response

    def close(self) -> None:
        pass


def fake_container(adapter: FakeStorage, credential: str) -> ContainerClient:
    session = requests.Session()
    session.mount("https://", adapter)
    return ContainerClient.from_connection_string(
        f"BlobEndpoint=https://acct.blob.core.windows.net;{credential}", "graph-exports",
        transport=RequestsTransport(session=session, session_owner=False), retry_total=0)


def test_a_storage_failure_keeps_the_sdks_error_at_debug(caplog):
    container = fake_container(FakeStorage(500, "InternalError"), "AccountName=acct;AccountKey=a2V5")

    def fail() -> None:
        with pytest.raises(StorageError, match="HTTP 500 InternalError while reading state/x.json"):
            storage.read_json(container, "state/x.json")

    record, printed = assert_cause_kept(caplog, fail, "graph_export.storage", HttpResponseError)
    assert record.getMessage() == "Export storage failed while reading state/x.json"
    assert "ErrorCode:InternalError" in printed  # what the one line leaves out: the service's answer


def test_a_debug_traceback_of_a_storage_error_holding_the_sas_is_redacted_by_the_clis_handler(caplog):
    container = fake_container(FakeStorage(refuse=True), f"SharedAccessSignature={SAS}")
    caplog.set_level(logging.DEBUG)
    cli._configure_logging(debug=True)  # what `run --debug` sets up: a redacting filter on every root handler
    with pytest.raises(StorageError) as raised:
        storage.read_json(container, "state/x.json")
    assert SIG not in str(raised.value)
    kept = [r for r in caplog.records if r.name == "graph_export.storage" and r.exc_info]
    assert len(kept) == 1 and kept[0].exc_info is not None
    assert isinstance(kept[0].exc_info[1], ServiceRequestError)
    assert f"sig={SIG}" in str(kept[0].exc_info[1])  # the error itself holds the signature ...
    assert "sig=REDACTED" in (kept[0].exc_text or "") and "Max retries exceeded" in caplog.text
    assert SIG not in caplog.text  # ... and nothing printed does


# --- Key Vault: the SDK's error behind AuthError -----------------------------------------------------


class NoCredential:
    def get_token(self, *scopes, **kwargs):  # never called: the vault refuses before asking for a token
        raise AssertionError("unexpected token request")


def refusing_vault(status: int, code: str) -> Canned:
    """Key Vault's ``status`` error document for every request."""
    body = json.dumps({"error": {"code": code, "message": "Not for you."}}).encode()
    return Canned(status, body, {"Content-Type": "application/json"})


@pytest.mark.parametrize("status, code, says", [(403, "Forbidden", "may not read secret 'client-secret'"),
                                                (404, "SecretNotFound", "has no secret 'client-secret'")])
def test_a_key_vault_failure_keeps_the_sdks_error_at_debug(caplog, status, code, says):
    http_challenge_cache.clear()
    session = requests.Session()
    session.mount("https://", refusing_vault(status, code))
    client = make_secret_client("https://kv-export.vault.azure.net", NoCredential(),
                                transport=RequestsTransport(session=session, session_owner=False), retry_total=0)

    def fail() -> None:
        with pytest.raises(AuthError, match=says):
            read_client_secret(client, "client-secret")

    record, printed = assert_cause_kept(caplog, fail, "graph_export.credentials", HttpResponseError)
    assert record.getMessage() == ("Reading the secret 'client-secret' from Key Vault "
                                   "https://kv-export.vault.azure.net failed")
    assert code in printed


# --- the CLI: a settings file that is not JSON ------------------------------------------------------


def test_a_settings_file_that_is_not_json_says_where_only_with_debug(capsys, caplog, tmp_path):
    broken = tmp_path / "local.settings.json"
    broken.write_text('{"Values": {"TENANT_ID": "contoso.onmicrosoft.com",}}')
    caplog.set_level(logging.DEBUG)
    assert cli.main(["run", "--settings", str(broken), "--debug", "--quiet"]) == 2
    kept = [r for r in caplog.records if r.name == "graph_export" and r.levelno == logging.DEBUG and r.exc_info]
    assert len(kept) == 1 and kept[0].exc_info is not None
    assert isinstance(kept[0].exc_info[1], json.JSONDecodeError) and "line 1 column" in caplog.text
    caplog.clear()
    assert cli.main(["run", "--settings", str(broken), "--quiet"]) == 2
    assert not [r for r in caplog.records if r.name.startswith("graph_export") and r.levelno < logging.INFO]
    err = capsys.readouterr().err
    assert err.count("error: Cannot read settings file") == 2
