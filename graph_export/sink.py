"""The export file: users as one gzip JSON Lines block blob, staged as pages arrive, committed once.

Staged blocks are invisible until ``commit_block_list``, so a run that fails never leaves a readable
half export; Azure discards uncommitted blocks after a week. Memory holds at most one block of
compressed output. The manifest and ``latest.json`` that follow it are ``storage``'s.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.storage.blob import BlobBlock, BlobClient, ContentSettings
from isal import isal_zlib

from . import pipeline
from .errors import SlotBusyError
from .records import Progress
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


class JsonlGzipBlobWriter:
    """Streams user objects into one block blob as gzip JSON Lines.

    Encoding happens in the caller's thread; compressing and staging run on one background thread
    (ISA-L and socket writes release the GIL), at most a few pages behind. Nothing is visible in the
    container until :meth:`commit`; if the run dies first, the staged blocks are never committed and
    the previous export (if any) stays as it was. :meth:`end_segment` closes the current gzip member
    so that a later run can resume after it (see ``checkpoint``). Use it as a context manager.
    """

    def __init__(self, blob: BlobClient, block_size: int = BLOCK_SIZE, resume_from: Progress | None = None,
                 replaces: str | None = None) -> None:
        self._blob = blob
        self._replaces = replaces
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

    def __enter__(self) -> "JsonlGzipBlobWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._worker.close()

    def write(self, users: list[dict[str, Any]]) -> None:
        """Encode one page of users as JSON lines; compression and staging follow in the background."""
        self.write_lines(list(map(encode_user, users)))

    def write_lines(self, lines: list[bytes]) -> None:
        """Users already encoded (:func:`encode_user`), one per item, e.g. copied from an earlier export."""
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        self.users += len(lines)
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
        """Close the last gzip member, stage what is left and publish the blob in one commit."""
        self._worker.submit(self._end_member)
        self._worker.wait()
        name = self._blob.blob_name
        metadata = {**(metadata or {}), "users": str(self.users)}
        # Only over the blob as it was when this run began: if another run committed meanwhile, this
        # one must not publish over it (its manifest would then describe the other run's bytes).
        if self._replaces is None:
            condition: dict[str, Any] = {"match_condition": MatchConditions.IfMissing}
        else:
            condition = {"etag": self._replaces, "match_condition": MatchConditions.IfNotModified}
        blocks = [BlobBlock(block_id) for block_id in self._block_ids]  # "latest", as plain ids would be
        with storage_errors(f"committing {name}"):
            try:
                if self._sha256 is not None:
                    sha256 = self._sha256.hexdigest()
                    self._blob.commit_block_list(blocks, content_settings=EXPORT_CONTENT,
                                                 metadata={**metadata, "sha256": sha256}, **condition)
                else:  # resumed: the bytes staged before the checkpoint are only readable once committed
                    self._blob.commit_block_list(blocks, content_settings=EXPORT_CONTENT,
                                                 metadata=metadata, **condition)
                    sha256 = _sha256_of_blob(self._blob)
                    self._blob.set_blob_metadata({**metadata, "sha256": sha256})
            except (ResourceModifiedError, ResourceExistsError):
                raise SlotBusyError(
                    f"Another run published {name} while this one was exporting it: this run published "
                    "nothing; the other run's export stands."
                ) from None
        return CommittedBlob(name=name, users=self.users, bytes=sum(self._block_sizes),
                             uncompressed_bytes=self._uncompressed, sha256=sha256, blocks=len(self._block_ids))

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


def encode_user(user: dict[str, Any]) -> bytes:
    """One JSON line's content: compact UTF-8, keys in Graph's order, like
    ``json.dumps(user, ensure_ascii=False, separators=(",", ":"))`` but several times faster."""
    return orjson.dumps(user)


def _new_member() -> Any:
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, _GZIP_WBITS)


def _sha256_of_blob(blob: BlobClient) -> str:
    digest = hashlib.sha256()
    for chunk in blob.download_blob().chunks():
        digest.update(chunk)
    return digest.hexdigest()


