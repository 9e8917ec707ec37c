"""``python -m graph_export verify``: what a consumer reads, downloaded and checked against the commit.

``publish.standing()`` and ``files_mismatch()`` judge a slot from blob properties (what a run needs to
decide whether to export); this walks what a consumer reads, ``latest.json`` → the slot's pointer →
the manifest → its files, and reads every byte of it back:

- **The slot's pointer** (``state/users-<slot>.current.json``) parses and is for its slot; the
  manifest it names still has the ETag the pointer recorded, parses, and agrees with it (slot, run,
  container, and the run's own names for every file it lists).
- **Every file the manifest lists** (JSON Lines, CSV copy, delta changes) still has the ETag the
  pointer recorded and the manifest's size; downloaded, its sha256 and uncompressed size are the
  manifest's.
- **The JSON Lines**: every line a JSON object whose keys are exactly the manifest's ``properties``
  (as a set) with a user id, no id on two lines, ``users`` lines.
- **The CSV copy**: byte for byte what ``csvfile.CsvEncoder`` writes for the manifest's properties
  (the header, with or without the Excel byte order mark) and, row by row, for the JSON Lines user
  at the same position: the export makes both from the same users, so this is exact, lone-surrogate
  replacement and the apostrophe rule included.
- **The changes** (delta slots): every line a JSON object with an id, ``change_records`` of them.
- **The count** (format 4 manifests): its ``users`` lie in the range Graph's user counts at the start and
  the end of its run allow (``UserCount.allowed``), as the export checked before committing it.
- **latest.json**: exactly what the manifest its slot's pointer names says (``Manifest.pointer()``).

Memory stays flat in the tenant's size: each file is read in the 4 MiB GETs ``storage.open_container``
sets, hashed as the bytes pass and decompressed 1 MiB at a time; the JSON Lines and the CSV copy are
read side by side, one batch of users at a time. What grows is the user ids' 8-byte digests
(``userids.UserIds``, as the export keeps them: 8 MB at 1,000,000 users).

Every message names blobs, never URLs (a connection string's SAS never reaches output), and no
user's data: lines and rows are named by number.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, cast

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from isal import igzip, isal_zlib

from . import completeness, jsontext, naming, storage, tenant_root
from .csvfile import UTF8_BOM, CsvEncoder
from .errors import GraphError, VerifyError, first_line
from .records import DeltaApplied, LatestPointer, Manifest, RecordError, SlotPointer, iso
from .settings import StorageSettings
from .userids import UserIds

log = logging.getLogger(__name__)

#: Decompressed bytes read at a time (a batch of users is what one such piece holds).
PIECE = 1024 * 1024
_POINTER_NAME = re.compile(r"^state/users-(\d{8}T\d{6}Z)\.current\.json$")
_LATEST_FIELDS = ("slot", "blob", "manifest", "users", "sha256", "finished")
#: Not gzip: BadGzipFile (an OSError), or a bad deflate block (isal's error, which its stubs type as an instance).
_NOT_GZIP = (OSError, cast("type[Exception]", isal_zlib.error))


class Mismatch(Exception):
    """What is wrong, in one line (blob names only). Not a ValueError: ``storage_errors`` maps those."""


@dataclass(frozen=True)
class Verdict:
    """One checked thing (a slot, or ``latest.json``): ok with its manifest, or the problem found first."""

    what: str
    problem: str | None = None
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        if self.problem is not None:
            return f"FAILED {self.what}: {self.problem}"
        assert self.manifest is not None
        return f"ok {self.what} {self.manifest.users} users {self.manifest.manifest}"


@dataclass
class Report:
    """Everything one ``verify`` checked, in the order it was printed."""

    slots: list[Verdict] = field(default_factory=list)
    latest: Verdict | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.slots) and all(v.ok for v in self.slots) and (self.latest is None or self.latest.ok)

    def summary(self) -> str:
        """The final line: what was verified, and whether all of it is as committed."""
        count = f"{len(self.slots)} slot{'' if len(self.slots) == 1 else 's'}"
        checked = count + (" and latest.json" if self.latest is not None else "")
        warned = f" ({len(self.warnings)} warning{'' if len(self.warnings) == 1 else 's'})" if self.warnings else ""
        if self.ok:
            return f"verified {checked}: all ok{warned}"
        if not self.slots:
            latest = "" if self.latest is None or self.latest.ok else "; latest.json FAILED"
            return f"verify FAILED: no slot to verify{latest}{warned}"
        failed = [f"{sum(not v.ok for v in self.slots)} of {count}"] if not all(v.ok for v in self.slots) else []
        if self.latest is not None and not self.latest.ok:
            failed.append("latest.json")
        return (f"verify FAILED: {' and '.join(failed)} not as committed (see the FAILED lines); "
                f"verified {checked}{warned}")

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise VerifyError(self.summary())


def run(settings: StorageSettings, *, slot: datetime | None = None, every: bool = False,
        echo: Callable[[str], None] = lambda line: None) -> Report:
    """Verify ``slot``, every slot (``every``), or by default what ``latest.json`` names; ``echo``
    hears each line as it is decided. StorageError when storage cannot be read at all."""
    exports, state = (tenant_root.under(c, settings.tenant_root) for c in open_containers(settings))
    return verify(exports, state, settings.container, slot=slot, every=every, echo=echo)


def open_containers(settings: StorageSettings) -> tuple[ContainerClient, ContainerClient]:
    """The export container and the state container, opened as the export opens them."""
    credential = None
    if not settings.storage.connection_string:
        from azure.identity import DefaultAzureCredential  # only for identity-based access

        credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
    exports = storage.open_container(settings.storage, settings.container, credential, settings.retry_backoff_base_s,
                                     create=False)
    if settings.state_container == settings.container:
        return exports, exports
    return exports, storage.open_container(settings.storage, settings.state_container, credential,
                                           settings.retry_backoff_base_s, create=False)


def verify(exports: ContainerClient, state: ContainerClient, container: str, *, slot: datetime | None = None,
           every: bool = False, echo: Callable[[str], None] = lambda line: None) -> Report:
    """The checks of :func:`run`, on open containers (``container``: the export container's name)."""
    report = Report()

    def add(verdict: Verdict) -> None:
        report.slots.append(verdict)
        echo(verdict.line())

    def warn(text: str) -> None:
        report.warnings.append(text)
        echo(f"warning: {text}")

    if slot is not None:
        add(check_slot(exports, state, container, naming.normalize_slot(slot)).verdict)
        return report
    if not every:
        latest, problem = _read_latest(state)
        if latest is None:
            report.latest = Verdict("latest.json", problem)
            echo(report.latest.line())
            return report
        checked = check_slot(exports, state, container, latest.slot)
        add(checked.verdict)
        report.latest = check_latest(latest, checked)
        echo(report.latest.line())
        return report

    checks: list[SlotCheck] = []
    for name, pointed in _pointer_names(state):
        if pointed is None:
            add(Verdict(name, "not a slot pointer's name (state/users-YYYYMMDDTHHMMSSZ.current.json)"))
            continue
        checks.append(check_slot(exports, state, container, pointed))
        add(checks[-1].verdict)
    latest, problem = _read_latest(state)
    if latest is None:
        report.latest = Verdict("latest.json", problem)
    else:
        same = next((c for c in checks if c.slot == latest.slot), None)
        report.latest = check_latest(latest, same or check_slot(exports, state, container, latest.slot))
        newest = max((c.slot for c in checks if c.pointer is not None), default=latest.slot)
        if newest > latest.slot:
            warn(f"latest.json names slot {iso(latest.slot)}, but slot {iso(newest)} is newer: its publishing is "
                 "unfinished (run that slot again to finish it)")
    echo(report.latest.line())
    for name in _unreached(exports, checks, latest):
        kind = "manifest" if name.endswith(".manifest.json") else "file"
        warn(f"{name}: a {kind} no slot pointer reaches (left by a run that ended before its commit, which the "
             "slot's next run removes; by a run still exporting; or older than slot pointers)")
    return report


# -- one slot ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotCheck:
    """A slot as verified: its pointer and manifest as far as they parsed, and the verdict."""

    slot: datetime
    pointer: SlotPointer | None
    manifest: Manifest | None
    verdict: Verdict


def check_slot(exports: ContainerClient, state: ContainerClient, container: str, slot: datetime) -> SlotCheck:
    """The slot's pointer, the manifest it names and every file that lists, downloaded and checked."""
    pointer: SlotPointer | None = None
    manifest: Manifest | None = None
    try:
        pointer = _read_pointer(state, slot)
        manifest, problem = _read_manifest(exports, pointer)
        if problem is not None or manifest is None:
            raise Mismatch(problem or "")
        _check_commit(pointer, manifest, container)
        _check_count(manifest)
        check_files(exports, manifest, pointer.etags)
    except Mismatch as why:
        return SlotCheck(slot, pointer, manifest, Verdict(iso(slot), str(why)))
    return SlotCheck(slot, pointer, manifest, Verdict(iso(slot), None, manifest))


def _read_pointer(state: ContainerClient, slot: datetime) -> SlotPointer:
    name = naming.slot_pointer_name(slot)
    document, etag = storage.read_json_etag(state, name)
    if etag is None:
        raise Mismatch(f"{name} is missing: the slot was never committed")
    if document is None:
        raise Mismatch(f"{name} is not JSON")
    try:
        pointer = SlotPointer.parse(document)
    except RecordError as why:
        raise Mismatch(f"{name} is not a valid slot pointer ({why})") from None
    if pointer.slot != slot:
        raise Mismatch(f"{name} is the pointer of slot {iso(pointer.slot)}")
    return pointer


def _read_manifest(exports: ContainerClient, pointer: SlotPointer) -> tuple[Manifest | None, str | None]:
    """The manifest the pointer names as far as it parses, and the first problem: missing, changed
    after the commit (which wins over not parsing: it says why), not valid."""
    name = pointer.manifest
    document, etag = storage.read_json_etag(exports, name)
    if etag is None:
        return None, f"its manifest {name} is missing"
    try:
        manifest, invalid = Manifest.parse(document), None
    except RecordError as why:
        manifest, invalid = None, f"its manifest {name} is not valid ({why})"
    if etag != pointer.etags.get(name):
        return manifest, f"its manifest {name} changed after the commit (its ETag is not the one the pointer recorded)"
    return manifest, invalid


def _check_commit(pointer: SlotPointer, manifest: Manifest, container: str) -> None:
    """The manifest describes the pointer's slot and run, in this container, under the run's names."""
    name = pointer.manifest
    if manifest.manifest != name:
        raise Mismatch(f"its manifest {name} says it is {manifest.manifest}")
    if manifest.slot != pointer.slot:
        raise Mismatch(f"its manifest {name} is for slot {iso(manifest.slot)}")
    if manifest.run != pointer.run:
        raise Mismatch(f"its manifest {name} was written by run {manifest.run}, the pointer names run {pointer.run}")
    if manifest.container != container:
        raise Mismatch(f"its manifest {name} describes container '{manifest.container}', not '{container}'")
    names = naming.run_names(pointer.slot, pointer.run)
    listed = [(name, names.manifest), (manifest.blob, names.jsonl)]
    if manifest.csv is not None:
        listed.append((manifest.csv.blob, names.csv))
    if manifest.delta is not None:
        listed.append((manifest.delta.changes_blob, names.changes))
    for held_name, own in listed:
        if held_name != own:
            raise Mismatch(f"its manifest {name} lists {held_name}, which is not a name of run {pointer.run} "
                           f"(expected {own})")


def _check_count(manifest: Manifest) -> None:
    """The manifest's users lie in the range Graph's counts around its run allow (formats before 4 have none)."""
    count = manifest.count
    if count is not None and not count.holds(manifest.users):
        raise Mismatch(f"its manifest {manifest.manifest} says the snapshot holds {manifest.users} users, but "
                       f"{completeness.counted(count)} (tolerance {count.tolerance}): it is not complete")


def check_files(exports: ContainerClient, manifest: Manifest, etags: dict[str, str]) -> None:
    """Every file ``manifest`` lists, downloaded: Mismatch for the first that is not as committed."""
    for name in manifest.files():
        if name not in etags:
            raise Mismatch(f"the pointer records no ETag for {name}")
    _check_users(exports, manifest, etags)
    if manifest.delta is not None:
        _check_changes(exports, manifest.delta, etags)


def _check_users(exports: ContainerClient, manifest: Manifest, etags: dict[str, str]) -> None:
    """The JSON Lines, and the CSV copy beside it, row by row."""
    blob, properties = manifest.blob, manifest.properties
    wanted = frozenset(properties)
    jsonl = _File(exports, blob, manifest.bytes, manifest.sha256, etags[blob])
    csv = None if manifest.csv is None else _CsvCopy(
        _File(exports, manifest.csv.blob, manifest.csv.bytes, manifest.csv.sha256, etags[manifest.csv.blob]),
        properties, blob)
    ids = UserIds()
    count = batches = 0
    rest = b""
    for piece in jsonl.pieces():
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        if not lines:
            continue
        users, user_ids = [], []
        for number, line in enumerate(lines, count + 1):
            user = _json_object(line, number, blob)
            if user.keys() != wanted:
                raise Mismatch(f"line {number} of {blob} {_keys_problem(user, properties)}")
            user_id = user.get("id")
            if not isinstance(user_id, str) or not user_id:
                raise Mismatch(f"line {number} of {blob} has no user id")
            users.append(user)
            user_ids.append(user_id)
        batches += 1
        ids.add_ids(batches, user_ids)
        if csv is not None:
            csv.expect(users, count + 1)
        count += len(lines)
    if rest:
        raise Mismatch(f"{blob} ends in the middle of line {count + 1}")
    if count != manifest.users:
        raise Mismatch(f"{blob} holds {count} users, the manifest says {manifest.users}")
    try:
        ids.check()
    except GraphError:
        raise Mismatch(f"{blob} holds the same user id on more than one line") from None
    jsonl.finish(manifest.uncompressed_bytes)
    if csv is not None:
        assert manifest.csv is not None
        csv.finish(manifest.csv.uncompressed_bytes)


def _json_object(line: bytes, number: int, name: str) -> dict[str, Any]:
    """Line ``number`` of ``name`` as the JSON object it must be; Mismatch (never its content) if not."""
    try:
        value = jsontext.loads(line)
    except jsontext.JSONDecodeError:
        log.debug("Line %d of %s is not JSON", number, name, exc_info=True)  # where the decoder stopped
        raise Mismatch(f"line {number} of {name} is not JSON") from None
    if type(value) is not dict:
        raise Mismatch(f"line {number} of {name} is not a JSON object")
    return value


def _keys_problem(user: dict[str, Any], properties: tuple[str, ...]) -> str:
    missing = [p for p in properties if p not in user]
    extra = [k for k in user if k not in properties]
    parts = ([f"lacks {_names(missing)}"] if missing else []) + ([f"has {_names(extra)}"] if extra else [])
    return f"{' and '.join(parts)}: its keys are not the manifest's properties"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n[:64]) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class _CsvCopy:
    """The CSV copy, compared with what CsvEncoder writes for the JSON Lines users, batch by batch."""

    def __init__(self, file: "_File", properties: tuple[str, ...], jsonl: str) -> None:
        self._file = file
        self._jsonl = jsonl
        bom = UTF8_BOM.encode("utf-8")
        self._encoder = CsvEncoder(properties, excel=file.peek(len(bom)) == bom)  # CSV_EXCEL is not recorded
        header = self._encoder.header()
        if file.take(len(header)) != header:
            raise Mismatch(f"the header of {file.name} is not the manifest's properties")

    def expect(self, users: list[dict[str, Any]], first: int) -> None:
        """The next rows must be these users' (the first of them on JSON Lines line ``first``)."""
        expected = self._encoder.rows(users)
        got = self._file.take(len(expected))
        if got == expected:
            return
        offset = 0
        for number, user in enumerate(users, first):
            row = self._encoder.rows([user])
            if got[offset:offset + len(row)] != row:
                if len(got) <= offset:
                    raise Mismatch(f"{self._file.name} ends after row {number - 1}, but {self._jsonl} has more users")
                raise Mismatch(f"row {number} of {self._file.name} is not the CSV of line {number} of {self._jsonl}")
            offset += len(row)
        raise AssertionError("rows that differ together differ one by one")  # pragma: no cover

    def finish(self, uncompressed: int) -> None:
        if self._file.take(1):
            raise Mismatch(f"{self._file.name} holds more rows than {self._jsonl} has users")
        self._file.finish(uncompressed)


def _check_changes(exports: ContainerClient, delta: DeltaApplied, etags: dict[str, str]) -> None:
    name = delta.changes_blob
    changes = _File(exports, name, delta.changes_bytes, delta.changes_sha256, etags[name])
    count = 0
    rest = b""
    for piece in changes.pieces():
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            count += 1
            record = _json_object(line, count, name)
            if not isinstance(record.get("id"), str) or not record["id"]:
                raise Mismatch(f"line {count} of {name} has no user id")
    if rest:
        raise Mismatch(f"{name} ends in the middle of line {count + 1}")
    if count != delta.change_records:
        raise Mismatch(f"{name} holds {count} change records, the manifest says {delta.change_records}")
    changes.finish(None)


class _File:
    """One published gzip file as it downloads: its ETag and size checked first, then hashed as the
    bytes pass and decompressed ``PIECE`` bytes at a time; Mismatch for anything not as committed."""

    def __init__(self, exports: ContainerClient, name: str, size: int, sha256: str, etag: str) -> None:
        self.name = name
        self._size, self._sha256 = size, sha256
        self._digest = hashlib.sha256()
        self._downloaded = 0
        self.uncompressed = 0
        self._buffer = bytearray()
        with storage.storage_errors(f"reading {name}"):
            try:
                download = exports.download_blob(name)
            except ResourceNotFoundError:
                raise Mismatch(f"{name} is missing") from None
        if download.properties.etag != etag:
            raise Mismatch(f"{name} changed after the commit (its ETag is not the one the pointer recorded)")
        if download.properties.size != size:
            raise Mismatch(f"{name} is {download.properties.size} bytes, the manifest says {size}")
        self._chunks = download.chunks()  # later GETs are conditional on the first one's ETag (the SDK's)
        raw = io.BufferedReader(_Raw(self._next_chunk), buffer_size=PIECE)
        # isal has no type hints for IGzipFile; it reads every gzip member (the export writes several).
        self._gzip = igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]

    def pieces(self) -> Iterator[bytes]:
        """The decompressed content, up to ``PIECE`` bytes at a time."""
        while piece := self._inflate(PIECE):
            yield piece

    def peek(self, size: int) -> bytes:
        """The next ``size`` decompressed bytes (fewer at the end), left to be taken."""
        while len(self._buffer) < size:
            piece = self._inflate(PIECE)
            if not piece:
                break
            self._buffer += piece
        return bytes(self._buffer[:size])

    def take(self, size: int) -> bytes:
        """The next ``size`` decompressed bytes (fewer at the end)."""
        data = self.peek(size)
        del self._buffer[:len(data)]
        return data

    def finish(self, uncompressed: int | None) -> None:
        """Once the content is read: every byte downloaded, the manifest's sha256 and uncompressed size."""
        while self._next_chunk():
            pass
        if self._downloaded != self._size:
            raise Mismatch(f"{self.name} downloaded as {self._downloaded} bytes, the manifest says {self._size}")
        if self._digest.hexdigest() != self._sha256:
            raise Mismatch(f"{self.name} does not match its sha256 in the manifest")
        if uncompressed is not None and self.uncompressed != uncompressed:
            raise Mismatch(f"{self.name} is {self.uncompressed} bytes uncompressed, the manifest says {uncompressed}")

    def _inflate(self, size: int) -> bytes:
        try:
            piece: bytes = self._gzip.read(size)
        except EOFError:
            raise Mismatch(f"{self.name} ends before its gzip stream does (truncated)") from None
        except _NOT_GZIP as why:
            raise Mismatch(f"{self.name} is not valid gzip ({first_line(str(why), 100)})") from None
        self.uncompressed += len(piece)
        return piece

    def _next_chunk(self) -> bytes:
        with storage.storage_errors(f"reading {self.name}"):
            try:
                chunk: bytes = next(self._chunks, b"")
            except ResourceModifiedError:
                raise Mismatch(f"{self.name} changed while it was being read") from None
            except ResourceNotFoundError:
                raise Mismatch(f"{self.name} was deleted while it was being read") from None
        self._digest.update(chunk)
        self._downloaded += len(chunk)
        return chunk


class _Raw(io.RawIOBase):
    """Chunks from a callable (empty: the end) as a readable stream, for the gzip reader."""

    def __init__(self, next_chunk: Callable[[], bytes]) -> None:
        self._next = next_chunk
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = self._next()
            if not chunk:
                return 0
            self._left = memoryview(chunk)
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


# -- latest.json and the container as a whole ----------------------------------------------------------

def _read_latest(state: ContainerClient) -> tuple[LatestPointer | None, str]:
    document, etag = storage.read_json_etag(state, naming.LATEST_BLOB)
    if etag is None:
        return None, f"{naming.LATEST_BLOB} is missing: nothing was published here yet, or its publishing is unfinished"
    if document is None:
        return None, f"{naming.LATEST_BLOB} is not JSON"
    try:
        return LatestPointer.parse(document), ""
    except RecordError as why:
        return None, f"{naming.LATEST_BLOB} is not valid ({why})"


def check_latest(latest: LatestPointer, checked: SlotCheck) -> Verdict:
    """``latest.json`` names the manifest its slot's pointer names, and says what that manifest says."""
    what = "latest.json"
    pointer, manifest = checked.pointer, checked.manifest
    if pointer is None:
        return Verdict(what, f"names slot {iso(latest.slot)}, which has no valid slot pointer")
    if latest.manifest != pointer.manifest:
        return Verdict(what, f"names {latest.manifest}, but the pointer of slot {iso(latest.slot)} names "
                             f"{pointer.manifest}")
    if manifest is None:
        return Verdict(what, f"names {latest.manifest}, which is missing or not valid")
    expected = manifest.pointer()
    differing = [f for f in _LATEST_FIELDS if getattr(latest, f) != getattr(expected, f)]
    if differing:
        return Verdict(what, f"its {', '.join(differing)} disagree with {manifest.manifest}")
    return Verdict(what, None, manifest)


def _pointer_names(state: ContainerClient) -> list[tuple[str, datetime | None]]:
    """Every slot pointer in the state container, by slot, with its slot (None: a name that is none)."""
    found: list[tuple[str, datetime | None]] = []
    with storage.storage_errors("listing state/users-*.current.json", "nothing was verified"):
        names = [b.name for b in state.list_blobs(name_starts_with="state/users-")
                 if b.name.endswith(".current.json")]
    for name in names:
        match = _POINTER_NAME.match(name)
        slot = None
        if match is not None:
            try:
                slot = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            except ValueError:
                pass
        found.append((name, slot))
    return sorted(found, key=lambda item: (item[1] is None, item[1] or datetime.min.replace(tzinfo=timezone.utc),
                                           item[0]))


def _unreached(exports: ContainerClient, checks: list[SlotCheck], latest: LatestPointer | None) -> list[str]:
    """Blobs under ``users/`` that no slot pointer reaches: not its manifest, not one that manifest
    supersedes (in a chain), not a file any of those list (``latest.json`` aside)."""
    manifests: dict[str, Manifest | None] = {}
    for check in checks:
        if check.pointer is None:
            continue
        name: str | None = check.pointer.manifest
        manifest = check.manifest if check.manifest is not None and check.manifest.manifest == name else None
        while name is not None and name not in manifests:
            if manifest is None:
                manifest = _parsed(exports, name)
            manifests[name] = manifest
            name = None if manifest is None else manifest.supersedes
            manifest = None
    if latest is not None and latest.manifest not in manifests:
        manifests[latest.manifest] = _parsed(exports, latest.manifest)
    reached = set(manifests) | {naming.LATEST_BLOB}
    for manifest in manifests.values():
        if manifest is not None:
            reached.update(manifest.files())
    with storage.storage_errors("listing users/", "the slots above were verified"):
        listed = [b.name for b in exports.list_blobs(name_starts_with="users/")]
    return [name for name in listed if name not in reached]


def _parsed(exports: ContainerClient, name: str) -> Manifest | None:
    try:
        return Manifest.parse(storage.read_json(exports, name))
    except RecordError:
        return None
