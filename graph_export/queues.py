"""The fan-out queue: one message per tenant and slot on EXPORT_QUEUE, in the export storage account.

A message holds only ``{"tenant": "<id>", "slot": "<UTC time>"}``: no secret, no token; the worker signs in
to the tenant with the app's own credential. Messages are base64 text, which the Functions host's queue
trigger expects by default (``messageEncoding: base64`` in host.json; the SDK's
``TextBase64EncodePolicy``, https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#encoding).
The queue is reached with EXPORT_STORAGE's own authentication: the connection string, or
EXPORT_STORAGE__queueServiceUri with the app's identity (the trigger's identity-based connection reads the
same setting). Every call runs inside ``storage.storage_errors``, so a failure is one actionable line, and
:func:`open_queue` registers the queue service's :func:`queue_advice` for it: a refused queue request names the
queue's role, setting and SAS, not the container's.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from . import naming
from .errors import MessageRejected, StorageError
from .records import iso
from .settings import StorageTarget
from .storage import RefusedRequest, ServiceAdvice, register_service, storage_errors

log = logging.getLogger(__name__)

#: What the Functions host appends to a queue's name for its poison queue.
POISON_SUFFIX = "-poison"
#: The longest message text accepted: a tenant id and a slot need about 90 characters.
_MAX_MESSAGE = 1024


@dataclass(frozen=True)
class TenantSlot:
    """One message: export ``tenant``'s ``slot``."""

    tenant: str
    slot: datetime

    def to_text(self) -> str:
        return json.dumps({"tenant": self.tenant, "slot": iso(self.slot)}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str, tenants: tuple[str, ...]) -> "TenantSlot":
        """A message's text, strictly: exactly ``tenant`` (one of ``tenants``) and ``slot`` (an ISO 8601 time);
        MessageRejected otherwise (no attempt could process it). Its text is not echoed: it may be anything."""
        if len(text) > _MAX_MESSAGE:
            raise MessageRejected(f"A queue message of {len(text)} characters is no export message: moved to the "
                                  "poison queue; messages hold only a tenant id and a slot.")
        try:
            document: Any = json.loads(text)
        except ValueError:
            raise MessageRejected("A queue message is not JSON: moved to the poison queue; messages are "
                                  '{"tenant": "<id>", "slot": "<UTC time>"} (python -m graph_export fan-out).') from None
        if not isinstance(document, dict) or set(document) != {"tenant", "slot"} or not all(
                isinstance(v, str) for v in document.values()):
            raise MessageRejected('A queue message is not {"tenant": "<id>", "slot": "<UTC time>"}: moved to the '
                                  "poison queue.")
        tenant = document["tenant"].strip().lower()
        if tenant not in tenants:
            raise MessageRejected(f"A queue message names tenant '{tenant[:40]}', which TENANT_IDS does not list: "
                                  "moved to the poison queue; add the tenant to TENANT_IDS and fan out again.")
        try:  # bounded as run_export bounds it: a slot years ahead would freeze the tenant's latest.json
            slot = naming.check_slot(naming.parse_slot(document["slot"]), datetime.now(timezone.utc))
        except ValueError:
            raise MessageRejected(f"A queue message for tenant {tenant} has no usable slot: moved to the poison "
                                  "queue.") from None
        return cls(tenant=tenant, slot=slot)


def open_queue(target: StorageTarget, name: str, credential: TokenCredential | None) -> QueueClient:
    """The queue ``name`` in the export storage account, base64 in and out as the Functions host has it
    (created by the first message sent to it, if missing: :func:`send_text`)."""
    policies: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(),
                                "message_decode_policy": TextBase64DecodePolicy(),
                                "connection_timeout": 10, "read_timeout": 30}
    if target.connection_string:
        queue = QueueClient.from_connection_string(target.connection_string, name, **policies)
        setting = target.source or "EXPORT_STORAGE"
        where = f"queue '{name}' (from {target.source})"
    elif target.queue_service_uri:
        queue = QueueClient(target.queue_service_uri, name, credential=credential, **policies)
        setting = _uri_setting(target.source)
        where = f"queue '{name}' at {target.queue_service_uri}"
    else:
        raise StorageError("No queue storage is configured: set EXPORT_STORAGE (a connection string) or "
                           "EXPORT_STORAGE__queueServiceUri.")
    account_path = urlsplit(queue.url).path.rsplit("/", 1)[0]  # "/devstoreaccount1" on Azurite, "" in Azure
    register_service(queue.url, functools.partial(queue_advice, setting, account_path))
    log.debug("Opened %s", where)
    return queue


def _uri_setting(source: str) -> str:
    """The queue service URI setting beside the blob one the target came from (EXPORT_STORAGE__blobServiceUri or
    the host's AzureWebJobsStorage__blobServiceUri)."""
    if source.endswith("__blobServiceUri"):
        return source.replace("__blobServiceUri", "__queueServiceUri")
    return "EXPORT_STORAGE__queueServiceUri"


#: A queue's name as storage allows it (3-63 lowercase letters, digits and hyphens): only such text from a refused
#: request's path is repeated in a message.
_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]")
#: One SAS in a connection string serves the container and both queues, so only an account SAS can cover them all.
_ACCOUNT_SAS = "az storage account generate-sas --services bq --resource-types co --permissions racwdlup"
_LOCAL = "or, running locally with az login, give the signed-in user 'Storage Queue Data Contributor' on the account"


def queue_advice(setting: str, account_path: str, request: RefusedRequest) -> ServiceAdvice:
    """What a refused request to one of the account's queues tells the operator, naming that queue.

    The queue is read from the refused request's path (after ``account_path``), so the poison queue's refusal
    names the poison queue's role. The roles are the deployment's (infra/modules/roles.bicep): Message Sender on
    the poison queue (the host, and ``work``, only send there); Storage Queue Data Contributor on the fan-out
    queue, the one built-in role with the messages/write that Update Message (a release, a renewal) needs
    (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage). A queue SAS has read,
    add, update and process (azure-storage-queue's ``QueueSasPermissions``;
    https://learn.microsoft.com/rest/api/storageservices/create-service-sas), and one made for another queue is
    refused as a bad signature (AuthenticationFailed, seen on Azurite); as one SAS in EXPORT_STORAGE serves the
    container and both queues, an account SAS over the blob and queue services is the one that covers everything
    the export does. A refused create (PUT on the queue itself) comes after a send answered QueueNotFound
    (:func:`send_text`): the queue is missing, and the identity may not create queues.
    """
    name, creating = _addressed(request, account_path)
    queue = f"queue '{name}'" if name else "the queue EXPORT_QUEUE names"
    queue_sas = f"az storage queue generate-sas --name {name or '<queue>'} --permissions raup"
    return ServiceAdvice(
        setting=setting,
        endpoints="EXPORT_STORAGE / EXPORT_STORAGE__queueServiceUri",
        identity_setting="EXPORT_STORAGE__queueServiceUri",
        grant=_grant(name, queue, creating),
        use_identity=(f"set EXPORT_STORAGE__queueServiceUri (with EXPORT_STORAGE__blobServiceUri) and assign "
                      f"{_role(name)} on {queue}"),
        new_sas=(f"make a new SAS for {queue} with read, add, update and process permissions ({queue_sas}) or, as "
                 f"the one SAS in {setting} serves the container and both queues, an account SAS covering the blob "
                 f"and queue services ({_ACCOUNT_SAS})"),
        sas_refused=("it is expired or not yet valid, revoked, signed with an account key that has since been "
                     "rotated, or made for another queue"),
        renew_sas=f"{queue_sas} --expiry <date>, or an account SAS for both services: {_ACCOUNT_SAS} --expiry <date>",
    )


def _role(name: str) -> str:
    """The role infra/ gives on the poison queue (it only receives copies), or the one covering the fan-out queue's."""
    return "'Storage Queue Data Message Sender'" if name.endswith(POISON_SUFFIX) else "'Storage Queue Data Contributor'"


def _grant(name: str, queue: str, creating: bool) -> str:
    """The clause that gives the identity (or, locally, the signed-in user) what the refused request needed."""
    if creating:
        return (f"{queue} does not exist and the function's identity may not create it: deploy infra/ (which creates "
                f"it) or create it (az storage queue create --name {name} --account-name <account> --auth-mode "
                f"login), {_LOCAL}")
    return f"give the function's identity {_role(name)} on {queue} (as infra/ does), {_LOCAL}"


def _addressed(request: RefusedRequest, account_path: str) -> tuple[str, bool]:
    """The queue ``request`` went to ("" if its URL does not say) and whether it was that queue's creation."""
    parts = urlsplit(request.url)
    path = parts.path
    if not path.startswith(f"{account_path}/"):
        return "", False
    segments = path[len(account_path) + 1:].split("/")
    name = segments[0] if _QUEUE_NAME.fullmatch(segments[0]) else ""
    creating = bool(name) and request.method.upper() == "PUT" and len(segments) == 1 and "comp=" not in parts.query
    return name, creating


def send_text(queue: QueueClient, text: str) -> None:
    """Send ``text``; a queue that does not exist yet is created, then sent to again.

    Sent first and created only on 404 QueueNotFound, as the Functions host does: in Azure the app's identity
    may send to the queue (Storage Queue Data Message Sender on it) but not create queues, and Azure refuses a
    create from it with 403 even when the queue exists.
    """
    try:
        queue.send_message(text)
    except ResourceNotFoundError:
        try:
            queue.create_queue()
        except ResourceExistsError:  # created meanwhile by another sender
            pass
        queue.send_message(text)


def poison_name(queue: str) -> str:
    return f"{queue}{POISON_SUFFIX}"


def send(queue: QueueClient, message: TenantSlot) -> None:
    with storage_errors(f"sending {message.tenant}'s slot {iso(message.slot)} to queue {queue.queue_name}",
                        "run fan-out again (a slot already published is skipped)"):
        send_text(queue, message.to_text())


def fan_out(queue: QueueClient, tenants: tuple[str, ...], slot: datetime) -> list[TenantSlot]:
    """One message per tenant for ``slot``, in TENANT_IDS' order. Sending again is harmless: a slot already
    published is skipped, so a retried timer (or an operator's second fan-out) duplicates no export."""
    sent = [TenantSlot(tenant=tenant, slot=naming.normalize_slot(slot)) for tenant in tenants]
    for message in sent:
        send(queue, message)
    log.info("Fanned out slot %s to %d tenants on queue %s", iso(slot), len(sent), queue.queue_name)
    return sent
