"""Memory stays flat in tenant size: the pipeline's buffers are bounded, users are never accumulated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow

SANDBOX_USERS = USERS = 200_000
#: Holding the users would add ~100 MB by the end. What may grow: the 8-byte id digests (1.5 MB for
#: these 190,000 more users) and allocator noise; measured 2.6 MB on 2026-11-25.
MARGIN_MB = 10


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((l for l in status.splitlines() if l.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None  # None once the process has exited


def test_rss_after_200k_users_is_within_a_fixed_margin_of_rss_after_10k(export_env, sandbox):
    cli = subprocess.Popen([sys.executable, "-m", "graph_export", "run"], cwd=REPO, env=dict(os.environ),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    early, late = None, []
    deadline = time.monotonic() + 300
    while cli.poll() is None and time.monotonic() < deadline:
        pages = sandbox.requests.count("graph", status=200)
        rss = rss_mb(cli.pid)
        if rss is not None:
            if early is None and pages >= 12:  # ~10,000 users through the pipeline (2 pages prefetched)
                early = rss
            elif early is not None:
                late.append(rss)
        time.sleep(0.02)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert json.loads(out)["users"] == USERS
    assert early is not None and len(late) > 10, "sampled too little of the run"
    print(f"\nRSS after ~10k users: {early:.1f} MB; peak after: {max(late):.1f} MB")
    assert max(late) - early < MARGIN_MB


# --- delta mode: the merge streams the previous snapshot, so its peak does not grow with the tenant --

import gzip  # imported here: this file grows by appending
import io
import math
import random
import uuid

import orjson

from graph_export.settings import DEFAULT_USER_PROPERTIES, SETTINGS
from sandbox import Sandbox

from .helpers import read_bytes, read_json

#: Tenants of two sizes, each given the same number of changes between its two slots.
DELTA_TENANTS = (100_000, 1_000_000)
DELTA_CHANGES = 2_000
#: What may grow from 100,000 to 1,000,000 users with the same changes: allocator noise only; the
#: changes, the users/delta pages, the download chunks and the writer's blocks are the same size.
#: Measured on 2026-11-25: 41 MB while the base was downloaded in the SDK's default 32 MiB first GET;
#: 2.5 and 3.2 MB in 4 MiB GETs (storage.open_container).
DELTA_MARGIN_MB = 10
FULL_SLOT, DELTA_SLOT = "2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"
#: What the export or the libraries under it read from the environment; the machine's own never leak in.
_AMBIENT = {s.name for s in SETTINGS} | {
    "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
}


class PeakGrewWithTenant(AssertionError):
    """The delta slot's peak at 1,000,000 users is more than DELTA_MARGIN_MB above the one at 100,000."""


def run_measured(env: dict, slot: str, hwm: Path) -> tuple[dict, float]:
    """``python -m graph_export run --slot slot``: its JSON summary and its own peak RSS (VmHWM) in MB.

    Read as it exits: wait4's ru_maxrss would also count the pytest process it was forked from.
    """
    measured = ("import atexit, runpy, sys\n"
                f"atexit.register(lambda: open({str(hwm)!r}, 'w').write(next(l for l in open('/proc/self/status')"
                " if l.startswith('VmHWM:')).split()[1]))\n"
                f"sys.argv = ['graph_export', 'run', '--slot', {slot!r}]\n"
                "runpy.run_module('graph_export', run_name='__main__', alter_sys=True)\n")
    cli = subprocess.run([sys.executable, "-c", measured], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    return json.loads(cli.stdout.strip().splitlines()[-1]), int(hwm.read_text()) / 1024


def fingerprint(lines) -> tuple[int, int]:
    """How many JSON lines, and the sum of their hashes: equal for the same lines in any order."""
    count = total = 0
    for line in lines:
        count += 1
        total = (total + hash(line)) & 0xFFFF_FFFF_FFFF_FFFF
    return count, total


def delta_slot_peak(azurite, workdir: Path, users: int) -> float:
    """A tenant of ``users``: the first slot in delta mode (full), DELTA_CHANGES changes, the delta slot.

    Checks what the delta slot published against the tenant, line for line; returns its peak RSS.
    """
    with Sandbox(users=users, workdir=workdir / f"sandbox-{users}") as tenant:
        env = {name: value for name, value in os.environ.items() if name not in _AMBIENT}
        env.update(tenant.settings, EXPORT_STORAGE=azurite.connection_string, EXPORT_MODE="delta",
                   EXPORT_CONTAINER=f"mem-{uuid.uuid4().hex[:12]}", RETRY_BACKOFF_BASE_SECONDS="0.01")
        full, full_peak = run_measured(env, FULL_SLOT, workdir / f"full-{users}.hwm")
        assert full["mode"] == "full" and full["users"] == users

        tenant.directory.random_changes(random.Random(users), DELTA_CHANGES)
        tenant.requests.clear()
        summary, peak = run_measured(env, DELTA_SLOT, workdir / f"delta-{users}.hwm")
        assert summary["mode"] == "delta" and summary["users"] == tenant.users
        applied = read_json(env, summary["manifest"])["delta"]
        assert 0 < applied["change_records"] <= DELTA_CHANGES
        assert users + applied["added"] - applied["removed"] == tenant.users
        feed = [r for r in tenant.requests.entries("graph") if r.path == "/v1.0/users/delta"]
        counts = [r for r in tenant.requests.entries("graph") if r.path == "/v1.0/users/$count"]
        assert len(feed) + len(counts) == len(tenant.requests.entries("graph"))
        assert len(feed) == math.ceil(applied["change_records"] / 200) and len(counts) == 2

        published = gzip.GzipFile(fileobj=io.BytesIO(read_bytes(env, summary["blob"])))
        expected = map(orjson.dumps, tenant.expected_users(DEFAULT_USER_PROPERTIES))
        assert fingerprint(line.rstrip(b"\n") for line in published) == fingerprint(expected)
    print(f"\n{users:>9,} users, {applied['change_records']:,} change records: full slot {full_peak:.1f} MB, "
          f"delta slot {peak:.1f} MB")
    return peak


def test_delta_slot_peak_at_1m_users_is_within_a_fixed_margin_of_its_peak_at_100k(azurite, tmp_path):
    peaks = {users: delta_slot_peak(azurite, tmp_path, users) for users in DELTA_TENANTS}
    grown = peaks[DELTA_TENANTS[1]] - peaks[DELTA_TENANTS[0]]
    print(f"delta slot peak grew {grown:.1f} MB from {DELTA_TENANTS[0]:,} to {DELTA_TENANTS[1]:,} users")
    if grown >= DELTA_MARGIN_MB:
        raise PeakGrewWithTenant(f"{grown:.1f} MB more at {DELTA_TENANTS[1]:,} users (margin {DELTA_MARGIN_MB} MB)")
