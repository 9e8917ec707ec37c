"""Delta mode against the sandbox's users/delta and Azurite: every slot publishes the whole tenant.

Each test changes the tenant between slots through ``sandbox.directory`` and checks what a reader of
``latest.json`` gets: the same users, with the same values, as a full export taken at that moment.
"""

from __future__ import annotations

import json
import logging
import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from graph_export import GraphError, StorageError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import DELTA_STATE_BLOB, LATEST_BLOB
from sandbox.blobproxy import BlobFaultProxy
from sandbox.tenant import USER_EXTENSIONS

from .helpers import container, published, published_manifest, read_bytes, read_export, read_json, slot_files

SANDBOX_USERS = USERS = 3_000
DAY = timedelta(days=1)
FIRST = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)


@pytest.fixture
def delta_env(export_env, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    return export_env


def slot(n: int) -> datetime:
    return FIRST + n * DAY


def export(n: int, **kwargs):
    app_clients.cache_clear()
    return run_export(load_settings(), slot(n), **kwargs)


def by_id(users) -> dict[str, dict]:
    users = list(users)
    result = {u["id"]: u for u in users}
    assert len(result) == len(users), "an id twice"
    return result


def tenant_now(sandbox) -> dict[str, dict]:
    """What Graph holds now, as an export publishes it: a selected property Graph leaves out (an extension
    that is not set) is null."""
    selected = load_settings().user_properties
    return by_id({p: as_exported(p, u.get(p)) for p in selected} for u in sandbox.expected_users(selected))


def as_exported(name: str, value):
    """A value as the export keeps it: the expanded manager as its id alone."""
    return {"id": value["id"]} if name == "manager" and value is not None else value


def graph_requests(sandbox) -> list:
    return [r for r in sandbox.requests.entries("graph") if r.status is not None and not r.path.endswith("/$count")]


def change_some(sandbox, rng: random.Random, count: int) -> None:
    sandbox.directory.random_changes(rng, count)


# --- the first slot and the ones after it ------------------------------------------------------------

def test_the_first_slot_is_a_full_export_that_saves_a_delta_link_taken_before_it(delta_env, sandbox):
    summary = export(0)
    manifest, users = published(delta_env)
    assert manifest["mode"] == "full" and summary.mode == "full" and manifest["delta"] is None
    assert by_id(users) == tenant_now(sandbox)
    paths = [r.path for r in graph_requests(sandbox)]
    assert paths[0].endswith("/users/delta") and all(p.endswith("/users") for p in paths[1:])  # the link first
    state = read_json(delta_env, DELTA_STATE_BLOB)
    assert state["base_manifest"] == manifest["manifest"] and state["properties"] == manifest["properties"]


def test_a_later_slot_publishes_the_whole_tenant_from_its_changes(delta_env, sandbox):
    export(0)
    d = sandbox.directory
    renamed, cleared, gone, soft = d.id_of(5), d.id_of(6), d.id_of(7), d.id_of(8)
    d.update(renamed, displayName="Renamed Person", jobTitle="CFO")
    d.update(cleared, mail=None)
    d.hard_delete(gone)
    d.soft_delete(soft)
    new = d.add(displayName="New Hire")
    sandbox.requests.clear()

    summary = export(1)
    manifest, users = published(delta_env)
    assert summary.mode == "delta" and manifest["mode"] == "delta"
    assert by_id(users) == tenant_now(sandbox)
    assert users[-1]["id"] == new and users[-1]["displayName"] == "New Hire"  # new users follow
    applied = manifest["delta"]
    assert (applied["added"], applied["updated"], applied["removed"]) == (1, 2, 2)
    assert applied["base_manifest"] == published_manifest(delta_env, slot(0))["manifest"]
    assert len(graph_requests(sandbox)) == 1  # five changes: one page of users/delta, no /users at all

    records, sha = read_export(delta_env, published_manifest(delta_env, slot(1))["delta"]["changes_blob"])
    assert sha == applied["changes_sha256"] and len(records) == applied["change_records"] == 5
    assert {"id": gone, "@removed": {"reason": "deleted"}} in records
    assert {"id": soft, "@removed": {"reason": "changed"}} in records
    assert not any(k.startswith("@odata") for r in records for k in r)
    state = read_json(delta_env, DELTA_STATE_BLOB)
    assert state["base_manifest"] == manifest["manifest"]


def test_restoring_a_soft_deleted_user_brings_it_back(delta_env, sandbox):
    export(0)
    uid = sandbox.directory.id_of(11)
    sandbox.directory.soft_delete(uid)
    export(1)
    assert uid not in by_id(published(delta_env)[1])
    sandbox.directory.restore(uid)
    export(2)
    users = by_id(published(delta_env)[1])
    assert users == tenant_now(sandbox) and uid in users


def test_a_quiet_day_costs_one_graph_request_and_publishes_the_same_users(delta_env, sandbox):
    export(0)
    _, before = published(delta_env)
    sandbox.requests.clear()
    summary = export(1)
    manifest, after = published(delta_env)
    assert len(graph_requests(sandbox)) == 1 and summary.mode == "delta"
    assert after == before and manifest["delta"]["change_records"] == 0


def test_delta_requests_grow_with_the_changes_not_the_tenant(delta_env, sandbox):
    export(0)
    rng = random.Random(3)
    for i in range(450):
        sandbox.directory.update(sandbox.directory.id_of(rng.randrange(USERS)), jobTitle=f"Title {i}")
    sandbox.requests.clear()
    export(1)
    manifest, users = published(delta_env)
    changed = manifest["delta"]["change_records"]
    assert 0 < changed <= 450
    assert len(graph_requests(sandbox)) <= math.ceil(changed / 200) + 2
    assert by_id(users) == tenant_now(sandbox)


@pytest.mark.parametrize("seed, more", [(1, False), (2, False), (3, True)],
                         ids=["seed 1", "seed 2", "seed 3, with managers and directory extensions"])
def test_random_changes_over_several_slots_equal_a_full_export_at_the_same_moment(delta_env, sandbox, seed,
                                                                                    more, monkeypatch):
    if more:  # random_changes assigns, changes and clears managers, deletes some, and sets and clears extensions
        monkeypatch.setenv("USER_PROPERTIES",
                           ",".join(("id", "displayName", "department", "manager", *USER_EXTENSIONS)))
    rng = random.Random(seed)
    export(0)
    for n in range(1, 5):
        change_some(sandbox, rng, rng.randrange(1, 400))
        summary = export(n)
        assert summary.mode == "delta"
        manifest, users = published(delta_env)
        expected = tenant_now(sandbox)
        assert by_id(users) == expected  # same users, each with the same values
        # A full export of the same moment, into another container: user by user the same.
        with monkeypatch.context() as m:
            m.setenv("EXPORT_MODE", "full")
            m.setenv("EXPORT_CONTAINER", f"{delta_env['EXPORT_CONTAINER']}-full")
            app_clients.cache_clear()
            full = run_export(load_settings(), slot(n))
            full_users, _ = read_export({**delta_env, "EXPORT_CONTAINER": f"{delta_env['EXPORT_CONTAINER']}-full"},
                                        full.blob)
        assert by_id(full_users) == by_id(users)
        assert manifest["users"] == len(expected)


def test_update_repeats_across_pages_keep_the_last(delta_env, sandbox):
    export(0)
    sandbox.graph.delta_repeats = True
    uid = sandbox.directory.id_of(20)
    for i in range(250):  # the same user over more than one page of changes
        sandbox.directory.update(uid, jobTitle=f"Title {i}")
    sandbox.directory.update(sandbox.directory.id_of(21), jobTitle="Other")
    export(1)
    users = by_id(published(delta_env)[1])
    assert users[uid]["jobTitle"] == "Title 249" and users == tenant_now(sandbox)


# --- falling back to a full export ----------------------------------------------------------------

def full_with_reason(delta_env, sandbox, caplog, n: int, reason: str) -> dict:
    caplog.set_level(logging.WARNING)
    summary = export(n)
    manifest, users = published(delta_env)
    assert summary.mode == "full" and manifest["mode"] == "full"
    assert by_id(users) == tenant_now(sandbox)
    assert reason in caplog.text, caplog.text
    return manifest


def test_an_expired_delta_link_falls_back_to_a_full_export(delta_env, sandbox, caplog):
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(1), jobTitle="Changed")
    sandbox.graph.expire_delta_tokens()
    full_with_reason(delta_env, sandbox, caplog, 1, "no longer accepts the saved delta link")
    sandbox.directory.update(sandbox.directory.id_of(2), jobTitle="Later")
    assert export(2).mode == "delta"  # and the new link works
    assert by_id(published(delta_env)[1]) == tenant_now(sandbox)


def test_an_old_delta_link_means_a_full_export_that_measures_drift(delta_env, sandbox, caplog, monkeypatch):
    export(0)
    change_some(sandbox, random.Random(5), 50)
    monkeypatch.setenv("FULL_SYNC_EVERY_DAYS", "0")
    manifest = full_with_reason(delta_env, sandbox, caplog, 1, "FULL_SYNC_EVERY_DAYS")
    assert manifest["drift"] == 0  # the changes alone made exactly what Graph listed


def test_drift_counts_users_the_change_feed_missed(delta_env, sandbox, caplog, monkeypatch):
    export(0)
    for i in (30, 31, 32):
        sandbox.directory.update(sandbox.directory.id_of(i), jobTitle="Unseen")
    sandbox.faults.add("graph", path_contains="/users/delta", value=[])  # a change feed that drops them
    monkeypatch.setenv("FULL_SYNC_EVERY_DAYS", "0")
    manifest = full_with_reason(delta_env, sandbox, caplog, 1, "FULL_SYNC_EVERY_DAYS")
    assert manifest["drift"] == 3 and "drift: 3 users differ" in caplog.text


def test_changed_properties_fall_back(delta_env, sandbox, caplog, monkeypatch):
    export(0)
    monkeypatch.setenv("USER_PROPERTIES", "id,displayName,jobTitle")
    manifest = full_with_reason(delta_env, sandbox, caplog, 1, "USER_PROPERTIES changed")
    assert manifest["properties"] == ["id", "displayName", "jobTitle"]


def test_a_missing_base_snapshot_falls_back(delta_env, sandbox, caplog):
    export(0)
    container(delta_env).delete_blob(published_manifest(delta_env, slot(0))["blob"])
    full_with_reason(delta_env, sandbox, caplog, 1, "is missing")


def test_a_base_snapshot_that_does_not_match_its_manifest_falls_back(delta_env, sandbox, caplog):
    export(0)
    name = published_manifest(delta_env, slot(0))["blob"]
    data = read_bytes(delta_env, name)
    container(delta_env).upload_blob(name, data[:-8] + b"\x00" * 8, overwrite=True)  # a damaged copy
    full_with_reason(delta_env, sandbox, caplog, 1, "base snapshot")


def test_too_many_changes_fall_back(delta_env, sandbox, caplog, monkeypatch):
    export(0)
    change_some(sandbox, random.Random(9), 30)
    monkeypatch.setenv("DELTA_MAX_CHANGES", "5")
    full_with_reason(delta_env, sandbox, caplog, 1, "DELTA_MAX_CHANGES")


def test_an_invalid_delta_state_falls_back(delta_env, sandbox, caplog):
    export(0)
    container(delta_env).upload_blob(DELTA_STATE_BLOB, b'{"format": "something else"}', overwrite=True)
    full_with_reason(delta_env, sandbox, caplog, 1, "delta state is not valid")


def test_a_delta_link_on_another_host_is_never_followed(delta_env, sandbox, caplog):
    export(0)
    state = read_json(delta_env, DELTA_STATE_BLOB)
    state["delta_link"] = "https://graph.elsewhere.example/v1.0/users/delta?$deltatoken=stolen"
    container(delta_env).upload_blob(DELTA_STATE_BLOB, json.dumps(state).encode(), overwrite=True)
    full_with_reason(delta_env, sandbox, caplog, 1, "not on GRAPH_ENDPOINT")
    assert "stolen" not in caplog.text


# --- failures publish nothing and leave the state as it was ---------------------------------------

def test_graph_failing_mid_delta_publishes_nothing_and_the_retry_applies_the_same_changes(delta_env, sandbox):
    export(0)
    state = read_json(delta_env, DELTA_STATE_BLOB)
    latest = read_json(delta_env, LATEST_BLOB)
    change_some(sandbox, random.Random(4), 500)  # several pages of changes
    sandbox.faults.add("graph", path_contains="/users/delta", from_page=2, status=503)
    with pytest.raises(GraphError):
        export(1)
    assert read_json(delta_env, DELTA_STATE_BLOB) == state and read_json(delta_env, LATEST_BLOB) == latest
    assert slot_files(delta_env, slot(1)) == []
    sandbox.faults.clear()
    assert export(1).mode == "delta"
    assert by_id(published(delta_env)[1]) == tenant_now(sandbox)


@pytest.fixture
def blob_proxy(azurite, delta_env, monkeypatch):
    with BlobFaultProxy(azurite) as proxy:
        monkeypatch.setenv("EXPORT_STORAGE", proxy.connection_string)
        yield proxy


@pytest.mark.parametrize("where", [{"method": "GET", "path_contains": "users-20260301"},  # reading the base
                                   {"query_contains": "comp=block&"}])  # staging the merged snapshot
def test_storage_failing_mid_merge_publishes_nothing(delta_env, sandbox, blob_proxy, where):
    export(0)
    state = read_json(delta_env, DELTA_STATE_BLOB)
    change_some(sandbox, random.Random(6), 20)
    blob_proxy.add("503", count=None, **where)
    with pytest.raises(StorageError):
        export(1)
    blob_proxy.clear()
    assert read_json(delta_env, DELTA_STATE_BLOB) == state
    assert slot_files(delta_env, slot(1)) == []
    assert export(1).mode == "delta" and by_id(published(delta_env)[1]) == tenant_now(sandbox)


def test_a_slot_is_exported_once_and_force_exports_it_again(delta_env, sandbox):
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Once")
    assert export(1).status == "succeeded"
    assert export(1).status == "skipped"
    sandbox.directory.update(sandbox.directory.id_of(4), jobTitle="Twice")
    again = export(1, force=True)
    assert again.status == "succeeded" and again.mode == "delta"
    assert by_id(published(delta_env)[1]) == tenant_now(sandbox)


def test_a_delta_link_to_another_host_in_graphs_answer_fails_the_slot_and_is_never_saved(delta_env, sandbox):
    export(0)
    state = read_json(delta_env, DELTA_STATE_BLOB)
    sandbox.faults.add("graph", path_contains="/users/delta", status=200,
                       body={"@odata.deltaLink": "https://graph.elsewhere.example/v1.0/users/delta?$deltatoken=x",
                             "value": []})
    with pytest.raises(GraphError, match="deltaLink that is not on https://127.0.0.1") as info:
        export(1)
    assert "deltatoken" not in str(info.value)
    assert read_json(delta_env, DELTA_STATE_BLOB) == state
    assert slot_files(delta_env, slot(1)) == []
