"""The in-memory account (tests/unit/memory_storage.py) answers as Azurite does: one set of scenarios, both sides.

Each scenario drives a container through the SDK calls graph_export makes and returns what every step
came to: a result made comparable (bytes, names, sizes, "the ETag changed"), or the exception's class,
``error_code`` (and its type: the SDK leaves a plain string for some codes and makes an enum of others)
and status. The unit tests of the orchestrator trust the memory account exactly as far as these agree.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobLeaseClient

from tests.unit.memory_storage import MemoryAccount

STALE = '"0x8D000000000000F"'


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except HttpResponseError as error:
        code = getattr(error, "error_code", None)
        return (type(error).__name__, str(getattr(code, "value", code)), type(code).__name__, error.status_code)


def conditional_create_twice(c: Any) -> list[Any]:
    blob = c.get_blob_client("a.json")
    return [outcome(lambda: bool(blob.upload_blob(b"1")["etag"])),
            outcome(lambda: blob.upload_blob(b"2")),
            outcome(lambda: blob.upload_blob(b"2", overwrite=True, match_condition=MatchConditions.IfMissing)),
            outcome(lambda: blob.download_blob().readall())]


def conditional_replace(c: Any) -> list[Any]:
    blob = c.get_blob_client("state/p.json")
    first = blob.upload_blob(b"1")["etag"]
    replaced = blob.upload_blob(b"2", overwrite=True, etag=first, match_condition=MatchConditions.IfNotModified)
    return [replaced["etag"] != first,
            outcome(lambda: blob.upload_blob(b"3", overwrite=True, etag=first,
                                             match_condition=MatchConditions.IfNotModified)),
            outcome(lambda: c.get_blob_client("missing").upload_blob(
                b"3", overwrite=True, etag=first, match_condition=MatchConditions.IfNotModified)),
            outcome(lambda: blob.download_blob().readall()),
            blob.get_blob_properties().etag == replaced["etag"]]


def leases(c: Any) -> list[Any]:
    blob = c.get_blob_client("state/x.lock")
    blob.upload_blob(b"")
    etag = blob.get_blob_properties().etag
    ours, theirs = BlobLeaseClient(blob), BlobLeaseClient(blob)
    steps = [outcome(lambda: ours.acquire(lease_duration=15)),
             outcome(lambda: theirs.acquire(lease_duration=15)),
             outcome(lambda: ours.acquire(lease_duration=15)),
             outcome(lambda: theirs.renew()),
             outcome(lambda: theirs.release()),
             outcome(lambda: ours.renew())]
    held = blob.get_blob_properties()
    steps += [(held.lease.status, held.lease.state, held.lease.duration), held.etag == etag]
    steps += [outcome(lambda: ours.break_lease(lease_break_period=0)),
              outcome(lambda: ours.renew())]
    broken = blob.get_blob_properties().lease
    steps += [(broken.status, broken.state, broken.duration),
              outcome(lambda: theirs.acquire(lease_duration=-1))]
    infinite = blob.get_blob_properties().lease
    steps += [(infinite.status, infinite.state, infinite.duration),
              outcome(lambda: theirs.release())]
    released = blob.get_blob_properties().lease
    steps += [(released.status, released.state, released.duration),
              outcome(lambda: BlobLeaseClient(c.get_blob_client("missing")).acquire(lease_duration=15))]
    return steps


def writes_to_a_leased_blob(c: Any) -> list[Any]:
    blob = c.get_blob_client("state/y.lock")
    blob.upload_blob(b"")
    ours, theirs = BlobLeaseClient(blob), BlobLeaseClient(blob)
    ours.acquire(lease_duration=15)
    return [outcome(lambda: blob.upload_blob(b"x", overwrite=True)),
            outcome(lambda: blob.upload_blob(b"x", overwrite=True, lease=theirs)),
            outcome(lambda: bool(blob.upload_blob(b"x", overwrite=True, lease=ours)["etag"])),
            outcome(lambda: blob.delete_blob()),
            outcome(lambda: blob.delete_blob(lease=theirs)),
            outcome(lambda: blob.delete_blob(lease=ours)),
            outcome(lambda: blob.exists()),
            outcome(lambda: ours.renew()),
            outcome(lambda: bool(c.get_blob_client("state/z").upload_blob(b"x", lease=ours)["etag"]))]


def block_commit(c: Any) -> list[Any]:
    blob = c.get_blob_client("users/u.jsonl.gz")
    steps = [outcome(lambda: blob.get_block_list("uncommitted"))]
    blob.stage_block("run1-00000000", b"abc", length=3)
    blob.stage_block("run1-00000001", b"defg", length=4)
    steps += [outcome(lambda: [(b.id, b.size) for b in blob.get_block_list("uncommitted")[1]]),
              outcome(lambda: blob.get_blob_properties()),
              outcome(lambda: [b.name for b in c.list_blobs(name_starts_with="users/")])]
    blocks = [BlobBlock("run1-00000000"), BlobBlock("run1-00000001")]
    steps += [outcome(lambda: bool(blob.commit_block_list(blocks, metadata={"users": "2"},
                                                          match_condition=MatchConditions.IfMissing)["etag"])),
              outcome(lambda: blob.commit_block_list(blocks, match_condition=MatchConditions.IfMissing)),
              outcome(lambda: c.get_blob_client("users/v").commit_block_list([BlobBlock("run1-00000009")])),
              outcome(lambda: [(b.id, b.size) for b in blob.get_block_list("committed")[0]]),
              outcome(lambda: blob.get_block_list("uncommitted")[1]),
              outcome(lambda: (blob.get_blob_properties().size, blob.get_blob_properties().metadata)),
              outcome(lambda: b"".join(blob.download_blob().chunks()))]
    return steps


def list_by_prefix(c: Any) -> list[Any]:
    for name in ("users/2026/b", "users/2026/a", "users/2027/c/d", "state/x", "users"):
        c.upload_blob(name, name.encode(), metadata={"n": name[-1]})
    return [[b.name for b in c.list_blobs(name_starts_with="users/2026/")],
            [b.name for b in c.list_blobs(name_starts_with="users/")],
            [(b.name, b.size, b.metadata) for b in c.list_blobs(name_starts_with="state/")],
            [(b.name, b.metadata) for b in c.list_blobs(name_starts_with="state/", include=["metadata"])],
            [b.name for b in c.list_blobs(name_starts_with="none/")]]


def delete_with_a_condition(c: Any) -> list[Any]:
    blob = c.get_blob_client("users/old.jsonl.gz")
    etag = blob.upload_blob(b"x")["etag"]
    return [outcome(lambda: blob.delete_blob(etag=STALE, match_condition=MatchConditions.IfNotModified)),
            outcome(lambda: blob.exists()),
            outcome(lambda: blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)),
            outcome(lambda: blob.exists()),
            outcome(lambda: c.delete_blob("users/old.jsonl.gz"))]


def missing_blobs(c: Any) -> list[Any]:
    blob = c.get_blob_client("nothing")
    return [outcome(lambda: c.download_blob("nothing").readall()),
            outcome(lambda: blob.get_blob_properties()),
            outcome(lambda: blob.exists()),
            outcome(lambda: blob.append_block(b"x", length=1, appendpos_condition=0))]


def append_blob(c: Any) -> list[Any]:
    blob = c.get_blob_client("state/ids")
    blob.create_append_blob()
    steps = [outcome(lambda: blob.download_blob(offset=0, length=3).readall()),
             outcome(lambda: blob.append_block(b"abc", length=3, appendpos_condition=0)["blob_append_offset"]),
             outcome(lambda: blob.append_block(b"abc", length=3, appendpos_condition=0)),
             outcome(lambda: blob.append_block(b"de", length=2, appendpos_condition=3)["blob_append_offset"]),
             outcome(lambda: blob.download_blob(offset=0, length=10).readall()),
             outcome(lambda: blob.download_blob(offset=1, length=2).readall()),
             outcome(lambda: blob.download_blob(offset=6, length=1).readall())]
    blob.create_append_blob()  # begins it anew
    return [*steps, outcome(lambda: blob.get_blob_properties().size)]


def containers(c: Any) -> list[Any]:
    return [outcome(lambda: c.create_container()), outcome(lambda: bool(c.get_container_properties().name))]


SCENARIOS = [conditional_create_twice, conditional_replace, leases, writes_to_a_leased_blob, block_commit,
             list_by_prefix, delete_with_a_condition, missing_blobs, append_blob, containers]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_the_memory_account_answers_as_azurite_does(scenario, blob_container):
    memory = MemoryAccount().container(f"t-{uuid.uuid4().hex[:12]}")
    assert scenario(memory) == scenario(blob_container)


def test_a_missing_container_is_container_not_found_on_both(azurite):
    from azure.storage.blob import ContainerClient

    real = ContainerClient.from_connection_string(azurite.connection_string, f"m-{uuid.uuid4().hex[:12]}")
    memory = MemoryAccount().container("missing", create=False)
    for side in (memory, real):
        assert outcome(side.get_container_properties) == ("ResourceNotFoundError", "ContainerNotFound", "str", 404)
        assert outcome(lambda s=side: s.upload_blob("a", b"")) == (
            "ResourceNotFoundError", "ContainerNotFound", "str", 404)
