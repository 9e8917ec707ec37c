"""Resumable progress of one slot's export, kept in a small record in the state area.

Every few pages the export ends a gzip member, stages it and saves a checkpoint: the nextLink to
continue from, the ids and sizes of the blocks staged so far, and the counts. A killed or timed-out
run's next invocation for the same slot continues from there; because each checkpoint segment is its
own gzip member (RFC 1952 allows a file of several), the result is byte for byte what an
uninterrupted run writes. The digests of the user ids staged so far are appended to a state blob
beside it at each checkpoint, so the resumed run still catches an id repeated across the resume.
A resumed run continues the killed one under its run id, so its blocks land on the same blobs, and
keeps the user count Graph gave when the killed run began (``completeness``). A checkpoint that
cannot be parsed (one of an earlier format too) is discarded and the slot restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from . import naming, storage
from .records import Fields, Progress, RecordError, iso
from .userids import UserIds

log = logging.getLogger(__name__)

FORMAT = "graph-users-export-checkpoint/4"
_RUN = naming.RUN_ID


@dataclass(frozen=True)
class Checkpoint:
    slot: datetime
    #: The run whose blobs hold the staged blocks: a resumed run continues it, under its names.
    run: str
    blob: str
    properties: tuple[str, ...]
    next_link: str
    pages: int
    progress: Progress
    ids_bytes: int
    started: datetime
    saved: datetime
    #: Delta mode: the deltaLink taken before the export's first page, which the next slot replays.
    delta_link: str | None = None
    #: EXPORT_FORMATS with csv: what is staged of the CSV copy, at the same page.
    csv_progress: Progress | None = None
    #: Graph's user count when the run began (None: unknown), which a resumed run keeps for its check.
    count_before: int | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "slot": iso(self.slot), "run": self.run, "blob": self.blob, "properties": list(self.properties),
            "next_link": self.next_link, "pages": self.pages, "users": self.progress.users,
            "uncompressed_bytes": self.progress.uncompressed_bytes, "block_ids": list(self.progress.block_ids),
            "block_sizes": list(self.progress.block_sizes), "ids_bytes": self.ids_bytes,
            "started": iso(self.started), "saved": iso(self.saved), "delta_link": self.delta_link,
            "csv": None if self.csv_progress is None else {
                "users": self.csv_progress.users, "uncompressed_bytes": self.csv_progress.uncompressed_bytes,
                "block_ids": list(self.csv_progress.block_ids), "block_sizes": list(self.csv_progress.block_sizes)},
            "count_before": self.count_before,
        }

    @classmethod
    def parse(cls, document: Any) -> "Checkpoint":
        f = Fields(document, "checkpoint")
        if document.get("format") != FORMAT:
            raise RecordError(f"checkpoint format is {document.get('format')!r}, not {FORMAT!r}")
        progress = _progress(f)
        csv = document.get("csv")
        return cls(slot=f.time("slot"), run=f.text("run", _RUN), blob=f.text("blob"), properties=f.texts("properties"),
                   next_link=f.text("next_link"), pages=f.count("pages"), progress=progress,
                   ids_bytes=f.count("ids_bytes"), started=f.time("started"), saved=f.time("saved"),
                   delta_link=None if document.get("delta_link") is None else f.text("delta_link"),
                   csv_progress=None if csv is None else _progress(Fields(csv, "checkpoint csv")),
                   count_before=f.maybe_count("count_before"))


def _progress(f: Fields) -> Progress:
    block_ids, block_sizes = f.texts("block_ids"), f.counts("block_sizes")
    if len(block_ids) != len(block_sizes):
        raise RecordError("checkpoint lists a different number of block ids and block sizes")
    return Progress(f.count("users"), f.count("uncompressed_bytes"), list(block_ids), list(block_sizes))


def load(container: ContainerClient, slot: datetime) -> Checkpoint | None:
    """The slot's checkpoint, or None when there is none or it cannot be parsed (logged)."""
    name = naming.checkpoint_blob_name(slot)
    try:
        document = storage.read_json(container, name)
        return None if document is None else Checkpoint.parse(document)
    except RecordError as why:
        log.warning("Checkpoint %s is unreadable (%s); starting the slot over", name, why)
        return None


def save(container: ContainerClient, checkpoint: Checkpoint) -> None:
    storage.write_json(container, naming.checkpoint_blob_name(checkpoint.slot), checkpoint.to_document())


def leftovers(container: ContainerClient, slot: datetime) -> list[str]:
    """The slot's checkpoint and saved user ids that still exist (removed once the slot is published)."""
    names = (naming.checkpoint_blob_name(slot), naming.ids_blob_name(slot))
    return [name for name in names if storage.properties_of(container, name) is not None]


def discard(container: ContainerClient, slot: datetime) -> None:
    """Remove the slot's checkpoint and saved ids, so that its next run starts the slot over."""
    for name in leftovers(container, slot):
        storage.delete(container, name, "the slot's next run may resume from it")


class SavedIds:
    """The append blob of user-id digests (``UserIds.new_bytes`` pieces) that checkpoints count into."""

    def __init__(self, container: ContainerClient, slot: datetime) -> None:
        self._blob = container.get_blob_client(naming.ids_blob_name(slot))
        self.size: int | None = None  # None until started: a run that fails before its first checkpoint leaves none

    def start(self, kept: bytes = b"") -> None:
        """Begin the blob anew holding ``kept`` (what the checkpoint being resumed counted)."""
        with storage.storage_errors(f"creating {self._blob.blob_name}"):
            self._blob.create_append_blob()
        self.size = 0
        self.append(kept)

    def append(self, data: bytes) -> int:
        """Append ``data``; return the blob's size, which the next checkpoint records."""
        if self.size is None:
            self.start()
        offset = self.size or 0
        with storage.storage_errors(f"appending to {self._blob.blob_name}"):
            for at in range(0, len(data), _APPEND_MAX):
                piece = data[at:at + _APPEND_MAX]
                self._append_at(piece, offset + at)
        self.size = offset + len(data)
        return self.size

    def _append_at(self, piece: bytes, offset: int) -> None:
        """Append ``piece`` where it belongs, exactly once: a retry whose first try landed (its answer
        lost) finds the blob already that long and stops; anything else is not this run's blob."""
        try:
            self._blob.append_block(piece, length=len(piece), appendpos_condition=offset)
        except HttpResponseError as error:
            if error.status_code != 412 or self._blob.get_blob_properties().size != offset + len(piece):
                raise

    def read(self, size: int) -> bytes | None:
        """The first ``size`` bytes, or None when the blob holds fewer (then the checkpoint is unusable)."""
        if size == 0:
            return b""
        with storage.storage_errors(f"reading {self._blob.blob_name}"):
            try:
                data = self._blob.download_blob(offset=0, length=size).readall()
            except ResourceNotFoundError:
                return None
            except HttpResponseError as error:
                if error.status_code == 416:  # the range starts past the end
                    return None
                raise
        return data if len(data) == size else None


#: The most one append block may hold (Append Block's limit).
_APPEND_MAX = 4 * 1024 * 1024


def why_unusable(checkpoint: Checkpoint, exports: ContainerClient, slot: datetime, properties: tuple[str, ...],
                 max_age: timedelta, now: datetime, with_csv: bool = False) -> str | None:
    """Why the checkpoint cannot be resumed (then the slot restarts clean), or None if it can."""
    names = naming.run_names(slot, checkpoint.run)
    if checkpoint.slot != slot or checkpoint.blob != names.jsonl:
        return "it belongs to another slot or blob"
    blob = exports.get_blob_client(names.jsonl)
    csv_blob = exports.get_blob_client(names.csv) if with_csv else None
    if tuple(properties) != checkpoint.properties:
        return "USER_PROPERTIES changed since it was saved"
    if not -naming.FUTURE_TOLERANCE <= now - checkpoint.saved <= max_age:
        return f"it is older than CHECKPOINT_MAX_AGE_HOURS ({max_age.total_seconds() / 3600:g} h)"
    if (csv_blob is None) != (checkpoint.csv_progress is None):
        return "EXPORT_FORMATS changed since it was saved"
    for staged_in, progress in ((blob, checkpoint.progress), (csv_blob, checkpoint.csv_progress)):
        if staged_in is None or progress is None:
            continue
        staged = storage.staged_blocks(staged_in)
        if any(staged.get(i) != size for i, size in zip(progress.block_ids, progress.block_sizes, strict=True)):
            return "its staged blocks are gone (committed or discarded meanwhile)"
    return None


@dataclass(frozen=True)
class Resume:
    """A usable checkpoint and the user-id digests it counted."""

    checkpoint: Checkpoint
    ids: UserIds


def resumable(state: ContainerClient, exports: ContainerClient, slot: datetime, properties: tuple[str, ...],
              max_age: timedelta, now: datetime, *, needs_delta_link: bool = False,
              with_csv: bool = False) -> Resume | None:
    """The slot's checkpoint and its saved ids if the export can continue from them; else None (logged).

    The checkpoint lives in ``state``; the blocks it counts are staged on its run's blobs in
    ``exports``. In delta mode (``needs_delta_link``) only a checkpoint holding the deltaLink its run
    began with will do: a link taken later would never replay changes to users read before it.
    """
    saved = load(state, slot)
    if saved is None:
        return None
    try:
        why = why_unusable(saved, exports, slot, properties, max_age, now, with_csv)
    except ValueError:  # a run id run_names refuses (the parser checks it; a hand-made record might not)
        why = "it names no valid run"
    if why is None and needs_delta_link and saved.delta_link is None:
        why = "it was saved without a delta link (EXPORT_MODE changed)"
    ids = None
    if why is None:
        data = SavedIds(state, slot).read(saved.ids_bytes)
        try:
            ids = UserIds.from_bytes(data) if data is not None else None
        except ValueError:
            ids = None
        if ids is None or len(ids) != saved.progress.users:
            why = "the user ids it counted are gone or damaged"
    if why or ids is None:
        log.warning("Not resuming slot %s from its checkpoint: %s; starting over", iso(slot), why)
        return None
    log.info("Resuming slot %s after page %d (%d users already staged)", iso(slot), saved.pages,
             saved.progress.users)
    return Resume(saved, ids)
