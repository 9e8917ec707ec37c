"""The blob sink against Azurite: invisible until commit, valid gzip across blocks, a safe pointer."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import uuid
from datetime import datetime, timezone

import pytest
from azure.storage.blob import ContainerClient

from graph_export.errors import SlotBusyError, StorageError
from graph_export.naming import LATEST_BLOB
from graph_export.records import LatestPointer
from graph_export.settings import StorageTarget
from graph_export.sink import JsonlGzipBlobWriter, open_container, point_latest, write_json

USERS = [{"id": str(i), "displayName": f"Zoë {i}", "mail": None, "tags": ["a", i]} for i in range(3000)]


@pytest.fixture
def container(azurite) -> ContainerClient:
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    return open_container(target, f"sink-{uuid.uuid4().hex[:10]}", None, 0.01)


def test_open_container_creates_it_once_and_reopens(azurite, container):
    assert container.exists()
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    assert open_container(target, container.container_name, None, 0.01).exists()


def test_staged_blocks_stay_invisible_until_commit(container):
    writer = JsonlGzipBlobWriter(container.get_blob_client("users/x.jsonl.gz"), block_size=1024)
    with writer:
        for start in range(0, len(USERS), 999):
            writer.write(USERS[start:start + 999])
        writer.end_segment()  # a second gzip member: the file must still read as one stream
        writer.write(USERS[:10])
        assert list(container.list_blobs()) == []  # blocks staged, nothing published
        committed = writer.commit({"slot": "s"})

    data = container.download_blob("users/x.jsonl.gz").readall()
    assert committed.blocks > 1  # several blocks, still one valid gzip stream
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == USERS + USERS[:10]
    assert committed.users == 3010 and committed.bytes == len(data)
    assert committed.sha256 == hashlib.sha256(data).hexdigest()
    assert committed.uncompressed_bytes == len(gzip.decompress(data))
    properties = container.get_blob_client("users/x.jsonl.gz").get_blob_properties()
    assert properties.metadata == {"slot": "s", "users": "3010", "sha256": committed.sha256}
    assert properties.content_settings.content_type == "application/gzip"


def test_same_input_gives_the_same_bytes(container):
    digests = set()
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        with JsonlGzipBlobWriter(container.get_blob_client(name)) as writer:
            writer.write(USERS)
            digests.add(writer.commit().sha256)
    assert len(digests) == 1


def test_two_runs_staging_one_blob_never_mix_their_blocks(container):
    blob = container.get_blob_client("users/same-slot.jsonl.gz")
    first_users, second_users = USERS[:1500], [{"id": f"other-{i}"} for i in range(1500)]
    with JsonlGzipBlobWriter(blob, block_size=1024) as first, JsonlGzipBlobWriter(blob, block_size=1024) as second:
        for start in range(0, 1500, 500):  # interleaved, as two runs of one slot would stage
            first.write(first_users[start:start + 500])
            second.write(second_users[start:start + 500])
            first.end_segment()
            second.end_segment()
        committed = first.commit()
        data = blob.download_blob().readall()
        assert [json.loads(line) for line in gzip.decompress(data).splitlines()] == first_users
        assert committed.sha256 == hashlib.sha256(data).hexdigest()
        with pytest.raises(SlotBusyError, match="Another run published"):  # never over the first run's export
            second.commit()
    assert blob.download_blob().readall() == data


def test_an_empty_tenant_is_a_valid_empty_export(container):
    with JsonlGzipBlobWriter(container.get_blob_client("empty.jsonl.gz")) as writer:
        committed = writer.commit()
    assert committed.users == 0
    assert gzip.decompress(container.download_blob("empty.jsonl.gz").readall()) == b""


def pointer(day: int, blob: str, year: int = 2026) -> LatestPointer:
    slot = datetime(year, 3, day, 2, tzinfo=timezone.utc)
    return LatestPointer(slot=slot, blob=blob, manifest=blob + ".manifest.json", users=1, sha256="0" * 64,
                         finished=slot)


def latest(container) -> dict:
    return json.loads(container.download_blob(LATEST_BLOB).readall())


NOW = datetime(2026, 3, 20, tzinfo=timezone.utc)


def test_latest_moves_forward_only(container):
    for name in ("b1", "b2"):
        container.upload_blob(name, b"x")
    assert point_latest(container, pointer(7, "b1"), NOW)
    assert point_latest(container, pointer(8, "b2"), NOW)
    assert not point_latest(container, pointer(7, "b1"), NOW)
    assert latest(container)["blob"] == "b2"


@pytest.mark.parametrize("standing", [
    b"not json", b"null", b"[]", b'{"slot": 5}', b'{"slot": "zzz"}',
    json.dumps(pointer(31, "b9", year=9999).to_document()).encode(),   # a slot from the far future
    json.dumps(pointer(9, "never-written").to_document()).encode(),     # newer, but its blob does not exist
])
def test_a_pointer_that_is_not_valid_is_replaced_with_a_warning(container, standing, caplog):
    container.upload_blob("b1", b"x")
    container.upload_blob(LATEST_BLOB, standing)
    assert point_latest(container, pointer(7, "b1"), NOW)
    assert latest(container)["blob"] == "b1"
    assert LATEST_BLOB in caplog.text and "replacing it" in caplog.text


def test_concurrent_publishers_all_succeed_and_the_newest_wins(container):
    days = list(range(1, 17))
    for day in days:
        container.upload_blob(f"b{day}", b"x")
    outcomes: list[object] = []

    def publish(day: int) -> None:
        try:
            outcomes.append(point_latest(container, pointer(day, f"b{day}"), NOW))
        except Exception as error:  # noqa: BLE001 - the assertion below names it
            outcomes.append(error)

    threads = [threading.Thread(target=publish, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(o, bool) for o in outcomes), outcomes  # no run that published fails
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


@pytest.mark.parametrize("user", [
    {"id": "1", "displayName": "Zoë Łukasz 李 José", "mail": None, "accountEnabled": False},
    {"id": "2", "jobTitle": "line\nbreak\ttab \"quoted\" back\\slash \u2028 \x01 /slash", "n": 12345678901},
    {"id": "3", "businessPhones": ["+1 555", ""], "nested": {"a": [1, True, None]}, "emoji": "\U0001F600"},
])
def test_encoding_is_exactly_compact_utf8_json(user):
    from graph_export.sink import encode_user
    reference = json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_user(user) == reference
