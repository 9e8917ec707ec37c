"""Many tenants end to end (issue 24): the sandbox's customer tenants and Azurite's queues, through
``python -m graph_export fan-out``, ``work``, ``status`` and ``verify --tenant`` as an operator runs them
(subprocesses), and killed workers. One multi-tenant app, consented in each tenant, signs in at each
tenant's authority with the same secret."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from graph_export import queues, worker
from graph_export.naming import FAILURE_BLOB, LATEST_BLOB, checkpoint_blob_name, parse_slot
from graph_export.settings import load_settings
from sandbox import Sandbox

from .helpers import REPO

SIZES = [1_200, 300, 2_100]
SLOT, LATER = "2026-03-07T02:00:00Z", "2026-03-08T02:00:00Z"


@pytest.fixture
def sandbox(tmp_path, request):
    """The provider's home tenant (Key Vault, the app) and three customer tenants, each consented (a test's
    ``indirect`` parameter: other Sandbox options)."""
    options = {"customer_tenants": SIZES, **getattr(request, "param", {})}
    with Sandbox(users=10, workdir=tmp_path / "sandbox", **options) as tenant:
        yield tenant


@pytest.fixture
def tenants_env(export_env, sandbox, monkeypatch):
    """export_env (Azurite with its queues, a fresh container) with TENANT_IDS naming the customer tenants and a
    fresh queue."""
    monkeypatch.delenv("TENANT_ID")
    monkeypatch.setenv("TENANT_IDS", sandbox.multi_tenant_settings()["TENANT_IDS"])
    monkeypatch.setenv("EXPORT_QUEUE", f"q-{export_env['EXPORT_CONTAINER']}")
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "1")
    return {**dict(os.environ)}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph_export", *args], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def root_json(env: dict, tenant: str, name: str) -> dict | None:
    container = ContainerClient.from_connection_string(env["EXPORT_STORAGE"], env["EXPORT_CONTAINER"])
    blob = container.get_blob_client(f"tenants/{tenant}/{name}")
    return json.loads(blob.download_blob().readall()) if blob.exists() else None


def raw_queue(env: dict, suffix: str = "") -> QueueClient:
    """The queue as stored (no base64 policy): what the Functions host would read."""
    return QueueClient.from_connection_string(env["EXPORT_STORAGE"], env["EXPORT_QUEUE"] + suffix)


def test_three_tenants_through_fan_out_and_work_each_under_its_root(tenants_env, sandbox):
    fanned = cli("fan-out", "--slot", SLOT)
    assert fanned.returncode == 0, fanned.stderr
    assert json.loads(fanned.stdout)["tenants"] == sandbox.tenant_ids
    worked = cli("work", "--retry-delay", "0")
    assert worked.returncode == 0, worked.stderr
    assert json.loads(worked.stdout) == {"succeeded": 3, "skipped": 0, "failed_attempts": 0, "poisoned": []}
    for tenant, users in zip(sandbox.tenant_ids, SIZES, strict=True):
        latest = root_json(tenants_env, tenant, LATEST_BLOB)
        assert latest is not None and latest["users"] == users
        manifest = root_json(tenants_env, tenant, latest["manifest"])
        assert manifest["tenant_id"] == tenant
        checked = cli("verify", "--tenant", tenant)
        assert checked.returncode == 0, checked.stderr
    shown = cli("status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [f"{t}: latest slot {SLOT}, {n} users" for t, n in zip(sandbox.tenant_ids, SIZES, strict=True)]
    assert sandbox.client_secret not in fanned.stdout + worked.stdout + worked.stderr + shown.stdout


def test_a_tenant_without_consent_fails_alone_into_the_poison_queue(tenants_env, sandbox):
    refused = sandbox.tenant_ids[1]
    sandbox.tenant(refused).revoke_consent()
    assert cli("fan-out", "--slot", SLOT).returncode == 0
    worked = cli("work", "--retry-delay", "0")
    assert worked.returncode == 1
    lines = worked.stderr.strip().splitlines()
    failed = [line for line in lines if line.startswith("Export failed: ")]
    assert len(failed) == 5 and all("AADSTS7000229" in line or "consent" in line.lower() for line in failed), failed
    assert lines[-1].startswith("error: 1 message(s) moved to ") and refused in lines[-1]
    poisoned = [m.content for m in raw_queue(tenants_env, queues.POISON_SUFFIX).peek_messages(max_messages=5)]
    assert [json.loads(base64.b64decode(text)) for text in poisoned] == [{"tenant": refused, "slot": SLOT}]
    for tenant in (sandbox.tenant_ids[0], sandbox.tenant_ids[2]):
        assert root_json(tenants_env, tenant, LATEST_BLOB)["slot"] == SLOT
    assert root_json(tenants_env, refused, LATEST_BLOB) is None
    assert root_json(tenants_env, refused, FAILURE_BLOB)["slot"] == SLOT
    status_line = next(line for line in cli("status").stdout.splitlines() if line.startswith(refused))
    assert status_line.startswith(f"{refused}: nothing published yet; failed ")
    assert sandbox.client_secret not in worked.stdout + worked.stderr


def test_a_duplicated_message_is_skipped(tenants_env, sandbox):
    assert cli("fan-out", "--slot", SLOT).returncode == 0
    assert cli("fan-out", "--slot", SLOT).returncode == 0
    worked = cli("work", "--retry-delay", "0")
    assert worked.returncode == 0, worked.stderr
    assert json.loads(worked.stdout) == {"succeeded": 3, "skipped": 3, "failed_attempts": 0, "poisoned": []}


@pytest.mark.slow
def test_a_worker_killed_mid_tenant_is_resumed_from_that_tenants_checkpoint(tenants_env, sandbox):
    victim_tenant = sandbox.tenant_ids[2]  # 2,100 users: 3 pages of 999
    assert cli("fan-out", "--slot", SLOT).returncode == 0
    sandbox.faults.add("graph", delay_s=30, page=3, tenant=victim_tenant)
    worker = subprocess.Popen([sys.executable, "-m", "graph_export", "work", "--lease", "3", "--retry-delay", "5"],
                              cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    checkpoint = checkpoint_blob_name(parse_slot(SLOT))
    deadline = time.monotonic() + 120
    while (root_json(tenants_env, victim_tenant, checkpoint) or {}).get("pages") != 2:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the checkpoint after page 2 never appeared"
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    sandbox.faults.clear()

    # The message comes back after its 3 s lease; the slot's lease (15 s) keeps a retry out until it runs out.
    worked = cli("work", "--retry-delay", "5", timeout=240)
    assert worked.returncode == 0, worked.stderr
    latest = root_json(tenants_env, victim_tenant, LATEST_BLOB)
    manifest = root_json(tenants_env, victim_tenant, latest["manifest"])
    assert manifest["resumed"] is True and manifest["users"] == SIZES[2]
    assert all(root_json(tenants_env, t, LATEST_BLOB)["slot"] == SLOT for t in sandbox.tenant_ids)


def test_delta_mode_per_tenant(tenants_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    assert cli("fan-out", "--slot", SLOT).returncode == 0
    assert cli("work", "--retry-delay", "0").returncode == 0
    changed = sandbox.tenant_ids[0]
    first_user = next(sandbox.tenant(changed).expected_users(["id"]))["id"]
    sandbox.tenant(changed).directory.update(first_user, displayName="Renamed in delta")
    assert cli("fan-out", "--slot", LATER).returncode == 0
    worked = cli("work", "--retry-delay", "0")
    assert worked.returncode == 0, worked.stderr
    for tenant, users in zip(sandbox.tenant_ids, SIZES, strict=True):
        latest = root_json(tenants_env, tenant, LATEST_BLOB)
        manifest = root_json(tenants_env, tenant, latest["manifest"])
        assert latest["slot"] == LATER and manifest["mode"] == "delta" and manifest["users"] == users
        assert manifest["delta"]["change_records"] == (1 if tenant == changed else 0), tenant


def vault_reads(sandbox) -> int:
    """How many times the vault handed out the client secret (its 401 challenges not counted)."""
    return sum(1 for r in sandbox.requests.entries("keyvault") if r.status == 200)


# Tokens of a minute: MSAL treats a token within 5 minutes of its end as expired, so every run signs in.
@pytest.mark.parametrize("sandbox", [{"customer_tenants": [40, 50, 60], "token_lifetime_s": 60}], indirect=True)
def test_the_tenants_of_one_process_share_one_vault_read_and_one_rotation(tenants_env, sandbox):
    settings = load_settings()
    queue, poison = worker.open_queues(settings)
    queues.fan_out(queue, settings.tenant_ids, parse_slot(SLOT))
    assert worker.work(settings, queue, poison, retry_delay_s=0).succeeded == 3
    assert vault_reads(sandbox) == 1
    assert len(sandbox.requests.entries("identity")) == 1  # one managed identity token for the vault

    sandbox.rotate_secret()  # the old secret stops working at once: every tenant's next sign-in is refused
    queues.fan_out(queue, settings.tenant_ids, parse_slot(LATER))
    report = worker.work(settings, queue, poison, retry_delay_s=0)
    assert (report.succeeded, report.failed_attempts) == (3, 0)
    assert vault_reads(sandbox) == 2  # the first tenant refused read the rotated secret; the others used it
    refused = [r for r in sandbox.requests.entries("entra") if r.method == "POST" and r.status != 200]
    assert len(refused) == 3  # each tenant's own sign-in with the old secret, once
    for tenant in sandbox.tenant_ids:
        assert root_json(tenants_env, tenant, LATEST_BLOB)["slot"] == LATER
