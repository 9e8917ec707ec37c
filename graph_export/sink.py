"""Blob Storage: the export as one gzip JSON Lines block blob, then its manifest, then ``latest.json``.

Blocks are staged as pages arrive and committed once at the end. Staged blocks are invisible until
``commit_block_list``, so a run that fails never leaves a readable half export; Azure discards
uncommitted blocks after a week. Memory holds at most one block of compressed output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
from isal import isal_zlib
from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings, ExponentialRetry

from . import pipeline
from .errors import SlotBusyError, StorageError, first_line
from . import naming
from .naming import LATEST_BLOB
from .records import LatestPointer, RecordError
from .settings import StorageTarget

log = logging.getLogger(__name__)

BLOCK_SIZE = 4 * 1024 * 1024
#: ISA-L's deflate at level 2 compresses sandbox users as well as zlib level 3 (15.7% of the JSON
#: Lines) in a fifth of the CPU; on a busy instance that CPU is what paging competes for.
GZIP_LEVEL = 2
_GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # gzip header and trailer, mtime 0: same input, same bytes

EXPORT_CONTENT = ContentSettings(content_type="application/gzip")
JSON_CONTENT = ContentSettings(content_type="application/json; charset=utf-8")
#: Conditional writes of latest.json tried before giving up (each loss means another run published).
POINTER_ATTEMPTS = 8


def open_container(target: StorageTarget, container: str, credential: TokenCredential | None,
                   backoff_base_s: float) -> ContainerClient:
    """Connect to the export container, creating it if missing; fail fast with a clear message."""
    options: dict[str, Any] = {
        "retry_policy": ExponentialRetry(
            initial_backoff=backoff_base_s,
            increment_base=3 * backoff_base_s,
            retry_total=4,
            random_jitter_range=backoff_base_s,
        ),
        "connection_timeout": 10,
        "read_timeout": 120,
    }
    if target.connection_string:
        client = ContainerClient.from_connection_string(target.connection_string, container, **options)
        where = f"container '{container}' (from {target.source})"
    else:
        client = ContainerClient(target.blob_service_uri, container, credential=credential, **options)
        where = f"container '{container}' at {target.blob_service_uri}"
    with storage_errors(f"opening {where}"):
        # Look before creating: in Azure the identity's role is scoped to this one container, and
        # creating (even an existing) container needs rights on the account.
        try:
            client.get_container_properties()
        except ResourceNotFoundError:
            try:
                client.create_container()
            except ResourceExistsError:  # created meanwhile by another run
                pass
    return client


class storage_errors:
    """Context manager mapping Azure Storage failures to one actionable :class:`StorageError` line."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, StorageError):
            return False
        if isinstance(exc, ServiceRequestError):
            raise StorageError(
                f"Export storage is unreachable while {self.doing}: check EXPORT_STORAGE / "
                "EXPORT_STORAGE__blobServiceUri (is Azurite running locally?) and the network path."
            ) from None
        if isinstance(exc, ClientAuthenticationError) and exc.response is None:
            # No response: the credential itself failed before storage was asked anything.
            raise StorageError(
                f"Could not get a token for the export storage while {self.doing}: enable the function "
                "app's managed identity, or sign in with 'az login' when running locally "
                f"({first_line(exc.message, 200)})."
            ) from None
        if isinstance(exc, ClientAuthenticationError):
            raise StorageError(
                f"Export storage refused our credentials while {self.doing}: give the function's identity "
                "'Storage Blob Data Contributor' on the export container, or check the connection string."
            ) from None
        if isinstance(exc, HttpResponseError):
            code = getattr(exc, "error_code", None) or ""
            if exc.status_code == 403:
                raise StorageError(
                    f"Export storage denied access ({code or 'HTTP 403'}) while {self.doing}: give the "
                    "function's identity 'Storage Blob Data Contributor' on the export container and check "
                    "the storage firewall."
                ) from None
            raise StorageError(
                f"Export storage failed with HTTP {exc.status_code} {code} while {self.doing}: "
                "nothing was published; run again."
            ) from None
        if isinstance(exc, ValueError):  # the SDK's answer to a malformed connection string
            raise StorageError(
                f"The export storage settings are not usable while {self.doing}: check EXPORT_STORAGE."
            ) from None
        return False


@dataclass(frozen=True)
class CommittedBlob:
    """What was committed: enough to write a manifest and verify a download."""

    name: str
    users: int
    bytes: int
    uncompressed_bytes: int
    sha256: str
    blocks: int


@dataclass(frozen=True)
class Progress:
    """What is staged so far, at a segment boundary: what a checkpoint needs to resume."""

    users: int
    uncompressed_bytes: int
    block_ids: list[str]
    block_sizes: list[int]


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

    def write(self, users: list[dict]) -> None:
        """Encode one page of users as JSON lines; compression and staging follow in the background."""
        if not users:
            return
        data = b"\n".join(map(encode_user, users)) + b"\n"
        self.users += len(users)
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
        with storage_errors(f"committing {name}"):
            try:
                if self._sha256 is not None:
                    sha256 = self._sha256.hexdigest()
                    self._blob.commit_block_list(self._block_ids, content_settings=EXPORT_CONTENT,
                                                 metadata={**metadata, "sha256": sha256}, **condition)
                else:  # resumed: the bytes staged before the checkpoint are only readable once committed
                    self._blob.commit_block_list(self._block_ids, content_settings=EXPORT_CONTENT,
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


def encode_user(user: dict) -> bytes:
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


def etag_of(blob: BlobClient) -> str | None:
    """The blob's current ETag, or None when it does not exist (yet)."""
    with storage_errors(f"reading the properties of {blob.blob_name}"):
        try:
            return blob.get_blob_properties().etag
        except ResourceNotFoundError:
            return None


def staged_blocks(blob: BlobClient) -> dict[str, int]:
    """Uncommitted block ids of ``blob`` and their sizes (empty if the blob has none)."""
    with storage_errors(f"listing staged blocks of {blob.blob_name}"):
        try:
            _, uncommitted = blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            return {}
    return {b.id: b.size for b in uncommitted}


def read_json(container: ContainerClient, name: str) -> Any:
    """A small JSON document as decoded, or None if it does not exist; RecordError if it is not JSON."""
    with storage_errors(f"reading {name}"):
        try:
            data = container.download_blob(name).readall()
        except ResourceNotFoundError:
            return None
    try:
        return json.loads(data)
    except ValueError:
        raise RecordError(f"{name} is not JSON") from None


def write_json(container: ContainerClient, name: str, document: dict[str, Any]) -> None:
    """Write a small JSON document (manifest) in one request, replacing any earlier one."""
    with storage_errors(f"writing {name}"):
        container.upload_blob(name, _json_bytes(document), overwrite=True, content_settings=JSON_CONTENT)


def point_latest(container: ContainerClient, pointer: LatestPointer, now: datetime) -> bool:
    """Make ``users/latest.json`` point at this export unless it already points at a newer one.

    Each write is conditional on the ETag just read, so two publishers never interleave a stale
    pointer; losing that race means reading again, not failing a run that did publish. A pointer
    that is not valid (unparsable, a slot from the future, naming a blob that does not exist) is
    replaced, with a warning. Returns False when a newer export is already the latest.
    """
    blob = container.get_blob_client(LATEST_BLOB)
    data = _json_bytes(pointer.to_document())
    for _ in range(POINTER_ATTEMPTS):
        with storage_errors(f"updating {LATEST_BLOB}"):
            try:
                current = blob.download_blob()
            except ResourceNotFoundError:
                current = None
            if current is None:
                condition = {"match_condition": MatchConditions.IfMissing}
            else:
                standing = _standing_pointer(container, current.readall(), now)
                if standing is not None and standing.slot > pointer.slot:
                    return False
                condition = {"etag": current.properties.etag, "match_condition": MatchConditions.IfNotModified}
            try:
                blob.upload_blob(data, overwrite=True, content_settings=JSON_CONTENT, **condition)
                return True
            except (ResourceModifiedError, ResourceExistsError):
                continue  # another run published meanwhile: look at what it wrote
    raise StorageError(
        f"{LATEST_BLOB} kept changing while this export tried to update it ({POINTER_ATTEMPTS} attempts): the "
        "export and its manifest are complete; run again with --force to point at it."
    )


def _standing_pointer(container: ContainerClient, data: bytes, now: datetime) -> LatestPointer | None:
    """The current pointer if it is one to respect; None (logged) if it must be replaced."""
    try:
        standing = LatestPointer.parse(json.loads(data))
        naming.check_slot(standing.slot, now)
    except ValueError as why:  # RecordError, undecodable JSON, or a slot out of bounds
        log.warning("%s is not a valid pointer (%s); replacing it", LATEST_BLOB, why)
        return None
    if not container.get_blob_client(standing.blob).exists():
        log.warning("%s names %s, which does not exist; replacing it", LATEST_BLOB, standing.blob)
        return None
    return standing


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
