"""What the audit properties cost: ``manager`` and ``signInActivity`` beside a plain export, at one tenant size.

For each page latency, one sandbox process (``bench.server``, with AuditLog.Read.All granted) and, per
repetition, a fresh tenant and container for each case, each a ``python -m graph_export run`` measured
like a contender (wall, CPU, peak RSS from ``os.wait4``) and by the Graph requests the sandbox served it:

- ``plain``: the default USER_PROPERTIES, 999 users a page;
- ``manager``: plus ``manager`` (``$expand=manager($select=id)``: 100 users a page);
- ``signInActivity``: plus ``signInActivity`` (500 users a page);
- ``all``: plus both and two directory extensions;
- ``all, delta``: the same in delta mode, a slot made from ``percent`` % of changes after a full one
  (users/delta, and the ``id,signInActivity`` listing beside it); only the delta slot is reported.

Figures are printed, never asserted on; a run that publishes another user count than the tenant's stops it.
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import ContainerClient

from graph_export.settings import DEFAULT_USER_PROPERTIES
from sandbox.tenant import COST_CENTER, HIRE_COHORT

from .delta import DELTA_SLOT, FULL_SLOT, Tenant, _check, _slot

CASES: dict[str, tuple[str, ...]] = {
    "plain": DEFAULT_USER_PROPERTIES,
    "manager": (*DEFAULT_USER_PROPERTIES, "manager"),
    "signInActivity": (*DEFAULT_USER_PROPERTIES, "signInActivity"),
    "all": (*DEFAULT_USER_PROPERTIES, "manager", "signInActivity", COST_CENTER, HIRE_COHORT),
}
DELTA_CASE = "all, delta"


@dataclass
class PropertyRun:
    users: int
    latency_ms: float
    case: str
    repetition: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    requests: int


def measure(users: int, latency: float, repeat: int, percent: float, storage: str,
            cases: tuple[str, ...] = (*CASES, DELTA_CASE)) -> list[PropertyRun]:
    """Each of ``cases`` (names of CASES and DELTA_CASE; by default all), ``repeat`` times."""
    tenant = Tenant(users, latency)
    try:
        tenant.ask("roles User.Read.All,AuditLog.Read.All")
        runs = []
        for rep in range(repeat):
            for case, selected in CASES.items():
                if case in cases:
                    runs.append(_full(tenant, users, latency, rep, case, selected, storage))
            if DELTA_CASE in cases:
                runs.append(_delta(tenant, users, latency, rep, percent, storage))
        return runs
    finally:
        tenant.close()


def _env(tenant: Tenant, selected: tuple[str, ...], storage: str, container: str, mode: str) -> dict[str, str]:
    return {**os.environ, **tenant.settings, "EXPORT_STORAGE": storage, "EXPORT_CONTAINER": container,
            "EXPORT_MODE": mode, "USER_PROPERTIES": ",".join(selected)}


def _full(tenant: Tenant, users: int, latency: float, rep: int, case: str, selected: tuple[str, ...],
          storage: str) -> PropertyRun:
    tenant.ask("reset")
    tenant.ask("clear")
    name = f"bench-props-{uuid.uuid4().hex[:8]}"
    try:
        run, summary = _slot(FULL_SLOT, _env(tenant, selected, storage, name, "full"))
        seen = tenant.ask("requests")
        _check(summary, "full", seen["users"], case)
    finally:
        ContainerClient.from_connection_string(storage, name).delete_container()
    return _reported(PropertyRun(users, latency, case, rep, run.wall_s, run.cpu_s, run.peak_rss_mb, seen["graph"]))


def _delta(tenant: Tenant, users: int, latency: float, rep: int, percent: float, storage: str) -> PropertyRun:
    tenant.ask("reset")
    name = f"bench-props-{uuid.uuid4().hex[:8]}"
    env = _env(tenant, CASES["all"], storage, name, "delta")
    try:
        _slot(FULL_SLOT, env)
        tenant.ask(f"changes {round(users * percent / 100)} {users * 1000 + rep}")
        tenant.ask("clear")
        run, summary = _slot(DELTA_SLOT, env)
        seen = tenant.ask("requests")
        _check(summary, "delta", seen["users"], DELTA_CASE)
    finally:
        ContainerClient.from_connection_string(storage, name).delete_container()
    return _reported(PropertyRun(users, latency, DELTA_CASE, rep, run.wall_s, run.cpu_s, run.peak_rss_mb,
                                 seen["graph"]))


def _reported(run: PropertyRun) -> PropertyRun:
    print(f"bench: {run.users:>9,} users {run.latency_ms:>5g} ms {run.case:<15} {run.wall_s:7.2f} s "
          f"{run.peak_rss_mb:7.1f} MB {run.requests:>6} requests", file=sys.stderr)
    return run


def summarize(runs: list[PropertyRun]) -> list[dict[str, Any]]:
    """Per (users, latency, case): medians of wall and CPU, the most RSS and requests, and wall ÷ plain's
    (the median of per-repetition ratios)."""
    rows = []
    for users, latency in sorted({(r.users, r.latency_ms) for r in runs}):
        here = [r for r in runs if (r.users, r.latency_ms) == (users, latency)]
        plain = {r.repetition: r.wall_s for r in here if r.case == "plain"}
        for case in dict.fromkeys(r.case for r in here):
            mine = [r for r in here if r.case == case]
            rows.append({
                "users": users, "latency_ms": latency, "case": case, "repetitions": len(mine),
                "wall_s": statistics.median(r.wall_s for r in mine),
                "cpu_s": statistics.median(r.cpu_s for r in mine),
                "peak_rss_mb": max(r.peak_rss_mb for r in mine),
                "requests": max(r.requests for r in mine),
                "over_plain": round(statistics.median(r.wall_s / plain[r.repetition] for r in mine
                                                      if r.repetition in plain), 2) if plain else None,
            })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'users':>9} {'latency':>7} {'case':<15} {'wall s':>8} {'÷ plain':>7} {'requests':>8} "
              f"{'CPU s':>7} {'peak RSS MB':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = "—" if r["over_plain"] is None else f"{r['over_plain']:.2f}"
        lines.append(f"{r['users']:>9,} {r['latency_ms']:>5g}ms {r['case']:<15} {r['wall_s']:>8.2f} {ratio:>7} "
                     f"{r['requests']:>8,} {r['cpu_s']:>7.2f} {r['peak_rss_mb']:>11.1f}")
    return "\n".join(lines)
