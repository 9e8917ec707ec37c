"""Publishing a slot: its manifest, then ``latest.json``; and telling whether a slot is published.

Both happen only after the export blob is committed, and only while the run still holds the slot's
lease, so a reader who follows ``latest.json`` → manifest → blob never meets a half-written export.
"""

from __future__ import annotations

import logging
from datetime import datetime

from azure.storage.blob import ContainerClient

from . import naming, storage
from .lease import SlotLease
from .records import DeltaState, Manifest, RecordError, iso

log = logging.getLogger(__name__)


def published(container: ContainerClient, slot: datetime) -> Manifest | None:
    """The slot's manifest if the slot was exported; a manifest that does not parse means it was not."""
    name = naming.manifest_blob_name(slot)
    try:
        document = storage.read_json(container, name)
        if document is None:
            return None
        manifest = Manifest.parse(document)
    except RecordError as why:
        log.warning("Manifest %s is not valid (%s); exporting the slot again", name, why)
        return None
    if manifest.slot != slot or manifest.blob != naming.export_blob_name(slot) or manifest.manifest != name:
        log.warning("Manifest %s describes another slot or blob; exporting the slot again", name)
        return None
    log.info("Slot %s was already exported; nothing to do (use --force to export it again)", iso(slot))
    return manifest


def publish(container: ContainerClient, manifest: Manifest, lease: SlotLease,
            delta_state: DeltaState | None = None) -> None:
    """Write the manifest, advance the delta state (delta mode), then point ``latest.json`` at it.

    The delta state only moves forward: a state already based on a later slot stays.
    """
    lease.ensure()
    storage.write_json(container, manifest.manifest, manifest.to_document())
    if delta_state is not None:
        lease.ensure()
        _advance(container, delta_state)
    lease.ensure()
    if not storage.point_latest(container, manifest.pointer(), manifest.finished):
        log.warning("%s already points at a later slot than %s; left as it is", naming.LATEST_BLOB,
                    iso(manifest.slot))


def _advance(container: ContainerClient, state: DeltaState) -> None:
    try:
        standing = DeltaState.parse(storage.read_json(container, naming.DELTA_STATE_BLOB))
    except RecordError:  # none yet, or not valid: replaced
        standing = None
    if standing is not None and standing.base_slot > state.base_slot:
        log.warning("%s is already based on a later slot than %s; left as it is", naming.DELTA_STATE_BLOB,
                    iso(state.base_slot))
        return
    storage.write_json(container, naming.DELTA_STATE_BLOB, state.to_document())
