"""The small JSON records published beside each export, and the one strict parser for each.

Records are written by this project but read back from a container that people and other tools can
also write to, so every field is checked for type and shape on the way in. Anything a parser does
not understand is a :class:`RecordError`; callers decide what that means (a bad manifest: the slot
is not exported; a bad pointer: replace it). Datetimes live inside the records; strings only at the
blob boundary.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .modes import ExportMode

MANIFEST_FORMAT = "graph-users-export/4"
#: Manifests of earlier versions that are still read (a /1 manifest is a full export; /1 and /2 have no run;
#: none of them has Graph's user counts).
_OLDER_MANIFESTS = ("graph-users-export/1", "graph-users-export/2", "graph-users-export/3")
_WITH_RUN = ("graph-users-export/3", MANIFEST_FORMAT)
DELTA_STATE_FORMAT = "graph-users-export-delta/1"
SLOT_POINTER_FORMAT = "graph-users-export-slot/1"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RUN = re.compile(r"^[0-9a-f]{12}$")


class RecordError(ValueError):
    """A stored record is not one this version wrote: wrong type, missing or malformed field."""


def iso(moment: datetime) -> str:
    """A UTC time as the records spell it: seconds precision, ``Z``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Fields:
    """Typed access to a decoded JSON object's fields; every miss is a :class:`RecordError`."""

    def __init__(self, document: Any, what: str) -> None:
        if not isinstance(document, dict):
            raise RecordError(f"{what} is not a JSON object")
        self._document = document
        self._what = what

    def _get(self, name: str, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self._document.get(name)
        if not ok(value):
            raise RecordError(f"{self._what} field '{name}' is missing or not {expected}")
        return value

    def text(self, name: str, pattern: re.Pattern[str] | None = None) -> str:
        value: str = self._get(name, lambda v: isinstance(v, str) and bool(v)
                               and (pattern is None or pattern.match(v) is not None), "the expected text")
        return value

    def count(self, name: str) -> int:
        value: int = self._get(name, lambda v: type(v) is int and v >= 0, "a whole number")
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, lambda v: type(v) is bool, "true or false")
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        return tuple(self._get(name, lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                               "a list of text"))

    def counts(self, name: str) -> tuple[int, ...]:
        return tuple(self._get(name, lambda v: isinstance(v, list) and all(type(x) is int and x >= 0 for x in v),
                               "a list of whole numbers"))

    def maybe_count(self, name: str) -> int | None:
        return None if self._document.get(name) is None else self.count(name)

    def time(self, name: str) -> datetime:
        text = self.text(name)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"{self._what} field '{name}' is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise RecordError(f"{self._what} field '{name}' has no time zone")
        return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Progress:
    """What is staged so far, at a segment boundary: what a checkpoint needs to resume."""

    users: int
    uncompressed_bytes: int
    block_ids: list[str]
    block_sizes: list[int]


@dataclass(frozen=True)
class CsvFile:
    """The CSV copy of an export (EXPORT_FORMATS holds ``csv``): the same users, its own bytes and digest."""

    blob: str
    bytes: int
    uncompressed_bytes: int
    sha256: str

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, document: Any) -> "CsvFile":
        f = Fields(document, "manifest csv")
        return cls(blob=f.text("blob"), bytes=f.count("bytes"), uncompressed_bytes=f.count("uncompressed_bytes"),
                   sha256=f.text("sha256", _SHA256))


@dataclass(frozen=True)
class DeltaApplied:
    """How a delta slot's snapshot was made: the snapshot it started from and the changes applied."""

    base_manifest: str
    base_sha256: str
    changes_blob: str
    changes_bytes: int
    changes_sha256: str
    change_records: int
    added: int
    updated: int
    removed: int

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, document: Any) -> "DeltaApplied":
        f = Fields(document, "manifest delta")
        return cls(base_manifest=f.text("base_manifest"), base_sha256=f.text("base_sha256", _SHA256),
                   changes_blob=f.text("changes_blob"), changes_bytes=f.count("changes_bytes"),
                   changes_sha256=f.text("changes_sha256", _SHA256), change_records=f.count("change_records"),
                   added=f.count("added"), updated=f.count("updated"), removed=f.count("removed"))


@dataclass(frozen=True)
class UserCount:
    """What Graph's ``GET /users/$count`` said when the run began and when it had read every user
    (None: Graph refused or could not answer), and the USER_COUNT_TOLERANCE the snapshot was held to."""

    before: int | None
    after: int | None
    tolerance: int

    def allowed(self) -> tuple[int, int] | None:
        """The fewest and most users a complete snapshot may hold; None when neither count is known.

        Users added or removed while the run reads them make the two counts differ, and a snapshot
        taken in between may hold any number from the smaller to the larger; ``$count`` is eventually
        consistent, so each end may lag by a few users more: the tolerance.
        """
        known = [c for c in (self.before, self.after) if c is not None]
        if not known:
            return None
        return max(min(known) - self.tolerance, 0), max(known) + self.tolerance

    def holds(self, users: int) -> bool:
        """Whether a snapshot of ``users`` users lies in the allowed range (always, when nothing was counted)."""
        allowed = self.allowed()
        return allowed is None or allowed[0] <= users <= allowed[1]

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, document: Any) -> "UserCount":
        f = Fields(document, "manifest count")
        return cls(before=f.maybe_count("before"), after=f.maybe_count("after"), tolerance=f.count("tolerance"))


@dataclass(frozen=True)
class Manifest:
    """What one run of a slot published: written once, under the run's own name, after its files.

    It is the slot's export once the slot's pointer names it (``SlotPointer``); ``supersedes`` names
    the manifest it replaced (``--force``), so a reader listing manifests by day can drop that one.
    """

    container: str
    blob: str
    manifest: str
    users: int
    pages: int
    properties: tuple[str, ...]
    bytes: int
    uncompressed_bytes: int
    sha256: str
    slot: datetime
    started: datetime
    finished: datetime
    resumed: bool
    tenant_id: str
    graph_endpoint: str
    #: Every user read from /users, or the previous snapshot with the changes applied.
    mode: ExportMode = ExportMode.FULL
    delta: DeltaApplied | None = None
    #: A full export in delta mode: users that differ from what the changes alone would have made.
    drift: int | None = None
    csv: CsvFile | None = None
    #: The run that wrote it (every name it lists holds it); None in manifests before format 3.
    run: str | None = None
    supersedes: str | None = None
    #: Graph's user counts around the run and the tolerance (``UserCount``); None in manifests before format 4
    #: (and in one built without counting: every run of this version counts).
    count: UserCount | None = None

    def files(self) -> dict[str, tuple[int, str]]:
        """Every file the manifest lists: name -> (bytes, sha256)."""
        listed = {self.blob: (self.bytes, self.sha256)}
        if self.csv is not None:
            listed[self.csv.blob] = (self.csv.bytes, self.csv.sha256)
        if self.delta is not None:
            listed[self.delta.changes_blob] = (self.delta.changes_bytes, self.delta.changes_sha256)
        return listed

    def to_document(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "run": self.run,
            "supersedes": self.supersedes,
            "mode": self.mode,
            "container": self.container,
            "blob": self.blob,
            "manifest": self.manifest,
            "users": self.users,
            "pages": self.pages,
            "properties": list(self.properties),
            "bytes": self.bytes,
            "uncompressed_bytes": self.uncompressed_bytes,
            "sha256": self.sha256,
            "slot": iso(self.slot),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "resumed": self.resumed,
            "tenant_id": self.tenant_id,
            "graph_endpoint": self.graph_endpoint,
            "delta": None if self.delta is None else self.delta.to_document(),
            "drift": self.drift,
            "csv": None if self.csv is None else self.csv.to_document(),
            "count": None if self.count is None else self.count.to_document(),
        }

    @classmethod
    def parse(cls, document: Any) -> "Manifest":
        f = Fields(document, "manifest")
        version = document.get("format")
        if version != MANIFEST_FORMAT and version not in _OLDER_MANIFESTS:
            raise RecordError(f"manifest format is {version!r}, not {MANIFEST_FORMAT!r}")
        named = "full" if version == "graph-users-export/1" else f.text("mode")
        current, with_run = version == MANIFEST_FORMAT, version in _WITH_RUN
        if named not in tuple(ExportMode):
            raise RecordError(f"manifest mode is {named!r}, not 'full' or 'delta'")
        mode = ExportMode(named)
        delta = document.get("delta")
        if (mode == ExportMode.DELTA) != (delta is not None):
            raise RecordError("manifest mode and its delta section disagree")
        return cls(
            container=f.text("container"), blob=f.text("blob"), manifest=f.text("manifest"),
            users=f.count("users"), pages=f.count("pages"), properties=f.texts("properties"),
            bytes=f.count("bytes"), uncompressed_bytes=f.count("uncompressed_bytes"),
            sha256=f.text("sha256", _SHA256), slot=f.time("slot"), started=f.time("started"),
            finished=f.time("finished"), resumed=f.flag("resumed"), tenant_id=f.text("tenant_id"),
            graph_endpoint=f.text("graph_endpoint"), mode=mode,
            delta=None if delta is None else DeltaApplied.parse(delta), drift=f.maybe_count("drift"),
            csv=None if document.get("csv") is None else CsvFile.parse(document["csv"]),
            run=f.text("run", _RUN) if with_run else None,
            supersedes=None if not with_run or document.get("supersedes") is None else f.text("supersedes"),
            count=UserCount.parse(document["count"]) if current and document.get("count") is not None else None,
        )

    def pointer(self) -> "LatestPointer":
        return LatestPointer(slot=self.slot, blob=self.blob, manifest=self.manifest, users=self.users,
                             sha256=self.sha256, finished=self.finished)


@dataclass(frozen=True)
class SlotPointer:
    """``state/users-<slot>.current.json``: which manifest is the slot's export. Its write is the commit.

    Written conditionally (absent for a new slot; the ETag read before for ``--force``), so two runs
    can never both commit a slot. ``etags`` are the ETags the manifest and its files had when
    committed: a later change to any of them means the slot is no longer exported as recorded.
    ``delta_link``/``taken``: delta mode, where the slot after this one starts (never logged).
    """

    slot: datetime
    run: str
    manifest: str
    etags: dict[str, str]
    published: datetime
    delta_link: str | None = None
    taken: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        return {"format": SLOT_POINTER_FORMAT, "slot": iso(self.slot), "run": self.run, "manifest": self.manifest,
                "etags": dict(self.etags), "published": iso(self.published), "delta_link": self.delta_link,
                "taken": None if self.taken is None else iso(self.taken)}

    @classmethod
    def parse(cls, document: Any) -> "SlotPointer":
        f = Fields(document, "slot pointer")
        if document.get("format") != SLOT_POINTER_FORMAT:
            raise RecordError(f"slot pointer format is {document.get('format')!r}, not {SLOT_POINTER_FORMAT!r}")
        etags = document.get("etags")
        if not isinstance(etags, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                  for k, v in etags.items()):
            raise RecordError("slot pointer field 'etags' is missing or not an object of text")
        linked = document.get("delta_link") is not None
        if linked != (document.get("taken") is not None):
            raise RecordError("slot pointer fields 'delta_link' and 'taken' disagree")
        return cls(slot=f.time("slot"), run=f.text("run", _RUN), manifest=f.text("manifest"), etags=etags,
                   published=f.time("published"), delta_link=f.text("delta_link") if linked else None,
                   taken=f.time("taken") if linked else None)


@dataclass(frozen=True)
class LatestPointer:
    """``users/latest.json``: the newest export, which consumers read first."""

    slot: datetime
    blob: str
    manifest: str
    users: int
    sha256: str
    finished: datetime

    def to_document(self) -> dict[str, Any]:
        return {"slot": iso(self.slot), "blob": self.blob, "manifest": self.manifest, "users": self.users,
                "sha256": self.sha256, "finished": iso(self.finished)}

    @classmethod
    def parse(cls, document: Any) -> "LatestPointer":
        f = Fields(document, "latest.json")
        return cls(slot=f.time("slot"), blob=f.text("blob"), manifest=f.text("manifest"), users=f.count("users"),
                   sha256=f.text("sha256", _SHA256), finished=f.time("finished"))


@dataclass(frozen=True)
class FailureRecord:
    """``state/failure.json``: the last failed export of a tenant's slot, for ``status``: when, which slot, and
    the one redacted line of the failure (never a secret: the line is the ExportError's, redacted again)."""

    slot: datetime
    failed: datetime
    error: str
    exit_code: int

    def to_document(self) -> dict[str, Any]:
        return {"slot": iso(self.slot), "failed": iso(self.failed), "error": self.error, "exit_code": self.exit_code}

    @classmethod
    def parse(cls, document: Any) -> "FailureRecord":
        f = Fields(document, "failure.json")
        return cls(slot=f.time("slot"), failed=f.time("failed"), error=f.text("error"), exit_code=f.count("exit_code"))


@dataclass(frozen=True)
class DeltaState:
    """``state/delta.json``: where the next delta slot starts. Advanced only when a slot publishes.

    ``delta_link`` is Graph's deltaLink for the moment ``taken``; ``base_manifest`` names the snapshot
    that already holds every change before it, taken with ``properties``.
    """

    delta_link: str
    taken: datetime
    properties: tuple[str, ...]
    base_manifest: str
    base_slot: datetime

    def to_document(self) -> dict[str, Any]:
        return {"format": DELTA_STATE_FORMAT, "delta_link": self.delta_link, "taken": iso(self.taken),
                "properties": list(self.properties), "base_manifest": self.base_manifest,
                "base_slot": iso(self.base_slot)}

    @classmethod
    def parse(cls, document: Any) -> "DeltaState":
        f = Fields(document, "delta state")
        if document.get("format") != DELTA_STATE_FORMAT:
            raise RecordError(f"delta state format is {document.get('format')!r}, not {DELTA_STATE_FORMAT!r}")
        return cls(delta_link=f.text("delta_link"), taken=f.time("taken"), properties=f.texts("properties"),
                   base_manifest=f.text("base_manifest"), base_slot=f.time("base_slot"))


@dataclass(frozen=True)
class ExportSummary:
    """What one successful run published; printed by the CLI and logged by the function."""

    status: str
    users: int
    pages: int
    container: str
    blob: str
    manifest: str
    url: str
    bytes: int
    sha256: str
    slot: str
    started: str
    finished: str
    duration_s: float
    mode: ExportMode = ExportMode.FULL
    #: When the app's secret or certificate in Key Vault expires, if it says (not for federated).
    credential_expires: str | None = None
    #: Graph requests retried, and seconds spent waiting on throttling (429), in this run.
    retries: int = 0
    throttled_s: float = 0.0
    #: What this run finished of an earlier run's publishing (status "repaired"), e.g. "latest.json".
    repaired: tuple[str, ...] = ()
    #: Graph's user counts at the start and the end of the export's run (the manifest's ``count``; None: unknown).
    count_before: int | None = None
    count_after: int | None = None

    @classmethod
    def of(cls, manifest: "Manifest", status: str, url: str, duration_s: float,
           credential_expires: datetime | None = None, *, retries: int = 0,
           throttled_s: float = 0.0, repaired: tuple[str, ...] = ()) -> "ExportSummary":
        return cls(status=status, users=manifest.users, pages=manifest.pages, container=manifest.container,
                   blob=manifest.blob, manifest=manifest.manifest, url=url, bytes=manifest.bytes,
                   sha256=manifest.sha256, slot=iso(manifest.slot), started=iso(manifest.started),
                   finished=iso(manifest.finished), duration_s=round(duration_s, 3), mode=manifest.mode,
                   credential_expires=None if credential_expires is None else iso(credential_expires),
                   retries=retries, throttled_s=round(throttled_s, 3), repaired=repaired,
                   count_before=None if manifest.count is None else manifest.count.before,
                   count_after=None if manifest.count is None else manifest.count.after)

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["repaired"] = list(self.repaired)
        return document

    def fields(self) -> dict[str, Any]:
        """The summary as telemetry fields (``customDimensions`` in Application Insights), prefixed ``export_``."""
        return {f"export_{name}": ",".join(value) if isinstance(value, tuple) else value
                for name, value in asdict(self).items() if value is not None and value != ()}

    def line(self) -> str:
        how = " from changes" if self.mode == ExportMode.DELTA else ""
        if self.repaired:
            how += f" (finished {', '.join(self.repaired)})"
        return (f"Export {self.status}{how}: {self.users} users in {self.pages} pages -> "
                f"{self.container}/{self.blob} ({self.bytes} bytes, sha256 {self.sha256}) "
                f"in {self.duration_s:.1f} s")
