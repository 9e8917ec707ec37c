"""When a saved checkpoint may be resumed, against Azurite (its staged blocks are real)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from graph_export import checkpoint, storage
from graph_export.checkpoint import Checkpoint, SavedIds, why_unusable
from graph_export.naming import run_names
from graph_export.records import Progress

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
NOW = SLOT + timedelta(hours=1)
PROPERTIES = ("id", "mail")
DAY = timedelta(hours=24)
RUN = "0123456789ab"


@pytest.fixture
def staged(blob_container):
    """A run's blob with two staged blocks, and a checkpoint that counts them."""
    blob = blob_container.get_blob_client(run_names(SLOT, RUN).jsonl)
    for block_id, data in (("run-00000000", b"abc"), ("run-00000001", b"defg")):
        blob.stage_block(block_id, data)
    saved = Checkpoint(slot=SLOT, run=RUN, blob=blob.blob_name, properties=PROPERTIES, next_link="https://g/next",
                       pages=2, progress=Progress(10, 100, ["run-00000000", "run-00000001"], [3, 4]),
                       ids_bytes=80, started=SLOT, saved=SLOT + timedelta(minutes=30))
    return blob_container, saved


def test_a_fresh_checkpoint_over_its_staged_blocks_is_usable(staged):
    exports, saved = staged
    assert why_unusable(saved, exports, SLOT, PROPERTIES, DAY, NOW) is None


@pytest.mark.parametrize("change, why", [
    (dict(properties=("id",)), "USER_PROPERTIES changed"),
    (dict(saved=NOW - timedelta(hours=25)), "older than CHECKPOINT_MAX_AGE_HOURS"),
    (dict(saved=NOW + timedelta(hours=2)), "older than"),  # from the future: not to be trusted either
    (dict(slot=SLOT + timedelta(days=1)), "another slot"),
    (dict(run="ba9876543210"), "another slot or blob"),  # its blob is not its run's
    (dict(progress=Progress(10, 100, ["run-00000000", "run-00000001"], [3, 5])), "staged blocks are gone"),
    (dict(progress=Progress(10, 100, ["run-00000000", "run-00000009"], [3, 4])), "staged blocks are gone"),
])
def test_a_checkpoint_that_does_not_match_storage_or_settings_is_not_resumed(staged, change, why):
    exports, saved = staged
    changed = Checkpoint(**{**saved.__dict__, **change})
    assert why in (why_unusable(changed, exports, SLOT, PROPERTIES, DAY, NOW) or "")


def test_saved_ids_read_back_only_what_a_checkpoint_counted(blob_container):
    ids = SavedIds(blob_container, SLOT)
    assert ids.append(b"a" * 16) == 16 and ids.append(b"b" * 8) == 24
    assert SavedIds(blob_container, SLOT).read(16) == b"a" * 16
    assert SavedIds(blob_container, SLOT).read(32) is None  # fewer bytes than the checkpoint counted
    assert checkpoint.leftovers(blob_container, SLOT) == ["state/users-20260307T020000Z.ids"]
    for name in checkpoint.leftovers(blob_container, SLOT):
        storage.delete(blob_container, name)
    assert SavedIds(blob_container, SLOT).read(8) is None and checkpoint.leftovers(blob_container, SLOT) == []
