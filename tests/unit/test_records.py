"""Every record the project writes reads back through one strict parser that rejects what it does not know."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from graph_export.checkpoint import Checkpoint
from graph_export.records import (
    DeltaApplied,
    DeltaState,
    LatestPointer,
    Manifest,
    Progress,
    RecordError,
    SlotPointer,
)

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
SHA = "ab" * 32

RUN = "0123456789ab"
MANIFEST = Manifest(
    container="graph-exports", blob="users/2026/03/07/users-20260307T020000Z-0123456789ab.jsonl.gz",
    manifest="users/2026/03/07/users-20260307T020000Z-0123456789ab.manifest.json", users=3, pages=1,
    properties=("id", "mail"), bytes=10, uncompressed_bytes=30, sha256=SHA, slot=SLOT,
    started=SLOT, finished=SLOT, resumed=False, tenant_id="contoso.onmicrosoft.com",
    graph_endpoint="https://graph.microsoft.com", run=RUN)

CHECKPOINT = Checkpoint(
    slot=SLOT, run=RUN, blob=MANIFEST.blob, properties=("id", "mail"), next_link="https://graph.microsoft.com/v1.0/users?x",
    pages=4, progress=Progress(3996, 12345, ["a-00000000", "a-00000001"], [10, 20]), ids_bytes=8 * 3996,
    started=SLOT, saved=SLOT)


def test_a_manifest_reads_back_as_written():
    document = MANIFEST.to_document()
    assert list(document) == ["format", "run", "supersedes", "mode", "container", "blob", "manifest", "users", "pages", "properties",
                              "bytes", "uncompressed_bytes", "sha256", "slot", "started", "finished", "resumed",
                              "tenant_id", "graph_endpoint", "delta", "drift", "csv", "count"]
    assert document["slot"] == "2026-03-07T02:00:00Z"
    assert Manifest.parse(document) == MANIFEST


def test_the_pointer_and_checkpoint_read_back_as_written():
    pointer = MANIFEST.pointer()
    assert LatestPointer.parse(pointer.to_document()) == pointer
    assert Checkpoint.parse(CHECKPOINT.to_document()) == CHECKPOINT


@pytest.mark.parametrize("change", [
    {"users": "3"}, {"users": -1}, {"users": True}, {"users": None}, {"slot": "zzz"}, {"slot": 5},
    {"slot": "2026-03-07T02:00:00"}, {"sha256": "nothex"}, {"properties": ["id", 5]}, {"resumed": "no"},
    {"format": "graph-users-export/9"}, {"blob": ""}, {"run": None}, {"run": "ABCDEF012345"}, {"run": "x"},
    {"supersedes": 5}, {"supersedes": ""},
])
def test_a_manifest_with_any_malformed_field_is_rejected(change):
    with pytest.raises(RecordError):
        Manifest.parse({**MANIFEST.to_document(), **change})


@pytest.mark.parametrize("document", [None, 5, "text", [], {}, {"slot": "zzz"}, {"slot": 5}])
def test_anything_but_a_whole_pointer_is_rejected(document):
    with pytest.raises(RecordError):
        LatestPointer.parse(document)


@pytest.mark.parametrize("change", [
    {"pages": "4"}, {"ids_bytes": -8}, {"block_ids": ["a-00000000"]}, {"block_sizes": [10, "20"]}, {"next_link": None},
    {"saved": "yesterday"}, {"format": "graph-users-export-checkpoint/1"},
])
def test_a_malformed_checkpoint_is_rejected(change):
    with pytest.raises(RecordError):
        Checkpoint.parse({**CHECKPOINT.to_document(), **change})


DELTA = DeltaApplied(base_manifest="users/2026/03/06/users-20260306T020000Z.manifest.json", base_sha256=SHA,
                     changes_blob="users/2026/03/07/users-20260307T020000Z.changes.jsonl.gz", changes_bytes=99,
                     changes_sha256=SHA, change_records=7, added=1, updated=5, removed=1)


def test_a_delta_manifest_and_the_delta_state_read_back_as_written():
    manifest = dataclasses.replace(MANIFEST, mode="delta", delta=DELTA)
    assert Manifest.parse(manifest.to_document()) == manifest
    drifted = dataclasses.replace(MANIFEST, drift=4)
    assert Manifest.parse(drifted.to_document()) == drifted
    state = DeltaState(delta_link="https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x", taken=SLOT,
                       properties=("id", "mail"), base_manifest=MANIFEST.manifest, base_slot=SLOT)
    assert DeltaState.parse(state.to_document()) == state
    with_link = dataclasses.replace(CHECKPOINT, delta_link=state.delta_link)
    assert Checkpoint.parse(with_link.to_document()) == with_link


def test_a_format_1_manifest_still_reads_as_a_full_export():
    document = MANIFEST.to_document()
    document["format"] = "graph-users-export/1"
    for added in ("mode", "delta", "drift", "run", "supersedes"):
        del document[added]
    assert Manifest.parse(document) == dataclasses.replace(MANIFEST, run=None)


POINTER = SlotPointer(slot=SLOT, run=RUN, manifest=MANIFEST.manifest,
                      etags={MANIFEST.manifest: '"0x1"', MANIFEST.blob: '"0x2"'}, published=SLOT)


def test_a_slot_pointer_reads_back_as_written_with_and_without_a_delta_link():
    assert SlotPointer.parse(POINTER.to_document()) == POINTER
    linked = dataclasses.replace(POINTER, delta_link="https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x",
                                 taken=SLOT)
    assert SlotPointer.parse(linked.to_document()) == linked


@pytest.mark.parametrize("change", [
    {"format": "graph-users-export-slot/2"}, {"run": "x"}, {"manifest": ""}, {"etags": None}, {"etags": []},
    {"etags": {"a": 5}}, {"etags": {"": "x"}}, {"published": "later"}, {"delta_link": "https://x/"},
    {"taken": "2026-03-07T02:00:00Z"}, {"slot": None},
])
def test_a_slot_pointer_with_any_malformed_field_is_rejected(change):
    with pytest.raises(RecordError):
        SlotPointer.parse({**POINTER.to_document(), **change})


@pytest.mark.parametrize("change", [{"mode": "partial"}, {"mode": "delta"}, {"delta": {"added": 1}},
                                    {"drift": -1}, {"drift": "3"}])
def test_a_manifest_whose_mode_and_delta_disagree_is_rejected(change):
    with pytest.raises(RecordError):
        Manifest.parse({**MANIFEST.to_document(), **change})


@pytest.mark.parametrize("change", [{"format": "graph-users-export-delta/0"}, {"delta_link": ""},
                                    {"taken": "yesterday"}, {"properties": "id,mail"}, {"base_slot": None}])
def test_a_malformed_delta_state_is_rejected(change):
    state = DeltaState(delta_link="https://g/v1.0/users/delta?$deltatoken=x", taken=SLOT, properties=("id",),
                       base_manifest="m", base_slot=SLOT)
    with pytest.raises(RecordError):
        DeltaState.parse({**state.to_document(), **change})
