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
from .records import Manifest, RecordError, iso

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


def publish(container: ContainerClient, manifest: Manifest, lease: SlotLease) -> None:
    """Write the manifest, then point ``latest.json`` at it unless a later slot is already there."""
    lease.ensure()
    storage.write_json(container, manifest.manifest, manifest.to_document())
    lease.ensure()
    if not storage.point_latest(container, manifest.pointer(), manifest.finished):
        log.warning("%s already points at a later slot than %s; left as it is", naming.LATEST_BLOB,
                    iso(manifest.slot))
