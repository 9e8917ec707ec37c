"""Killed and failed runs resume from their checkpoint; unusable checkpoints restart the slot clean."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from graph_export import GraphError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import checkpoint_blob_name, ids_blob_name

from .helpers import blob_names, container, read_bytes, read_export, read_json, slot_files

SANDBOX_USERS = USERS = 20_000  # 21 pages of 999
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
CLEAN = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)




@pytest.fixture
def export_env(export_env, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "4")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    return export_env


def graph_pages(sandbox):
    return [r.page for r in sandbox.requests.entries("graph") if r.status == 200 and r.page is not None]


def fail_from_page(sandbox, page):
    sandbox.faults.add("graph", from_page=page, status=503)


def interrupted_run(sandbox, page):
    """A run that dies on ``page``, leaving its checkpoint; then the faults are lifted."""
    fail_from_page(sandbox, page)
    with pytest.raises(GraphError):
        run_export(load_settings(), SLOT)
    sandbox.faults.clear()
    sandbox.requests.clear()
    app_clients.cache_clear()


def assert_identical_to_a_clean_run(export_env, sandbox, resumed_summary):
    users, sha = read_export(export_env, resumed_summary.blob)
    assert users == list(sandbox.expected_users(load_settings().user_properties))  # none missing, none twice
    clean = run_export(load_settings(), CLEAN)
    assert sha == resumed_summary.sha256 == clean.sha256  # byte for byte


def test_a_failed_run_resumes_from_its_checkpoint(export_env, sandbox):
    interrupted_run(sandbox, page=11)
    saved = read_json(export_env, checkpoint_blob_name(SLOT))
    assert saved["pages"] == 8 and saved["users"] == 8 * 999
    assert slot_files(export_env, SLOT) == []  # staged, never visible
    assert len(read_bytes(export_env, ids_blob_name(SLOT))) == 8 * saved["users"] == saved["ids_bytes"]

    summary = run_export(load_settings(), SLOT)
    assert summary.users == USERS
    assert graph_pages(sandbox)[0] == 9  # continued after page 8, did not start over
    assert read_json(export_env, summary.manifest)["resumed"] is True
    assert checkpoint_blob_name(SLOT) not in blob_names(export_env)
    assert ids_blob_name(SLOT) not in blob_names(export_env)
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_a_user_repeated_across_the_resume_point_is_still_caught(export_env, sandbox):
    interrupted_run(sandbox, page=11)  # the checkpoint counts pages 1-8
    sandbox.faults.add("graph", page=10, repeat_user=5)  # user 5 came on page 1, before the resume point
    with pytest.raises(GraphError, match="before the page this run resumed from and again on page 10"):
        run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 9  # it did resume
    assert slot_files(export_env, SLOT) == []


def test_saved_user_ids_that_are_gone_restart_the_slot(export_env, sandbox, caplog):
    interrupted_run(sandbox, page=7)
    container(export_env).delete_blob(ids_blob_name(SLOT))
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 1 and "user ids it counted are gone" in caplog.text
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_a_checkpoint_too_old_restarts_the_slot(export_env, sandbox, monkeypatch, caplog):
    interrupted_run(sandbox, page=7)
    monkeypatch.setenv("CHECKPOINT_MAX_AGE_HOURS", "0")
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 1
    assert "older than CHECKPOINT_MAX_AGE_HOURS" in caplog.text
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_changed_properties_restart_the_slot(export_env, sandbox, monkeypatch, caplog):
    interrupted_run(sandbox, page=7)
    monkeypatch.setenv("USER_PROPERTIES", "id,displayName")
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 1 and "USER_PROPERTIES changed" in caplog.text
    users, _ = read_export(export_env, summary.blob)
    assert len(users) == USERS and set(users[0]) == {"id", "displayName"}


def test_a_rejected_page_link_restarts_the_slot(export_env, sandbox, caplog):
    interrupted_run(sandbox, page=7)
    sandbox.faults.add("graph", page=5, status=400, count=1)  # the checkpoint's skiptoken expired
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert graph_pages(sandbox)[0] == 1
    assert "no longer accepts the checkpoint's page link" in caplog.text
    assert_identical_to_a_clean_run(export_env, sandbox, summary)


def test_force_ignores_the_checkpoint(export_env, sandbox):
    interrupted_run(sandbox, page=7)
    summary = run_export(load_settings(), SLOT, force=True)
    assert graph_pages(sandbox)[0] == 1 and summary.users == USERS
    assert read_json(export_env, summary.manifest)["resumed"] is False


# A run killed with SIGKILL and resumed by the next run of its slot: test_concurrency.py.
