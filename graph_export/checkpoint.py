"""Resumable progress of one slot's export, kept in a small state blob next to the exports.

Every few pages the export ends a gzip member, stages it and saves a checkpoint: the nextLink to
continue from, the ids and sizes of the blocks staged so far, and the counts. A killed or timed-out
run's next invocation for the same slot continues from there; because each checkpoint segment is its
own gzip member (RFC 1952 allows a file of several), the result is byte for byte what an
uninterrupted run writes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from . import naming, sink

log = logging.getLogger(__name__)

FORMAT = "graph-users-export-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    format: str
    slot: str
    blob: str
    properties: list[str]
    next_link: str
    pages: int
    users: int
    uncompressed_bytes: int
    block_ids: list[str]
    block_sizes: list[int]
    started: str
    saved: str


def load(container: ContainerClient, slot: datetime) -> Checkpoint | None:
    """The slot's checkpoint, or None when there is none or it cannot be read."""
    name = naming.checkpoint_blob_name(slot)
    document = sink.read_json(container, name)
    if document is None:
        return None
    try:
        checkpoint = Checkpoint(**{f.name: document[f.name] for f in fields(Checkpoint)})
    except (KeyError, TypeError):
        log.warning("Checkpoint %s is unreadable; starting the slot over", name)
        return None
    return checkpoint


def save(container: ContainerClient, checkpoint: Checkpoint) -> None:
    sink.write_json(container, naming.checkpoint_blob_name(naming.parse_slot(checkpoint.slot)), asdict(checkpoint))


def delete(container: ContainerClient, slot: datetime) -> None:
    name = naming.checkpoint_blob_name(slot)
    with sink.storage_errors(f"deleting {name}"):
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass


def why_unusable(checkpoint: Checkpoint, blob: BlobClient, properties: tuple[str, ...],
                 max_age: timedelta, now: datetime) -> str | None:
    """Why the checkpoint cannot be resumed (then the slot restarts clean), or None if it can."""
    if checkpoint.format != FORMAT:
        return f"it has format {checkpoint.format!r}"
    if checkpoint.blob != blob.blob_name:
        return "it belongs to another blob"
    if list(properties) != checkpoint.properties:
        return "USER_PROPERTIES changed since it was saved"
    saved = naming.parse_slot(checkpoint.saved)
    if now - saved > max_age:
        return f"it is older than CHECKPOINT_MAX_AGE_HOURS ({max_age.total_seconds() / 3600:g} h)"
    staged = sink.staged_blocks(blob)
    if any(staged.get(i) != size for i, size in zip(checkpoint.block_ids, checkpoint.block_sizes)):
        return "its staged blocks are gone (committed or discarded meanwhile)"
    return None
