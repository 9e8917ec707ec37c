"""Keep the benchmark script working: a 10,000-user smoke of every contender and of the delta scenario,
and of the charts drawn from them (no timing asserted).

`make test` runs the contenders of the app's own environment (floor, ours, seed) and the delta scenario;
what needs .venv-bench (the msgraph-sdk contender, the charts: matplotlib) is marked ``bench`` and runs
under `make test-bench`, so a fresh clone's `make test` does not install 670 MB for them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import BENCH_PYTHON, CONTENDERS, Run, summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("wall-time.png", "peak-rss.png", "delta.png")
#: The contenders that run in the app's own virtualenv.
LIGHT = tuple(c for c in CONTENDERS if c != "msgraph")

REPO = Path(__file__).resolve().parents[2]
needs_bench_venv = pytest.mark.bench


def quick_bench(tmp_path: Path, contenders: tuple[str, ...], *options: str) -> tuple[str, dict]:
    """`python -m bench --quick` for these contenders: its stdout and its JSON."""
    results = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--contenders", ",".join(contenders),
                          "--json", str(results), *options],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, json.loads(results.read_text())


def assert_well_formed(stdout: str, document: dict, contenders: tuple[str, ...]) -> None:
    """The table and the JSON of a quick run: one row per contender, the delta scenario within its bound."""
    rows = document["summary"]
    assert {r["contender"] for r in rows} == set(contenders)
    for row in rows:
        assert row["users"] == 10_000 and row["latency_ms"] == 0
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0 and row["users_per_s"] > 0
        assert ("ours_over_this" in row) == (row["contender"] != "ours")
    contenders_table, _, delta_table = stdout.partition("Delta mode")
    delta_table, _, properties_table = delta_table.partition("The audit properties")
    table = contenders_table.splitlines()
    assert table[0].split()[:3] == ["users", "latency", "contender"]
    assert len([line for line in table if line.strip().startswith("10,000")]) == len(contenders)

    # The delta scenario: slot B was made from the changes, read in as few requests as the bound says,
    # and published the tenant as it was then.
    [delta_run] = document["delta"]["runs"]
    assert delta_run["users"] == 10_000 and delta_run["latency_ms"] == 0 and delta_run["mode"] == "delta"
    assert delta_run["changes"] == 100 and 0 < delta_run["change_records"] <= delta_run["changes"]
    assert delta_run["bound"] == math.ceil(delta_run["change_records"] / 200) + 2
    assert 1 <= delta_run["delta_feed_requests"] <= delta_run["delta_requests"] <= delta_run["bound"]
    assert delta_run["full_requests"] > delta_run["delta_requests"]
    assert 9_900 <= delta_run["users_out"] <= 10_100
    for key in ("full_wall_s", "full_cpu_s", "full_peak_rss_mb", "delta_wall_s", "delta_cpu_s", "delta_peak_rss_mb"):
        assert delta_run[key] > 0, key
    [delta_row] = document["delta"]["summary"]
    assert delta_row["within_bound"] and delta_row["delta_requests"] == delta_run["delta_requests"]
    delta_lines = delta_table.splitlines()
    assert delta_lines[1].split()[:4] == ["users", "latency", "changes", "full"]
    assert [line.split()[:3] for line in delta_lines if line.strip().startswith("10,000")] == [
        ["10,000", "0ms", f"{delta_run['change_records']:,}"]]

    # The properties scenario: each case once, what it costs in requests in the order Graph's page sizes say.
    costs = {r["case"]: r for r in document["properties"]["summary"]}
    assert list(costs) == ["plain", "manager", "signInActivity", "all", "all, delta"]
    assert costs["plain"]["over_plain"] == 1.0 and all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in costs.values())
    assert costs["plain"]["requests"] < costs["signInActivity"]["requests"] < costs["manager"]["requests"] \
        <= costs["all"]["requests"]
    assert costs["manager"]["requests"] >= 10_000 // 100  # $expand: 100 users a page
    assert [line.split()[2] for line in properties_table.splitlines() if line.strip().startswith("10,000")] == [
        "plain", "manager", "signInActivity", "all", "all,"]


@pytest.mark.slow
def test_quick_bench_of_the_apps_own_environment_prints_a_well_formed_table_and_json(tmp_path):
    stdout, document = quick_bench(tmp_path, LIGHT, "--no-plots")
    assert_well_formed(stdout, document, LIGHT)


@pytest.mark.slow
@needs_bench_venv
def test_quick_bench_of_every_contender_and_its_charts(tmp_path):
    assert BENCH_PYTHON.exists(), ("the msgraph contender needs .venv-bench: python3 -m venv .venv-bench && "
                                   ".venv-bench/bin/pip install -r requirements-bench.txt (make test-bench does this)")
    charts = tmp_path / "charts"
    stdout, document = quick_bench(tmp_path, CONTENDERS, "--plots", str(charts))
    assert_well_formed(stdout, document, CONTENDERS)
    assert sorted(p.name for p in charts.iterdir()) == sorted(CHARTS)
    for name in CHARTS:
        assert_chart(charts / name)


def assert_chart(path: Path) -> None:
    """A PNG (its signature), at least 800 px wide (its IHDR chunk), not an empty canvas, no software tag."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR" and int.from_bytes(data[16:20], "big") >= 800, path
    assert len(data) > 20_000, (path, len(data))
    assert b"Software" not in data, path


@pytest.mark.slow
@needs_bench_venv
def test_charts_are_deterministic_and_only_for_the_scenarios_measured(tmp_path):
    """The plotter on a contender matrix without the delta scenario: two charts, byte-identical when drawn again."""
    runs = [Run(users, latency, contender, 0, wall_s=users / speed + latency / 10, cpu_s=1.0, peak_rss_mb=rss,
                users_out=users)
            for users in (10_000, 100_000) for latency in (0.0, 100.0)
            for contender, speed, rss in (("floor", 60_000, 54.0), ("ours", 50_000, 69.0), ("seed", 30_000, 290.0),
                                          ("msgraph", 200, 160.0))]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": [vars(r) for r in runs], "summary": summarize(runs)}))
    drawn = []
    for attempt in ("first", "second"):
        plot = subprocess.run([str(BENCH_PYTHON), "-m", "bench.plot", str(results), str(tmp_path / attempt)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert plot.returncode == 0, plot.stderr[-3000:]
        drawn.append({p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir()})
    assert sorted(drawn[0]) == ["peak-rss.png", "wall-time.png"]
    assert drawn[0] == drawn[1]
    for name in drawn[0]:
        assert_chart(tmp_path / "first" / name)
