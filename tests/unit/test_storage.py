"""Storage errors without storage: Azure's refusals from a canned adapter (tests/canned.py), and a refused
connection as the retry policy sees it. Against Azurite: tests/storage/test_storage.py; storage nothing answers
on: tests/sandbox/test_storage_unreachable.py.
"""

from __future__ import annotations

import base64
import types

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient

from graph_export.errors import StorageError
from graph_export.storage import storage_errors
from tests.canned import Canned

WRONG_KEY = base64.b64encode(b"not the account key, 64 bytes long, so it looks like one........").decode()


# --- a refused account key or SAS says so; an identity keeps the RBAC advice ------------------------


def canned_storage(status: int, code: str) -> Canned:
    """Azure Storage's refusal, ``status`` with ``code``, for every request."""
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>No.</Message></Error>'
    return Canned(status, body.encode(), {"x-ms-error-code": code, "Content-Type": "application/xml"})


class Token:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("storage-token", 4_102_444_800)


def canned(status: int, code: str, *, identity: bool = False) -> str:
    session = requests.Session()
    session.mount("https://", canned_storage(status, code))
    options = {"transport": RequestsTransport(session=session, session_owner=False), "retry_total": 0}
    url = "https://acct.blob.core.windows.net"
    if identity:
        client = ContainerClient(url, "graph-exports", credential=Token(), **options)
    else:
        client = ContainerClient.from_connection_string(
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={WRONG_KEY};EndpointSuffix=core.windows.net",
            "graph-exports", **options)
    with pytest.raises(StorageError) as info:
        with storage_errors("opening container 'graph-exports'"):
            client.get_container_properties()
    message = str(info.value)
    assert "\n" not in message and "StorageErrorCode" not in message and WRONG_KEY not in message
    return message


def test_azures_answer_to_a_wrong_key_says_the_key_is_wrong():
    message = canned(403, "AuthenticationFailed")
    assert message.startswith("Export storage refused the account key in EXPORT_STORAGE (AuthenticationFailed) while "
                              "opening container 'graph-exports': the key is wrong or has been rotated;")
    assert "firewall" not in message and "Storage Blob Data Contributor" not in message


def test_an_account_that_allows_no_shared_key_says_to_use_the_identity():
    message = canned(403, "KeyBasedAuthenticationNotPermitted")
    assert "does not allow shared key access" in message and "EXPORT_STORAGE__blobServiceUri" in message


def test_another_refusal_of_a_key_does_not_blame_the_key():
    message = canned(403, "AccountIsDisabled")
    assert message.startswith("Export storage refused a request made with the account key in EXPORT_STORAGE "
                              "(AccountIsDisabled) while opening container 'graph-exports': check the storage firewall")
    assert "wrong" not in message


def test_an_identity_without_access_keeps_the_role_advice():
    message = canned(403, "AuthorizationPermissionMismatch", identity=True)
    assert message.startswith("Export storage denied access (AuthorizationPermissionMismatch) while opening")
    assert "'Storage Blob Data Contributor'" in message and "storage-token" not in message


# --- storage that cannot be reached: why, and at once when retrying cannot help ---------------------


def test_a_refused_connection_after_storage_has_answered_is_retried_as_a_blip():
    from graph_export.retrying import StorageRetry

    policy = StorageRetry(retry_total=4, initial_backoff=0, increment_base=0, random_jitter_range=0)
    refused = ServiceRequestError("refused", error=ConnectionRefusedError(111, "Connection refused"))
    request = types.SimpleNamespace(url="https://acct.blob.core.windows.net/c?sig=x", body=None, method="GET")
    settings = {"total": 4, "connect": 3, "read": 3, "status": 3, "retry_secondary": False, "hosts": None,
                "count": 0, "history": [], "body_position": None, "mode": None}
    assert policy.increment(dict(settings, history=[]), request, error=refused) is False  # never answered
    policy.answered = True
    assert policy.increment(dict(settings, history=[]), request, error=refused) is True
