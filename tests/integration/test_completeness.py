"""A page lost on the way is caught by Graph's count, end to end: the sandbox tenant, Azurite, the CLI.

At the issue's numbers: a 20,000-user tenant read in pages of 999, one of them lost (the sandbox's
``skip_next`` fault: Graph's nextLink jumps one page, so nothing fails and 999 users are simply
missing). The count check refuses to publish it, in full mode and for a delta slot that drifted, and
leaves what consumers read byte for byte as it was; a count Graph refuses does not fail the export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from graph_export import IncompleteExport, load_settings, run_export, verify
from graph_export.clients import app_clients
from graph_export.naming import DELTA_STATE_BLOB, LATEST_BLOB, checkpoint_blob_name, ids_blob_name
from graph_export.records import Manifest, UserCount
from graph_export.settings import load_storage_settings

from .helpers import REPO, blob_names, published_manifest, read_export, slot_files, state_container

SANDBOX_USERS = USERS = 20_000  # 21 pages of 999
EARLIER = datetime(2026, 3, 6, 2, tzinfo=timezone.utc)
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
NEXT = datetime(2026, 3, 8, 2, tzinfo=timezone.utc)


@pytest.fixture
def export_env(export_env, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "4")  # checkpoints before the lost page: they must go
    return export_env


def latest_bytes(env: dict) -> bytes:
    return state_container(env).download_blob(LATEST_BLOB).readall()


def run_cli(slot: datetime) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph_export", "run", "--quiet", "--slot", f"{slot:%Y-%m-%dT%H:%M:%SZ}"],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def test_a_page_dropped_from_a_20000_user_tenant_is_caught_and_nothing_is_published(export_env, sandbox):
    earlier = run_export(load_settings(), EARLIER)
    assert earlier.users == USERS
    latest = latest_bytes(export_env)
    sandbox.faults.add("graph", page=9, skip_next=True)  # page 10 (users 8,991-9,989) never arrives

    failed = run_cli(SLOT)

    assert failed.returncode == IncompleteExport.exit_code == 8, failed.stderr
    assert failed.stdout == ""
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [failed.stderr.strip().splitlines()[-1]] and len(errors) == 1
    assert errors[0].startswith(f"error: Graph counted {USERS} users at the start and {USERS} at the end, but the "
                                f"snapshot holds {USERS - 999} (tolerance 5): not published; latest.json is unchanged")
    assert slot_files(export_env, SLOT) == []  # no file, no manifest committed
    assert latest_bytes(export_env) == latest  # byte for byte: the earlier export is still the latest
    names = blob_names(export_env)
    assert checkpoint_blob_name(SLOT) not in names and ids_blob_name(SLOT) not in names  # the next run starts over

    sandbox.faults.clear()
    sandbox.requests.clear()
    app_clients.cache_clear()
    summary = run_export(load_settings(), SLOT)
    users, sha = read_export(export_env, summary.blob)
    assert users == list(sandbox.expected_users(load_settings().user_properties)) and sha == summary.sha256
    manifest = published_manifest(export_env, SLOT)
    assert manifest["resumed"] is False and manifest["count"] == {"before": USERS, "after": USERS, "tolerance": 5}
    assert json.loads(latest_bytes(export_env))["manifest"] == summary.manifest
    assert [r.path for r in sandbox.requests.entries("graph")].count("/v1.0/users/$count") == 2  # the cost


def test_a_delta_snapshot_that_drifted_is_caught_and_the_delta_state_does_not_advance(export_env, sandbox,
                                                                                       monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    first = run_export(load_settings(), EARLIER)
    state, latest = state_container(export_env).download_blob(DELTA_STATE_BLOB).readall(), latest_bytes(export_env)
    for n in range(500):
        sandbox.directory.add(displayName=f"Joined {n}")
    sandbox.faults.add("graph", path_contains="/users/delta", page=1, skip_next=True)  # 200 changes lost

    with pytest.raises(IncompleteExport, match=f"{USERS + 500} at the end, but the snapshot holds {USERS + 300} "):
        run_export(load_settings(), SLOT)

    assert slot_files(export_env, SLOT) == []
    assert state_container(export_env).download_blob(DELTA_STATE_BLOB).readall() == state
    assert latest_bytes(export_env) == latest and json.loads(latest)["manifest"] == first.manifest
    sandbox.faults.clear()
    again = run_export(load_settings(), SLOT)
    manifest = published_manifest(export_env, SLOT)
    assert (manifest["mode"], again.users, manifest["delta"]["added"]) == ("delta", USERS + 500, 500)
    assert manifest["count"] == {"before": USERS + 500, "after": USERS + 500, "tolerance": 5}


@pytest.mark.parametrize("status", [403, 400, 503])
def test_a_count_graph_refuses_is_recorded_as_unknown_and_the_export_is_published(export_env, sandbox, monkeypatch,
                                                                                  caplog, status):
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    sandbox.faults.add("graph", path_contains="/users/$count", status=status)
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        summary = run_export(load_settings(), SLOT)
    assert summary.status == "succeeded" and summary.users == USERS
    assert published_manifest(export_env, SLOT)["count"] == {"before": None, "after": None, "tolerance": 5}
    refusals = [r.getMessage() for r in caplog.records if "user count (GET /users/$count)" in r.getMessage()]
    assert len(refusals) == 2 and all(f"HTTP {status}" in line for line in refusals)
    assert "completeness check is skipped for this end" in refusals[0]


def test_users_added_while_the_export_runs_are_within_the_counts_and_published(export_env, sandbox):
    added: list[str] = []

    def add_users(snapshot) -> None:
        if snapshot.pages >= 5 and not added:  # between the two counts, before the last page is read
            added.extend(sandbox.directory.add(displayName=f"Late {n}") for n in range(3))

    summary = run_export(load_settings(), SLOT, on_progress=add_users, progress_every_s=0.001)
    assert added and summary.users == USERS + 3
    assert published_manifest(export_env, SLOT)["count"] == {"before": USERS, "after": USERS + 3, "tolerance": 5}


def test_verify_reports_ok_within_the_counts_and_fails_a_snapshot_outside_them(export_env, sandbox):
    summary = run_export(load_settings(), SLOT)
    report = verify.run(load_storage_settings())
    assert report.ok, [v.line() for v in report.slots]
    manifest = Manifest.parse(json.loads(state_container(export_env).get_blob_client(summary.manifest)
                                         .download_blob().readall()))
    recorded_wrong = dataclasses.replace(manifest, count=UserCount(USERS + 999, USERS + 999, 5))
    with pytest.raises(verify.Mismatch, match=f"holds {USERS} users, but Graph counted {USERS + 999} users at the "
                                              f"start and {USERS + 999} at the end \\(tolerance 5\\)"):
        verify._check_count(recorded_wrong)
