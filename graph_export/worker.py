"""One tenant's slot from a queue message, and ``work``: the queue trigger's loop, run locally.

:func:`process` is what the queue-triggered function calls: the message's tenant (one of TENANT_IDS) and
slot, exported by ``run_export`` with that tenant's settings (:meth:`Settings.for_tenant`), so the whole
pipeline stays single-tenant inside. A message is idempotent: a slot already published is ``skipped``
(a redelivered or duplicated message), a killed run's next delivery resumes from the tenant's checkpoint.
A failure is recorded in the tenant's state (``failures``) and raised, so the queue retries it.

:func:`work` receives messages until the queue is empty, as the host would: deleted on success (skipped
included), left for another attempt after host.json's ``visibilityTimeout`` on failure, moved to
``<queue>-poison`` once dequeued ``maxDequeueCount`` times (``hostconfig``), and a message no attempt can
process (MessageRejected) to the poison queue at once. One ``Export failed:`` line per failure. While a
tenant is exported its message is kept invisible (:func:`kept_invisible`), as the host keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from . import failures, hostconfig, queues, redact, tenant_root, threads
from .clients import Clients, warm_clients
from .errors import ExportError, MessageRejected, StorageError
from .export import run_export
from .records import ExportSummary
from .settings import Settings
from .storage import storage_errors

log = logging.getLogger(__name__)
#: How long a message ``work`` received stays invisible to others (seconds), renewed halfway while its tenant
#: is exported (:func:`kept_invisible`): the host's 10 minutes. A killed worker's message is back within it.
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
    ``lease_s`` is how long a received message stays invisible, renewed while it is exported (a killed worker's
    message comes back within it)."""
    options = options or hostconfig.queue_options()
    worker = _Worker(settings, queue, poison, clients_for, options,
                     options.visibility_timeout_s if retry_delay_s is None else retry_delay_s, on_line, lease_s)
    while True:
        with storage_errors(f"receiving from queue {queue.queue_name}", "nothing was received"):
            try:
                message = queue.receive_message(visibility_timeout=lease_s)
            except ResourceNotFoundError:  # no slot was ever fanned out to it (the first send creates it)
                log.info("Queue %s does not exist yet: nothing to do", queue.queue_name)
                return worker.report
        if message is None:
            if not _waiting(queue):
                return worker.report
            time.sleep(poll_s)
            continue
        worker.handle(message)


@dataclass
class _Worker:
    """What ``work`` carries from message to message: where messages come from and go, and what it did."""

    settings: Settings
    queue: QueueClient
    poison: QueueClient
    clients_for: ClientsFor
    options: hostconfig.QueueOptions
    retry_delay_s: int
    on_line: Callable[[str], None]
    lease_s: int
    report: WorkReport = field(default_factory=WorkReport)

    def handle(self, message: QueueMessage) -> None:
        text = str(message.content)
        try:
            wanted = queues.TenantSlot.parse(text, self.settings.tenant_ids)
        except MessageRejected as error:
            self.on_line(failed_line(error))
            self._to_poison(message, "(rejected)")
            return
        try:
            with kept_invisible(self.queue, message, self.lease_s, wanted.tenant):
                summary = export_tenant(self.settings.for_tenant(wanted.tenant), wanted, clients_for=self.clients_for)
        except Exception as error:  # every failure is retried by the queue, as the host retries the trigger
            self.on_line(failed_line(error, text))
            self.report.failed_attempts += 1
            if message.dequeue_count is not None and message.dequeue_count >= self.options.max_dequeue_count:
                self._to_poison(message, wanted.tenant)
            else:
                with storage_errors(f"returning a message to queue {self.queue.queue_name}",
                                    "it is retried after its lease"), _unless_taken_over(wanted.tenant, "returned"):
                    self.queue.update_message(message, visibility_timeout=self.retry_delay_s)
            return
        if summary.status == "skipped":
            self.report.skipped += 1
        else:
            self.report.succeeded += 1
        log.info("Tenant %s: %s", wanted.tenant, summary.line())
        with storage_errors(f"deleting a processed message from queue {self.queue.queue_name}",
                            "it is delivered again and then skipped"), _unless_taken_over(wanted.tenant, "deleted"):
            self.queue.delete_message(message)

    def _to_poison(self, message: QueueMessage, tenant: str) -> None:
        """Move ``message`` to the poison queue as the host does: a copy there first, then the original deleted."""
        with storage_errors(f"moving a message to {self.poison.queue_name}", "it is retried after its lease"):
            queues.send_text(self.poison, str(message.content))
            with _unless_taken_over(tenant, "deleted after its copy to the poison queue"):
                self.queue.delete_message(message)
        self.report.poisoned.append(tenant)


@contextlib.contextmanager
def kept_invisible(queue: QueueClient, message: QueueMessage, lease_s: int, tenant: str) -> Iterator[None]:
    """Keep a received ``message`` invisible while the block exports its tenant, as the Functions host keeps
    the message of a running queue trigger: its visibility is updated when halfway to expiring, and sooner
    after an update failed (WebJobs' QueueListener: received for 10 minutes, renewed each 5).

    ``message``'s pop receipt is kept current, so that it can be deleted or returned afterwards. A renewal
    that fails is a warning, not a failure: the export goes on, and a second delivery meanwhile meets the
    slot's lease. Once another worker has received the message (404, or a pop receipt it replaced) renewing
    stops.
    """
    stop = threading.Event()
    renewer = threads.start(_renew, queue, message, lease_s, tenant, stop, name=f"renew-{tenant}")
    try:
        yield
    finally:
        stop.set()
        renewer.join()


def _renew(queue: QueueClient, message: QueueMessage, lease_s: int, tenant: str, stop: threading.Event) -> None:
    every = max(lease_s / 2, 0.5)
    wait = every
    while not stop.wait(wait):
        doing = f"renewing the invisibility of tenant {tenant}'s message on queue {queue.queue_name}"
        try:
            with storage_errors(doing, "the export goes on; a second delivery meanwhile meets the slot's lease"):
                try:
                    renewed = queue.update_message(message.id, pop_receipt=message.pop_receipt,
                                                   visibility_timeout=lease_s)
                except HttpResponseError as error:
                    if _taken_over(error):
                        log.warning("Tenant %s's message was received by another worker after its lease (%d s) "
                                    "ran out: the export goes on, and that delivery meets the slot's lease.",
                                    tenant, lease_s)
                        return
                    raise
        except StorageError as error:
            log.warning("%s", error)
            wait = max(min(wait / 2, 60.0), 0.5)  # sooner, as the host speeds up after a failed update
            continue
        message.pop_receipt, message.next_visible_on = renewed.pop_receipt, renewed.next_visible_on
        wait = every


def _taken_over(error: HttpResponseError) -> bool:
    """Whether the message is another receiver's now (its pop receipt replaced ours) or gone: the host then lets
    it be, for a release, a delete and a renewal alike (WebJobs' QueueProcessor and its visibility command)."""
    return error.status_code == 404 or getattr(error, "error_code", None) == "PopReceiptMismatch"


@contextlib.contextmanager
def _unless_taken_over(tenant: str, would_be: str) -> Iterator[None]:
    try:
        yield
    except HttpResponseError as error:
        if not _taken_over(error):
            raise
        log.info("Tenant %s's message was not %s: another worker received it after its lease ran out, and it is "
                 "settled there.", tenant, would_be)


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
