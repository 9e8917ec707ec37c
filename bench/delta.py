"""The delta scenario: a slot made from the changes against the full slot before it, in the same run.

For each tenant size and page latency, a sandbox process (``bench.server``); for each repetition a
fresh tenant and a fresh container, then, with EXPORT_MODE=delta:

1. slot A, the first slot: a full export (``/users``, 999 a page) that also saves a users/delta link;
2. ``percent`` % of the tenant's size in random changes (updates, adds, deletes, restores);
3. slot B: the changes (users/delta, 200 a page) applied to slot A's snapshot as it streams.

Both are measured like a contender (wall, CPU, peak RSS from ``os.wait4``); slot B also by the Graph
requests the sandbox served it and the change records its manifest says it read. The figures are
printed, never asserted on; a slot that does not say mode "delta", or publishes another user count
than the tenant's, stops the benchmark.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import ContainerClient

from .measure import REPO, Measured, timed

#: users/delta records a page (graph_export.graph.DELTA_PREFER asks Graph for this many).
DELTA_PAGE = 200
FULL_SLOT, DELTA_SLOT = "2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"


@dataclass
class DeltaRun:
    users: int                # the tenant's size at slot A
    latency_ms: float
    repetition: int
    changes: int              # random mutations made in the sandbox between the slots
    change_records: int       # users/delta records slot B read (its manifest's delta.change_records)
    mode: str                 # what slot B's summary says: "delta"
    users_out: int            # what slot B published (= the tenant's live users)
    full_wall_s: float
    full_cpu_s: float
    full_peak_rss_mb: float
    full_requests: int        # Graph requests of slot A (users/delta link + /users pages)
    delta_wall_s: float
    delta_cpu_s: float
    delta_peak_rss_mb: float
    delta_requests: int       # Graph requests of slot B
    delta_feed_requests: int  # of which users/delta
    bound: int                # ceil(change_records / DELTA_PAGE) + 2


class Tenant:
    """A ``bench.server`` process, driven with its line commands."""

    def __init__(self, users: int, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--users", str(users), "--latency-ms", str(latency_ms)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.settings: dict[str, str] = self._read()["settings"]

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise SystemExit(f"bench: the sandbox refused {command!r}: {answer['error']}")
        return answer

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"bench: the sandbox process exited (code {self.process.poll()})")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def measure(users: int, latency: float, repeat: int, percent: float, storage: str) -> list[DeltaRun]:
    tenant = Tenant(users, latency)
    try:
        return [_repetition(tenant, users, latency, rep, percent, storage) for rep in range(repeat)]
    finally:
        tenant.close()


def _repetition(tenant: Tenant, users: int, latency: float, rep: int, percent: float, storage: str) -> DeltaRun:
    tenant.ask("reset")
    name = f"bench-delta-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **tenant.settings, "EXPORT_STORAGE": storage, "EXPORT_CONTAINER": name,
           "EXPORT_MODE": "delta"}
    try:
        tenant.ask("clear")
        full, full_summary = _slot(FULL_SLOT, env)
        full_seen = tenant.ask("requests")
        _check(full_summary, "full", full_seen["users"], "slot A")

        changes = round(users * percent / 100)
        tenant.ask(f"changes {changes} {users * 1000 + rep}")
        tenant.ask("clear")
        delta, delta_summary = _slot(DELTA_SLOT, env)
        seen = tenant.ask("requests")
        _check(delta_summary, "delta", seen["users"], "slot B")
        client = ContainerClient.from_connection_string(storage, name)
        manifest = json.loads(client.download_blob(delta_summary["manifest"]).readall())
        records = int(manifest["delta"]["change_records"])
    finally:
        ContainerClient.from_connection_string(storage, name).delete_container()  # keep Azurite's disk small
    run = DeltaRun(users, latency, rep, changes, records, delta_summary["mode"], delta_summary["users"],
                   full.wall_s, full.cpu_s, full.peak_rss_mb, full_seen["graph"],
                   delta.wall_s, delta.cpu_s, delta.peak_rss_mb, seen["graph"], seen["delta"],
                   math.ceil(records / DELTA_PAGE) + 2)
    print(f"bench: {users:>9,} users {latency:>5g} ms delta    full {full.wall_s:7.2f} s {full.peak_rss_mb:7.1f} MB"
          f" | {records:,} changes: {delta.wall_s:7.2f} s {delta.peak_rss_mb:7.1f} MB {seen['graph']} requests",
          file=sys.stderr)
    return run


def _slot(slot: str, env: dict[str, str]) -> tuple[Measured, dict[str, Any]]:
    run = timed([sys.executable, "-m", "graph_export", "run", "--slot", slot], env)
    if run.returncode != 0:
        raise SystemExit(f"bench: slot {slot} failed with exit code {run.returncode}: {run.stderr.strip()[-2000:]}")
    return run, dict(json.loads(run.stdout.strip().splitlines()[-1]))


def _check(summary: dict[str, Any], mode: str, live: int, which: str) -> None:
    if summary.get("mode") != mode or summary.get("users") != live:
        raise SystemExit(f"bench: {which} published {summary.get('users')} users in mode {summary.get('mode')!r}; "
                         f"expected {live} (the tenant's live users) in mode {mode!r}")


def summarize(runs: list[DeltaRun]) -> list[dict[str, Any]]:
    """Per (users, latency): medians of time, the most requests and RSS, the least bound, and the
    median of per-repetition delta/full ratios."""
    rows = []
    for users, latency in sorted({(r.users, r.latency_ms) for r in runs}):
        mine = [r for r in runs if (r.users, r.latency_ms) == (users, latency)]
        rows.append({
            "users": users, "latency_ms": latency, "repetitions": len(mine),
            "changes": statistics.median(r.changes for r in mine),
            "change_records": statistics.median(r.change_records for r in mine),
            "full_wall_s": statistics.median(r.full_wall_s for r in mine),
            "delta_wall_s": statistics.median(r.delta_wall_s for r in mine),
            "delta_over_full": round(statistics.median(r.delta_wall_s / r.full_wall_s for r in mine), 3),
            "full_requests": max(r.full_requests for r in mine),
            "delta_requests": max(r.delta_requests for r in mine),
            "bound": min(r.bound for r in mine),
            "within_bound": all(r.delta_requests <= r.bound for r in mine),
            "full_peak_rss_mb": max(r.full_peak_rss_mb for r in mine),
            "delta_peak_rss_mb": max(r.delta_peak_rss_mb for r in mine),
            "full_cpu_s": statistics.median(r.full_cpu_s for r in mine),
            "delta_cpu_s": statistics.median(r.delta_cpu_s for r in mine),
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'users':>9} {'latency':>7} {'changes':>8} {'full wall s':>11} {'delta wall s':>12} "
              f"{'delta/full':>10} {'delta req':>9} {'⌈c/200⌉+2':>9} {'full RSS MB':>11} {'delta RSS MB':>12} "
              f"{'delta CPU s':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['users']:>9,} {r['latency_ms']:>5g}ms {r['change_records']:>8,.0f} {r['full_wall_s']:>11.2f} "
                     f"{r['delta_wall_s']:>12.2f} {r['delta_over_full']:>10.3f} {r['delta_requests']:>9} "
                     f"{r['bound']:>9} {r['full_peak_rss_mb']:>11.1f} {r['delta_peak_rss_mb']:>12.1f} "
                     f"{r['delta_cpu_s']:>11.2f}")
    return "\n".join(lines)


def notes(rows: list[dict[str, Any]], percent: float) -> str:
    """How to read the table: what ``changes`` counts, and where the medians and maxima come from."""
    made = ", ".join(f"{r['changes']:,.0f} at {r['users']:,}" for r in rows if r["latency_ms"] == rows[0]["latency_ms"])
    return (f"changes: users/delta records the delta slot read (its manifest's delta.change_records) after "
            f"{percent:g} % random mutations of the tenant ({made}); a user changed twice is one record.\n"
            "Walls and CPU are medians, delta/full the median of per-repetition ratios, requests and RSS the "
            "maxima, the bound the least of the repetitions.")
