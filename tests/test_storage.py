"""Storage access against Azurite: the container, JSON records, the latest.json pointer, error lines."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import types
from datetime import datetime, timedelta, timezone

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import AccountSasPermissions, ContainerClient, ResourceTypes, generate_account_sas

from graph_export.errors import StorageError
from graph_export.naming import LATEST_BLOB
from graph_export.records import LatestPointer
from graph_export.settings import StorageTarget
from graph_export.storage import open_container, point_latest, storage_errors, write_json
from sandbox.azurite import ACCOUNT, ACCOUNT_KEY
from tests.canned import Canned


@pytest.fixture
def container(blob_container):
    return blob_container


def test_open_container_creates_it_once_and_reopens(azurite, container):
    assert container.exists()
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    assert open_container(target, container.container_name, None, 0.01).exists()


def pointer(day: int, blob: str, year: int = 2026) -> LatestPointer:
    slot = datetime(year, 3, day, 2, tzinfo=timezone.utc)
    return LatestPointer(slot=slot, blob=blob, manifest=blob + ".manifest.json", users=1, sha256="0" * 64,
                         finished=slot)


def latest(container) -> dict:
    return json.loads(container.download_blob(LATEST_BLOB).readall())


NOW = datetime(2026, 3, 20, tzinfo=timezone.utc)


def with_manifests(container, *names: str) -> None:
    for name in names:
        container.upload_blob(name + ".manifest.json", b"{}")


def test_latest_moves_forward_only_and_is_not_rewritten_when_it_already_says_so(container):
    with_manifests(container, "b1", "b2")
    assert point_latest(container, container, pointer(7, "b1"), NOW) == "written"
    assert point_latest(container, container, pointer(8, "b2"), NOW) == "written"
    etag = container.get_blob_client(LATEST_BLOB).get_blob_properties().etag
    assert point_latest(container, container, pointer(8, "b2"), NOW) == "unchanged"
    assert container.get_blob_client(LATEST_BLOB).get_blob_properties().etag == etag
    assert point_latest(container, container, pointer(7, "b1"), NOW) == "newer"
    assert latest(container)["blob"] == "b2"


def test_latest_lives_in_the_state_container_and_checks_manifests_in_the_export_container(container, azurite):
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    state = open_container(target, container.container_name + "-state", None, 0.01)
    with_manifests(container, "b1")
    assert point_latest(state, container, pointer(7, "b1"), NOW) == "written"
    assert json.loads(state.download_blob(LATEST_BLOB).readall())["blob"] == "b1"
    assert not container.get_blob_client(LATEST_BLOB).exists()
    # a newer pointer whose manifest is not in the export container is not one to respect
    state.upload_blob(LATEST_BLOB, json.dumps(pointer(9, "b9").to_document()), overwrite=True)
    assert point_latest(state, container, pointer(7, "b1"), NOW) == "written"


@pytest.mark.parametrize("standing", [
    b"not json", b"null", b"[]", b'{"slot": 5}', b'{"slot": "zzz"}',
    json.dumps(pointer(31, "b9", year=9999).to_document()).encode(),   # a slot from the far future
    json.dumps(pointer(9, "never-written").to_document()).encode(),     # newer, but its blob does not exist
])
def test_a_pointer_that_is_not_valid_is_replaced_with_a_warning(container, standing, caplog):
    with_manifests(container, "b1")
    container.upload_blob(LATEST_BLOB, standing)
    assert point_latest(container, container, pointer(7, "b1"), NOW) == "written"
    assert latest(container)["blob"] == "b1"
    assert LATEST_BLOB in caplog.text and "replacing it" in caplog.text


def test_concurrent_publishers_all_succeed_and_the_newest_wins(container):
    days = list(range(1, 17))
    with_manifests(container, *(f"b{day}" for day in days))
    outcomes: list[object] = []

    def publish(day: int) -> None:
        try:
            outcomes.append(point_latest(container, container, pointer(day, f"b{day}"), NOW))
        except Exception as error:  # noqa: BLE001 - the assertion below names it
            outcomes.append(error)

    threads = [threading.Thread(target=publish, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(o in ("written", "newer") for o in outcomes), outcomes  # no run that published fails
    assert latest(container)["blob"] == "b16"


def test_write_json_replaces_the_document(container):
    write_json(container, "m.json", {"n": 1})
    write_json(container, "m.json", {"n": 2})
    assert json.loads(container.download_blob("m.json").readall()) == {"n": 2}


def test_unreachable_storage_is_one_actionable_line():
    target = StorageTarget(connection_string=(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"), source="EXPORT_STORAGE")
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 0.01)
    assert "unreachable" in str(info.value) and "EXPORT_STORAGE" in str(info.value)
    assert "a2V5" not in str(info.value)


# --- a refused account key or SAS says so; an identity keeps the RBAC advice ------------------------

def key_string(endpoint: str, key: str = "a2V5") -> str:
    scheme = endpoint.split(":", 1)[0]
    return f"DefaultEndpointsProtocol={scheme};AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"


WRONG_KEY = base64.b64encode(b"not the account key, 64 bytes long, so it looks like one........").decode()


def refusal(connection_string: str, container: str, action=None) -> str:
    target = StorageTarget(connection_string=connection_string, source="EXPORT_STORAGE")
    with pytest.raises(StorageError) as info:
        client = open_container(target, container, None, 0.01)
        action(client)
    message = str(info.value)
    assert "\n" not in message and "StorageErrorCode" not in message and "Storage Blob Data Contributor" not in message
    assert WRONG_KEY not in message and ACCOUNT_KEY not in message and "sig=" not in message
    return message


def sas(key: str, hours: float = 1, **permissions: bool) -> str:
    allowed = AccountSasPermissions(**(permissions or dict(read=True, add=True, create=True, write=True,
                                                           delete=True, list=True)))
    return generate_account_sas(ACCOUNT, key, ResourceTypes(container=True, object=True), allowed,
                                expiry=datetime.now(timezone.utc) + timedelta(hours=hours))


def test_a_wrong_account_key_says_the_key_in_export_storage_was_refused(azurite, container):
    message = refusal(key_string(azurite.blob_endpoint, WRONG_KEY), container.container_name)
    # Azurite answers a wrong key 403 AuthorizationFailure, as Azure answers a firewall refusal; Azure's
    # answer to a wrong key, AuthenticationFailed, is below.
    assert message.startswith("Export storage refused the account key in EXPORT_STORAGE (AuthorizationFailure) "
                              f"while opening container '{container.container_name}' (from EXPORT_STORAGE): the key "
                              "is wrong or has been rotated (or the storage firewall does not admit this network)")
    assert "az storage account show-connection-string" in message


@pytest.mark.parametrize("token", [lambda: sas(WRONG_KEY), lambda: sas(ACCOUNT_KEY, hours=-1)],
                         ids=["signed-with-another-key", "expired"])
def test_a_refused_sas_says_the_sas_in_export_storage_was_refused(azurite, container, token):
    message = refusal(f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={token()}",
                      container.container_name)
    assert message.startswith("Export storage refused the SAS in EXPORT_STORAGE (AuthorizationFailure) while opening")
    assert "expired or not yet valid" in message and "az storage container generate-sas" in message


def test_a_sas_without_a_permission_it_needs_says_which_ones(azurite, container):
    token = sas(ACCOUNT_KEY, read=True, list=True)
    listing_only = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={token}"
    message = refusal(listing_only, container.container_name,
                      lambda client: write_json(client, "state/x.json", {"n": 1}))
    assert message.startswith("Export storage refused the SAS in EXPORT_STORAGE (AuthorizationPermissionMismatch) "
                              "while writing state/x.json: it does not allow this request")
    assert "--permissions racwdl" in message


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint, why", [
    (f"http://127.0.0.1:{free_port()}/devstoreaccount1", "the connection was refused"),
    ("http://export-storage.invalid/devstoreaccount1", "its name does not resolve"),
], ids=["refused", "unresolved"])  # ids without the port: the same on every xdist worker
def test_storage_nothing_listens_on_fails_within_seconds_with_the_production_backoff(endpoint, why):
    target = StorageTarget(connection_string=key_string(endpoint), source="EXPORT_STORAGE")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 1.0)  # 1 s: the default RETRY_BACKOFF_BASE_SECONDS
    assert time.monotonic() - started < 10  # it took 43 s of backoff before
    message = str(info.value)
    origin = endpoint.rsplit("/", 1)[0]
    assert f"Export storage at {origin} is unreachable ({why}) while opening container 'graph-exports'" in message
    assert "EXPORT_STORAGE" in message and "a2V5" not in message and "\n" not in message


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


def test_a_storage_certificate_this_machine_does_not_trust_is_named_as_such_and_not_retried(untrusted):
    target = StorageTarget(connection_string=key_string(f"{untrusted.url}/devstoreaccount1"), source="EXPORT_STORAGE")
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 1.0)
    message = str(info.value)
    assert message.startswith(f"Export storage at {untrusted.url} failed TLS certificate verification "
                              "(unable to get local issuer certificate)")
    assert "check EXPORT_STORAGE" in message and "REQUESTS_CA_BUNDLE" in message and "TLS-inspecting proxy" in message
    assert "unreachable" not in message and "a2V5" not in message and "\n" not in message
    assert untrusted.connections == 1
