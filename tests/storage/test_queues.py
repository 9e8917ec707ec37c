"""The fan-out queue on Azurite (issue 24): base64 messages as the Functions host reads them, the worker's
receive / retry / poison cycle on a real queue, and the in-memory queue (tests/unit/memory_queue.py) held to
Azurite's answers for the calls the worker makes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient

from graph_export import queues
from graph_export.settings import StorageTarget
from tests.unit.memory_queue import MemoryQueue

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
SLOT = datetime(2026, 11, 30, 2, tzinfo=timezone.utc)


@pytest.fixture
def target(azurite_queues) -> StorageTarget:
    return StorageTarget(connection_string=azurite_queues, source="EXPORT_STORAGE")


def raw(connection_string: str, name: str) -> QueueClient:
    """The same queue without the base64 policies: what is stored on the wire."""
    return QueueClient.from_connection_string(connection_string, name)


def test_fan_out_creates_the_queue_and_sends_base64_messages_the_host_decodes(target, azurite_queues):
    name = f"q-{uuid.uuid4().hex[:12]}"
    queue = queues.open_queue(target, name, None)
    queues.open_queue(target, name, None)  # opening again finds it
    sent = queues.fan_out(queue, (A, B), SLOT)
    assert [m.tenant for m in sent] == [A, B]
    stored = [m.content for m in raw(azurite_queues, name).peek_messages(max_messages=5)]
    decoded = [json.loads(base64.b64decode(text)) for text in stored]  # what the host's base64 decoding gives
    assert decoded == [{"tenant": A, "slot": "2026-11-30T02:00:00Z"}, {"tenant": B, "slot": "2026-11-30T02:00:00Z"}]
    received = queue.receive_message(visibility_timeout=5)
    assert received is not None and queues.TenantSlot.parse(str(received.content), (A, B)) == sent[0]


def test_a_queue_that_does_not_exist_yet_is_created_by_the_first_message_and_work_on_it_is_nothing(target):
    queue = queues.open_queue(target, f"q-{uuid.uuid4().hex[:12]}", None)
    from graph_export import worker
    from tests.unit.test_worker import Deployment

    d = Deployment()
    assert worker.work(d.settings, queue, queue, clients_for=d.clients_for).succeeded == 0  # no queue: nothing to do
    queues.send(queue, queues.TenantSlot(A, SLOT))  # sent first; created on 404, as the host does
    received = queue.receive_message(visibility_timeout=5)
    assert received is not None and queues.TenantSlot.parse(str(received.content), (A,)).tenant == A


# -- the memory queue against Azurite -----------------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except HttpResponseError as error:
        code = getattr(error, "error_code", None)
        return (type(error).__name__, error.status_code, str(getattr(code, "value", code)))


def retry_cycle(q: Any) -> list[Any]:
    """Send, receive (invisible), update to visible, receive again (dequeue count 2), stale delete, renew by id
    (the old receipt is then stale), delete with the renewed receipt."""
    q.send_message("one")
    first = q.receive_message(visibility_timeout=30)
    steps = [(first.content, first.dequeue_count), outcome(lambda: q.receive_message(visibility_timeout=30))]
    steps.append(q.get_queue_properties().approximate_message_count)
    q.update_message(first, visibility_timeout=0)
    second = q.receive_message(visibility_timeout=30)
    steps.append((second.content, second.dequeue_count))
    steps.append(outcome(lambda: q.delete_message(first)))  # its pop receipt is stale now
    renewed = q.update_message(second.id, pop_receipt=second.pop_receipt, visibility_timeout=30)  # by id: no body
    steps.append(outcome(lambda: q.update_message(second.id, pop_receipt=second.pop_receipt, visibility_timeout=30)))
    steps.append(q.receive_message(visibility_timeout=30))  # still invisible after the renewal
    second.pop_receipt = renewed.pop_receipt
    steps.append(outcome(lambda: q.delete_message(second)))
    steps.append((q.receive_message(), q.get_queue_properties().approximate_message_count))
    return steps


def test_the_memory_queue_answers_as_azurite_does(target):
    azurite = queues.open_queue(target, f"q-{uuid.uuid4().hex[:12]}", None)
    azurite.create_queue()
    memory = MemoryQueue("memory")
    assert retry_cycle(memory) == retry_cycle(azurite)


# -- the worker on a real queue -----------------------------------------------------------------------------------


def test_work_retries_a_failing_tenant_on_azurite_then_moves_it_to_poison_and_deletes_the_rest(target, azurite_queues):
    from graph_export import worker
    from graph_export.hostconfig import QueueOptions
    from tests.unit.test_worker import Deployment, denied, slot

    d = Deployment()
    name = f"q-{uuid.uuid4().hex[:12]}"
    queue = queues.open_queue(target, name, None)
    poison = queues.open_queue(target, queues.poison_name(name), None)
    d.clients[B].graph.script(denied())
    queues.fan_out(queue, d.settings.tenant_ids, slot(1))
    lines: list[str] = []
    report = worker.work(d.settings, queue, poison, clients_for=d.clients_for,
                         options=QueueOptions(max_dequeue_count=3, visibility_timeout_s=0), on_line=lines.append,
                         poll_s=0.1)
    assert (report.succeeded, report.failed_attempts, report.poisoned) == (2, 3, [B])
    assert len(lines) == 3 and all(line.startswith("Export failed: ") for line in lines)
    assert queue.get_queue_properties().approximate_message_count == 0
    poisoned = [str(m.content) for m in poison.receive_messages()]
    assert poisoned == [queues.TenantSlot(B, slot(1)).to_text()]


def test_a_tenant_root_on_azurite_lists_only_its_own_blobs_with_relative_names(blob_container):
    from graph_export import tenant_root

    for name in (f"tenants/{A}/users/x.json", f"tenants/{A}/state/y.json", f"tenants/{B}/users/x.json", "users/z"):
        blob_container.upload_blob(name, b"{}")
    seen = tenant_root.under(blob_container, f"tenants/{A}/")
    assert [b.name for b in seen.list_blobs(name_starts_with="users/")] == ["users/x.json"]
    assert sorted(b.name for b in seen.list_blobs()) == ["state/y.json", "users/x.json"]
    seen.upload_blob("users/new.json", b"1")
    assert seen.download_blob("users/new.json").readall() == b"1"
    seen.delete_blob("users/new.json")
    assert not blob_container.get_blob_client(f"tenants/{A}/users/new.json").exists()


def test_a_message_kept_invisible_outlives_its_lease_and_is_deleted_with_its_renewed_receipt(target):
    from graph_export import worker

    queue = queues.open_queue(target, f"q-{uuid.uuid4().hex[:12]}", None)
    queues.send_text(queue, "tenant's slot")
    message = queue.receive_message(visibility_timeout=2)
    with worker.kept_invisible(queue, message, 2, A):
        time.sleep(3.5)  # beyond the 2 s it was received for: renewed at 1, 2 and 3 s
        assert queue.receive_message(visibility_timeout=1) is None
    queue.delete_message(message)  # the pop receipt the renewals left
    assert queue.get_queue_properties().approximate_message_count == 0
