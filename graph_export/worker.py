"""One tenant's slot from a queue message, and ``work``: the queue trigger's loop, run locally.

:func:`process` is what the queue-triggered function calls: the message's tenant (one of TENANT_IDS) and
slot, exported by ``run_export`` with that tenant's settings (:meth:`Settings.for_tenant`), so the whole
pipeline stays single-tenant inside. A message is idempotent: a slot already published is ``skipped``
(a redelivered or duplicated message), a killed run's next delivery resumes from the tenant's checkpoint.
A failure is recorded in the tenant's state (``failures``) and raised, so the queue retries it.

:func:`work` receives messages until the queue is empty, as the host would: deleted on success (skipped
included), left for another attempt after host.json's ``visibilityTimeout`` on failure, moved to
``<queue>-poison`` once dequeued ``maxDequeueCount`` times (``hostconfig``), and a message no attempt can
process (MessageRejected) to the poison queue at once. One ``Export failed:`` line per failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from . import failures, hostconfig, queues, redact, tenant_root
from .clients import Clients, warm_clients
from .errors import ExportError, MessageRejected
from .export import run_export
from .records import ExportSummary
from .settings import Settings
from .storage import storage_errors

log = logging.getLogger(__name__)
#: How long ``work`` keeps a received message invisible to others while it exports it (seconds). A longer
#: export is still alone: a second delivery meanwhile finds the slot's lease taken (SlotBusyError) and retries.
LEASE_S = 600

ClientsFor = Callable[[Settings], Clients]


def process(settings: Settings, text: str, *, clients_for: ClientsFor = warm_clients) -> ExportSummary:
    """Export the tenant and slot of one message's ``text``; MessageRejected if no attempt can, another
    ExportError (recorded for ``status``) if this one failed."""
    message = queues.TenantSlot.parse(text, settings.tenant_ids)
    return export_tenant(settings.for_tenant(message.tenant), message, clients_for=clients_for)


def export_tenant(settings: Settings, message: queues.TenantSlot, *,
                  clients_for: ClientsFor = warm_clients) -> ExportSummary:
    """``run_export`` for one tenant's settings; a failure is kept in the tenant's state, then raised."""
    clients = clients_for(settings)
    with failures.kept(tenant_root.under(clients.state_container(), settings.tenant_root), message.slot):
        return run_export(settings, message.slot, clients=clients)


def failed_line(error: BaseException, text: str = "") -> str:
    """The one ``Export failed:`` line of a message's failure (redacted: an error's text may hold a URL)."""
    if isinstance(error, ExportError):
        return redact.redact(f"Export failed: {error}")
    return redact.redact(f"Export failed: unexpected {type(error).__name__} for message {text[:120]}; nothing was "
                         "published. Report it with the traceback.")


@dataclass
class WorkReport:
    """What ``work`` did with the messages it received, one count each, and the tenants whose message went to poison."""

    succeeded: int = 0
    skipped: int = 0
    failed_attempts: int = 0
    poisoned: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"succeeded": self.succeeded, "skipped": self.skipped, "failed_attempts": self.failed_attempts,
                "poisoned": self.poisoned}


def work(settings: Settings, queue: QueueClient, poison: QueueClient, *, clients_for: ClientsFor = warm_clients,
         options: hostconfig.QueueOptions | None = None, retry_delay_s: int | None = None,
         on_line: Callable[[str], None] = log.error, poll_s: float = 1.0, lease_s: int = LEASE_S) -> WorkReport:
    """Process ``queue``'s messages until none is left (visible or waiting for its retry); ``on_line`` hears each
    ``Export failed:`` line. ``retry_delay_s`` overrides host.json's visibilityTimeout (tests, impatient operators);
    ``lease_s`` is how long a received message stays invisible (a killed worker's message comes back after it)."""
    options = options or hostconfig.queue_options()
    delay = options.visibility_timeout_s if retry_delay_s is None else retry_delay_s
    report = WorkReport()
    while True:
        with storage_errors(f"receiving from queue {queue.queue_name}", "nothing was received"):
            try:
                message = queue.receive_message(visibility_timeout=lease_s)
            except ResourceNotFoundError:  # no slot was ever fanned out to it (the first send creates it)
                log.info("Queue %s does not exist yet: nothing to do", queue.queue_name)
                return report
        if message is None:
            if not _waiting(queue):
                return report
            time.sleep(poll_s)
            continue
        _handle(settings, queue, poison, message, clients_for, options, delay, on_line, report)


def _handle(settings: Settings, queue: QueueClient, poison: QueueClient, message: QueueMessage,
            clients_for: ClientsFor, options: hostconfig.QueueOptions, delay: int,
            on_line: Callable[[str], None], report: WorkReport) -> None:
    text = str(message.content)
    try:
        wanted = queues.TenantSlot.parse(text, settings.tenant_ids)
    except MessageRejected as error:
        on_line(failed_line(error))
        _to_poison(queue, poison, message, report, "(rejected)")
        return
    try:
        summary = export_tenant(settings.for_tenant(wanted.tenant), wanted, clients_for=clients_for)
    except Exception as error:  # every failure is retried by the queue, as the host retries the trigger
        on_line(failed_line(error, text))
        report.failed_attempts += 1
        if message.dequeue_count is not None and message.dequeue_count >= options.max_dequeue_count:
            _to_poison(queue, poison, message, report, wanted.tenant)
        else:
            with storage_errors(f"returning a message to queue {queue.queue_name}", "it is retried after its lease"):
                queue.update_message(message, visibility_timeout=delay)
        return
    if summary.status == "skipped":
        report.skipped += 1
    else:
        report.succeeded += 1
    log.info("Tenant %s: %s", wanted.tenant, summary.line())
    with storage_errors(f"deleting a processed message from queue {queue.queue_name}",
                        "it is delivered again and then skipped"):
        queue.delete_message(message)


def _to_poison(queue: QueueClient, poison: QueueClient, message: QueueMessage, report: WorkReport, tenant: str) -> None:
    """Move ``message`` to the poison queue as the host does: a copy there first, then the original deleted."""
    with storage_errors(f"moving a message to {poison.queue_name}", "it is retried after its lease"):
        queues.send_text(poison, str(message.content))
        queue.delete_message(message)
    report.poisoned.append(tenant)


def _waiting(queue: QueueClient) -> bool:
    """Whether messages remain that are not visible yet (a failed one waiting for its retry, or one another
    worker holds): the approximate count includes them."""
    with storage_errors(f"reading the properties of queue {queue.queue_name}", "nothing was received"):
        return bool(queue.get_queue_properties().approximate_message_count)


def open_queues(settings: Settings) -> tuple[QueueClient, QueueClient]:
    """EXPORT_QUEUE and its poison queue, with the export storage's authentication."""
    credential = None
    if not settings.storage.connection_string:
        from azure.identity import DefaultAzureCredential  # only for identity-based access

        credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
    return (queues.open_queue(settings.storage, settings.export_queue, credential),
            queues.open_queue(settings.storage, queues.poison_name(settings.export_queue), credential))
