"""Two runs of one slot, as real CLI processes against the sandbox: one publishes, exactly right.

Two invocations of a slot happen in real life (the function's retry while a hung run still runs, a
``past_due`` catch-up, an operator's CLI run beside the timer). Whatever the interleaving, the
published blob, its manifest, ``latest.json`` and the tenant must agree byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from graph_export import load_settings, run_export
from graph_export.lease import LEASE_S
from graph_export.naming import LATEST_BLOB

from .helpers import REPO, read_export, read_json

pytestmark = pytest.mark.slow

SANDBOX_USERS = USERS = 20_000  # 21 pages of 999
SLOT = "2026-03-07T02:00:00Z"
BUSY = 6


@pytest.fixture
def export_env(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "4")
    sandbox.page_latency_ms = 25  # long enough for runs to overlap
    return export_env


def start(**env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "graph_export", "run", "--slot", SLOT], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def wait_for_page(sandbox, page: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while page not in {r.page for r in sandbox.requests.entries("graph")}:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"page {page} was never requested"
        time.sleep(0.02)


def run_once_the_lease_runs_out(killed_at: float) -> str:
    """Run the slot again every second, as the function's retry policy would, until the killed run's
    lease runs out; the run that then gets the slot must succeed. Its stdout."""
    while True:
        code, out, err = finish(start())
        if code != BUSY:
            break
        assert time.monotonic() - killed_at < LEASE_S + 15, "the lease never ran out"
        time.sleep(1)
    assert code == 0, err
    return out


def assert_published_exactly_the_tenant(env: dict, sandbox) -> dict:
    """latest.json -> manifest -> blob: every count, size and digest agrees, and the users are the tenant."""
    pointer = read_json(env, LATEST_BLOB)
    manifest = read_json(env, pointer["manifest"])
    users, sha = read_export(env, manifest["blob"])
    assert pointer["blob"] == manifest["blob"] and pointer["sha256"] == manifest["sha256"] == sha
    assert pointer["users"] == manifest["users"] == len(users) == USERS
    assert users == list(sandbox.expected_users(load_settings().user_properties))
    return manifest


def test_two_runs_started_together_publish_one_exact_export(export_env, sandbox):
    first = start(CHECKPOINT_EVERY_PAGES="2")
    time.sleep(0.05)
    second = start(CHECKPOINT_EVERY_PAGES="3")
    outcomes = sorted([finish(first), finish(second)])
    (code_a, out_a, _), (code_b, _, err_b) = outcomes
    assert (code_a, code_b) == (0, BUSY), outcomes
    assert json.loads(out_a)["status"] == "succeeded"
    assert err_b.startswith("error: Another run is exporting slot") and len(err_b.strip().splitlines()) == 1
    assert_published_exactly_the_tenant(export_env, sandbox)


def test_the_lease_is_renewed_while_a_slow_run_lives(export_env, sandbox):
    sandbox.faults.add("graph", page=4, delay_s=LEASE_S + 6, count=1)
    slow = start()
    wait_for_page(sandbox, 3, slow)  # page 4 is asked for next (the log records a page once it is served)
    time.sleep(LEASE_S + 1)  # an unrenewed lease would have run out by now
    code, _, err = finish(start())
    assert code == BUSY and "Another run is exporting" in err
    code, out, err = finish(slow)
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert_published_exactly_the_tenant(export_env, sandbox)


def test_a_killed_run_holds_the_slot_until_its_lease_runs_out_then_the_next_resumes(export_env, sandbox):
    victim = start()
    wait_for_page(sandbox, 11, victim)  # past the checkpoint after page 8
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    code, _, err = finish(start())
    assert code == BUSY and "lease" in err
    out = run_once_the_lease_runs_out(killed_at)
    manifest = assert_published_exactly_the_tenant(export_env, sandbox)
    assert manifest["resumed"] is True and json.loads(out)["sha256"] == manifest["sha256"]
    clean = run_export(load_settings(), datetime(2026, 3, 1, 2, tzinfo=timezone.utc))
    assert clean.sha256 == manifest["sha256"]  # byte for byte what an uninterrupted run writes


def test_a_run_frozen_past_its_lease_publishes_nothing_when_it_wakes(export_env, sandbox):
    frozen = start()
    wait_for_page(sandbox, 10, frozen)
    os.killpg(frozen.pid, signal.SIGSTOP)  # a hung instance: no renewals, no progress
    try:
        time.sleep(LEASE_S + 1)
        code, out, err = finish(start())
        assert code == 0, err
        taken_over = json.loads(out)
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    code, out, err = finish(frozen)
    assert code == BUSY and out == "", err
    assert "published nothing" in err and len(err.strip().splitlines()) == 1
    manifest = assert_published_exactly_the_tenant(export_env, sandbox)
    assert manifest["sha256"] == taken_over["sha256"]


def test_a_killed_delta_slot_changes_nothing_and_its_retry_applies_the_same_changes(export_env, sandbox,
                                                                                    monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    run_export(load_settings(), datetime(2026, 3, 6, 2, tzinfo=timezone.utc))  # the base, and the delta link
    state = read_json(export_env, "state/delta.json")
    for i in range(0, 4000, 2):  # 2,000 changed users: 10 pages of changes
        sandbox.directory.update(sandbox.directory.id_of(i), jobTitle=f"Changed {i}")
    sandbox.requests.clear()
    victim = start()
    wait_for_page(sandbox, 3, victim)  # mid-way through the changes
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert read_json(export_env, "state/delta.json") == state  # nothing advanced
    killed_at = time.monotonic()
    out = run_once_the_lease_runs_out(killed_at)
    assert json.loads(out)["mode"] == "delta"
    pointer = read_json(export_env, LATEST_BLOB)
    manifest = read_json(export_env, pointer["manifest"])
    users, sha = read_export(export_env, manifest["blob"])
    assert sha == pointer["sha256"] == manifest["sha256"] and manifest["delta"]["updated"] == 2000
    assert sorted(users, key=lambda u: u["id"]) == sorted(sandbox.expected_users(load_settings().user_properties),
                                                         key=lambda u: u["id"])
    assert read_json(export_env, "state/delta.json")["base_manifest"] == manifest["manifest"]
