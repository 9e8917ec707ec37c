"""The publish model against Azurite (through the fault proxy) and the sandbox: a good export is never
destroyed, a failure anywhere leaves what consumers read byte for byte as it was, a rerun finishes
what a published slot's publishing left undone, and the whole series runs under an immutability policy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient

from graph_export import GraphError, SlotBusyError, StorageError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB, lock_blob_name, slot_pointer_name
from graph_export.verify import verify
from sandbox.blobproxy import BlobFaultProxy

from .helpers import REPO, container, read_bytes, read_export, read_json, slot_files, slot_pointer, state_container

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
LATER = datetime(2026, 3, 8, 2, tzinfo=timezone.utc)
TRANSIENT = (".lock", ".checkpoint.json", ".ids")  # a run's own scratch records, not what consumers read


@pytest.fixture
def proxy(azurite, export_env, monkeypatch):
    """Every request of the export goes through the proxy; the tests read Azurite directly."""
    with BlobFaultProxy(azurite) as running:
        monkeypatch.setenv("EXPORT_STORAGE", running.connection_string)
        yield running


def export(slot: datetime = SLOT, **kwargs):
    app_clients.cache_clear()
    return run_export(load_settings(), slot, **kwargs)


def stored(env: dict) -> dict[str, bytes]:
    """Every blob of both containers that a consumer may read, by name, with its bytes."""
    found: dict[str, bytes] = {}
    for client in {c.container_name: c for c in (container(env), state_container(env))}.values():
        for blob in client.list_blobs():
            if not blob.name.endswith(TRANSIENT):
                found[f"{client.container_name}/{blob.name}"] = client.download_blob(blob.name).readall()
    return found


def consistent(env: dict, slot: datetime = SLOT) -> dict:
    """latest.json -> the slot's pointer -> manifest -> every file: all agree (bytes, counts, sha256); the manifest."""
    pointer = slot_pointer(env, slot)
    assert pointer is not None
    manifest = read_json(env, pointer["manifest"])
    assert manifest["run"] == pointer["run"] and manifest["slot"] == pointer["slot"]
    users, sha = read_export(env, manifest["blob"])
    assert sha == manifest["sha256"] and len(users) == manifest["users"]
    assert len(read_bytes(env, manifest["blob"])) == manifest["bytes"]
    assert all(list(u) == manifest["properties"] for u in users)
    if manifest["csv"]:
        csv = read_bytes(env, manifest["csv"]["blob"])
        assert hashlib.sha256(csv).hexdigest() == manifest["csv"]["sha256"]
        assert len(gzip.decompress(csv).decode("utf-8").splitlines()) == manifest["users"] + 1
    for name, etag in pointer["etags"].items():
        assert container(env).get_blob_client(name).get_blob_properties().etag == etag, name
    # what latest.json names (if it exists yet) is complete too: this slot's export, one it superseded, or
    # another slot's
    if not state_container(env).get_blob_client(LATEST_BLOB).exists():
        return manifest
    latest = json.loads(state_container(env).download_blob(LATEST_BLOB).readall())
    named = read_json(env, latest["manifest"])
    assert (latest["blob"], latest["sha256"], latest["users"]) == (named["blob"], named["sha256"], named["users"])
    assert read_export(env, named["blob"])[1] == named["sha256"]
    if latest["slot"] == manifest["slot"]:
        assert latest["manifest"] in reachable(env, slot)
    # and the deep check a consumer or auditor runs (python -m graph_export verify --slot) agrees
    report = verify(container(env), state_container(env), env["EXPORT_CONTAINER"], slot=slot)
    assert report.ok, [v.line() for v in report.slots]
    return manifest


def reachable(env: dict, slot: datetime = SLOT) -> set[str]:
    """Every name the slot's pointer reaches: its manifest, the ones it supersedes, and their files."""
    names: set[str] = set()
    pointer = slot_pointer(env, slot)
    name = pointer["manifest"] if pointer else None
    while name:
        manifest = read_json(env, name)
        names |= {name, manifest["blob"]} | ({manifest["csv"]["blob"]} if manifest["csv"] else set())
        if manifest["delta"]:
            names.add(manifest["delta"]["changes_blob"])
        name = manifest["supersedes"]
    return names


def tenant(sandbox) -> list[dict]:
    return list(sandbox.expected_users(load_settings().user_properties))


# --- item 1: a failed --force never touches the export it was to replace ---------------------------

@pytest.mark.parametrize("step", [
    {"method": "PUT", "query_contains": "comp=blocklist"},            # committing the new data file
    {"method": "PUT", "path_contains": ".manifest.json"},             # writing the new manifest
    {"method": "PUT", "path_contains": ".current.json"},              # the commit itself
], ids=["data commit", "manifest", "slot pointer"])
def test_a_failed_force_leaves_the_good_export_byte_identical(export_env, sandbox, proxy, step, monkeypatch):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    first = export()
    before = stored(export_env)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Changed since")
    proxy.add("500", count=None, **step)
    with pytest.raises(StorageError, match="nothing was published"):
        export(force=True)
    proxy.clear()
    after = stored(export_env)
    assert {name: after.get(name) for name in before} == before  # not one byte of what was there changed
    assert consistent(export_env)["sha256"] == first.sha256
    # a plain rerun: the slot is exported (the old export stands); what the failed run left goes
    again = export()
    assert again.status in ("skipped", "repaired") and again.sha256 == first.sha256
    assert stored(export_env) == before
    # a forced run that succeeds replaces it, superseding the first: both stay readable as written
    forced = export(force=True)
    manifest = consistent(export_env)
    assert forced.status == "succeeded" and manifest["supersedes"] == first.manifest
    assert {u["id"]: u for u in read_export(export_env, forced.blob)[0]}[sandbox.directory.id_of(3)]["jobTitle"] \
        == "Changed since"
    assert set(slot_files(export_env, SLOT)) == reachable(export_env)
    assert all(stored(export_env)[name] == data for name, data in before.items() if "/users/2026/" in name)


# --- item 2: what a published slot's publishing left undone, a rerun finishes -----------------------

def test_a_failed_latest_update_says_what_was_published_and_a_rerun_finishes_it(export_env, sandbox, proxy):
    export()
    proxy.add("503", count=None, method="PUT", path_contains="/" + LATEST_BLOB)
    with pytest.raises(StorageError) as info:
        export(LATER)
    message = str(info.value)
    assert "slot 2026-03-08T02:00:00Z is published" in message and "run again to finish" in message
    assert "nothing was published" not in message
    assert json.loads(state_container(export_env).download_blob(LATEST_BLOB).readall())["slot"] == \
        "2026-03-07T02:00:00Z"
    consistent(export_env, LATER)  # the slot is exported; latest.json still names the older one, intact
    proxy.clear()
    rerun = export(LATER)
    assert rerun.status == "repaired" and rerun.repaired == ("latest.json",)
    assert consistent(export_env, LATER)["manifest"] == \
        json.loads(state_container(export_env).download_blob(LATEST_BLOB).readall())["manifest"]
    assert export(LATER).status == "skipped"  # and then there is nothing left to do


def test_a_delta_state_left_behind_is_advanced_by_the_rerun(export_env, sandbox, proxy, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    export()
    sandbox.directory.update(sandbox.directory.id_of(5), displayName="Renamed")
    proxy.add("503", count=None, method="PUT", path_contains="state/delta.json")
    with pytest.raises(StorageError, match="is published"):
        export(LATER)
    state = read_json(export_env, "state/delta.json")
    assert state["base_slot"] == "2026-03-07T02:00:00Z"  # not advanced: the next slot replays from there
    proxy.clear()
    rerun = export(LATER)
    assert rerun.status == "repaired" and "delta state" in rerun.repaired
    assert read_json(export_env, "state/delta.json")["base_manifest"] == consistent(export_env, LATER)["manifest"]


# --- item 3: "published" means the files are there, exactly as committed ---------------------------

@pytest.mark.parametrize("damage", ["delete the data file", "rewrite the data file", "delete the csv copy",
                                    "rewrite the manifest"])
def test_a_slot_whose_files_are_not_as_committed_is_exported_again(export_env, sandbox, damage, monkeypatch, caplog):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    first = export()
    manifest = read_json(export_env, first.manifest)
    exports = container(export_env)
    name = {"delete the data file": first.blob, "rewrite the data file": first.blob,
            "delete the csv copy": manifest["csv"]["blob"], "rewrite the manifest": first.manifest}[damage]
    if damage.startswith("delete"):
        exports.delete_blob(name)
    else:  # the same bytes written again: only its ETag shows it is no longer what was committed
        exports.upload_blob(name, exports.download_blob(name).readall(), overwrite=True)
    again = export()
    assert again.status == "succeeded" and again.manifest != first.manifest
    assert "is not exported as its pointer says" in caplog.text
    assert consistent(export_env)["supersedes"] == first.manifest
    assert read_export(export_env, again.blob)[0] == tenant(sandbox)


# --- kills at each step of publishing ------------------------------------------------------------------

def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "graph_export", "run", "--slot", "2026-03-07T02:00:00Z", *args],
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def free_the_slot(env: dict) -> None:
    """What the lease's running out does for a killed run, at once."""
    BlobLeaseClient(state_container(env).get_blob_client(lock_blob_name(SLOT))).break_lease(lease_break_period=0)


@pytest.mark.parametrize("force", [False, True], ids=["new slot", "--force of a published slot"])
@pytest.mark.parametrize("before", [
    {"method": "PUT", "path_contains": ".manifest.json"},             # after the data commit
    {"method": "PUT", "path_contains": ".current.json"},              # after the manifest
    {"method": "PUT", "path_contains": "/" + LATEST_BLOB},            # after the commit
    {"method": "GET", "query_contains": "comp=list"},                 # after latest.json (the clean-up)
], ids=["after the data commit", "after the manifest", "after the commit", "after latest.json"])
def test_a_run_killed_at_each_step_of_publishing_leaves_a_consistent_export(export_env, sandbox, proxy, before,
                                                                            force):
    if force:
        first = export()
        published_before = stored(export_env)
        sandbox.directory.update(sandbox.directory.id_of(7), department="Moved")
    hold = proxy.add("hold", **before)
    process = cli(*(["--force"] if force else []))
    try:
        assert hold.wait_held(60), process.communicate(timeout=5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        hold.release()
    committed = slot_pointer(export_env, SLOT) is not None and (
        not force or slot_pointer(export_env, SLOT)["run"] != read_json(export_env, first.manifest)["run"])
    if force:
        after = stored(export_env)
        if not committed:  # killed before the commit: not one byte of the good export changed
            assert {n: after.get(n) for n in published_before} == published_before
        consistent(export_env)
    elif committed:
        consistent(export_env)
    free_the_slot(export_env)
    rerun = export()  # the next invocation of the slot, as the function's retry or the next timer
    if committed or force:
        assert rerun.status in ("skipped", "repaired")
    else:
        assert rerun.status == "succeeded"
    manifest = consistent(export_env)
    assert json.loads(state_container(export_env).download_blob(LATEST_BLOB).readall())["manifest"] == \
        manifest["manifest"]
    assert set(slot_files(export_env, SLOT)) == reachable(export_env)  # what the killed run left is gone
    assert export().status == "skipped"


def test_a_commit_that_lost_the_race_publishes_nothing(export_env, sandbox, proxy):
    """The pointer appears after this run read it (an operator restoring one, an older version of the app):
    the run's conditional commit fails, and it publishes nothing over it."""
    hold = proxy.add("hold", method="PUT", path_contains=".manifest.json")
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(export())
        except BaseException as error:  # noqa: BLE001 - asserted below
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert hold.wait_held(60)
        state_container(export_env).upload_blob(slot_pointer_name(SLOT), b'{"written": "elsewhere"}')
    finally:
        hold.release()
        thread.join(60)
    assert isinstance(outcome[0], SlotBusyError) and "published nothing" in str(outcome[0])
    assert state_container(export_env).download_blob(slot_pointer_name(SLOT)).readall() == b'{"written": "elsewhere"}'
    assert not state_container(export_env).get_blob_client(LATEST_BLOB).exists()


# --- item 4: immutable storage ---------------------------------------------------------------------------

@pytest.fixture
def worm(azurite, export_env, monkeypatch):
    """The export container under a (sandboxed) time-based retention policy; the state beside it."""
    state = f"{export_env['EXPORT_CONTAINER']}-state"
    monkeypatch.setenv("EXPORT_STATE_CONTAINER", state)
    export_env["EXPORT_STATE_CONTAINER"] = state
    with BlobFaultProxy(azurite, protected=[export_env["EXPORT_CONTAINER"]]) as running:
        monkeypatch.setenv("EXPORT_STORAGE", running.connection_string)
        yield running


def refused(proxy: BlobFaultProxy) -> list[tuple[str, str]]:
    return [(method, target) for _, method, target, outcome in proxy.requests if outcome == 409]


@pytest.mark.parametrize("mode", ["full", "delta"])
def test_a_series_of_slots_with_force_runs_under_an_immutability_policy(export_env, sandbox, worm, mode,
                                                                        monkeypatch, caplog):
    monkeypatch.setenv("EXPORT_MODE", mode)
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    slots = [datetime(2026, 3, day, 2, tzinfo=timezone.utc) for day in (7, 8, 9)]
    for number, slot in enumerate(slots):
        sandbox.directory.random_changes(random.Random(number), 40)
        assert export(slot).status == "succeeded"
        assert export(slot).status == "skipped"
        sandbox.directory.update(sandbox.directory.id_of(number + 1), officeLocation=f"Room {number}")
        assert export(slot, force=True).status == "succeeded"  # replaces it: never by overwriting
        manifest = consistent(export_env, slot)
        assert {u["id"]: u for u in read_export(export_env, manifest["blob"])[0]} == \
            {u["id"]: u for u in tenant(sandbox)}
    assert refused(worm) == []  # nothing ever tried to overwrite, change or delete a published file
    assert not container(export_env).get_blob_client(LATEST_BLOB).exists()  # mutable records live elsewhere
    if mode == "delta":
        assert read_json(export_env, consistent(export_env, slots[-1])["manifest"])["mode"] == "delta"


def test_under_an_immutability_policy_what_a_dead_run_left_stays_and_nothing_fails(export_env, sandbox, worm,
                                                                                   caplog):
    caplog.set_level(logging.INFO, logger="graph_export")
    first = export()
    worm.add("503", count=None, method="PUT", path_contains=".current.json")  # files and manifest committed
    with pytest.raises(StorageError):
        export(force=True)
    worm.clear()
    left = set(slot_files(export_env, SLOT)) - reachable(export_env)
    assert left  # the dead run's files and manifest: storage will not let anyone delete them
    again = export()
    assert again.status == "skipped" and again.sha256 == first.sha256
    assert "storage refuses to delete it" in caplog.text
    assert set(slot_files(export_env, SLOT)) - reachable(export_env) == left
    assert [method for method, _ in refused(worm)] == ["DELETE"] * len(left)
    consistent(export_env)


def test_mutable_records_can_live_in_their_own_container(export_env, sandbox, monkeypatch):
    state = f"st-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("EXPORT_STATE_CONTAINER", state)
    export_env["EXPORT_STATE_CONTAINER"] = state
    summary = export()
    exports = ContainerClient.from_connection_string(export_env["EXPORT_STORAGE"], export_env["EXPORT_CONTAINER"])
    assert sorted(b.name for b in exports.list_blobs()) == sorted([summary.blob, summary.manifest])
    assert {b.name for b in state_container(export_env).list_blobs()} == {LATEST_BLOB, slot_pointer_name(SLOT)}
    consistent(export_env)


# --- a hostile network: a write that landed, whose answer never came back --------------------------

@pytest.mark.parametrize("write", [
    {"method": "PUT", "query_contains": "comp=blocklist"},
    {"method": "PUT", "path_contains": ".manifest.json"},
    {"method": "PUT", "path_contains": ".current.json"},
    {"method": "PUT", "path_contains": "/" + LATEST_BLOB},
    {"method": "PUT", "path_contains": "state/delta.json"},
], ids=["data commit", "manifest", "slot pointer", "latest.json", "delta state"])
def test_a_write_whose_answer_was_lost_is_recognised_as_its_own(export_env, sandbox, proxy, write, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    proxy.add("lose-answer", **write)  # the SDK sends it again, and finds its own write there
    summary = export()
    assert summary.status == "succeeded"
    assert any(outcome == "reset" for *_, outcome in proxy.requests)  # the fault did fire
    manifest = consistent(export_env)
    assert read_export(export_env, manifest["blob"])[0] == tenant(sandbox)
    assert read_json(export_env, "state/delta.json")["base_manifest"] == manifest["manifest"]
    assert export().status == "skipped"


def test_an_ids_append_whose_answer_was_lost_is_not_appended_twice(export_env, sandbox, proxy, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "1")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "0")
    proxy.add("lose-answer", method="PUT", query_contains="comp=appendblock", request=None)
    sandbox.faults.add("graph", from_page=3, status=503)
    with pytest.raises(GraphError):
        export()
    sandbox.faults.clear()
    resumed = export()  # from the checkpoint after page 2, with the digests it counted, each once
    assert resumed.status == "succeeded" and read_json(export_env, resumed.manifest)["resumed"] is True
    assert read_export(export_env, resumed.blob)[0] == tenant(sandbox)


@pytest.mark.parametrize("pointer", [
    b"not json", b"[]", b'{"format": "graph-users-export-slot/1"}',
    "another slot's", "a manifest of another slot",
])
def test_a_slot_pointer_left_corrupt_is_replaced_by_the_next_export(export_env, sandbox, pointer, caplog):
    first = export()
    other = export(LATER)
    name = slot_pointer_name(SLOT)
    if pointer == "another slot's":
        pointer = state_container(export_env).download_blob(slot_pointer_name(LATER)).readall()
    elif pointer == "a manifest of another slot":
        document = json.loads(state_container(export_env).download_blob(name).readall())
        pointer = json.dumps({**document, "manifest": other.manifest}).encode()
    state_container(export_env).upload_blob(name, pointer, overwrite=True)
    again = export()
    assert again.status == "succeeded" and again.manifest not in (first.manifest, other.manifest)
    assert "exporting" in caplog.text and "again" in caplog.text
    manifest = consistent(export_env)
    assert read_export(export_env, manifest["blob"])[0] == tenant(sandbox)
    # the export the damaged pointer stood for is kept, as the one the new export supersedes
    assert manifest["supersedes"] == first.manifest and read_json(export_env, first.manifest)["sha256"] == first.sha256
    assert read_export(export_env, first.blob)[1] == first.sha256
    consistent(export_env, LATER)  # and so is the other slot's


def test_a_clean_up_that_fails_never_fails_a_published_run(export_env, sandbox, proxy, caplog):
    hold = proxy.add("hold", method="PUT", path_contains=".current.json")  # killed right before its commit
    process = cli()
    try:
        assert hold.wait_held(60)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        hold.release()
    free_the_slot(export_env)
    left = set(slot_files(export_env, SLOT))
    assert left  # the dead run's files and manifest
    proxy.add("503", count=None, method="DELETE")
    summary = export()
    assert summary.status == "succeeded"
    assert "cleaning up after it failed" in caplog.text and "next run tries again" in caplog.text
    consistent(export_env)
    proxy.clear()
    free_the_slot(export_env)  # the lock could not be removed either: its lease would run out within 15 s
    assert export().status == "repaired" and set(slot_files(export_env, SLOT)) == reachable(export_env)
