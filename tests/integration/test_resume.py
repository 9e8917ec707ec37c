"""Killed and failed runs resume from their checkpoint; unusable checkpoints restart the slot clean."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from graph_export import GraphError, load_settings, run_export
from graph_export.export import warm_clients
from graph_export.naming import LATEST_BLOB, checkpoint_blob_name, export_blob_name

from .helpers import REPO, blob_names, read_export, read_json

SANDBOX_USERS = USERS = 20_000  # 21 pages of 999
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
CLEAN = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)




@pytest.fixture
def export_env(export_env, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "4")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    return export_env


def graph_pages(sandbox):
    return [r.page for r in sandbox.requests.entries("graph") if r.status == 200]


def fail_from_page(sandbox, page):
    sandbox.faults.add("graph", from_page=page, status=503)


def interrupted_run(sandbox, page):
    """A run that dies on ``page`` (0-based), leaving its checkpoint; then the faults are lifted."""
    fail_from_page(sandbox, page)
    with pytest.raises(GraphError):
        run_export(load_settings(), SLOT)
    sandbox.faults.clear()
    sandbox.requests.clear()
    warm_clients.cache_clear()


def assert_identical_to_a_clean_run(export_env, sandbox, resumed_summary):
    users, sha = read_export(export_env, resumed_summary.blob)
    assert users == list(sandbox.expected_users(load_settings().user_properties))  # none missing, none twice
    clean = run_export(load_settings(), CLEAN)
    assert sha == resumed_summary.sha256 == clean.sha256  # byte for byte


def test_a_failed_run_resumes_from_its_checkpoint(export_env, sandbox):
    interrupted_run(sandbox, page=10)
    saved = read_json(export_env, checkpoint_blob_name(SLOT))
    assert saved["pages"] == 8 and saved["users"] == 8 * 999
    assert export_blob_name(SLOT) not in blob_names(export_env)  # staged, never visible

    summary = run_export(load_settings(), SLOT)
    assert summary.users == USERS
    assert graph_pages(sandbox)[0] == 8  # continued after page 8, did not start over
    assert read_json(export_env, summary.manifest)["resumed"] is True
    assert checkpoint_blob_name(SLOT) not in blob_names(export_env)
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_a_checkpoint_too_old_restarts_the_slot(export_env, sandbox, monkeypatch, caplog):
    interrupted_run(sandbox, page=6)
    monkeypatch.setenv("CHECKPOINT_MAX_AGE_HOURS", "0")
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 0
    assert "older than CHECKPOINT_MAX_AGE_HOURS" in caplog.text
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_changed_properties_restart_the_slot(export_env, sandbox, monkeypatch, caplog):
    interrupted_run(sandbox, page=6)
    monkeypatch.setenv("USER_PROPERTIES", "id,displayName")
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 0 and "USER_PROPERTIES changed" in caplog.text
    users, _ = read_export(export_env, summary.blob)
    assert len(users) == USERS and set(users[0]) == {"id", "displayName"}


def test_a_rejected_page_link_restarts_the_slot(export_env, sandbox, caplog):
    interrupted_run(sandbox, page=6)
    sandbox.faults.add("graph", page=4, status=400, count=1)  # the checkpoint's skiptoken expired
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 0
    assert "no longer accepts the checkpoint's page link" in caplog.text
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_force_ignores_the_checkpoint(export_env, sandbox):
    interrupted_run(sandbox, page=6)
    summary = run_export(load_settings(), SLOT, force=True)
    assert graph_pages(sandbox)[0] == 0 and summary.users == USERS
    assert read_json(export_env, summary.manifest)["resumed"] is False


def test_sigkill_mid_run_then_the_same_slot_resumes(export_env, sandbox):
    """The CLI killed while waiting on a slow page; the next run of the slot finishes the job."""
    sandbox.faults.add("graph", page=13, delay_s=30, count=1)
    cli = [sys.executable, "-m", "graph_export", "run", "--slot", "2026-03-07T02:00:00Z"]
    victim = subprocess.Popen(cli, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while 12 not in graph_pages(sandbox):  # page 13 is now being (slowly) served
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "the export never reached the slow page"
            time.sleep(0.05)
        time.sleep(0.3)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert read_json(export_env, checkpoint_blob_name(SLOT))["pages"] == 12
    assert export_blob_name(SLOT) not in blob_names(export_env) and LATEST_BLOB not in blob_names(export_env)

    sandbox.faults.clear()
    sandbox.requests.clear()
    again = subprocess.run(cli, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["users"] == USERS and graph_pages(sandbox)[0] == 12
    manifest = read_json(export_env, summary["manifest"])
    assert manifest["users"] == USERS and manifest["resumed"] is True
    users, sha = read_export(export_env, summary["blob"])
    assert users == list(sandbox.expected_users(load_settings().user_properties))
    assert sha == manifest["sha256"] == run_export(load_settings(), CLEAN).sha256
    assert read_json(export_env, LATEST_BLOB)["blob"] == summary["blob"]
