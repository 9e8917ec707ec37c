"""The fan-out and the worker in memory (issue 24): three tenants through enqueue and ``work``, a tenant without
consent failing alone into the poison queue, duplicated and rejected messages, a failed tenant resuming from
its checkpoint, delta mode per tenant, and ``status``. Storage, Graph and the queue are memory fakes; every
module of ours is the real one."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueProperties

from graph_export import queues, status, worker
from graph_export.errors import GraphError, MessageRejected
from graph_export.hostconfig import QueueOptions, queue_options
from graph_export.naming import FAILURE_BLOB, LATEST_BLOB
from graph_export.settings import Settings, load_settings
from tests.unit.memory_clients import MemoryClients
from tests.unit.memory_graph import MemoryDirectory, denied, make_users, unavailable, users_page
from tests.unit.memory_queue import MemoryQueue, _error
from tests.unit.memory_storage import MemoryAccount
from tests.unit.orchestration import MULTI_TENANT_ENV

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
C = "cccccccc-0000-4000-8000-00000000000c"
TENANTS = {A: 120, B: 30, C: 75}
ENV = {
    "TENANT_IDS": ",".join(TENANTS),
    **MULTI_TENANT_ENV,
    "GRAPH_MAX_RETRIES_PER_PAGE": "1",
    "CHECKPOINT_EVERY_PAGES": "1",
}
OPTIONS = QueueOptions(max_dequeue_count=5, visibility_timeout_s=0)


def slot(days_ago: int) -> datetime:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).replace(hour=2, minute=0, second=0, microsecond=0)


class Deployment:
    """One storage account, one queue and its poison queue, and each tenant's clients (as a warm instance keeps)."""

    def __init__(self, **overrides: str) -> None:
        self.settings: Settings = load_settings({**ENV, **overrides})
        self.account = MemoryAccount()
        self.queue, self.poison = MemoryQueue("graph-export-tenants"), MemoryQueue("graph-export-tenants-poison")
        self.clients = {t: MemoryClients(self.settings.for_tenant(t), MemoryDirectory(make_users(n)), storage=self.account)
                        for t, n in TENANTS.items()}
        self.lines: list[str] = []

    def clients_for(self, settings: Settings) -> MemoryClients:
        return self.clients[settings.tenant_id]

    def fan_out(self, at: datetime) -> None:
        queues.fan_out(self.queue, self.settings.tenant_ids, at)  # type: ignore[arg-type]

    def work(self) -> worker.WorkReport:
        return worker.work(self.settings, self.queue, self.poison, clients_for=self.clients_for,  # type: ignore[arg-type]
                           options=OPTIONS, on_line=self.lines.append, poll_s=0)

    def document(self, tenant: str, name: str) -> dict:
        return json.loads(self.account.contents()[("graph-exports", f"tenants/{tenant}/{name}")])

    def status(self, tenant: str) -> status.TenantStatus:
        return status.of_tenant(self.account.container("graph-exports"), tenant, f"tenants/{tenant}/")  # type: ignore[arg-type]


def test_three_tenants_are_exported_through_the_queue_each_under_its_root():
    d = Deployment()
    d.fan_out(slot(1))
    assert [json.loads(m) for m in d.queue.contents()] == [
        {"tenant": t, "slot": f"{slot(1):%Y-%m-%dT%H:%M:%SZ}"} for t in TENANTS]  # only a tenant and a slot
    report = d.work()
    assert (report.succeeded, report.skipped, report.failed_attempts, report.poisoned) == (3, 0, 0, [])
    assert d.queue.contents() == [] and d.poison.contents() == [] and d.lines == []
    for tenant, users in TENANTS.items():
        assert d.document(tenant, LATEST_BLOB)["users"] == users
        assert d.status(tenant).line() == f"{tenant}: latest slot {slot(1):%Y-%m-%dT%H:%M:%SZ}, {users} users"
    assert all(name.startswith("tenants/") for _, name in d.account.contents())


def test_a_tenant_without_consent_fails_alone_into_the_poison_queue_after_the_hosts_attempts():
    d = Deployment()
    d.clients[B].graph.script(denied())
    d.fan_out(slot(1))
    report = d.work()
    assert (report.succeeded, report.failed_attempts, report.poisoned) == (2, OPTIONS.max_dequeue_count, [B])
    assert d.poison.contents() == [queues.TenantSlot(B, slot(1)).to_text()] and d.queue.contents() == []
    assert len(d.lines) == OPTIONS.max_dequeue_count  # one line per failed attempt
    assert all(line.startswith("Export failed: ") and "\n" not in line for line in d.lines)
    assert "User.Read.All" in d.lines[0] or "consent" in d.lines[0].lower(), d.lines[0]
    assert d.document(A, LATEST_BLOB)["users"] == TENANTS[A] and d.document(C, LATEST_BLOB)["users"] == TENANTS[C]
    assert not any(name.startswith(f"tenants/{B}/users/") for _, name in d.account.contents())
    failure = d.document(B, FAILURE_BLOB)
    assert failure["error"] == d.lines[-1].removeprefix("Export failed: ") and failure["exit_code"] == GraphError.exit_code
    line = d.status(B).line()
    assert line.startswith(f"{B}: nothing published yet; failed ") and failure["error"] in line


def test_a_duplicated_message_is_skipped():
    d = Deployment()
    d.fan_out(slot(1))
    d.fan_out(slot(1))  # a retried timer, or an operator's second fan-out
    report = d.work()
    assert (report.succeeded, report.skipped, report.failed_attempts) == (3, 3, 0)
    assert d.queue.contents() == []


@pytest.mark.parametrize("text, expect", [
    ("not json", "is not JSON"),
    (json.dumps({"tenant": A}), 'is not {"tenant"'),
    (json.dumps({"tenant": A, "slot": "2026-01-01T02:00:00Z", "token": "x"}), 'is not {"tenant"'),
    (json.dumps({"tenant": "dddddddd-0000-4000-8000-00000000000d", "slot": "2026-01-01T02:00:00Z"}),
     "which TENANT_IDS does not list"),
    (json.dumps({"tenant": A, "slot": "yesterday"}), "has no usable slot"),
    (json.dumps({"tenant": A, "slot": "2999-01-01T00:00:00Z"}), "has no usable slot"),
])
def test_a_message_no_attempt_can_process_goes_to_poison_with_one_line(text, expect):
    d = Deployment()
    d.queue.send_message(text)
    report = d.work()
    assert d.poison.contents() == [text] and d.queue.contents() == []
    assert len(d.lines) == 1 and d.lines[0].startswith("Export failed: ") and expect in d.lines[0], d.lines
    assert report.succeeded == 0


def test_a_failed_tenant_is_retried_by_the_queue_and_resumes_from_its_checkpoint():
    d = Deployment()
    d.clients[A].graph.script(unavailable(times=2, when=users_page(2)))  # page 1 checkpointed, page 2 fails
    d.fan_out(slot(1))
    report = d.work()
    assert (report.succeeded, report.failed_attempts, report.poisoned) == (3, 1, [])
    manifest = d.document(A, d.document(A, LATEST_BLOB)["manifest"])
    assert manifest["resumed"] is True and manifest["users"] == TENANTS[A]
    assert d.status(A).failure is None  # the later success is newer than the failure


def test_delta_mode_runs_per_tenant_from_each_tenants_own_state():
    d = Deployment(EXPORT_MODE="delta")
    d.fan_out(slot(2))
    d.work()
    d.clients[A].graph.directory.update(make_users(6)[5]["id"], displayName="Renamed")
    d.fan_out(slot(1))
    assert d.work().succeeded == 3
    for tenant in TENANTS:
        manifest = d.document(tenant, d.document(tenant, LATEST_BLOB)["manifest"])
        assert manifest["mode"] == "delta" and manifest["users"] == TENANTS[tenant]
        # each tenant's slot was made from its own changes, on its own previous snapshot
        assert manifest["delta"]["change_records"] == (1 if tenant == A else 0), tenant
        assert manifest["delta"]["base_manifest"].startswith("users/")
        assert ("graph-exports", f"tenants/{tenant}/state/delta.json") in d.account.contents()


def test_process_is_the_queue_triggers_call_and_raises_for_the_host_to_retry():
    d = Deployment()
    summary = worker.process(d.settings, queues.TenantSlot(C, slot(1)).to_text(), clients_for=d.clients_for)
    assert (summary.status, summary.users) == ("succeeded", TENANTS[C])
    with pytest.raises(MessageRejected):
        worker.process(d.settings, "{}", clients_for=d.clients_for)
    d.clients[A].graph.script(denied())
    with pytest.raises(GraphError):
        worker.process(d.settings, queues.TenantSlot(A, slot(1)).to_text(), clients_for=d.clients_for)


def test_the_dequeue_limit_is_host_jsons():
    options = queue_options()
    assert options == QueueOptions(max_dequeue_count=5, visibility_timeout_s=60)


# -- a long export keeps its message invisible ---------------------------------------------------------------------


class RenewalsFail(MemoryQueue):
    """A queue whose visibility renewals (an update by id, no body) fail as ``error`` says; the rest as MemoryQueue."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error, self.renewals = error, 0

    def update_message(self, message, pop_receipt=None, content=None, **kwargs):
        if isinstance(message, str):
            self.renewals += 1
            raise self.error
        return super().update_message(message, pop_receipt, content, **kwargs)


def slow_export(d: Deployment, seconds: float, during=lambda: None):
    """clients_for that takes ``seconds`` inside the export (where the message must stay invisible), then ``during``."""
    def clients_for(settings: Settings) -> MemoryClients:
        time.sleep(seconds)
        during()
        return d.clients[settings.tenant_id]
    return clients_for


def test_a_message_stays_invisible_while_its_tenant_is_exported_beyond_the_lease_and_is_deleted_after():
    d = Deployment()
    queues.send(d.queue, queues.TenantSlot(A, slot(1)))  # type: ignore[arg-type]
    seen = []
    report = worker.work(d.settings, d.queue, d.poison, clients_for=slow_export(d, 1.8, lambda: seen.append(
        d.queue.receive_message(visibility_timeout=1))), options=OPTIONS, on_line=d.lines.append, poll_s=0, lease_s=1)
    assert seen == [None]  # another worker would have found nothing: renewed at 0.5, 1.0 and 1.5 s
    assert (report.succeeded, report.failed_attempts, d.queue.contents()) == (1, 0, [])


@pytest.mark.parametrize("error, stops", [
    (_error(HttpResponseError, 500, "InternalError", "Server busy"), False),
    (_error(ResourceNotFoundError, 404, "MessageNotFound", "The specified message does not exist."), True),
    (_error(HttpResponseError, 400, "PopReceiptMismatch", "The specified pop receipt did not match."), True),
])
def test_a_failed_renewal_is_a_warning_and_the_export_goes_on(caplog, error, stops):
    d = Deployment()
    d.queue = RenewalsFail("graph-export-tenants", error)
    queues.send(d.queue, queues.TenantSlot(A, slot(1)))  # type: ignore[arg-type]
    report = worker.work(d.settings, d.queue, d.poison, clients_for=slow_export(d, 1.4), options=OPTIONS,
                         on_line=d.lines.append, poll_s=0, lease_s=1)
    assert (report.succeeded, d.lines, d.queue.contents()) == (1, [], [])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "graph_export.worker"]
    if stops:
        assert d.queue.renewals == 1 and len(warnings) == 1 and "received by another worker" in warnings[0]
    else:
        assert d.queue.renewals >= 2 and all(w.startswith("Export storage failed with HTTP 500") for w in warnings)
        assert "renewing the invisibility of tenant" in warnings[0]


def test_a_message_another_worker_received_meanwhile_is_left_to_it_not_a_failure():
    d = Deployment()
    d.queue = RenewalsFail("graph-export-tenants", _error(HttpResponseError, 503, "ServerBusy", "busy"))
    queues.send(d.queue, queues.TenantSlot(A, slot(1)))  # type: ignore[arg-type]
    taken = []
    clients_for = slow_export(d, 1.3, lambda: taken.append(d.queue.receive_message(visibility_timeout=3600)))
    d.queue.get_queue_properties = lambda **kwargs: QueueProperties(approximate_message_count=0)  # the other's now
    report = worker.work(d.settings, d.queue, d.poison, clients_for=clients_for, options=OPTIONS,
                         on_line=d.lines.append, poll_s=0, lease_s=1)
    assert taken[0] is not None and taken[0].dequeue_count == 2  # its lease lapsed unrenewed: another worker has it
    assert (report.succeeded, d.lines) == (1, [])  # our delete met its pop receipt: the host's way, no failure
    assert d.queue.contents() == [taken[0].content]  # settled by the one that holds it now


def test_a_poisoned_message_another_worker_received_meanwhile_is_copied_and_left_to_it():
    d = Deployment()
    d.queue = RenewalsFail("graph-export-tenants", _error(HttpResponseError, 503, "ServerBusy", "busy"))
    d.clients[A].graph.script(denied())
    queues.send(d.queue, queues.TenantSlot(A, slot(1)))  # type: ignore[arg-type]
    taken = []
    clients_for = slow_export(d, 1.3, lambda: taken.append(d.queue.receive_message(visibility_timeout=3600)))
    d.queue.get_queue_properties = lambda **kwargs: QueueProperties(approximate_message_count=0)  # the other's now
    report = worker.work(d.settings, d.queue, d.poison, clients_for=clients_for,
                         options=QueueOptions(max_dequeue_count=1, visibility_timeout_s=0), on_line=d.lines.append,
                         poll_s=0, lease_s=1)
    assert report.poisoned == [A] and len(d.lines) == 1 and d.lines[0].startswith("Export failed: ")
    assert d.poison.contents() == [taken[0].content] and d.queue.contents() == [taken[0].content]
