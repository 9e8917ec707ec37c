"""What one run of one slot carries from the first page to the commit, in one object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

from azure.storage.blob import BlobClient, ContainerClient

from . import naming
from .graph import GraphUsers
from .lease import SlotLease
from .modes import ExportMode
from .naming import RunNames
from .progress import RunProgress
from .records import CsvFile, DeltaApplied, Manifest, UserCount
from .settings import Settings
from .sink import CommittedBlob


@dataclass(frozen=True)
class SlotStore:
    """Where one slot lives: ``exports`` receives what is published (files, then manifests: never
    overwritten); ``state`` holds the slot's pointer, lock, checkpoint and the other mutable records."""

    exports: ContainerClient
    state: ContainerClient
    slot: datetime
    #: EXPORT_CONTAINER's name, as manifests record it.
    container: str


@dataclass(frozen=True)
class SlotRun:
    """One run of a slot: its settings, its Graph client, where the slot lives, its own blob names, the lease.

    ``committed`` collects the ETag of each file as it is committed, which the slot's pointer records.
    """

    settings: Settings
    graph: GraphUsers
    store: SlotStore
    names: RunNames
    lease: SlotLease
    progress: RunProgress
    started: datetime
    #: The manifest of the export this run replaces (``--force``, or one found broken), if any.
    supersedes: str | None = None
    committed: dict[str, str] = field(default_factory=dict)

    @property
    def run(self) -> str:
        return self.names.run

    @property
    def slot(self) -> datetime:
        return self.store.slot

    @property
    def exports(self) -> ContainerClient:
        return self.store.exports

    @property
    def state(self) -> ContainerClient:
        return self.store.state

    def continuing(self, run: str) -> "SlotRun":
        """The same run context under an earlier run's names (resuming its checkpoint)."""
        return dataclasses.replace(self, names=naming.run_names(self.slot, run), committed={})

    def blob(self, name: str) -> BlobClient:
        return self.exports.get_blob_client(name)

    def record(self, *committed: CommittedBlob | None) -> None:
        for blob in committed:
            if blob is not None:
                self.committed[blob.name] = blob.etag

    def manifest(self, data: CommittedBlob, csv: CommittedBlob | None, pages: int, *, started: datetime,
                 resumed: bool = False, delta: DeltaApplied | None = None, count: UserCount | None = None) -> Manifest:
        """The manifest of what this run committed (``data`` and ``csv``, already recorded)."""
        s = self.settings
        return Manifest(
            container=s.container, blob=data.name, manifest=self.names.manifest, users=data.users, pages=pages,
            properties=s.user_properties, bytes=data.bytes, uncompressed_bytes=data.uncompressed_bytes,
            sha256=data.sha256, slot=self.slot, started=started, finished=datetime.now(timezone.utc),
            resumed=resumed, tenant_id=s.tenant_id, graph_endpoint=s.graph_endpoint,
            mode=ExportMode.FULL if delta is None else ExportMode.DELTA, delta=delta,
            csv=None if csv is None else CsvFile(blob=csv.name, bytes=csv.bytes,
                                                 uncompressed_bytes=csv.uncompressed_bytes, sha256=csv.sha256),
            run=self.run, supersedes=self.supersedes, count=count,
        )
