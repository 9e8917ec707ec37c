"""The timer's fan-out and queue trigger invocations (TENANT_IDS) as the host sends them, through the engine,
against the sandbox tenant and Azurite's blobs and queues: the same layer as the timer's (tests/engine/host.py).
TENANT_IDS lists the sandbox's home tenant (its many-tenant runs are tests/integration/test_tenants.py's)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from graph_export.naming import FAILURE_BLOB, LATEST_BLOB
from graph_export.queues import TenantSlot
from graph_export.records import iso
from tests.integration.helpers import blob_names


def a_slot(days_ago: int = 1) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=2, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def function(worker, name):
    return next(f for f in worker.functions if f.name == name)


@pytest.fixture
def tenant_env(export_env, monkeypatch):
    """The deployed function's settings with TENANT_IDS naming the sandbox's tenant (and TENANT_ID unset)."""
    tenant = export_env["TENANT_ID"].lower()
    monkeypatch.delenv("TENANT_ID")
    monkeypatch.setenv("TENANT_IDS", tenant)
    monkeypatch.setenv("EXPORT_QUEUE", f"q-{export_env['EXPORT_CONTAINER']}")
    return {**export_env, "TENANT": tenant, "EXPORT_QUEUE": f"q-{export_env['EXPORT_CONTAINER']}"}


def read_root(env, tenant, name):
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(env["EXPORT_STORAGE"], env["EXPORT_CONTAINER"])
    return json.loads(container.download_blob(f"tenants/{tenant}/{name}").readall())


def test_a_message_exports_its_tenants_slot_under_the_tenants_root(worker, tenant_env):
    tenant, slot = tenant_env["TENANT"], a_slot()
    run = worker.invoke_queue(function(worker, "export_tenant"), TenantSlot(tenant, slot).to_text())
    assert run.status == "Success", run.exception
    latest = read_root(tenant_env, tenant, LATEST_BLOB)
    assert latest["slot"] == iso(slot) and latest["users"] > 0
    assert all(name.startswith(f"tenants/{tenant}/") for name in blob_names(tenant_env))
    assert len([log for log in run.logs if log.message.startswith("Export succeeded")]) == 1

    again = worker.invoke_queue(function(worker, "export_tenant"), TenantSlot(tenant, slot).to_text(), dequeue_count=2)
    assert again.status == "Success" and any(log.message.startswith("Export skipped") for log in again.logs)


def test_a_failing_message_fails_the_invocation_for_the_host_to_retry_with_one_line(worker, tenant_env, sandbox):
    tenant, slot = tenant_env["TENANT"], a_slot(2)
    sandbox.faults.add("graph", status=403, body={"error": {"code": "Authorization_RequestDenied",
                                                            "message": "Insufficient privileges."}})
    run = worker.invoke_queue(function(worker, "export_tenant"), TenantSlot(tenant, slot).to_text())
    assert run.status == "Failure"
    errors = [log for log in run.logs if log.level in ("Error", "Critical")]
    assert len(errors) == 1 and errors[0].message.startswith("Export failed: ") and "\n" not in errors[0].message
    failure = read_root(tenant_env, tenant, FAILURE_BLOB)
    assert failure["slot"] == iso(slot) and failure["error"] == errors[0].message.removeprefix("Export failed: ")


def test_the_timer_fans_out_and_each_message_is_exported_by_the_queue_trigger(worker, tenant_env):
    from .host import timer_info

    slot = a_slot(3)
    timer = timer_info(last=None, next_=f"{slot:%Y-%m-%dT%H:%M:%S}+00:00", last_updated=None)
    run = worker.invoke(function(worker, "export_users"), timer)
    assert run.status == "Success", run.exception
    assert blob_names(tenant_env) == []  # the timer only enqueued
    queue = QueueClient.from_connection_string(tenant_env["EXPORT_STORAGE"], tenant_env["EXPORT_QUEUE"],
                                               message_decode_policy=TextBase64DecodePolicy())
    texts = [str(m.content) for m in queue.receive_messages()]
    assert texts == [TenantSlot(tenant_env["TENANT"], slot).to_text()]
    exported = worker.invoke_queue(function(worker, "export_tenant"), texts[0])
    assert exported.status == "Success", exported.exception
    assert read_root(tenant_env, tenant_env["TENANT"], LATEST_BLOB)["slot"] == iso(slot)


def test_a_message_no_attempt_can_process_goes_to_poison_and_the_invocation_succeeds(worker, tenant_env):
    text = json.dumps({"tenant": "dddddddd-0000-4000-8000-00000000000d", "slot": "2026-01-01T02:00:00Z"})
    run = worker.invoke_queue(function(worker, "export_tenant"), text)
    assert run.status == "Success", run.exception  # not retried: the host would only fail it five times more
    errors = [log for log in run.logs if log.level in ("Error", "Critical")]
    assert len(errors) == 1 and "which TENANT_IDS does not list" in errors[0].message
    poison = QueueClient.from_connection_string(tenant_env["EXPORT_STORAGE"], tenant_env["EXPORT_QUEUE"] + "-poison",
                                                message_decode_policy=TextBase64DecodePolicy())
    assert [str(m.content) for m in poison.receive_messages()] == [text]


def test_the_timer_with_tenant_ids_names_a_queue_endpoint_it_lacks_in_one_line(worker, tenant_env, monkeypatch):
    from .host import timer_info

    blob_only = ";".join(part for part in tenant_env["EXPORT_STORAGE"].split(";")
                         if not part.startswith("QueueEndpoint="))
    monkeypatch.setenv("EXPORT_STORAGE", blob_only)
    run = worker.invoke(function(worker, "export_users"), timer_info(last=None, next_="", last_updated=None,
                                                                     status=False))
    assert run.status == "Failure"
    errors = [log for log in run.logs if log.level in ("Error", "Critical")]
    assert len(errors) == 1 and errors[0].message.startswith("Export failed: ")
    assert "EXPORT_STORAGE names a BlobEndpoint but no QueueEndpoint" in errors[0].message
