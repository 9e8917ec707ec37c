"""Blob Storage in memory: what graph_export calls on azure-storage-blob's clients, with Azure's semantics.

A :class:`MemoryAccount` holds containers of block and append blobs. Its clients
(:class:`MemoryContainer`, :class:`MemoryBlob`) answer exactly the calls graph_export makes, and the
SDK's own ``BlobLeaseClient`` runs on top of them unchanged (it reaches the blob's
``_client.blob``, the generated layer, which :class:`_LeaseOperations` stands in for).

What makes it a stand-in rather than a mock is that it fails the way the service does: every write
gives a new ETag; conditions (``etag``/``match_condition``, the SDK's implicit ``If-None-Match: *``
of ``overwrite=False``) and leases are enforced; and each refusal is raised as the SDK raises it,
by building the service's error response and passing it through the generated layer's error map and
the SDK's ``process_storage_error``, so the exception class and ``error_code`` are the SDK's own.
``tests/storage/test_memory_storage_contract.py`` holds it to Azurite's answers.

Where Azure's documentation and Azurite differ, Azure's is followed: a lease operation on a blob
with no lease is ``LeaseNotPresentWithLeaseOperation`` (Azurite says
``LeaseIdMismatchWithLeaseOperation``), and a range that starts at the blob's end is 416 ``InvalidRange``
(Azurite answers it empty). An ``immutable`` container refuses to overwrite or delete
an existing blob with 409 ``BlobImmutableDueToPolicy``, as ``sandbox/blobproxy.py`` does for Azure's
container-level WORM policy (a failing condition is reported first).
"""

from __future__ import annotations

import http
import itertools
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, NoReturn
from urllib.parse import quote
from xml.sax.saxutils import escape

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
)
from azure.storage.blob import BlobBlock, BlobProperties, BlobType, BlockState, ContainerProperties, ContentSettings
from azure.storage.blob._shared.response_handlers import process_storage_error

#: What the generated layer (autorest) of azure-storage-blob maps a status to before the SDK looks at the code.
_GENERATED_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError,
    304: ResourceNotModifiedError,
}
#: The SDK downloads in pieces of this size (storage.open_container sets max_chunk_get_size to it).
CHUNK_BYTES = 4 * 1024 * 1024


class _ErrorResponse:
    """A failed response as the service sends it: status, ``x-ms-error-code`` and the XML error body.

    Only what azure-core's ``HttpResponseError`` and the SDK's ``process_storage_error`` read.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        self.reason = http.HTTPStatus(status).phrase
        self.content_type = "application/xml"
        self.headers = {"x-ms-error-code": code, "Content-Type": self.content_type}
        self.request = None
        self._body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                      f"<Message>{escape(message)}</Message></Error>")

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode("utf-8")


def _generated_error(status: int, code: str, message: str) -> HttpResponseError:
    """What the generated layer raises for this answer (before the SDK's own handling)."""
    response = _ErrorResponse(status, code, message)
    return _GENERATED_ERROR_MAP.get(status, HttpResponseError)(response=response)


def _fail(status: int, code: str, message: str) -> NoReturn:
    """Raise what a BlobClient or ContainerClient method raises for this answer."""
    process_storage_error(_generated_error(status, code, message))


# -- the account's state ------------------------------------------------------------------------------


@dataclass
class _Lease:
    """One blob's lease, in Azure's states: leased, breaking, broken, expired (and released: gone)."""

    id: str
    duration: int  # seconds; -1: infinite
    until: float | None  # the clock's time the lease (or its break) ends; None: infinite
    breaking: bool = False

    def state(self, now: float) -> str:
        ended = self.until is not None and now >= self.until
        if self.breaking:
            return "broken" if ended else "breaking"
        return "expired" if ended else "leased"


@dataclass
class _Blob:
    data: bytes
    etag: str
    kind: BlobType
    metadata: dict[str, str]
    content_settings: ContentSettings
    last_modified: datetime
    created: datetime
    blocks: list[tuple[str, int]] = field(default_factory=list)  # the committed block list
    lease: _Lease | None = None


@dataclass(frozen=True)
class Write:
    """One change the account made, in order: ``op`` is put, commit, append, delete, lease."""

    container: str
    name: str
    op: str


@dataclass
class _Container:
    blobs: dict[str, _Blob] = field(default_factory=dict)
    staged: dict[str, dict[str, bytes]] = field(default_factory=dict)  # uncommitted blocks by blob name
    immutable: bool = False


class MemoryAccount:
    """A storage account in memory; thread-safe (the export stages blocks from a background thread).

    ``journal`` lists every change in order; each callback given to :meth:`on_write` is called after
    one (holding no lock), so a test can act between two of the export's writes. ``clock`` is what
    leases run out by.
    """

    def __init__(self, name: str = "memoryaccount", *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.url = f"https://{name}.blob.memory.invalid"
        self.clock = clock
        self.journal: list[Write] = []
        self._containers: dict[str, _Container] = {}
        self._lock = threading.RLock()
        self._etags = itertools.count(0x8D0_0000_0001)
        self._observers: list[Callable[[Write], None]] = []
        self._local = threading.local()  # per thread: the nesting of requests, and what they changed

    def container(self, name: str, *, create: bool = True, immutable: bool = False) -> "MemoryContainer":
        """A client for container ``name``; the container is created first unless not ``create``."""
        with self._lock:
            if create and name not in self._containers:
                self._containers[name] = _Container(immutable=immutable)
            elif immutable and name in self._containers:
                self._containers[name].immutable = True
        return MemoryContainer(self, name)

    def on_write(self, callback: Callable[[Write], None]) -> None:
        self._observers.append(callback)

    def contents(self, container: str | None = None) -> dict[tuple[str, str], bytes]:
        """Every committed blob's bytes by (container, name): what a reader could download now."""
        with self._lock:
            return {(c, name): blob.data for c, held in self._containers.items() if container in (None, c)
                    for name, blob in held.blobs.items()}

    # -- used by the clients ------------------------------------------------------------------------

    def _state(self, container: str) -> _Container:
        held = self._containers.get(container)
        if held is None:
            _fail(404, "ContainerNotFound", "The specified container does not exist.")
        return held

    def _new_etag(self) -> str:
        return f'"0x{next(self._etags):X}"'

    def _changed(self, container: str, name: str, op: str) -> None:
        """Record a change (under the lock); its observers hear of it when the request ends (:class:`_Operation`)."""
        write = Write(container, name, op)
        self.journal.append(write)
        self._local.pending.append(write)


class _Operation:
    """One request to the account: under its lock; then, the lock released, observers hear what it changed.

    Should requests nest, only the outermost tells.
    """

    def __init__(self, account: MemoryAccount) -> None:
        self._account = account

    def __enter__(self) -> None:
        account = self._account
        account._lock.acquire()
        local = account._local
        if getattr(local, "depth", 0) == 0:
            local.depth, local.pending = 0, []
        local.depth += 1

    def __exit__(self, *exc: Any) -> None:
        account, local = self._account, self._account._local
        local.depth -= 1
        pending: list[Write] = local.pending if local.depth == 0 else []
        if local.depth == 0:
            local.pending = []
        account._lock.release()
        for write in pending:
            for observer in list(account._observers):
                observer(write)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _lease_id(lease: Any) -> str | None:
    """The lease id a call names: a BlobLeaseClient, or a lease id string, as the SDK accepts both."""
    if lease is None:
        return None
    return str(getattr(lease, "id", lease))


def _check_conditions(blob: _Blob | None, kwargs: dict[str, Any], *, creates: bool) -> None:
    """``etag``/``match_condition`` as the service evaluates If-Match / If-None-Match.

    If-None-Match: * on a blob that exists is 409 BlobAlreadyExists for a request that creates a
    blob (Put Blob, Put Block List), 412 ConditionNotMet otherwise.
    """
    condition = kwargs.get("match_condition")
    etag = kwargs.get("etag")
    if condition in (None, MatchConditions.Unconditionally):
        return
    if condition == MatchConditions.IfMissing:
        if blob is not None:
            if creates:
                _fail(409, "BlobAlreadyExists", "The specified blob already exists.")
            _fail(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")
        return
    if condition == MatchConditions.IfPresent:
        met = blob is not None
    elif condition == MatchConditions.IfNotModified:
        met = blob is not None and blob.etag == etag
    elif condition == MatchConditions.IfModified:
        met = blob is None or blob.etag != etag
    else:
        raise ValueError(f"unsupported match condition {condition!r}")
    if not met:
        _fail(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")


def _check_lease(blob: _Blob | None, lease: Any, now: float) -> None:
    """A write to a leased blob needs its lease id; one naming a lease the blob does not have fails (412)."""
    wanted = _lease_id(lease)
    state = None if blob is None or blob.lease is None else blob.lease.state(now)
    active = state in ("leased", "breaking")
    if wanted is None:
        if active:
            _fail(412, "LeaseIdMissing", "There is currently a lease on the blob and no lease ID was specified "
                                         "in the request.")
        return
    if blob is None:
        return  # a lease id on a write that creates the blob is not checked (Azurite accepts it)
    if active:
        assert blob.lease is not None
        if blob.lease.id != wanted:
            _fail(412, "LeaseIdMismatchWithBlobOperation", "The lease ID specified did not match the lease ID "
                                                           "for the blob.")
        return
    if state == "expired" and blob.lease is not None and blob.lease.id == wanted:
        _fail(412, "LeaseLost", "A lease ID was specified, but the lease for the blob has expired.")
    _fail(412, "LeaseNotPresentWithBlobOperation", "There is currently no lease on the blob.")


def _check_mutable(held: _Container, blob: _Blob | None) -> None:
    if held.immutable and blob is not None:
        _fail(409, "BlobImmutableDueToPolicy", "This operation is not permitted as the blob is immutable due to "
                                               "a policy.")


# -- the clients ----------------------------------------------------------------------------------------


class MemoryContainer:
    """A ContainerClient of a :class:`MemoryAccount`: the calls graph_export makes on one."""

    def __init__(self, account: MemoryAccount, name: str) -> None:
        self.account = account
        self.container_name = name
        self.account_name = account.name
        self.url = f"{account.url}/{quote(name)}"

    def get_blob_client(self, blob: str) -> "MemoryBlob":
        return MemoryBlob(self.account, self.container_name, blob)

    def exists(self, **kwargs: Any) -> bool:
        with _Operation(self.account):
            return self.container_name in self.account._containers

    def get_container_properties(self, **kwargs: Any) -> ContainerProperties:
        with _Operation(self.account):
            self.account._state(self.container_name)
            properties = ContainerProperties()
            properties.name = self.container_name
            return properties

    def create_container(self, **kwargs: Any) -> dict[str, Any]:
        with _Operation(self.account):
            if self.container_name in self.account._containers:
                _fail(409, "ContainerAlreadyExists", "The specified container already exists.")
            self.account._containers[self.container_name] = _Container()
            return {"etag": self.account._new_etag(), "last_modified": _now()}

    def list_blobs(self, name_starts_with: str | None = None, include: str | list[str] | None = None,
                   **kwargs: Any) -> Iterator[BlobProperties]:
        """Committed blobs in name order (blobs holding only staged blocks are not listed, as in Azure)."""
        wanted = [include] if isinstance(include, str) else list(include or [])
        with _Operation(self.account):
            held = self.account._state(self.container_name)
            names = sorted(n for n in held.blobs if n.startswith(name_starts_with or ""))
            listed = [_properties(n, held.blobs[n], self.container_name, self.account.clock(),
                                  with_metadata="metadata" in wanted) for n in names]
        return iter(listed)

    def upload_blob(self, name: str, data: bytes | str | Iterable[bytes], **kwargs: Any) -> "MemoryBlob":
        blob = self.get_blob_client(name)
        blob.upload_blob(data, **kwargs)
        return blob

    def download_blob(self, blob: str, offset: int | None = None, length: int | None = None,
                      **kwargs: Any) -> "MemoryDownload":
        return self.get_blob_client(blob).download_blob(offset, length, **kwargs)

    def delete_blob(self, blob: str, delete_snapshots: str | None = None, **kwargs: Any) -> None:
        self.get_blob_client(blob).delete_blob(delete_snapshots, **kwargs)


class MemoryDownload:
    """A StorageStreamDownloader of one blob as it was when the download began."""

    def __init__(self, data: bytes, properties: BlobProperties) -> None:
        self._data = data
        self.properties = properties
        self.name = properties.name
        self.size = len(data)

    def readall(self) -> bytes:
        return self._data

    def chunks(self) -> Iterator[bytes]:
        for at in range(0, len(self._data), CHUNK_BYTES):
            yield self._data[at:at + CHUNK_BYTES]


class MemoryBlob:
    """A BlobClient of a :class:`MemoryAccount`: the calls graph_export makes on one, and the generated
    layer's lease operations (``_client.blob``) that the SDK's ``BlobLeaseClient`` calls."""

    def __init__(self, account: MemoryAccount, container: str, name: str) -> None:
        self.account = account
        self.container_name = container
        self.blob_name = name
        self.account_name = account.name
        self.url = f"{account.url}/{quote(container)}/{quote(name)}"
        self._client = _Generated(_LeaseOperations(self))

    # -- reads ----------------------------------------------------------------------------------------

    def exists(self, **kwargs: Any) -> bool:
        with _Operation(self.account):
            return self.blob_name in self.account._state(self.container_name).blobs

    def get_blob_properties(self, **kwargs: Any) -> BlobProperties:
        with _Operation(self.account):
            blob = self._existing()
            return _properties(self.blob_name, blob, self.container_name, self.account.clock(), with_metadata=True)

    def download_blob(self, offset: int | None = None, length: int | None = None, **kwargs: Any) -> MemoryDownload:
        with _Operation(self.account):
            blob = self._existing()
            _check_conditions(blob, kwargs, creates=False)
            data = blob.data
            if offset is not None:
                if offset >= len(data):
                    _fail(416, "InvalidRange", "The range specified is invalid for the current size of the resource.")
                data = data[offset:] if length is None else data[offset:offset + length]
            properties = _properties(self.blob_name, blob, self.container_name, self.account.clock(),
                                     with_metadata=True)
        return MemoryDownload(data, properties)

    def get_block_list(self, block_list_type: str = "committed", **kwargs: Any) -> tuple[list[BlobBlock],
                                                                                           list[BlobBlock]]:
        """(committed, uncommitted) blocks with their sizes; 404 when there is neither blob nor staged block."""
        with _Operation(self.account):
            held = self.account._state(self.container_name)
            blob, staged = held.blobs.get(self.blob_name), held.staged.get(self.blob_name)
            if blob is None and not staged:
                _fail(404, "BlobNotFound", "The specified blob does not exist.")
            committed = [_block(i, size) for i, size in (blob.blocks if blob else [])]
            uncommitted = [_block(i, len(data)) for i, data in (staged or {}).items()]
        return (committed if block_list_type in ("committed", "all") else [],
                uncommitted if block_list_type in ("uncommitted", "all") else [])

    # -- writes ---------------------------------------------------------------------------------------

    def upload_blob(self, data: bytes | str | Iterable[bytes], blob_type: BlobType = BlobType.BLOCKBLOB,
                    length: int | None = None, metadata: dict[str, str] | None = None, *, overwrite: bool = False,
                    **kwargs: Any) -> dict[str, Any]:
        """Put Blob. ``overwrite=False`` without another condition is the SDK's ``If-None-Match: *``."""
        if not overwrite and kwargs.get("match_condition") is None and kwargs.get("etag") is None:
            kwargs["match_condition"] = MatchConditions.IfMissing
        content = _bytes(data)
        if length is not None:
            content = content[:length]
        return self._put(content, BlobType(blob_type), metadata, kwargs, op="put")

    def create_append_blob(self, content_settings: ContentSettings | None = None,
                           metadata: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Put Blob of an empty append blob, replacing whatever the name held."""
        return self._put(b"", BlobType.APPENDBLOB, metadata, {**kwargs, "content_settings": content_settings},
                         op="put")

    def append_block(self, data: bytes | str | Iterable[bytes], length: int | None = None, **kwargs: Any
                     ) -> dict[str, Any]:
        content = _bytes(data)
        with _Operation(self.account):
            held = self.account._state(self.container_name)
            blob = self._existing()
            _check_conditions(blob, kwargs, creates=False)
            _check_lease(blob, kwargs.get("lease"), self.account.clock())
            if blob.kind != BlobType.APPENDBLOB:
                _fail(409, "InvalidBlobType", "The blob type is invalid for this operation.")
            position = kwargs.get("appendpos_condition")
            if position is not None and position != len(blob.data):
                _fail(412, "AppendPositionConditionNotMet", "The append position condition specified was not met.")
            _check_mutable(held, blob)
            offset = len(blob.data)
            blob.data += content
            blob.blocks.append((str(len(blob.blocks)), len(content)))
            self._touch(blob, "append")
            return {"etag": blob.etag, "last_modified": blob.last_modified, "blob_append_offset": str(offset),
                    "blob_committed_block_count": len(blob.blocks)}

    def stage_block(self, block_id: str, data: bytes | str | Iterable[bytes], length: int | None = None,
                    **kwargs: Any) -> dict[str, Any]:
        """Put Block: invisible until committed; every block id of one blob must have one length."""
        content = _bytes(data)
        with _Operation(self.account):
            held = self.account._state(self.container_name)
            blob = held.blobs.get(self.blob_name)
            _check_lease(blob, kwargs.get("lease"), self.account.clock())
            staged = held.staged.setdefault(self.blob_name, {})
            lengths = {len(i) for i in staged} | {len(i) for i, _ in (blob.blocks if blob else [])}
            if (length is not None and length != len(content)) or lengths - {len(block_id)}:
                _fail(400, "InvalidBlobOrBlock", "The specified blob or block content is invalid.")
            staged[block_id] = content
            return {}

    def commit_block_list(self, block_list: list[BlobBlock | str], content_settings: ContentSettings | None = None,
                          metadata: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Put Block List: the blob becomes exactly these blocks; staged blocks left out are discarded."""
        with _Operation(self.account):
            held, blob = self._writable(kwargs)
            staged = held.staged.get(self.blob_name, {})
            committed: dict[str, bytes] = {}
            at = 0
            for block_id, size in blob.blocks if blob is not None else []:
                assert blob is not None
                committed[block_id], at = blob.data[at:at + size], at + size
            pieces: list[tuple[str, bytes]] = []
            for item in block_list:
                block = item if isinstance(item, BlobBlock) else BlobBlock(item)
                state = str(getattr(block.state, "value", block.state)).lower()
                source = {"latest": staged if block.id in staged else committed, "uncommitted": staged,
                          "committed": committed}[state]
                if block.id not in source:
                    _fail(400, "InvalidBlockList", "The specified block list is invalid.")
                pieces.append((block.id, source[block.id]))
            written = self._store(held, b"".join(p for _, p in pieces), BlobType.BLOCKBLOB, metadata,
                                  content_settings, blob, op="commit")
            written.blocks = [(i, len(p)) for i, p in pieces]
            return {"etag": written.etag, "last_modified": written.last_modified}

    def delete_blob(self, delete_snapshots: str | None = None, **kwargs: Any) -> None:
        with _Operation(self.account):
            held = self.account._state(self.container_name)
            blob = self._existing()
            _check_conditions(blob, kwargs, creates=False)
            _check_lease(blob, kwargs.get("lease"), self.account.clock())
            _check_mutable(held, blob)
            del held.blobs[self.blob_name]
            held.staged.pop(self.blob_name, None)
            self.account._changed(self.container_name, self.blob_name, "delete")

    # -- internals ------------------------------------------------------------------------------------

    def _existing(self) -> _Blob:
        blob = self.account._state(self.container_name).blobs.get(self.blob_name)
        if blob is None:
            _fail(404, "BlobNotFound", "The specified blob does not exist.")
        return blob

    def _writable(self, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The container's state and the blob (or None) once a write with ``kwargs`` may go ahead, as the
        service checks it: conditions, then the lease, then an immutability policy."""
        held = self.account._state(self.container_name)
        blob = held.blobs.get(self.blob_name)
        _check_conditions(blob, kwargs, creates=True)
        _check_lease(blob, kwargs.get("lease"), self.account.clock())
        _check_mutable(held, blob)
        return held, blob

    def _put(self, content: bytes, kind: BlobType, metadata: dict[str, str] | None, kwargs: dict[str, Any], *,
             op: str) -> dict[str, Any]:
        with _Operation(self.account):
            held, blob = self._writable(kwargs)
            written = self._store(held, content, kind, metadata, kwargs.get("content_settings"), blob, op=op)
            return {"etag": written.etag, "last_modified": written.last_modified}

    def _store(self, held: _Container, content: bytes, kind: BlobType, metadata: dict[str, str] | None,
               content_settings: ContentSettings | None, before: _Blob | None, *, op: str) -> _Blob:
        """Replace the blob (keeping its lease and creation time); its staged blocks are discarded."""
        now = _now()
        written = _Blob(data=content, etag=self.account._new_etag(), kind=kind, metadata=dict(metadata or {}),
                        content_settings=content_settings or ContentSettings(), last_modified=now,
                        created=before.created if before else now, lease=before.lease if before else None)
        held.blobs[self.blob_name] = written
        held.staged.pop(self.blob_name, None)
        self.account._changed(self.container_name, self.blob_name, op)
        return written

    def _touch(self, blob: _Blob, op: str) -> None:
        blob.etag, blob.last_modified = self.account._new_etag(), _now()
        self.account._changed(self.container_name, self.blob_name, op)


def _bytes(data: bytes | str | Iterable[bytes]) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        return bytes(data.read())
    return b"".join(data)


def _block(block_id: str, size: int) -> BlobBlock:
    block = BlobBlock(block_id, BlockState.LATEST)
    block.size = size
    return block


def _properties(name: str, blob: _Blob, container: str, now: float, *, with_metadata: bool) -> BlobProperties:
    """The SDK's BlobProperties as it builds them from the service's headers."""
    lease_state = "available" if blob.lease is None else blob.lease.state(now)
    headers: dict[str, Any] = {
        "name": name, "ETag": blob.etag, "Content-Length": len(blob.data), "Last-Modified": blob.last_modified,
        "x-ms-creation-time": blob.created, "x-ms-blob-type": blob.kind.value,
        "metadata": dict(blob.metadata) if with_metadata else {},
        "x-ms-lease-state": lease_state,
        "x-ms-lease-status": "locked" if lease_state in ("leased", "breaking") else "unlocked",
    }
    if lease_state == "leased" and blob.lease is not None:
        headers["x-ms-lease-duration"] = "infinite" if blob.lease.duration == -1 else "fixed"
    properties = BlobProperties(**headers)
    properties.container = container
    properties.content_settings = blob.content_settings
    return properties


class _Generated:
    """The part of the SDK's generated client that BlobLeaseClient uses: ``_client.blob``."""

    def __init__(self, blob: "_LeaseOperations") -> None:
        self.blob = blob


class _LeaseOperations:
    """Lease Blob (acquire, renew, release, break, change) as the generated layer answers it.

    Errors are raised as that layer raises them; the SDK's BlobLeaseClient turns them into what its
    callers see (``process_storage_error``), as it does for the service's answers.
    """

    def __init__(self, blob: MemoryBlob) -> None:
        self._blob = blob

    def acquire_lease(self, *, duration: int = -1, proposed_lease_id: str | None = None, cls: Any = None,
                      **kwargs: Any) -> Any:
        if not (duration == -1 or 15 <= duration <= 60):
            raise _generated_error(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in "
                                                              "the correct format.")
        lease_id = proposed_lease_id or str(uuid.uuid4())
        with self._leasing() as (blob, now):
            state = None if blob.lease is None else blob.lease.state(now)
            if state == "leased" and blob.lease is not None and blob.lease.id != lease_id:
                raise _generated_error(409, "LeaseAlreadyPresent", "There is already a lease present.")
            if state == "breaking":
                raise _generated_error(409, "LeaseIsBreakingAndCannotBeAcquired",
                                       "There is already a breaking lease present.")
            blob.lease = _Lease(lease_id, duration, None if duration == -1 else now + duration)
            return self._answer(cls, blob, lease_id=lease_id)

    def renew_lease(self, lease_id: str, *, cls: Any = None, **kwargs: Any) -> Any:
        with self._leasing() as (blob, now):
            lease = self._held(blob, lease_id, now, "renewed")
            lease.until = None if lease.duration == -1 else now + lease.duration
            return self._answer(cls, blob, lease_id=lease_id)

    def release_lease(self, lease_id: str, *, cls: Any = None, **kwargs: Any) -> Any:
        with self._leasing() as (blob, now):
            lease = blob.lease
            if lease is None:
                raise _no_lease()
            if lease.id != lease_id:
                raise _mismatch()
            blob.lease = None
            return self._answer(cls, blob)

    def change_lease(self, lease_id: str, proposed_lease_id: str, *, cls: Any = None, **kwargs: Any) -> Any:
        with self._leasing() as (blob, now):
            lease = self._held(blob, lease_id, now, "changed")
            lease.id = proposed_lease_id
            return self._answer(cls, blob, lease_id=proposed_lease_id)

    def break_lease(self, *, break_period: int | None = None, cls: Any = None, **kwargs: Any) -> Any:
        """A fixed lease breaks when it would have run out, or after ``break_period`` if sooner; an infinite
        one at once, or after ``break_period``; an expired one at once."""
        with self._leasing() as (blob, now):
            lease = blob.lease
            if lease is None:
                raise _no_lease()
            state = lease.state(now)
            if state in ("leased", "breaking"):
                ends = [t for t in (lease.until, None if break_period is None else now + break_period) if t is not None]
                lease.breaking, lease.until = True, min(ends) if ends else now
            else:  # expired or broken
                lease.breaking, lease.until = True, now
            left = max(int(math.ceil((lease.until or now) - now)), 0)
            return self._answer(cls, blob, lease_time=left)

    # -- internals ------------------------------------------------------------------------------------

    def _leasing(self) -> "_Leasing":
        return _Leasing(self._blob)

    def _held(self, blob: _Blob, lease_id: str, now: float, verb: str) -> _Lease:
        lease = blob.lease
        if lease is None:
            raise _no_lease()
        if lease.id != lease_id:
            raise _mismatch()
        state = lease.state(now)
        if state == "broken":
            raise _generated_error(409, "LeaseIsBrokenAndCannotBeRenewed" if verb == "renewed" else
                                   "LeaseIsBrokenAndCannotBeChanged", f"The lease is broken and cannot be {verb}.")
        if state == "breaking":
            raise _generated_error(409, "LeaseIsBreakingAndCannotBeChanged",
                                   f"The lease is breaking and cannot be {verb}.")
        return lease

    def _answer(self, cls: Any, blob: _Blob, **extra: Any) -> Any:
        headers: dict[str, Any] = {"ETag": blob.etag, "Last-Modified": blob.last_modified}
        names = {"lease_id": "x-ms-lease-id", "lease_time": "x-ms-lease-time"}
        headers.update({names[k]: v for k, v in extra.items()})
        self._blob.account._changed(self._blob.container_name, self._blob.blob_name, "lease")
        return cls(None, None, headers) if cls is not None else None


class _Leasing:
    """A lease operation: the account's lock held, the blob (404 when it does not exist) and the clock's now."""

    def __init__(self, blob: MemoryBlob) -> None:
        self._blob = blob
        self._operation = _Operation(blob.account)

    def __enter__(self) -> tuple[_Blob, float]:
        self._operation.__enter__()
        try:
            held = self._blob.account._containers.get(self._blob.container_name)
            blob = None if held is None else held.blobs.get(self._blob.blob_name)
            if held is None:
                raise _generated_error(404, "ContainerNotFound", "The specified container does not exist.")
            if blob is None:
                raise _generated_error(404, "BlobNotFound", "The specified blob does not exist.")
        except BaseException:
            self._operation.__exit__()
            raise
        return blob, self._blob.account.clock()

    def __exit__(self, *exc: Any) -> None:
        self._operation.__exit__(*exc)


def _no_lease() -> HttpResponseError:
    return _generated_error(409, "LeaseNotPresentWithLeaseOperation", "There is currently no lease on the blob.")


def _mismatch() -> HttpResponseError:
    return _generated_error(409, "LeaseIdMismatchWithLeaseOperation", "The lease ID specified did not match the "
                                                                      "lease ID for the blob.")
