"""Delta mode: a slot's complete snapshot made from the previous one and the changes since it.

Graph's change feed (``/v1.0/users/delta``) is followed from the deltaLink saved when the previous
snapshot was published. The changes are held in memory (encoded, capped by DELTA_MAX_CHANGES), then
the previous snapshot is streamed from storage, each user either copied as it is, merged with its
change, or dropped; users the snapshot did not hold follow at the end. The result is the same set of
users a full export would publish, at a cost that grows with the changes, not the tenant. It writes
into files the caller opened (:func:`make_snapshot`): committing and publishing are ``export``'s.

Whenever a delta slot cannot be trusted to be complete, it does not guess: :class:`FallBack` says
why, and the caller runs a full export instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from azure.storage.blob import BlobClient
from isal import igzip, isal_zlib

from . import graph, jsontext, naming, publish, signins, storage
from .errors import ExportError, GraphError, PageLinkRejected, origin_of
from .graph import GraphUsers
from .progress import RunProgress
from .properties import MANAGER, absent_value, check_spelling, manager_from_delta
from .records import DeltaApplied, DeltaState, Manifest, RecordError, UserCount, iso
from .settings import Settings
from .signins import NOT_LISTED, SIGN_IN_ACTIVITY, SignIns
from .sink import CommittedBlob, encode_user
from .slotrun import SlotRun, SlotStore

log = logging.getLogger(__name__)

#: How much merged output is handed to the writer at a time.
_FLUSH_BYTES = 1024 * 1024
_ID_PREFIX = b'{"id":"'
#: How users/delta reports a change of manager (``$select`` names ``manager``): a list of references.
_MANAGER_DELTA = f"{MANAGER}@delta"
#: What reading a damaged gzip stream raises; isal's own error (a bad deflate block) is not an OSError.
_NOT_GZIP = (OSError, EOFError, cast(type[Exception], isal_zlib.error))  # isal's stubs call it an instance


class FallBack(Exception):
    """This slot cannot be made from changes; the text says why (logged), and a full export follows."""


class LineSink(Protocol):
    """Where merged users go: the export's files, or :class:`Fingerprints` when only comparing."""

    def write_lines(self, lines: list[bytes]) -> None: ...


class RecordSink(Protocol):
    """Where the change records go as Graph sent them: the slot's changes file."""

    def write(self, users: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Base:
    """The delta state and the published snapshot it starts from."""

    state: DeltaState
    manifest: Manifest


def load_base(store: SlotStore, settings: Settings, now: datetime, *, stale_ok: bool = False) -> Base:
    """The saved delta state and its base snapshot, checked; FallBack when either is not usable.

    The state is trusted only as far as it agrees with the manifest it names (slot, tenant,
    container, endpoint, a link taken before that snapshot was finished), with the shape of a
    users/delta link and with what its base slot's pointer committed (that manifest, unchanged, and
    that link); the base's files are checked against the manifest and the pointer's ETags from their
    properties.
    ``stale_ok`` accepts a delta link older than FULL_SYNC_EVERY_DAYS (to measure drift with it).
    """
    try:
        document = storage.read_json(store.state, naming.DELTA_STATE_BLOB)
        if document is None:
            raise FallBack("there is no delta state yet")
        state = DeltaState.parse(document)
    except RecordError as why:
        raise FallBack(f"the delta state is not valid ({why})") from None
    if state.properties != settings.user_properties:
        raise FallBack("USER_PROPERTIES changed since the delta state was saved")
    age = now - state.taken
    if (age > timedelta(days=settings.full_sync_every_days) and not stale_ok) or age < -naming.FUTURE_TOLERANCE:
        raise FallBack(f"the delta link is {age.total_seconds() / 86400:.1f} days old "
                       f"(FULL_SYNC_EVERY_DAYS is {settings.full_sync_every_days:g})")
    if (problem := _link_problem(state.delta_link, settings.graph_endpoint)) is not None:
        raise FallBack(f"the saved delta link {problem}")
    try:
        document, manifest_etag = storage.read_json_etag(store.exports, state.base_manifest)
        manifest = Manifest.parse(document)
    except RecordError as why:
        raise FallBack(f"the base snapshot's manifest {state.base_manifest} is missing or not valid ({why})") from None
    if (problem := _disagreement(state, manifest, settings)) is not None:
        raise FallBack(f"the delta state and the base snapshot's manifest {state.base_manifest} disagree ({problem})")
    etags = _committed_etags(store, state, manifest_etag)
    if (problem := publish.files_mismatch(store, manifest, etags)) is not None:
        raise FallBack(f"the base snapshot is not what its manifest says ({problem})")
    return Base(state, manifest)


def _committed_etags(store: SlotStore, state: DeltaState, manifest_etag: str | None) -> dict[str, str]:
    """The ETags the base slot's pointer committed; FallBack when the state is not what that slot published.

    A state is only ever written from its base slot's pointer (``publish.finish``), so the pointer
    must name the same manifest, unchanged since the commit, with the same delta link and time. A
    state that pairs one slot's snapshot with a later slot's link (an edit, a partial restore) would
    otherwise replay too few changes, and the times it holds, kept to the second, cannot always tell.
    A base from before slot pointers (manifest format 2) has none: one full export starts again.
    """
    pointer, problem = publish.pointer_of(store, state)
    if pointer is not None and (manifest_etag is None or pointer.etags.get(pointer.manifest) != manifest_etag):
        problem = f"the manifest {pointer.manifest} changed after the commit"
    if pointer is None or problem is not None:
        raise FallBack(f"the delta state is not what slot {iso(state.base_slot)} published ({problem})")
    return pointer.etags


def _link_problem(link: str, graph_endpoint: str) -> str | None:
    """Why ``link`` is not a deltaLink of GRAPH_ENDPOINT's users/delta (never the link itself: it holds state)."""
    try:
        parts = urlsplit(link)
        query = parse_qs(parts.query)
    except ValueError:
        return "is not a URL"
    if origin_of(link).lower() != origin_of(graph_endpoint).lower():
        return "is not on GRAPH_ENDPOINT"
    if parts.path.rstrip("/").lower() != "/v1.0/users/delta":
        return "is not a users/delta link"
    tokens = query.get("$deltatoken", []) + query.get("deltatoken", [])
    if len(tokens) != 1 or tokens[0].lower() in ("", "latest"):
        return "holds no delta token of a finished round"
    return None


def _disagreement(state: DeltaState, manifest: Manifest, settings: Settings) -> str | None:
    if manifest.slot != state.base_slot or manifest.manifest != state.base_manifest:
        return f"the state is for slot {iso(state.base_slot)}, the manifest for {iso(manifest.slot)}"
    if manifest.tenant_id.lower() != settings.tenant_id.lower() or manifest.container != settings.container:
        return "another tenant or container"
    if origin_of(manifest.graph_endpoint).lower() != origin_of(settings.graph_endpoint).lower():
        return "another GRAPH_ENDPOINT"
    if manifest.properties != settings.user_properties:
        return "other USER_PROPERTIES"
    if state.taken > manifest.finished:
        return "the link was taken after the snapshot was finished, so changes in between would be missed"
    return None


def latest_link(users: GraphUsers, settings: Settings) -> str:
    """A deltaLink for now (``$deltatoken=latest``): taken before a full export, replayed by the next slot."""
    url = graph.latest_delta_url(settings.graph_endpoint, settings.user_properties)
    pages = users.changes(url)
    with contextlib.closing(pages):
        return _last_of(pages, lambda page: None)


class Changes:
    """One slot's changes by user id, the last occurrence winning; at most ``limit`` users.

    An update is merged into what came before for the same id (with ``Prefer: return=minimal`` a
    later record carries only what changed again); a removal replaces it. Kept encoded and keyed by
    the id's UTF-8 bytes, as the snapshot's lines hold them: ~0.5 KB a user.
    """

    REMOVED = b""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._by_id: dict[bytes, bytes] = {}
        self.records = 0

    def add(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take one page of change records; return them as published (annotations but @removed dropped)."""
        published = []
        for item in items:
            item = {k: v for k, v in item.items() if not k.startswith("@") or k == "@removed"}
            if _MANAGER_DELTA in item:  # the relationship's change, as the snapshot names it
                item[MANAGER] = manager_from_delta(item.pop(_MANAGER_DELTA))
            published.append(item)
            user_id = item["id"].encode("utf-8")
            if "@removed" in item:
                self._by_id[user_id] = self.REMOVED
            else:
                earlier = self._by_id.get(user_id)
                merged = {**jsontext.loads(earlier), **item} if earlier else item
                # A copy: orjson's result keeps its whole output buffer (~4 KB) however short the JSON.
                self._by_id[user_id] = bytes(memoryview(jsontext.dumps_line(merged)))
            if len(self._by_id) > self._limit:
                raise FallBack(f"more than DELTA_MAX_CHANGES ({self._limit}) users changed since the last slot")
        self.records += len(published)
        return published

    def pop(self, user_id: bytes) -> bytes | None:
        return self._by_id.pop(user_id, None)

    def remaining(self) -> Iterator[bytes]:
        """What was not popped: users the base did not hold, in the order they first changed."""
        return iter(self._by_id.values())


def read_changes(users: GraphUsers, settings: Settings, delta_link: str, changes: Changes,
                 feed: RecordSink | None, progress: RunProgress | None = None) -> tuple[str, int]:
    """Follow ``delta_link`` to the end of the round: every change into ``changes`` and ``feed``.

    Returns the round's new deltaLink and the number of pages. FallBack when Graph no longer accepts
    the link (expired: syncStateNotFound, 410, resyncRequired) or there are too many changes.
    """
    pages = users.changes(delta_link)
    count = 0

    def take(page: graph.Page) -> None:
        nonlocal count
        count = page.number
        if progress is not None:
            progress.add(len(page.users))
        check_spelling(page.users, settings.user_properties)
        published = changes.add(page.users)
        if feed is not None:
            feed.write(published)

    try:
        with contextlib.closing(pages):
            link = _last_of(pages, take)
    except PageLinkRejected as rejected:
        raise FallBack(f"Graph no longer accepts the saved delta link ({rejected})") from None
    return link, count


def _last_of(pages: Iterable[graph.Page], each: Callable[[graph.Page], None]) -> str:
    """Consume a users/delta round, calling ``each`` per page; the deltaLink its last page carries."""
    last: graph.Page | None = None
    for last in pages:
        each(last)
    if last is None or last.delta_link is None:
        raise GraphError("Graph's users/delta ended without an @odata.deltaLink: check GRAPH_ENDPOINT; nothing "
                         "was published.")
    return last.delta_link


@dataclass(frozen=True)
class Merged:
    added: int
    updated: int
    removed: int


def merge(base: Manifest, base_blob: BlobClient, changes: Changes, properties: tuple[str, ...],
          writer: LineSink, sign_ins: SignIns | None = None) -> Merged:
    """Stream the base snapshot through ``changes`` into ``writer``: the slot's complete snapshot.

    Unchanged users are copied byte for byte (with ``sign_ins``, each gets its signInActivity from
    there instead); new users get the base's property order. The base is checked against its manifest
    (sha256 and user count) as it streams; a mismatch is a FallBack, and nothing is committed.
    """
    digest = hashlib.sha256()
    added = updated = removed = users = 0
    out: list[bytes] = []
    out_size = 0
    order = properties
    for line in _lines(base_blob, digest):
        if users == 0 and set(first := tuple(_record(line))) == set(properties):
            order = first  # Graph's order, which a full export keeps
        users += 1
        user_id = _id_of(line)
        change = changes.pop(user_id)
        if change is not None:
            if change == Changes.REMOVED:
                removed += 1
                continue
            updated += 1
            record, arrived = _record(line), jsontext.loads(change)
            # Only the selected properties the record has: a property Graph sends beyond $select is not kept.
            record.update((k, v) for k, v in arrived.items() if k in record)
            line = encode_user(_signed_in(record, sign_ins))
        elif sign_ins is not None:
            line = encode_user(_signed_in(_record(line), sign_ins))
        out.append(line)
        out_size += len(line)
        if out_size >= _FLUSH_BYTES:
            writer.write_lines(out)
            out, out_size = [], 0
    if digest.hexdigest() != base.sha256 or users != base.users:
        raise FallBack(f"the base snapshot {base.blob} does not match its manifest (sha256 or user count)")
    for change in changes.remaining():
        if change == Changes.REMOVED:
            continue  # removing a user the snapshot does not hold is not an error
        added += 1
        arrived = jsontext.loads(change)
        out.append(encode_user(_signed_in({p: arrived.get(p, absent_value(p)) for p in order}, sign_ins)))
    writer.write_lines(out)
    return Merged(added, updated, removed)


def _signed_in(record: dict[str, Any], sign_ins: SignIns | None) -> dict[str, Any]:
    """The record with its signInActivity as read for this slot (users/delta does not track it); null for a
    user the listing did not hold, which ``sign_ins`` counts."""
    if sign_ins is not None:
        value = sign_ins.get(record["id"])
        if value is NOT_LISTED:
            sign_ins.missed += 1
            value = None
        record[SIGN_IN_ACTIVITY] = value
    return record


def _id_of(line: bytes) -> bytes:
    """A snapshot line's user id as UTF-8 bytes; taken straight from the line when it starts with it."""
    if line.startswith(_ID_PREFIX):
        end = line.find(b'"', len(_ID_PREFIX))
        if end > 0 and b"\\" not in line[len(_ID_PREFIX):end]:
            return line[len(_ID_PREFIX):end]
    user_id = _record(line).get("id")
    if not isinstance(user_id, str) or not user_id:
        raise FallBack("the base snapshot holds a line without a user id")
    return user_id.encode("utf-8")


def _record(line: bytes) -> dict[str, Any]:
    """A snapshot line as the user object it must be; FallBack for anything else (a base that is not
    what its manifest says is found out here at the latest, before anything is committed)."""
    try:
        record = jsontext.loads(line)
    except jsontext.JSONDecodeError:
        log.debug("A line of the base snapshot is not JSON", exc_info=True)  # where the decoder stopped
        raise FallBack("the base snapshot holds a line that is not JSON") from None
    if not isinstance(record, dict):
        raise FallBack("the base snapshot holds a line that is not a user object")
    return record


class _Chunks(io.RawIOBase):
    """A blob download as a readable stream, hashing the compressed bytes as they pass."""

    def __init__(self, chunks: Iterable[bytes], digest: Any) -> None:
        self._chunks = iter(chunks)
        self._digest = digest
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._digest.update(chunk)
            self._left = chunk
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def _lines(blob: BlobClient, digest: Any) -> Iterator[bytes]:
    """The base snapshot's JSON lines (without their newline), decompressed as they download."""
    with storage.storage_errors(f"reading {blob.blob_name}"):
        chunks = blob.download_blob().chunks()
        raw = io.BufferedReader(_Chunks(chunks, digest), buffer_size=1024 * 1024)
        try:
            # isal has no type hints for IGzipFile; it reads every gzip member, as the export has several.
            with igzip.IGzipFile(fileobj=raw, mode="rb") as stream:  # type: ignore[no-untyped-call]
                rest = b""
                while piece := stream.read(_FLUSH_BYTES):
                    lines = (rest + piece).split(b"\n")
                    rest = lines.pop()
                    yield from lines
        except _NOT_GZIP as why:
            log.debug("The base snapshot %s is not valid gzip", blob.blob_name, exc_info=True)
            raise FallBack(f"the base snapshot {blob.blob_name} is not valid gzip ({type(why).__name__})") from None
    if rest:
        raise FallBack(f"the base snapshot {blob.blob_name} ends in the middle of a line")


class Fingerprints:
    """Each user's id and record as two 64-bit digests (16 bytes a user), to compare two snapshots.

    Python's ``hash`` is enough: both sides are digested in one process, and a collision among
    64-bit values changes a count by one with negligible probability.
    """

    _BUCKETS = 64

    def __init__(self, ignore: str | None = None) -> None:
        self._ids = [array("q") for _ in range(self._BUCKETS)]
        self._records = [array("q") for _ in range(self._BUCKETS)]
        self._ignore = ignore

    def write_lines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            key = hash(_id_of(line))
            self._ids[key % self._BUCKETS].append(key)
            if self._ignore is not None:  # a property the changes cannot tell (signInActivity)
                record = _record(line)
                record.pop(self._ignore, None)
                line = encode_user(record)
            self._records[key % self._BUCKETS].append(hash(line))

    def differing(self, other: "Fingerprints") -> int:
        """Users in one but not the other, or in both with different records."""
        count = 0
        for bucket in range(self._BUCKETS):
            mine = dict(zip(self._ids[bucket], self._records[bucket], strict=True))
            for key, record in zip(other._ids[bucket], other._records[bucket], strict=True):
                if mine.pop(key, None) != record:
                    count += 1
            count += len(mine)
        return count


def measure_drift(run: SlotRun, exported: Manifest) -> int | None:
    """How many users of a full export differ from what the changes since the last snapshot make.

    Run after a full export in delta mode, while the previous state's delta link still works. A
    measurement, never a condition of the export it measures: whenever it cannot be taken (no usable
    base, Graph or storage failing, a base that is not what its manifest says) it is None, logged
    with the reason.
    """
    settings = run.settings
    try:
        base = load_base(run.store, settings, datetime.now(timezone.utc), stale_ok=True)
        changes = Changes(settings.delta_max_changes)
        read_changes(run.graph, settings, base.state.delta_link, changes, None)
        # signInActivity is not in the change feed, so the two cannot agree on it: compared without it.
        untracked = SIGN_IN_ACTIVITY if SIGN_IN_ACTIVITY in settings.user_properties else None
        expected, actual = Fingerprints(untracked), Fingerprints(untracked)
        merge(base.manifest, run.blob(base.manifest.blob), changes, settings.user_properties, expected)
        actual.write_lines(_lines(run.blob(exported.blob), hashlib.sha256()))
    except (FallBack, ExportError) as why:
        log.warning("Drift not measured: %s", why)
        return None
    except Exception as why:  # noqa: BLE001 - a measurement: whatever breaks it, the export stands
        log.warning("Drift not measured: unexpected %s", type(why).__name__)
        return None
    drift = expected.differing(actual)
    log.log(logging.WARNING if drift else logging.INFO,
            "Delta mode drift: %d users differ between the full export and the previous snapshot with its "
            "changes applied", drift)
    return drift


@contextlib.contextmanager
def _sign_ins_if_selected(users: GraphUsers, settings: Settings) -> Iterator[SignIns | None]:
    """Every user's signInActivity for this slot when USER_PROPERTIES selects it; else None."""
    if SIGN_IN_ACTIVITY not in settings.user_properties:
        yield None
        return
    with signins.read(users) as sign_ins:
        log.info("Delta mode: signInActivity of %d users read in %d pages", sign_ins.users, sign_ins.pages)
        yield sign_ins
        # Users created after the listing was read are not in it; more than the count check's tolerance
        # means pages of it were lost, and their users would be published as never having signed in.
        if sign_ins.missed > settings.user_count_tolerance:
            raise GraphError(f"The signInActivity listing lacked {sign_ins.missed} users of the snapshot (more than "
                             f"USER_COUNT_TOLERANCE, {settings.user_count_tolerance}): pages of it were lost; "
                             "nothing was published. Run again.")


@dataclass(frozen=True)
class DeltaRound:
    """What one slot's round of changes made: where the slot after it starts, and the counts for its manifest."""

    delta_link: str
    taken: datetime
    pages: int
    change_records: int
    merged: Merged
    #: Graph's user counts before and after the changes were read, for the completeness check.
    count: UserCount

    def applied(self, base: Base, changes: CommittedBlob) -> DeltaApplied:
        """The manifest's ``delta`` section, once the changes file is committed as ``changes``."""
        m = self.merged
        return DeltaApplied(
            base_manifest=base.manifest.manifest, base_sha256=base.manifest.sha256, changes_blob=changes.name,
            changes_bytes=changes.bytes, changes_sha256=changes.sha256, change_records=self.change_records,
            added=m.added, updated=m.updated, removed=m.removed)


def make_snapshot(run: SlotRun, base: Base, snapshot: LineSink, feed: RecordSink) -> DeltaRound:
    """This slot's snapshot from ``base`` and the changes since, written to ``snapshot`` (the changes
    themselves to ``feed``), with Graph's user counts from before and after reading the changes;
    FallBack when that is not possible. Checking the counts and committing are the caller's."""
    settings = run.settings
    taken = datetime.now(timezone.utc)
    changes = Changes(settings.delta_max_changes)
    run.progress.reading("changes")  # its count is of change records; the last report adds the users published
    before = run.graph.count()
    link, pages = read_changes(run.graph, settings, base.state.delta_link, changes, feed, run.progress)
    count = UserCount(before, run.graph.count(), settings.user_count_tolerance)
    with _sign_ins_if_selected(run.graph, settings) as sign_ins:
        merged = merge(base.manifest, run.blob(base.manifest.blob), changes, settings.user_properties, snapshot,
                       sign_ins)
    log.info("Delta slot %s: %d change records in %d pages; %d added, %d updated, %d removed", iso(run.slot),
             changes.records, pages, merged.added, merged.updated, merged.removed)
    return DeltaRound(link, taken, pages, changes.records, merged, count)
