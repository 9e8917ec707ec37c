"""Keep the benchmark script working: a 10,000-user smoke of every contender (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.run import BENCH_PYTHON, CONTENDERS

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_prints_a_well_formed_table_and_json(tmp_path):
    assert BENCH_PYTHON.exists(), ("the msgraph contender needs .venv-bench: python3 -m venv .venv-bench && "
                                   ".venv-bench/bin/pip install -r requirements-bench.txt (make test does this)")
    results = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(results)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(results.read_text())["summary"]
    assert {r["contender"] for r in rows} == set(CONTENDERS)
    for row in rows:
        assert row["users"] == 10_000 and row["latency_ms"] == 0
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0 and row["users_per_s"] > 0
        assert ("ours_over_this" in row) == (row["contender"] != "ours")
    table = run.stdout.splitlines()
    assert table[0].split()[:3] == ["users", "latency", "contender"]
    assert len([line for line in table if line.strip().startswith("10,000")]) == len(CONTENDERS)
