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
