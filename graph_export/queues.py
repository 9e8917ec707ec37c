"""The fan-out queue: one message per tenant and slot on EXPORT_QUEUE, in the export storage account.

A message holds only ``{"tenant": "<id>", "slot": "<UTC time>"}``: no secret, no token; the worker signs in
to the tenant with the app's own credential. Messages are base64 text, which the Functions host's queue
trigger expects by default (``messageEncoding: base64`` in host.json; the SDK's
``TextBase64EncodePolicy``, https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#encoding).
The queue is reached with EXPORT_STORAGE's own authentication: the connection string, or
EXPORT_STORAGE__queueServiceUri with the app's identity (the trigger's identity-based connection reads the
same setting). Every call runs inside ``storage.storage_errors``, so a failure is one actionable line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from . import naming
from .errors import MessageRejected, StorageError
from .records import iso
from .settings import StorageTarget
from .storage import storage_errors

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
        where = f"queue '{name}' (from {target.source})"
    elif target.queue_service_uri:
        queue = QueueClient(target.queue_service_uri, name, credential=credential, **policies)
        where = f"queue '{name}' at {target.queue_service_uri}"
    else:
        raise StorageError("No queue storage is configured: set EXPORT_STORAGE (a connection string) or "
                           "EXPORT_STORAGE__queueServiceUri.")
    log.debug("Opened %s", where)
    return queue


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
