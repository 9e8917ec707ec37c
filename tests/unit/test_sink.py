"""The export writer against an in-memory BlobClient, and the bytes of one user: no sockets, the unit layer's view
of ``sink``."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import pytest

from graph_export.records import Progress
from graph_export.sink import GzipBlobWriter, encode_user

USERS = [{"id": f"{i:08d}", "displayName": f"Zoë {i}", "mail": None} for i in range(2000)]


class MemoryBlob:
    """Just what the writer calls on an azure-storage-blob BlobClient, kept in memory."""

    def __init__(self, name: str = "users/x.jsonl.gz") -> None:
        self.blob_name = name
        self.staged: dict[str, bytes] = {}
        self.committed: bytes | None = None
        self.metadata: dict[str, str] = {}
        self.conditions: dict[str, Any] = {}

    def stage_block(self, block_id: str, data: bytes, length: int) -> None:
        assert len(data) == length
        self.staged[block_id] = data

    def commit_block_list(self, blocks: list[Any], content_settings: Any, metadata: dict[str, str],
                          **conditions: Any) -> dict[str, Any]:
        self.committed = b"".join(self.staged[block.id] for block in blocks)
        self.metadata, self.conditions = dict(metadata), conditions
        return {"etag": '"0x8D1"'}

    def download_blob(self) -> "MemoryBlob":
        return self

    def chunks(self) -> list[bytes]:
        assert self.committed is not None
        return [self.committed]

    def set_blob_metadata(self, metadata: dict[str, str]) -> None:
        raise AssertionError("a committed export is never changed (an immutability policy would refuse it)")


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def test_pages_and_segments_commit_as_one_gzip_stream_with_its_sha256():
    blob = MemoryBlob()
    with GzipBlobWriter(blob, block_size=2048) as writer:  # type: ignore[arg-type]
        writer.write(USERS[:1000])
        saved: list[Progress] = []
        writer.end_segment(saved.append)
        writer.write(USERS[1000:])
        committed = writer.commit({"slot": "s"})
    assert blob.committed is not None and lines(blob.committed) == USERS
    assert committed.sha256 == hashlib.sha256(blob.committed).hexdigest() == blob.metadata["sha256"]
    assert committed.users == 2000 and blob.metadata["users"] == "2000"
    assert committed.etag == '"0x8D1"'
    assert str(blob.conditions["match_condition"]) == "MatchConditions.IfMissing"  # never over an existing blob
    assert saved[0].users == 1000 and saved[0].block_ids == list(blob.staged)[:len(saved[0].block_ids)]
    assert len({len(i) for i in blob.staged}) == 1  # one id length per blob, as the service requires


def test_two_writers_never_share_a_block_id():
    blob = MemoryBlob()
    first, second = GzipBlobWriter(blob, block_size=1024), GzipBlobWriter(blob, block_size=1024)  # type: ignore[arg-type]
    with first, second:
        first.write(USERS)
        second.write(USERS)
        first.end_segment()
        second.end_segment()
        ids_first, ids_second = [], []
        first.end_segment(lambda p: ids_first.extend(p.block_ids))
        second.end_segment(lambda p: ids_second.extend(p.block_ids))
        first.commit()
    assert ids_first and ids_second and not set(ids_first) & set(ids_second)
    assert blob.committed is not None and lines(blob.committed) == USERS


def test_a_resumed_writer_continues_the_same_stream_and_hashes_it_from_storage():
    blob = MemoryBlob()
    with GzipBlobWriter(blob) as writer:  # type: ignore[arg-type]
        writer.write(USERS[:1000])
        saved: list[Progress] = []
        writer.end_segment(saved.append)
    with GzipBlobWriter(blob, resume_from=saved[0]) as resumed:  # type: ignore[arg-type]
        resumed.write(USERS[1000:])
        committed = resumed.commit()
    assert blob.committed is not None and lines(blob.committed) == USERS
    # the bytes staged before the checkpoint are only readable once committed, and a committed blob is never
    # changed: the digest is the manifest's alone
    assert committed.sha256 == hashlib.sha256(blob.committed).hexdigest()
    assert "sha256" not in blob.metadata and committed.users == 2000 == int(blob.metadata["users"])


@pytest.mark.parametrize("user", [
    {"id": "1", "displayName": "Zoë Łukasz 李 José", "mail": None, "accountEnabled": False},
    {"id": "2", "jobTitle": "line\nbreak\ttab \"quoted\" back\\slash \u2028 \x01 /slash", "n": 12345678901},
    {"id": "3", "businessPhones": ["+1 555", ""], "nested": {"a": [1, True, None]}, "emoji": "\U0001F600"},
])
def test_encoding_is_exactly_compact_utf8_json(user):
    reference = json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_user(user) == reference
