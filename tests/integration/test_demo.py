"""The README's first command runs `python -m sandbox demo`; keep it working end to end."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_exports_and_verifies_a_copy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "demo", "--users", "1200",
         "--workdir", str(tmp_path / "work"), "--exports", str(tmp_path / "exports")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["users"] == 1200
    copies = list((tmp_path / "exports").glob("*.jsonl.gz"))
    assert len(copies) == 1
    assert gzip.decompress(copies[0].read_bytes()).count(b"\n") == 1200
    assert "verified copy" in result.stderr


def test_the_delta_demo_publishes_a_second_slot_from_changes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "demo", "--delta", "--users", "1200",
         "--workdir", str(tmp_path / "work"), "--exports", str(tmp_path / "exports")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["mode"] == "delta" and summary["pages"] == 1
    assert "demo: full export of 1,200 users" in result.stderr and "12 changes in the tenant" in result.stderr
    assert "verified copy" in result.stderr


def test_a_delta_demo_on_a_reused_workdir_starts_clean_and_reports_changes_and_users_apart(tmp_path):
    """An earlier demo's slot "now" is later than the delta demo's two daily slots: left in place, latest.json
    would stay on it ("already points at a later slot") and the demo would show someone else's export."""
    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandbox", "demo", *args, "--users", "1200",
             "--workdir", str(tmp_path / "work"), "--exports", str(tmp_path / "exports")],
            cwd=REPO, capture_output=True, text=True, timeout=300)

    assert demo().returncode == 0
    result = demo("--delta")
    assert result.returncode == 0, result.stderr
    assert "each demo starts from a clean container" in result.stderr
    assert "already points at a later slot" not in result.stderr
    summary = json.loads(result.stdout)
    found = re.search(r"Exported ([\d,]+) users from ([\d,]+) changes read in 1 pages", result.stderr)
    assert found, result.stderr
    published, changes = (int(n.replace(",", "")) for n in found.groups())
    assert published == summary["users"] and 0 < changes < published
    assert f"demo: delta export of {published:,} users from {changes:,} changes read in 1 Graph pages" in result.stderr
