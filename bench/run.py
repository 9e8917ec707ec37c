"""``python -m bench``: time our export against the transport floor and the usual alternatives.

Each contender is its own child process, one at a time, in an order that rotates every repetition;
the sandbox tenant runs in another process and Azurite in its own. For each run: wall time, users/s,
CPU time (user + system) and peak RSS of the contender's process, from ``os.wait4``.

After the contender matrix, the delta scenario (bench/delta.py): a delta-mode slot made from 1 % of
changes against the full slot before it. ``--scenario`` picks one of the two.

Then the charts: bench/plot.py draws the JSON as PNGs (docs/bench/ by default), run with .venv-bench's
Python, where matplotlib is (the app's environment does not have it).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from graph_export.graph import first_page_url
from graph_export.settings import DEFAULT_USER_PROPERTIES
from sandbox.azurite import Azurite

from . import delta, properties, tenants
from .measure import REPO, timed

BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
INSTALL_BENCH = "python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt"
DEFAULT_PLOTS = "docs/bench"
CONTENDERS = ("floor", "ours", "seed", "msgraph")
PAGE = 999
#: msgraph-sdk deserializes each user into a model at ~4 ms of CPU per user here: it runs once per
#: cell (its minutes dwarf any run-to-run noise), and 1,000,000 users
#: would take well over an hour per run, so larger tenants are measured without it.
MSGRAPH_MAX_USERS = 100_000


@dataclass
class Run:
    users: int
    latency_ms: float
    contender: str
    repetition: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    users_out: int | None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.users, args.delta_users, args.latency_ms, args.repeat = [10_000], [10_000], [0.0], 1
        args.properties_users = [10_000]
    contenders_too, delta_too = args.scenario in ("contenders", "all"), args.scenario in ("delta", "all")
    properties_too = args.scenario in ("properties", "all")
    tenants_too = args.scenario == "tenants"  # minutes per worker count: only when asked for
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        print(f"bench: unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}", file=sys.stderr)
        return 2
    if contenders_too and "msgraph" in contenders and not BENCH_PYTHON.exists():
        print("bench: the msgraph contender needs its own environment: run `make bench` once, or "
              f"{INSTALL_BENCH}", file=sys.stderr)
        return 2
    plots = None if args.no_plots or (args.quick and args.plots is None) else Path(args.plots or REPO / DEFAULT_PLOTS)
    if plots is not None and not _can_plot():
        print(f"bench: the charts need matplotlib in .venv-bench: run `make bench` once, or {INSTALL_BENCH} "
              "(or pass --no-plots)", file=sys.stderr)
        return 2
    _compile_sources()
    runs: list[Run] = []
    delta_runs: list[delta.DeltaRun] = []
    property_runs: list[properties.PropertyRun] = []
    tenant_runs: list[tenants.TenantsRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as work, Azurite(Path(work) / "azurite", REPO) as azurite:
        for users in args.users if contenders_too else []:
            for latency in args.latency_ms:
                runs += _measure(users, latency, contenders, args.repeat, azurite)
        for users in args.delta_users if delta_too else []:
            for latency in args.latency_ms:
                delta_runs += delta.measure(users, latency, args.repeat, args.delta_percent,
                                            azurite.connection_string)
        if tenants_too:
            tenant_runs = tenants.measure(args.tenants, args.tenant_users, args.workers, azurite.connection_string)
        for users in args.properties_users if properties_too else []:
            for latency in args.latency_ms:
                property_runs += properties.measure(users, latency, args.repeat, args.delta_percent,
                                                    azurite.connection_string, args.properties_cases)
    results: dict = {}
    if contenders_too:
        table = summarize(runs)
        print(format_table(table))
        results.update(runs=[asdict(r) for r in runs], summary=table)
    if delta_too:
        rows = delta.summarize(delta_runs)
        print(("\n" if contenders_too else "") + "Delta mode: a delta slot against the full slot before it")
        print(delta.format_table(rows))
        print(delta.notes(rows, args.delta_percent))
        results["delta"] = {"percent": args.delta_percent, "runs": [asdict(r) for r in delta_runs], "summary": rows}
    if tenants_too:
        rows = tenants.summarize(tenant_runs)
        print(f"Many tenants: {args.tenants} tenants fanned out, exported by local `work` processes")
        print(tenants.format_table(rows))
        results["tenants"] = {"runs": [asdict(r) for r in tenant_runs], "summary": rows}
    if properties_too:
        rows = properties.summarize(property_runs)
        print("\nThe audit properties: manager and signInActivity beside a plain export")
        print(properties.format_table(rows))
        results["properties"] = {"percent": args.delta_percent, "runs": [asdict(r) for r in property_runs],
                                 "summary": rows}
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.json}", file=sys.stderr)
    if plots is not None:
        drawn = subprocess.run([str(BENCH_PYTHON), "-m", "bench.plot", str(Path(args.json).resolve()),
                                str(plots.resolve())], cwd=REPO)
        if drawn.returncode != 0:
            print(f"bench: drawing the charts failed (exit code {drawn.returncode}); the numbers are in {args.json}",
                  file=sys.stderr)
            return 1
    return 0


def _can_plot() -> bool:
    """Whether .venv-bench has matplotlib: checked before the runs, not after twenty minutes of them."""
    if not BENCH_PYTHON.exists():
        return False
    return subprocess.run([str(BENCH_PYTHON), "-c", "import matplotlib"], cwd=REPO, capture_output=True).returncode == 0


def _compile_sources() -> None:
    """Byte-compile the contenders' sources once, as any machine has them after a first run. Where
    PYTHONDONTWRITEBYTECODE is set (as on our CI machines), every run would compile them again."""
    for package in ("graph_export", "bench"):
        compileall.compile_dir(REPO / package, quiet=1)


def _measure(users: int, latency: float, contenders: list[str], repeat: int, azurite: Azurite) -> list[Run]:
    server = subprocess.Popen([sys.executable, "-m", "bench.server", "--users", str(users), "--latency-ms",
                               str(latency)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(server.stdout.readline())
        env = {**os.environ, **started["settings"], "BENCH_GRAPH_TOKEN": started["graph_token"],
               "EXPORT_STORAGE": azurite.connection_string, "EXPORT_CONTAINER": "bench",
               "BENCH_FIRST_URL": first_page_url(started["settings"]["GRAPH_ENDPOINT"], DEFAULT_USER_PROPERTIES, PAGE)}
        runs = []
        if users > MSGRAPH_MAX_USERS and "msgraph" in contenders:
            print(f"bench: msgraph skipped at {users:,} users (over {MSGRAPH_MAX_USERS:,}: hours per run)",
                  file=sys.stderr)
            contenders = [c for c in contenders if c != "msgraph"]
        for rep in range(repeat):
            order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            for contender in order:
                if contender == "msgraph" and rep > 0:
                    continue
                run = _run_one(contender, env, users, latency, rep)
                print(f"bench: {users:>9,} users {latency:>5g} ms {contender:<8} {run.wall_s:7.2f} s "
                      f"{run.peak_rss_mb:7.1f} MB", file=sys.stderr)
                runs.append(run)
        return runs
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def _run_one(contender: str, env: dict[str, str], users: int, latency: float, rep: int) -> Run:
    if contender == "ours":
        slot = f"2000-01-01T00:00:{rep % 60:02d}Z"
        command = [sys.executable, "-m", "graph_export", "run", "--force", "--slot", slot]
        env = {**env, "EXPORT_CONTAINER": f"bench-{uuid.uuid4().hex[:8]}"}
    else:
        python = str(BENCH_PYTHON) if contender == "msgraph" else sys.executable
        command = [python, "-m", f"bench.contenders.{contender}"]
    run = timed(command, env)
    if run.returncode != 0:
        raise SystemExit(f"bench: {contender} failed with exit code {run.returncode}: {run.stderr.strip()[-2000:]}")
    reported = json.loads(run.stdout.strip().splitlines()[-1]).get("users")
    if reported is not None and reported != users:
        raise SystemExit(f"bench: {contender} wrote {reported} users, expected {users}")
    return Run(users, latency, contender, rep, run.wall_s, run.cpu_s, run.peak_rss_mb, reported)


def summarize(runs: list[Run]) -> list[dict]:
    """Median per (users, latency, contender), with ours/other ratios and the latency floor.

    A ratio is the median of per-repetition ratios: the runs of one repetition follow each other, so
    a machine whose speed drifts during the matrix (shared hosts do) skews them far less.
    """
    rows = []
    keys = sorted({(r.users, r.latency_ms) for r in runs})
    for users, latency in keys:
        here = [r for r in runs if (r.users, r.latency_ms) == (users, latency)]
        walls = {(r.contender, r.repetition): r.wall_s for r in here}
        medians = {}
        for contender in dict.fromkeys(r.contender for r in here):
            mine = [r for r in here if r.contender == contender]
            medians[contender] = {
                "wall_s": statistics.median(r.wall_s for r in mine),
                "cpu_s": statistics.median(r.cpu_s for r in mine),
                "peak_rss_mb": max(r.peak_rss_mb for r in mine),
            }
        pages = users // PAGE + 1
        for contender, m in medians.items():
            row = {"users": users, "latency_ms": latency, "contender": contender, **m,
                   "users_per_s": round(users / m["wall_s"]), "latency_floor_s": round(pages * latency / 1000, 2)}
            if "ours" in medians and contender != "ours":
                paired = [walls[("ours", rep)] / wall for (who, rep), wall in walls.items()
                          if who == contender and ("ours", rep) in walls]
                row["ours_over_this"] = round(statistics.median(paired), 2)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f"{'users':>9} {'latency':>7} {'contender':<9} {'wall s':>8} {'users/s':>9} {'CPU s':>7} "
              f"{'peak RSS MB':>11} {'ours/this':>9} {'pages×latency s':>15}")
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = f"{r['ours_over_this']:.2f}" if "ours_over_this" in r else "—"
        lines.append(f"{r['users']:>9,} {r['latency_ms']:>5g}ms {r['contender']:<9} {r['wall_s']:>8.2f} "
                     f"{r['users_per_s']:>9,} {r['cpu_s']:>7.2f} {r['peak_rss_mb']:>11.1f} {ratio:>9} "
                     f"{r['latency_floor_s']:>15.2f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    def numbers(text: str) -> list:
        return [float(x) if "." in x else int(x) for x in text.split(",") if x]

    def cases(text: str) -> tuple[str, ...]:
        named = tuple(properties.DELTA_CASE if x.strip() == "delta" else x.strip() for x in text.split(",") if x.strip())
        unknown = [x for x in named if x not in (*properties.CASES, properties.DELTA_CASE)]
        if unknown or not named:
            raise argparse.ArgumentTypeError(f"no such case: {', '.join(unknown) or '(none)'}; the cases are "
                                             f"{', '.join(properties.CASES)}, delta")
        return named

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=numbers, default=[10_000, 100_000, 1_000_000],
                        help="tenant sizes, comma-separated (default 10000,100000,1000000)")
    parser.add_argument("--latency-ms", type=numbers, default=[0, 100],
                        help="sandbox page latencies, comma-separated (default 0,100)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each contender (default 3)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="default: all four")
    parser.add_argument("--json", default="bench-results.json", help="raw numbers (default bench-results.json)")
    parser.add_argument("--scenario", choices=("contenders", "delta", "properties", "tenants", "all"), default="all",
                        help="the contender matrix, the delta scenario (bench/delta.py), the cost of manager and "
                             "signInActivity (bench/properties.py), all three (default), or many tenants through "
                             "the queue (bench/tenants.py, only when asked for)")
    parser.add_argument("--tenants", type=int, default=100, help="tenants of the tenants scenario (default 100)")
    parser.add_argument("--tenant-users", type=int, default=10_000,
                        help="users of each tenant in the tenants scenario (default 10000)")
    parser.add_argument("--workers", type=numbers, default=[1, 2, 4],
                        help="local work processes to compare in the tenants scenario (default 1,2,4)")
    parser.add_argument("--properties-users", type=numbers, default=[1_000_000],
                        help="tenant sizes of the properties scenario, comma-separated (default 1000000)")
    parser.add_argument("--properties-cases", type=cases, default=(*properties.CASES, properties.DELTA_CASE),
                        help="cases of the properties scenario, comma-separated, of: "
                             f"{', '.join(properties.CASES)}, delta (the 'all, delta' case); default all of them")
    parser.add_argument("--delta-users", type=numbers, default=[100_000, 1_000_000],
                        help="tenant sizes of the delta scenario, comma-separated (default 100000,1000000)")
    parser.add_argument("--delta-percent", type=float, default=1.0,
                        help="random changes between the two slots, in %% of the tenant (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 users, 0 ms, one repetition, for both scenarios (the test smoke); "
                             "draws no charts unless --plots is given")
    parser.add_argument("--plots", metavar="DIR", default=None,
                        help=f"where bench/plot.py writes the PNG charts (default {DEFAULT_PLOTS})")
    parser.add_argument("--no-plots", action="store_true", help="write the table and the JSON only")
    return parser
