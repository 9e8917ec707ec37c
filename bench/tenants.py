"""Many tenants from one deployment: ``tenants`` tenants of ``users`` users each, fanned out on a queue and
exported by 1, 2, 4 … local ``python -m graph_export work`` processes, as the queue trigger's instances would.

One sandbox process (``bench.server --customer-tenants``) and Azurite (blob and queue); per worker count a
fresh container and queue: ``python -m graph_export fan-out`` for one slot, then the workers started together
and waited for. Wall time is from the first worker's start to the last one's exit; each worker's CPU time and
peak RSS come from ``os.wait4``. Every tenant must then be published with all its users (``status --json``),
or the benchmark stops. Figures are printed, never asserted on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .delta import Tenant
from .measure import REPO

SLOT = "2026-03-01T02:00:00Z"


@dataclass
class TenantsRun:
    tenants: int
    users: int                # per tenant
    workers: int
    wall_s: float
    cpu_s: list[float]        # per worker
    peak_rss_mb: list[float]  # per worker
    published: int            # tenants status reports published for the slot


class Deployment(Tenant):
    """The sandbox with ``tenants`` customer tenants (the home tenant unused)."""

    def __init__(self, tenants: int, users: int) -> None:  # noqa: D107 - Tenant starts bench.server
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--users", str(users), "--customer-tenants", str(tenants)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.settings = self._read()["settings"]


def measure(tenants: int, users: int, worker_counts: list[int], storage: str) -> list[TenantsRun]:
    deployment = Deployment(tenants, users)
    try:
        return [_run(deployment, tenants, users, workers, storage) for workers in worker_counts]
    finally:
        deployment.close()


def _run(deployment: Deployment, tenants: int, users: int, workers: int, storage: str) -> TenantsRun:
    name = f"bench-tenants-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **deployment.settings, "EXPORT_STORAGE": storage, "EXPORT_CONTAINER": name,
           "EXPORT_QUEUE": name}
    _cli(["fan-out", "--slot", SLOT], env)
    start = time.perf_counter()
    children = []
    for _ in range(workers):
        out = tempfile.TemporaryFile()
        children.append((subprocess.Popen([sys.executable, "-m", "graph_export", "work"], cwd=REPO, env=env,
                                          stdout=out, stderr=subprocess.STDOUT), out))
    cpu, rss = [], []
    for child, out in children:
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            out.seek(0)
            raise SystemExit(f"bench: a worker failed: {out.read().decode()[-2000:]}")
        cpu.append(round(usage.ru_utime + usage.ru_stime, 2))
        rss.append(round(usage.ru_maxrss / 1024, 1))
        out.close()
    wall = round(time.perf_counter() - start, 2)
    status = json.loads(_cli(["status", "--json"], env))
    published = sum(1 for t in status if t.get("latest_slot") == SLOT and t.get("users") == users)
    if published != tenants:
        raise SystemExit(f"bench: {published} of {tenants} tenants were published with {users} users: {status[:3]}")
    run = TenantsRun(tenants, users, workers, wall, cpu, rss, published)
    print(f"bench: {tenants} tenants × {users:,} users, {workers} workers: {wall:7.2f} s, peak RSS per worker "
          f"{max(rss):.1f} MB", file=sys.stderr)
    return run


def _cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "graph_export", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"bench: graph_export {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def summarize(runs: list[TenantsRun]) -> list[dict[str, Any]]:
    one = {r.tenants: r.wall_s for r in runs if r.workers == 1}
    return [{"tenants": r.tenants, "users": r.users, "workers": r.workers, "wall_s": r.wall_s,
             "tenants_per_minute": round(r.tenants / r.wall_s * 60, 1),
             "speedup": round(one[r.tenants] / r.wall_s, 2) if r.tenants in one else None,
             "peak_rss_mb": max(r.peak_rss_mb), "cpu_s": round(statistics.fmean(r.cpu_s), 2)} for r in runs]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'tenants':>7} {'users':>8} {'workers':>7} {'wall s':>8} {'tenants/min':>11} {'speed-up':>8} " \
             f"{'peak RSS MB/worker':>18} {'CPU s/worker':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = "—" if r["speedup"] is None else f"{r['speedup']:.2f}"
        lines.append(f"{r['tenants']:>7} {r['users']:>8,} {r['workers']:>7} {r['wall_s']:>8.2f} "
                     f"{r['tenants_per_minute']:>11.1f} {speedup:>8} {r['peak_rss_mb']:>18.1f} {r['cpu_s']:>12.2f}")
    return "\n".join(lines)
