"""Watching a run: progress at the promised cadence, retries and throttling counted, no display when redirected."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
from datetime import datetime, timezone

from graph_export import load_settings, run_export

from .helpers import REPO

SANDBOX_USERS = 12_000  # 13 pages of 999
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


def progress_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(("Progress:", "Exported "))]


def test_a_slow_run_says_how_far_it_is_at_most_every_interval_and_at_the_end(export_env, sandbox, monkeypatch,
                                                                            caplog):
    monkeypatch.setenv("PROGRESS_EVERY_SECONDS", "1")
    sandbox.page_latency_ms = 250  # 13 pages: about 3.3 s
    sandbox.faults.add("graph", page=4, status=429, headers={"Retry-After": "1"}, count=1)
    caplog.set_level(logging.INFO)
    summary = run_export(load_settings(), SLOT)
    lines = progress_records(caplog)
    during, final = lines[:-1], lines[-1]
    assert len(during) >= 2, [r.getMessage() for r in lines]
    gaps = [b.created - a.created for a, b in zip(during, during[1:], strict=False)]
    assert all(gap >= 0.99 for gap in gaps), gaps  # never more often than PROGRESS_EVERY_SECONDS
    assert final.getMessage().startswith("Exported 12,000 users in 13 pages")
    assert "1 retries" in final.getMessage()
    assert summary.retries == 1 and 0.9 <= summary.throttled_s < 3


def run_cli(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """The CLI with stderr redirected to a pipe, or to a pseudo-terminal as an operator's shell would have."""
    command = [sys.executable, "-m", "graph_export", "run", *args]
    if not terminal:
        done = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal has a size
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read().decode() if process.stdout else ""
    process.wait(timeout=60)
    os.close(leader)
    return process.returncode, out, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_the_cli_shows_a_live_display_and_quiet_turns_it_off(export_env, sandbox):
    code, out, err = run_cli(["--slot", "2026-03-07T02:00:00Z"], terminal=True)
    assert code == 0 and json.loads(out)["users"] == 12_000
    assert "12.0k users" in err and "pages=13" in err  # tqdm's bar, with the run's figures
    code, out, err = run_cli(["--slot", "2026-03-08T02:00:00Z", "--quiet"], terminal=True)
    assert code == 0 and "users/s" not in err and "pages=" not in err


def test_when_stderr_is_redirected_there_is_no_display_only_lines(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("PROGRESS_EVERY_SECONDS", "1")
    sandbox.page_latency_ms = 200
    code, out, err = run_cli(["--slot", "2026-03-07T02:00:00Z"], terminal=False)
    assert code == 0 and json.loads(out)["users"] == 12_000
    assert "\r" not in err and "pages=" not in err  # no bar drawn into a file
    assert "Progress: " in err and "Exported 12,000 users in 13 pages" in err


def test_a_throttled_wait_is_logged_as_it_happens_with_its_reason_and_seconds(export_env, sandbox, monkeypatch,
                                                                               caplog):
    monkeypatch.setenv("PROGRESS_EVERY_SECONDS", "1")
    sandbox.faults.add("graph", page=4, status=429, headers={"Retry-After": "3"}, count=1)
    caplog.set_level(logging.INFO)
    summary = run_export(load_settings(), SLOT)
    waits = [r for r in caplog.records if r.getMessage().startswith("Waiting ")]
    assert waits, [r.getMessage() for r in caplog.records]
    assert re.match(r"Waiting 3 s to retry \(HTTP 429, Retry-After 3 s\), 3 s left: [\d,]+ users in \d pages, \d s, "
                    r"[\d,]+ users/s; 1 retries, 0\.0 s waiting on throttling$", waits[0].getMessage()), waits[0]
    # Pages are requested ahead of the ones being parsed: the count when page 4 is refused is up to 3 pages.
    assert len(waits) >= 3 and "1 s left" in waits[-1].getMessage()  # every second while it lasts, counting down
    assert not [w for w in waits if ", 0 s left:" in w.getMessage()]  # a wait that is over is not announced
    assert waits[-1].created - waits[0].created >= 1.9  # said during the wait, not after it
    [final] = [r for r in caplog.records if r.getMessage().startswith("Exported ")]
    assert final.created - waits[0].created >= 2.9 and summary.throttled_s >= 2.9


def test_on_a_terminal_the_live_display_shows_the_wait(export_env, sandbox):
    sandbox.faults.add("graph", page=4, status=429, headers={"Retry-After": "2"}, count=1)
    code, out, err = run_cli(["--slot", "2026-03-07T02:00:00Z"], terminal=True)
    assert code == 0 and json.loads(out)["users"] == 12_000
    assert "waiting=2s (HTTP 429, Retry-After 2 s), pages=3" in err, err[-2000:]
    assert "waiting=1s (HTTP 429, Retry-After 2 s)" in err  # counting down while the clock runs


def test_a_delta_slot_reports_the_changes_it_read_and_the_users_it_published_as_two_numbers(
        export_env, sandbox, monkeypatch, caplog):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    run_export(load_settings(), SLOT)  # the first slot: a full export, which saves the delta link
    sandbox.directory.random_changes(random.Random(7), 75)
    caplog.clear()
    caplog.set_level(logging.INFO)
    summary = run_export(load_settings(), datetime(2026, 3, 8, 2, tzinfo=timezone.utc))
    assert summary.mode == "delta"
    [final] = [r.getMessage() for r in progress_records(caplog)]
    found = re.match(r"Exported ([\d,]+) users from ([\d,]+) changes read in 1 pages, ", final)
    assert found, final
    published, changes = (int(n.replace(",", "")) for n in found.groups())
    assert published == summary.users == sandbox.graph.users and 0 < changes <= 150 and changes != published
    assert "changes/s" in final
