"""Keep the benchmark script working: a 10,000-user smoke of every contender and of the delta scenario
(no timing asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import BENCH_PYTHON, CONTENDERS, Run, summarize

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_prints_a_well_formed_table_and_json(tmp_path):
    assert BENCH_PYTHON.exists(), ("the msgraph contender needs .venv-bench: python3 -m venv .venv-bench && "
                                   ".venv-bench/bin/pip install -r requirements-bench.txt (make test does this)")
    results = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(results)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads(results.read_text())
    rows = document["summary"]
    assert {r["contender"] for r in rows} == set(CONTENDERS)
    for row in rows:
        assert row["users"] == 10_000 and row["latency_ms"] == 0
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0 and row["users_per_s"] > 0
        assert ("ours_over_this" in row) == (row["contender"] != "ours")
    contenders_table, _, delta_table = run.stdout.partition("Delta mode")
    table = contenders_table.splitlines()
    assert table[0].split()[:3] == ["users", "latency", "contender"]
    assert len([line for line in table if line.strip().startswith("10,000")]) == len(CONTENDERS)

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


def test_ratios_pair_the_runs_of_each_repetition():
    def run(contender: str, rep: int, wall_s: float) -> Run:
        return Run(100_000, 0.0, contender, rep, wall_s, 1.0, 60.0, 100_000)

    # The machine's speed drifts between repetitions. Pairs give 1.1, 1.1 and 1.2: the median is 1.1,
    # where the ratio of the medians (2.4 / 2.0) would say 1.2.
    runs = [run("floor", 0, 1.0), run("ours", 0, 1.1), run("floor", 1, 3.0), run("ours", 1, 3.3),
            run("floor", 2, 2.0), run("ours", 2, 2.4), run("msgraph", 0, 11.0)]
    ratios = {row["contender"]: row.get("ours_over_this") for row in summarize(runs)}
    assert ratios == {"floor": 1.1, "ours": None, "msgraph": 0.1}
