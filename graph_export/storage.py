"""Blob Storage access shared by every room: the container, small JSON records, the pointer, errors.

Every call that reaches storage runs inside :func:`storage_errors`, which turns the SDK's failures
into one actionable :class:`StorageError` line. The export file itself is written by ``sink``. The
same lines serve the export account's queues (``queues``): what they advise (role, setting, SAS) is
the :class:`ServiceAdvice` of the service the refused request went to, registered by origin when its
client is opened (:func:`register_service`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Literal
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, BlobProperties, ContainerClient, ContentSettings

from . import naming
from .errors import (
    SlotBusyError,
    StorageError,
    certificate_failure,
    first_line,
    origin_of,
    refused_or_unresolved,
    request_origin,
    untrusted_certificate,
)
from .naming import LATEST_BLOB
from .records import LatestPointer, RecordError
from .retrying import StorageRetry
from .settings import StorageTarget

log = logging.getLogger(__name__)

JSON_CONTENT = ContentSettings(content_type="application/json; charset=utf-8")
#: Conditional writes of latest.json tried before giving up (each loss means another run published).
POINTER_ATTEMPTS = 8


def open_container(target: StorageTarget, container: str, credential: TokenCredential | None,
                   backoff_base_s: float, *, create: bool = True) -> ContainerClient:
    """Connect to the container, creating it if missing (unless not ``create``: a reader's typo must
    not make an empty one); fail fast with a clear message.

    Its retries (:class:`~graph_export.retrying.StorageRetry`) never repeat a certificate failure, nor a
    refused connection or a name that does not resolve before the account has answered once: a wrong
    or unstarted endpoint fails in seconds, a busy one keeps its retries (announced once they take
    more than a few seconds).
    """
    # The SDK annotates these as int, but computes with them as float: sub-second backoffs are for tests.
    backoff: dict[str, Any] = {"initial_backoff": backoff_base_s, "increment_base": 3 * backoff_base_s,
                               "random_jitter_range": backoff_base_s}
    options: dict[str, Any] = {
        "retry_policy": StorageRetry(retry_total=4, **backoff),
        "connection_timeout": 10,
        "read_timeout": 120,
        # Downloads (a delta slot streams the previous snapshot) in 4 MiB GETs: the SDK's first GET of
        # 32 MiB would be held, and joined, in memory, a cost that grows with the tenant.
        "max_single_get_size": 4 * 1024 * 1024,
        "max_chunk_get_size": 4 * 1024 * 1024,
    }
    if target.connection_string:
        client = ContainerClient.from_connection_string(target.connection_string, container, **options)
        _register_blob(client.url, target.source or "EXPORT_STORAGE")
        where = f"container '{container}' (from {target.source})"
    elif target.blob_service_uri:
        client = ContainerClient(target.blob_service_uri, container, credential=credential, **options)
        _register_blob(client.url, target.source or "EXPORT_STORAGE__blobServiceUri")
        where = f"container '{container}' at {target.blob_service_uri}"
    else:  # settings never make one; a StorageTarget built by hand might
        raise StorageError("No export storage is configured: set EXPORT_STORAGE or EXPORT_STORAGE__blobServiceUri.")
    with storage_errors(f"opening {where}"):
        # Look before creating: in Azure the identity's role is scoped to this one container, and
        # creating (even an existing) container needs rights on the account.
        try:
            client.get_container_properties()
        except ResourceNotFoundError:
            if not create:
                raise StorageError(f"There is no {where}: check the container's name (EXPORT_CONTAINER, "
                                   "EXPORT_STATE_CONTAINER) and the storage setting.") from None
            try:
                client.create_container()
            except ResourceExistsError:  # created meanwhile by another run
                pass
    return client


#: What a failure means for consumers, before the commit; after it, callers say what was published.
NOTHING_PUBLISHED = "nothing was published; run again"


@dataclass(frozen=True)
class RefusedRequest:
    """What is known of the request storage refused or never answered: its URL (only the origin when the
    connection failed before a request was made; "" when not even that) and its HTTP method ("" if unknown)."""

    url: str
    method: str = ""


@dataclass(frozen=True)
class ServiceAdvice:
    """What :func:`storage_errors`' lines tell the operator to fix for one storage service: the parts that differ
    between the export container and a queue, so each refusal names the role, setting and SAS of its own service."""

    #: The setting the endpoint came from (EXPORT_STORAGE, EXPORT_STORAGE__blobServiceUri, …).
    setting: str
    #: The settings to check when the service cannot be reached.
    endpoints: str
    #: The identity-based setting to use instead of an account key or SAS.
    identity_setting: str
    #: The whole clause granting the identity its role: "give the function's identity '…' on …".
    grant: str
    #: For an account that allows no shared key: "set <setting> and assign '<role>'".
    use_identity: str
    #: A SAS that allows every request the export makes of the service, and the command that makes one.
    new_sas: str
    #: Why storage refuses a SAS's signature or validity.
    sas_refused: str
    #: The command that makes a new SAS of the same kind, with its expiry.
    renew_sas: str


#: How a service describes itself for one refused request (a queue's advice names the queue the request went to).
Describe = Callable[[RefusedRequest], ServiceAdvice]


def blob_advice(setting: str) -> ServiceAdvice:
    """The export (or state) container's: the role infra/ assigns on it (Storage Blob Data Contributor) and a
    container SAS with the permissions the export uses."""
    return ServiceAdvice(
        setting=setting,
        endpoints="EXPORT_STORAGE / EXPORT_STORAGE__blobServiceUri",
        identity_setting="EXPORT_STORAGE__blobServiceUri",
        grant="give the function's identity 'Storage Blob Data Contributor' on the export container",
        use_identity="set EXPORT_STORAGE__blobServiceUri and assign 'Storage Blob Data Contributor'",
        new_sas=("make a new SAS for the container with read, add, create, write, delete and list permissions "
                 "(az storage container generate-sas --permissions racwdl)"),
        sas_refused="it is expired or not yet valid, revoked, or signed with an account key that has since been rotated",
        renew_sas="az storage container generate-sas --permissions racwdl --expiry <date>",
    )


#: How each storage endpoint (by origin) describes a refusal, registered as its client is opened. Blob and queue
#: services of one account have origins of their own (``<account>.blob…``/``<account>.queue…``; Azurite: one port
#: each), so the origin of the refused request tells which service refused it.
_SERVICE_AT: dict[str, Describe] = {}


def register_service(url: str, describe: Describe) -> None:
    """Make refusals of requests to ``url``'s origin use ``describe``'s advice (the last registration wins)."""
    _SERVICE_AT[origin_of(url)] = describe


def _register_blob(url: str, setting: str) -> None:
    advice = blob_advice(setting)
    register_service(url, lambda _request: advice)


def _advice_for(request: RefusedRequest) -> ServiceAdvice:
    """The advice of the service ``request`` went to; an origin nothing registered gets the blob advice, as a
    container opened by hand did before queues had their own."""
    describe = _SERVICE_AT.get(origin_of(request.url)) if request.url else None
    return describe(request) if describe is not None else blob_advice("EXPORT_STORAGE")


def _refused_request(exc: HttpResponseError) -> RefusedRequest:
    request = getattr(exc.response, "request", None)
    return RefusedRequest(url=str(getattr(request, "url", "") or ""), method=str(getattr(request, "method", "") or ""))


#: Storage's codes for a shared key or SAS whose signature, validity or scope it does not accept. Azure
#: answers a wrong key or SAS signature AuthenticationFailed (403); Azurite answers AuthorizationFailure,
#: which Azure also answers when its firewall keeps the caller out.
_SIGNATURE_REFUSED = frozenset({"AuthenticationFailed", "AuthorizationFailure", "InvalidAuthenticationInfo"})
_SAS_SCOPE_REFUSED = frozenset({"AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch",
                                "AuthorizationServiceMismatch", "AuthorizationProtocolMismatch",
                                "AuthorizationSourceIPMismatch"})


@contextlib.contextmanager
def storage_errors(doing: str, outcome: str = NOTHING_PUBLISHED) -> Iterator[None]:
    """Map Azure Storage failures inside the block to one actionable :class:`StorageError` line.

    ``outcome`` ends a failure the operator can retry: what was and was not published. A refusal says
    which credential was refused (the account key or SAS of a connection string, or the identity), as
    seen on the refused request itself, and never shows it. The SDK's own error goes to the DEBUG log
    first (``--debug``), redacted like every record: the one line drops its chain.
    """
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        _keep_cause(doing)
        origin = request_origin(exc)
        advice = _advice_for(RefusedRequest(url=origin or ""))
        untrusted = certificate_failure(exc)
        if untrusted is not None:
            line = untrusted_certificate("Export storage", origin or "its endpoint", advice.setting, untrusted, doing)
            raise StorageError(f"{line}; {outcome}.") from None
        why = refused_or_unresolved(exc)
        at = f" at {origin}" if origin else ""
        raise StorageError(
            f"Export storage{at} is unreachable{f' ({why})' if why else ''} while {doing}: check {advice.endpoints} "
            f"(is Azurite running locally?) and the network path; {outcome}."
        ) from None
    except ClientAuthenticationError as exc:
        _keep_cause(doing)
        if exc.response is None:  # the credential itself failed before storage was asked anything
            raise StorageError(
                f"Could not get a token for the export storage while {doing}: enable the function "
                "app's managed identity, or sign in with 'az login' when running locally "
                f"({first_line(exc.message, 200)})."
            ) from None
        advice = _advice_for(_refused_request(exc))
        refused = _refused_key_or_sas(exc, advice, doing, outcome)
        if refused is not None:
            raise StorageError(refused) from None
        raise StorageError(
            f"Export storage refused our credentials while {doing}: {advice.grant}, or check the connection string."
        ) from None
    except HttpResponseError as exc:
        _keep_cause(doing)
        code = _error_code(exc)
        advice = _advice_for(_refused_request(exc))
        if exc.status_code in (401, 403):
            refused = _refused_key_or_sas(exc, advice, doing, outcome)
            if refused is not None:
                raise StorageError(refused) from None
        if exc.status_code == 403:
            raise StorageError(
                f"Export storage denied access ({code or 'HTTP 403'}) while {doing}: {advice.grant} and check "
                "the storage firewall."
            ) from None
        raise StorageError(f"Export storage failed with HTTP {exc.status_code} {code} while {doing}: {outcome}.") from None
    except ValueError as exc:
        if isinstance(exc, RecordError):
            raise
        _keep_cause(doing)
        # The SDK's answer to a malformed connection string.
        raise StorageError(
            f"The export storage settings are not usable while {doing}: check EXPORT_STORAGE."
        ) from None


def _keep_cause(doing: str) -> None:
    """Log the exception being handled at DEBUG: what the one StorageError line (raised ``from None``) leaves out."""
    log.debug("Export storage failed while %s", doing, exc_info=True)


def _error_code(exc: HttpResponseError) -> str:
    """Storage's error code as it spells it (``AuthorizationFailure``), never the SDK's enum name."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "").strip()


def _presented(exc: HttpResponseError) -> str | None:
    """How the refused request proved itself: "key" (Shared Key), "sas" or "token"; None if unknown."""
    request = getattr(exc.response, "request", None)
    if request is None:
        return None
    authorization = str(request.headers.get("Authorization") or "")
    if authorization.startswith("SharedKey"):
        return "key"
    if authorization.lower().startswith("bearer"):
        return "token"
    query = urlsplit(str(request.url)).query
    return "sas" if "sig=" in query else None


def _refused_key_or_sas(exc: HttpResponseError, advice: ServiceAdvice, doing: str, outcome: str) -> str | None:
    """The line for an account key or SAS that storage refused; None when the request used neither."""
    kind = _presented(exc)
    if kind not in ("key", "sas"):
        return None
    code = _error_code(exc) or f"HTTP {exc.status_code}"
    setting = advice.setting
    identity = f"or use the app's identity instead ({advice.identity_setting})"
    if code == "KeyBasedAuthenticationNotPermitted":
        return (f"Export storage does not allow shared key access, so it refused the {_KIND[kind]} in {setting} "
                f"({code}) while {doing}: use the app's identity instead ({advice.use_identity}), or allow shared "
                f"key access on the account; {outcome}.")
    if kind == "sas" and code in _SAS_SCOPE_REFUSED:
        return (f"Export storage refused the SAS in {setting} ({code}) while {doing}: it does not allow this "
                f"request; {advice.new_sas}, signed for HTTPS and any address the function uses, and put it in "
                f"{setting}, {identity}; {outcome}.")
    if code not in _SIGNATURE_REFUSED and exc.status_code != 401:
        return (f"Export storage refused a request made with the {_KIND[kind]} in {setting} ({code}) while "
                f"{doing}: check the storage firewall and that the account is enabled; {outcome}.")
    if kind == "sas":
        return (f"Export storage refused the SAS in {setting} ({code}) while {doing}: {advice.sas_refused}; put a "
                f"new SAS in {setting} ({advice.renew_sas}), {identity}; {outcome}.")
    firewall = " (or the storage firewall does not admit this network)" if code == "AuthorizationFailure" else ""
    return (f"Export storage refused the account key in {setting} ({code}) while {doing}: the key is wrong or has "
            f"been rotated{firewall}; put the account's current connection string in {setting} (az storage "
            f"account show-connection-string --name <account>), {identity}; {outcome}.")


_KIND = {"key": "account key", "sas": "SAS"}


def etag_of(blob: BlobClient) -> str | None:
    """The blob's current ETag, or None when it does not exist (yet)."""
    with storage_errors(f"reading the properties of {blob.blob_name}"):
        try:
            return blob.get_blob_properties().etag
        except ResourceNotFoundError:
            return None


def properties_of(container: ContainerClient, name: str) -> BlobProperties | None:
    """A blob's properties (size, ETag, metadata) without its bytes, or None when it does not exist."""
    with storage_errors(f"reading the properties of {name}"):
        try:
            return container.get_blob_client(name).get_blob_properties()
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
        log.debug("%s is not JSON", name, exc_info=True)  # where the decoder stopped
        raise RecordError(f"{name} is not JSON") from None


def read_json_etag(container: ContainerClient, name: str) -> tuple[Any, str | None]:
    """A small JSON document and its ETag; (None, None) if it does not exist, (None, etag) if it is not JSON."""
    with storage_errors(f"reading {name}"):
        try:
            download = container.download_blob(name)
            data, etag = download.readall(), download.properties.etag
        except ResourceNotFoundError:
            return None, None
    try:
        return json.loads(data), etag
    except ValueError:
        return None, etag


def write_json(container: ContainerClient, name: str, document: dict[str, Any]) -> None:
    """Write a small mutable JSON document (checkpoint, delta state) in one request, replacing any earlier one."""
    with storage_errors(f"writing {name}"):
        container.upload_blob(name, _json_bytes(document), overwrite=True, content_settings=JSON_CONTENT)


def create_json(container: ContainerClient, name: str, document: dict[str, Any]) -> str:
    """Write a JSON document that must not exist yet (a manifest: never overwritten); its ETag.

    One that exists already holding exactly these bytes is this write's own (its answer was lost and
    the SDK sent it again).
    """
    data = _json_bytes(document)
    blob = container.get_blob_client(name)
    with storage_errors(f"writing {name}"):
        try:
            written = blob.upload_blob(data, content_settings=JSON_CONTENT)  # overwrite=False: If-None-Match: *
        except ResourceExistsError:
            held = blob.download_blob()
            if held.readall() != data:
                raise SlotBusyError(f"{name} already exists, written by another run of the slot: this run "
                                    "published nothing; run again.") from None
            return str(held.properties.etag)
    return str(written["etag"])


def replace_json(container: ContainerClient, name: str, document: dict[str, Any], etag: str | None,
                 outcome: str = NOTHING_PUBLISHED) -> str | None:
    """Write ``name`` only if it is still as read (absent when ``etag`` is None); its new ETag, or None if not."""
    condition: dict[str, Any] = ({"match_condition": MatchConditions.IfMissing} if etag is None else
                                 {"etag": etag, "match_condition": MatchConditions.IfNotModified})
    with storage_errors(f"writing {name}", outcome):
        try:
            written = container.get_blob_client(name).upload_blob(
                _json_bytes(document), overwrite=True, content_settings=JSON_CONTENT, **condition)
        except (ResourceExistsError, ResourceModifiedError):
            return None
    return str(written["etag"])


def delete(container: ContainerClient, name: str, outcome: str = NOTHING_PUBLISHED) -> bool:
    """Delete ``name`` if it exists; False (logged) when storage refuses, e.g. under an immutability policy."""
    with storage_errors(f"deleting {name}", outcome):
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as error:
            if error.status_code != 409:
                raise
            log.info("Kept %s: storage refuses to delete it (%s)", name, _error_code(error) or "HTTP 409")
            return False
    return True


LatestOutcome = Literal["written", "unchanged", "newer"]


def point_latest(state: ContainerClient, exports: ContainerClient, pointer: LatestPointer, now: datetime,
                 outcome: str = NOTHING_PUBLISHED) -> LatestOutcome:
    """Make ``users/latest.json`` (in ``state``) point at this export unless it points at a newer one.

    Each write is conditional on the ETag just read, so two publishers never interleave a stale
    pointer; losing that race means reading again, not failing a run that did publish. A pointer
    that is not valid (unparsable, a slot from the future, naming a manifest that does not exist in
    ``exports``) is replaced, with a warning. One that already says exactly this is left as it is.
    """
    blob = state.get_blob_client(LATEST_BLOB)
    data = _json_bytes(pointer.to_document())
    for _ in range(POINTER_ATTEMPTS):
        with storage_errors(f"updating {LATEST_BLOB}", outcome):
            try:
                current = blob.download_blob()
            except ResourceNotFoundError:
                current = None
            etag: str | None = None
            if current is not None:
                if (kept := _keeps(exports, current.readall(), data, pointer, now)) is not None:
                    return kept
                etag = current.properties.etag
            try:
                if etag is None:
                    blob.upload_blob(data, overwrite=True, content_settings=JSON_CONTENT,
                                     match_condition=MatchConditions.IfMissing)
                else:
                    blob.upload_blob(data, overwrite=True, content_settings=JSON_CONTENT, etag=etag,
                                     match_condition=MatchConditions.IfNotModified)
                return "written"
            except (ResourceModifiedError, ResourceExistsError):
                continue  # another run published meanwhile: look at what it wrote
    raise StorageError(
        f"{LATEST_BLOB} kept changing while this export tried to update it ({POINTER_ATTEMPTS} attempts): "
        f"{outcome}."
    )


def latest_needs(state: ContainerClient, exports: ContainerClient, pointer: LatestPointer, now: datetime) -> bool:
    """Whether :func:`point_latest` would write (read only)."""
    with storage_errors(f"reading {LATEST_BLOB}"):
        try:
            held = state.download_blob(LATEST_BLOB).readall()
        except ResourceNotFoundError:
            return True
        return _keeps(exports, held, _json_bytes(pointer.to_document()), pointer, now) is None


def _keeps(exports: ContainerClient, held: bytes, data: bytes, pointer: LatestPointer,
           now: datetime) -> Literal["unchanged", "newer"] | None:
    """Why ``latest.json`` holding ``held`` stays as it is, or None when ``data`` replaces it."""
    if held == data:
        return "unchanged"
    standing = _standing_pointer(exports, held, now)
    if standing is not None and standing.slot > pointer.slot:
        return "newer"
    return None


def _standing_pointer(exports: ContainerClient, data: bytes, now: datetime) -> LatestPointer | None:
    """The current pointer if it is one to respect; None (logged) if it must be replaced."""
    try:
        standing = LatestPointer.parse(json.loads(data))
        naming.check_slot(standing.slot, now)
    except ValueError as why:  # RecordError, undecodable JSON, or a slot out of bounds
        log.warning("%s is not a valid pointer (%s); replacing it", LATEST_BLOB, why)
        return None
    if not exports.get_blob_client(standing.manifest).exists():
        log.warning("%s names %s, which does not exist; replacing it", LATEST_BLOB, standing.manifest)
        return None
    return standing


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
