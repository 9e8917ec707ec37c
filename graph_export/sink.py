"""The export files: users as one gzip block blob each (JSON Lines, and CSV when asked for), staged as
pages arrive, committed once.

Staged blocks are invisible until ``commit_block_list``, so a run that fails never leaves a readable
half export; Azure discards uncommitted blocks after a week. Memory holds at most one block of
compressed output. The manifest and ``latest.json`` that follow it are ``storage``'s.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ContentSettings
from isal import isal_zlib

from . import jsontext, pipeline
from .checkpoint import Checkpoint
from .csvfile import CsvEncoder
from .errors import SlotBusyError
from .modes import ExportFormat
from .naming import RunNames
from .records import Progress
from .settings import Settings
from .storage import storage_errors

BLOCK_SIZE = 4 * 1024 * 1024
#: ISA-L's deflate at level 2 compresses sandbox users as well as zlib level 3 (15.7% of the JSON
#: Lines) in a fifth of the CPU; on a busy instance that CPU is what paging competes for.
GZIP_LEVEL = 2
_GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # gzip header and trailer, mtime 0: same input, same bytes

EXPORT_CONTENT = ContentSettings(content_type="application/gzip")


@dataclass(frozen=True)
class CommittedBlob:
    """What was committed: enough to write a manifest and verify a download."""

    name: str
    users: int
    bytes: int
    uncompressed_bytes: int
    sha256: str
    blocks: int
    etag: str


class GzipBlobWriter:
    """Streams users into one block blob as gzip: JSON Lines (:meth:`write`) or already encoded text.

    Encoding happens in the caller's thread; compressing and staging run on one background thread
    (ISA-L and socket writes release the GIL), at most a few pages behind. Nothing is visible in the
    container until :meth:`commit`; if the run dies first, the staged blocks are never committed and
    the previous export (if any) stays as it was. :meth:`end_segment` closes the current gzip member
    so that a later run can resume after it (see ``checkpoint``). Use it as a context manager.
    """

    def __init__(self, blob: BlobClient, block_size: int = BLOCK_SIZE, resume_from: Progress | None = None, *,
                 name: str | None = None) -> None:
        self._blob = blob
        #: The name records give the file: relative to the tenant's root (``tenant_root``); default the blob's.
        self.name = blob.blob_name if name is None else name
        self._block_size = block_size
        self._compressor = _new_member()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._resumed = resume_from is not None
        start = resume_from or Progress(0, 0, [], [])
        self._block_ids = list(start.block_ids)
        self._block_sizes = list(start.block_sizes)
        self._uncompressed = start.uncompressed_bytes
        self.users = start.users
        # hashlib state cannot be saved in a checkpoint: a resumed export is hashed once, from storage.
        self._sha256 = None if self._resumed else hashlib.sha256()
        # Blocks staged by this run are named after it, so two runs of one slot (one of which lost its
        # lease) can never commit each other's blocks; a resumed run lists its checkpoint's blocks by id.
        self._run_id = secrets.token_hex(6)
        self._worker = pipeline.SerialWorker(depth=4, name="gzip-stage")

    def __enter__(self) -> "GzipBlobWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._worker.close()

    def write(self, users: list[dict[str, Any]]) -> None:
        """Encode one page of users as JSON lines; compression and staging follow in the background."""
        self.write_lines(list(map(encode_user, users)))

    def write_lines(self, lines: list[bytes]) -> None:
        """Users already encoded (:func:`encode_user`), one per item, e.g. copied from an earlier export."""
        if lines:
            self.write_encoded(b"\n".join(lines) + b"\n", len(lines))

    def write_encoded(self, data: bytes, users: int) -> None:
        """Bytes that hold ``users`` users (a CSV header holds none); compressed and staged behind."""
        if not data:
            return
        self.users += users
        self._uncompressed += len(data)
        self._worker.submit(self._compress, data)

    def end_segment(self, then: Callable[[Progress], None] | None = None) -> None:
        """Close the gzip member and stage it; then call ``then`` with what a checkpoint must record.

        Both happen on the background thread, in order with the pages written before and after, so
        saving a checkpoint never holds up the next page; an error in ``then`` fails the next write.
        """
        users, uncompressed = self.users, self._uncompressed  # as of this call, not of when it runs
        self._worker.submit(self._end_member)
        if then is not None:
            self._worker.submit(lambda: then(Progress(users, uncompressed, list(self._block_ids),
                                                      list(self._block_sizes))))

    def commit(self, metadata: dict[str, str] | None = None) -> CommittedBlob:
        """Close the last gzip member, stage what is left and create the blob in one commit.

        The blob must not exist yet (its name is the run's own): nothing committed is ever replaced.
        Its metadata holds ``sha256`` when it is known before the commit; a resumed writer learns it
        only by reading the committed bytes back (staged blocks cannot be read), and a committed
        blob is never changed again, so the digest is then only in the manifest.
        """
        self._worker.submit(self._end_member)
        self._worker.wait()
        name = self.name
        metadata = {**(metadata or {}), "users": str(self.users)}
        if self._sha256 is not None:
            metadata["sha256"] = self._sha256.hexdigest()
        blocks = [BlobBlock(block_id) for block_id in self._block_ids]  # "latest", as plain ids would be
        with storage_errors(f"committing {name}"):
            try:
                etag = str(self._blob.commit_block_list(
                    blocks, content_settings=EXPORT_CONTENT, metadata=metadata,
                    match_condition=MatchConditions.IfMissing)["etag"])
            except (ResourceModifiedError, ResourceExistsError):
                own = self._own_commit()  # the commit's answer was lost and the SDK sent it again
                if own is None:
                    raise SlotBusyError(
                        f"{name} already exists, committed by another run of this slot: this run published nothing."
                    ) from None
                etag = own
            sha256 = metadata.get("sha256") or _sha256_of_blob(self._blob)
        return CommittedBlob(name=name, users=self.users, bytes=sum(self._block_sizes),
                             uncompressed_bytes=self._uncompressed, sha256=sha256, blocks=len(self._block_ids),
                             etag=etag)

    def _own_commit(self) -> str | None:
        """The blob's ETag if what is committed is exactly this writer's blocks (their ids are run-unique)."""
        held, _ = self._blob.get_block_list("committed")
        if [block.id for block in held] != self._block_ids:
            return None
        return str(self._blob.get_blob_properties().etag)

    # -- on the background thread ------------------------------------------------------------------

    def _compress(self, data: bytes) -> None:
        self._add(self._compressor.compress(data))
        if self._pending_size >= self._block_size:
            self._stage()

    def _end_member(self) -> None:
        self._add(self._compressor.flush())
        self._stage()
        self._compressor = _new_member()

    def _add(self, chunk: bytes) -> None:
        if chunk:
            self._pending.append(chunk)
            self._pending_size += len(chunk)

    def _stage(self) -> None:
        if not self._pending_size:
            return
        block = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        block_id = f"{self._run_id}-{len(self._block_ids):08d}"  # one length for every block, as required
        with storage_errors(f"staging block {block_id} of {self._blob.blob_name}"):
            self._blob.stage_block(block_id, block, length=len(block))
        self._block_ids.append(block_id)
        self._block_sizes.append(len(block))
        if self._sha256 is not None:
            self._sha256.update(block)


class ExportFiles:
    """A slot's export file and, when EXPORT_FORMATS asks for it, its CSV copy, written together.

    Every page goes into both, so the CSV holds exactly the users of the JSON Lines file, from one
    pass over Graph. Segments end in both at once (a checkpoint records both), and the CSV is
    committed first, so a committed JSON Lines file always has its CSV beside it.
    """

    def __init__(self, blob: BlobClient, csv_blob: BlobClient | None = None, encoder: CsvEncoder | None = None, *,
                 resume_from: Progress | None = None, csv_resume_from: Progress | None = None,
                 name: str | None = None, csv_name: str | None = None) -> None:
        self.jsonl = GzipBlobWriter(blob, resume_from=resume_from, name=name)
        self.csv: GzipBlobWriter | None = None
        self._encoder = encoder
        if csv_blob is not None and encoder is not None:
            self.csv = GzipBlobWriter(csv_blob, resume_from=csv_resume_from, name=csv_name)
            if csv_resume_from is None:
                self.csv.write_encoded(encoder.header(), 0)

    def __enter__(self) -> "ExportFiles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.jsonl.__exit__(*exc)
        if self.csv is not None:
            self.csv.__exit__(*exc)

    def write(self, users: list[dict[str, Any]]) -> None:
        self.jsonl.write(users)
        if self.csv is not None and self._encoder is not None:
            self.csv.write_encoded(self._encoder.rows(users), len(users))

    def write_lines(self, lines: list[bytes]) -> None:
        """Users already encoded as JSON lines (a delta slot's merge); the CSV rows are made from them."""
        self.jsonl.write_lines(lines)
        if self.csv is not None and self._encoder is not None and lines:
            self.csv.write_encoded(self._encoder.rows(list(map(jsontext.loads, lines))), len(lines))

    def end_segment(self, then: Callable[[Progress, Progress | None], None]) -> None:
        """End a segment in both files; ``then`` gets both progresses once both are staged."""
        if self.csv is None:
            self.jsonl.end_segment(lambda progress: then(progress, None))
            return
        both = _Both(then)
        self.jsonl.end_segment(both.jsonl)
        self.csv.end_segment(both.csv)

    def commit(self, metadata: dict[str, str]) -> tuple[CommittedBlob, CommittedBlob | None]:
        """Commit the CSV copy, then the export file."""
        csv = None if self.csv is None else self.csv.commit(metadata)
        return self.jsonl.commit(metadata), csv


class _Both:
    """Calls ``then`` once both writers' threads have reported their progress for one segment."""

    def __init__(self, then: Callable[[Progress, Progress | None], None]) -> None:
        self._then = then
        self._lock = threading.Lock()
        self._seen: dict[str, Progress] = {}

    def jsonl(self, progress: Progress) -> None:
        self._arrive("jsonl", progress)

    def csv(self, progress: Progress) -> None:
        self._arrive("csv", progress)

    def _arrive(self, which: str, progress: Progress) -> None:
        with self._lock:
            self._seen[which] = progress
            ready = len(self._seen) == 2
        if ready:
            self._then(self._seen["jsonl"], self._seen["csv"])


def open_files(settings: Settings, exports: ContainerClient, names: RunNames,
               resume: Checkpoint | None = None) -> ExportFiles:
    """The run's export file and, if EXPORT_FORMATS asks for it, its CSV copy; continuing what ``resume`` staged."""
    csv = exports.get_blob_client(names.csv) if ExportFormat.CSV in settings.export_formats else None
    return ExportFiles(exports.get_blob_client(names.jsonl), csv,
                       CsvEncoder(settings.user_properties, excel=settings.csv_excel),
                       resume_from=None if resume is None else resume.progress,
                       csv_resume_from=None if resume is None else resume.csv_progress,
                       name=names.jsonl, csv_name=names.csv)


def encode_user(user: dict[str, Any]) -> bytes:
    """One JSON line's content: compact UTF-8, keys in Graph's order; a lone surrogate (valid JSON text, not
    valid Unicode) keeps its ``\\udXXX`` escape, so the line holds the exact value.

    A copy of orjson's bytes: its result keeps its whole output buffer (~4 KB) however short the JSON, and
    a delta merge holds thousands of lines on their way to the writer (a delta slot of 1,000,000 users with
    signInActivity, where every line is encoded anew, peaked at 108 MB without the copy, 96 MB with it).
    """
    return bytes(memoryview(jsontext.dumps_line(user)))


def _new_member() -> Any:
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, _GZIP_WBITS)


def _sha256_of_blob(blob: BlobClient) -> str:
    digest = hashlib.sha256()
    for chunk in blob.download_blob().chunks():
        digest.update(chunk)
    return digest.hexdigest()


