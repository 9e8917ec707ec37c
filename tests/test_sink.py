"""The blob sink against Azurite: invisible until commit, valid gzip across blocks, a safe pointer."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import pytest
from azure.storage.blob import ContainerClient

from graph_export.errors import StorageError
from graph_export.naming import LATEST_BLOB
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


def test_an_empty_tenant_is_a_valid_empty_export(container):
    with JsonlGzipBlobWriter(container.get_blob_client("empty.jsonl.gz")) as writer:
        committed = writer.commit()
    assert committed.users == 0
    assert gzip.decompress(container.download_blob("empty.jsonl.gz").readall()) == b""


def test_latest_moves_forward_only(container):
    assert point_latest(container, {"slot": "2026-03-07T02:00:00Z", "blob": "b1"})
    assert point_latest(container, {"slot": "2026-03-08T02:00:00Z", "blob": "b2"})
    assert not point_latest(container, {"slot": "2026-03-07T02:00:00Z", "blob": "b1"})
    assert json.loads(container.download_blob(LATEST_BLOB).readall())["blob"] == "b2"


def test_an_unreadable_pointer_is_replaced(container):
    container.upload_blob(LATEST_BLOB, b"not json")
    assert point_latest(container, {"slot": "2026-03-07T02:00:00Z", "blob": "b1"})
    assert json.loads(container.download_blob(LATEST_BLOB).readall())["blob"] == "b1"


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
