"""Storage access against Azurite: the container, JSON records, the latest.json pointer, error lines."""

from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from graph_export.errors import StorageError
from graph_export.naming import LATEST_BLOB
from graph_export.records import LatestPointer
from graph_export.settings import StorageTarget
from graph_export.storage import open_container, point_latest, write_json
from sandbox.azurite import ACCOUNT, ACCOUNT_KEY


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
