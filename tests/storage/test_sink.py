"""The export file writer against Azurite: invisible until commit, valid gzip across blocks, one run's blocks."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from graph_export.errors import SlotBusyError
from graph_export.sink import GzipBlobWriter

USERS = [{"id": str(i), "displayName": f"Zoë {i}", "mail": None, "tags": ["a", i]} for i in range(3000)]


@pytest.fixture
def container(blob_container):
    return blob_container


def test_staged_blocks_stay_invisible_until_commit(container):
    writer = GzipBlobWriter(container.get_blob_client("users/x.jsonl.gz"), block_size=1024)
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
        with GzipBlobWriter(container.get_blob_client(name)) as writer:
            writer.write(USERS)
            digests.add(writer.commit().sha256)
    assert len(digests) == 1


def test_two_runs_staging_one_blob_never_mix_their_blocks(container):
    blob = container.get_blob_client("users/same-slot.jsonl.gz")
    first_users, second_users = USERS[:1500], [{"id": f"other-{i}"} for i in range(1500)]
    with GzipBlobWriter(blob, block_size=1024) as first, GzipBlobWriter(blob, block_size=1024) as second:
        for start in range(0, 1500, 500):  # interleaved, as two runs of one slot would stage
            first.write(first_users[start:start + 500])
            second.write(second_users[start:start + 500])
            first.end_segment()
            second.end_segment()
        committed = first.commit()
        data = blob.download_blob().readall()
        assert [json.loads(line) for line in gzip.decompress(data).splitlines()] == first_users
        assert committed.sha256 == hashlib.sha256(data).hexdigest()
        with pytest.raises(SlotBusyError, match="already exists"):  # never over the first run's export
            second.commit()
    assert blob.download_blob().readall() == data


def test_an_empty_tenant_is_a_valid_empty_export(container):
    with GzipBlobWriter(container.get_blob_client("empty.jsonl.gz")) as writer:
        committed = writer.commit()
    assert committed.users == 0
    assert gzip.decompress(container.download_blob("empty.jsonl.gz").readall()) == b""
