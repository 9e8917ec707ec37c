"""The fan-out queue on Azurite (issue 24): base64 messages as the Functions host reads them, the worker's
receive / retry / poison cycle on a real queue, and the in-memory queue (tests/unit/memory_queue.py) held to
Azurite's answers for the calls the worker makes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient, generate_account_sas, generate_queue_sas

from graph_export import queues
from graph_export.errors import StorageError
from graph_export.settings import StorageTarget
from graph_export.storage import open_container, storage_errors, write_json
from sandbox.azurite import ACCOUNT, ACCOUNT_KEY
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


# -- refusals on Azurite name the queue's setting and SAS, not the container's (issue 24) ---------------------------

WRONG_KEY = base64.b64encode(b"not the account key, 64 bytes long, so it looks like one........").decode()
IN_AN_HOUR = datetime.now(timezone.utc) + timedelta(hours=1)


def made_queue(azurite_queues: str) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    QueueClient.from_connection_string(azurite_queues, name).create_queue()
    return name


def queue_refusal(connection_string: str, name: str) -> str:
    """The one line of a fan-out send to ``name`` with ``connection_string`` in EXPORT_STORAGE."""
    queue = queues.open_queue(StorageTarget(connection_string=connection_string, source="EXPORT_STORAGE"), name, None)
    with pytest.raises(StorageError) as info:
        queues.send(queue, queues.TenantSlot(A, SLOT))
    message = str(info.value)
    assert "\n" not in message and "Blob" not in message and "container generate-sas" not in message
    assert WRONG_KEY not in message and ACCOUNT_KEY not in message and "sig=" not in message
    return message


def test_a_wrong_account_key_on_the_queue_names_the_queue_service_setting(azurite, azurite_queues):
    name = made_queue(azurite_queues)
    wrong = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={WRONG_KEY};"
             f"QueueEndpoint={azurite.queue_endpoint};")
    message = queue_refusal(wrong, name)
    # Azurite's queue service answers a wrong key 403 AuthenticationFailed, as Azure does (its blob service:
    # AuthorizationFailure, tests/storage/test_storage.py).
    assert message.startswith("Export storage refused the account key in EXPORT_STORAGE (AuthenticationFailed) while "
                              f"sending {A}'s slot 2026-11-30T02:00:00Z to queue {name}: the key is wrong or has been "
                              "rotated;")
    assert "or use the app's identity instead (EXPORT_STORAGE__queueServiceUri)" in message


@pytest.mark.parametrize("token", [
    lambda name: generate_queue_sas(ACCOUNT, name, ACCOUNT_KEY, permission="r", expiry=IN_AN_HOUR),
    lambda name: generate_account_sas(ACCOUNT, ACCOUNT_KEY, "co", "rl", IN_AN_HOUR, services="q"),
], ids=["queue-sas", "account-sas"])
def test_a_read_only_sas_on_the_queue_says_which_permissions_a_queue_sas_needs(azurite, azurite_queues, token):
    name = made_queue(azurite_queues)
    message = queue_refusal(f"QueueEndpoint={azurite.queue_endpoint};SharedAccessSignature={token(name)}", name)
    # Azurite enforces a SAS's permissions on queues: a send needs add.
    assert message.startswith("Export storage refused the SAS in EXPORT_STORAGE (AuthorizationPermissionMismatch) while "
                              f"sending {A}'s slot 2026-11-30T02:00:00Z to queue {name}: it does not allow this request; "
                              f"make a new SAS for queue '{name}' with read, add, update and process permissions (az "
                              f"storage queue generate-sas --name {name} --permissions raup)")
    assert "az storage account generate-sas --services bq --resource-types co --permissions racwdlup" in message


def test_the_fan_out_queues_sas_on_the_poison_queue_is_refused_as_another_queues(azurite, azurite_queues):
    name = made_queue(azurite_queues)
    poison = queues.poison_name(name)
    QueueClient.from_connection_string(azurite_queues, poison).create_queue()
    token = generate_queue_sas(ACCOUNT, name, ACCOUNT_KEY, permission="raup", expiry=IN_AN_HOUR)
    target = StorageTarget(connection_string=f"QueueEndpoint={azurite.queue_endpoint};SharedAccessSignature={token}",
                           source="EXPORT_STORAGE")
    queues.send(queues.open_queue(target, name, None), queues.TenantSlot(A, SLOT))  # its own queue: allowed
    with pytest.raises(StorageError) as info:
        with storage_errors(f"moving a message to {poison}", "it is retried after its lease"):
            queues.send_text(queues.open_queue(target, poison, None), "{}")
    assert str(info.value).startswith(f"Export storage refused the SAS in EXPORT_STORAGE (AuthenticationFailed) while "
                                      f"moving a message to {poison}: it is expired or not yet valid, revoked, signed "
                                      "with an account key that has since been rotated, or made for another queue; put "
                                      f"a new SAS in EXPORT_STORAGE (az storage queue generate-sas --name {poison} ")


def test_the_account_sas_the_lines_advise_serves_the_container_and_both_queues(azurite, azurite_queues):
    """What the SAS lines tell the operator to make works: ``--services bq --resource-types co --permissions racwdlup``
    lets the export's container calls and every queue call the worker makes succeed."""
    name = made_queue(azurite_queues)
    token = generate_account_sas(ACCOUNT, ACCOUNT_KEY, "co", "racwdlup", IN_AN_HOUR, services="bq")
    target = StorageTarget(connection_string=f"BlobEndpoint={azurite.blob_endpoint};QueueEndpoint="
                                             f"{azurite.queue_endpoint};SharedAccessSignature={token}",
                           source="EXPORT_STORAGE")
    container = open_container(target, f"t-{uuid.uuid4().hex[:12]}", None, 0.01)  # created with the SAS
    write_json(container, "state/x.json", {"n": 1})
    queue = queues.open_queue(target, name, None)
    assert retry_cycle(queue)[-1] == (None, 0)
    queues.send_text(queues.open_queue(target, queues.poison_name(name), None), "{}")  # the poison queue, created
