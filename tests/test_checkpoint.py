"""When a saved checkpoint may be resumed, against Azurite (its staged blocks are real)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from graph_export import checkpoint
from graph_export.checkpoint import Checkpoint, SavedIds, why_unusable
from graph_export.records import Progress

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
NOW = SLOT + timedelta(hours=1)
PROPERTIES = ("id", "mail")
DAY = timedelta(hours=24)


@pytest.fixture
def staged(blob_container):
    """A blob with two staged blocks, and a checkpoint that counts them."""
    blob = blob_container.get_blob_client("users/x.jsonl.gz")
    for block_id, data in (("run-00000000", b"abc"), ("run-00000001", b"defg")):
        blob.stage_block(block_id, data)
    saved = Checkpoint(slot=SLOT, blob=blob.blob_name, properties=PROPERTIES, next_link="https://g/next",
                       pages=2, progress=Progress(10, 100, ["run-00000000", "run-00000001"], [3, 4]),
                       ids_bytes=80, started=SLOT, saved=SLOT + timedelta(minutes=30))
    return blob, saved


def test_a_fresh_checkpoint_over_its_staged_blocks_is_usable(staged):
    blob, saved = staged
    assert why_unusable(saved, blob, SLOT, PROPERTIES, DAY, NOW) is None


@pytest.mark.parametrize("change, why", [
    (dict(properties=("id",)), "USER_PROPERTIES changed"),
    (dict(saved=NOW - timedelta(hours=25)), "older than CHECKPOINT_MAX_AGE_HOURS"),
    (dict(saved=NOW + timedelta(hours=2)), "older than"),  # from the future: not to be trusted either
    (dict(slot=SLOT + timedelta(days=1)), "another slot"),
    (dict(progress=Progress(10, 100, ["run-00000000", "run-00000001"], [3, 5])), "staged blocks are gone"),
    (dict(progress=Progress(10, 100, ["run-00000000", "run-00000009"], [3, 4])), "staged blocks are gone"),
])
def test_a_checkpoint_that_does_not_match_storage_or_settings_is_not_resumed(staged, change, why):
    blob, saved = staged
    changed = Checkpoint(**{**saved.__dict__, **change})
    assert why in (why_unusable(changed, blob, SLOT, PROPERTIES, DAY, NOW) or "")


def test_saved_ids_read_back_only_what_a_checkpoint_counted(blob_container):
    ids = SavedIds(blob_container, SLOT)
    assert ids.append(b"a" * 16) == 16 and ids.append(b"b" * 8) == 24
    assert SavedIds(blob_container, SLOT).read(16) == b"a" * 16
    assert SavedIds(blob_container, SLOT).read(32) is None  # fewer bytes than the checkpoint counted
    checkpoint.delete(blob_container, SLOT)
    assert SavedIds(blob_container, SLOT).read(8) is None
