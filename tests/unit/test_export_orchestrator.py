"""run_export end to end in memory: storage, Graph and sign-in at their far ends, everything of ours real.

The clients are injected (``clients=MemoryClients``): the slot's lease, checkpoints, commit, publish,
delta mode and the per-run retry budget run as in production, against the in-memory account of
``memory_storage`` (held to Azurite's answers by tests/storage) and the in-memory Graph of
``memory_graph`` behind the export's own HTTP transport. No sockets (tests/unit/conftest.py refuses them);
the whole file takes seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from azure.storage.blob import BlobLeaseClient

from graph_export import naming
from graph_export.clients import app_clients
from graph_export.errors import GraphError, SlotBusyError
from graph_export.export import run_export
from graph_export.naming import DELTA_STATE_BLOB, LATEST_BLOB, slot_pointer_name, slot_prefix
from graph_export.records import SlotPointer
from tests.unit.memory_clients import MemoryClients
from tests.unit.memory_graph import (
    MemoryDirectory,
    cut_short,
    make_users,
    redirected,
    reset,
    throttled,
    unavailable,
    users_page,
)
from tests.unit.memory_storage import Write
from tests.unit.orchestration import PROPERTIES, SLOT0, SLOT1, SLOT2, USERS, blob, document, memory, settings


def exported_users(clients: MemoryClients, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(blob(clients, name)).splitlines()]


def names(clients: MemoryClients) -> set[str]:
    return {name for _, name in clients.storage.contents()}


def under(clients: MemoryClients, prefix: str) -> dict[str, bytes]:
    return {name: data for (_, name), data in clients.storage.contents().items() if name.startswith(prefix)}


def requested_pages(clients: MemoryClients, since: int = 0) -> list[tuple[str, int]]:
    return [(r.kind, r.page) for r in clients.graph.requests[since:] if r.kind != "count"]


# -- a full export ---------------------------------------------------------------------------------------------


def test_a_full_export_publishes_its_file_manifest_pointer_and_latest_and_a_second_run_skips():
    clients = memory()
    summary = run_export(clients.settings, SLOT1, clients=clients)

    assert (summary.status, summary.users, summary.pages, summary.retries) == ("succeeded", USERS, 5, 0)
    manifest, data = document(clients, summary.manifest), blob(clients, summary.blob)
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == summary.sha256
    assert manifest["bytes"] == len(data) and manifest["users"] == USERS and manifest["resumed"] is False
    assert exported_users(clients, summary.blob) == clients.graph.directory.listing(PROPERTIES)
    pointer = SlotPointer.parse(document(clients, slot_pointer_name(SLOT1)))
    current = {name: clients.container().get_blob_client(name).get_blob_properties().etag
               for name in (summary.blob, summary.manifest)}
    assert (pointer.manifest, pointer.etags) == (summary.manifest, current)
    assert document(clients, LATEST_BLOB) == {"slot": f"{SLOT1:%Y-%m-%dT%H:%M:%SZ}", "blob": summary.blob,
                                              "manifest": summary.manifest, "users": USERS,
                                              "sha256": summary.sha256, "finished": manifest["finished"]}
    # the lock, the checkpoint and the saved ids are gone: exactly what consumers read is left
    assert names(clients) == {summary.blob, summary.manifest, slot_pointer_name(SLOT1), LATEST_BLOB}
    assert "?" not in summary.url and summary.url.endswith(summary.blob)

    published, asked = clients.storage.contents(), len(clients.graph.requests)
    again = run_export(clients.settings, SLOT1, clients=clients)
    assert (again.status, again.manifest, again.sha256) == ("skipped", summary.manifest, summary.sha256)
    assert clients.storage.contents() == published and len(clients.graph.requests) == asked


def test_run_export_with_clients_never_builds_the_warm_ones():
    app_clients.cache_clear()
    before = app_clients.cache_info()
    clients = memory()
    run_export(clients.settings, SLOT1, clients=clients)
    run_export(clients.settings, SLOT1, clients=clients, force=True)
    assert app_clients.cache_info() == before


def test_force_replaces_the_export_and_latest_moves_only_once_the_new_manifest_is_complete():
    clients = memory()
    first = run_export(clients.settings, SLOT1, clients=clients)
    kept = under(clients, slot_prefix(SLOT1))
    clients.graph.directory.update(make_users(1)[0]["id"], displayName="Renamed")
    seen: list[tuple[str, bool]] = []

    def latest_names_a_complete_export(write: Write) -> None:  # noted, not asserted: it runs inside the export
        if write.name == LATEST_BLOB:
            named = document(clients, LATEST_BLOB)["manifest"]
            manifest = document(clients, named) if named in names(clients) else None
            seen.append((named, manifest is not None and manifest["blob"] in names(clients) and
                         hashlib.sha256(blob(clients, manifest["blob"])).hexdigest() == manifest["sha256"]))

    clients.storage.on_write(latest_names_a_complete_export)
    since = len(clients.storage.journal)
    second = run_export(clients.settings, SLOT1, clients=clients, force=True)

    assert second.status == "succeeded" and second.manifest != first.manifest
    assert seen == [(second.manifest, True)]  # written once, naming the new export, complete by then
    order = [(w.name, w.op) for w in clients.storage.journal[since:]]
    assert order.index((second.manifest, "put")) < order.index((slot_pointer_name(SLOT1), "put")) \
        < order.index((LATEST_BLOB, "put"))
    assert document(clients, second.manifest)["supersedes"] == first.manifest
    assert exported_users(clients, second.blob)[0]["displayName"] == "Renamed"
    assert {n: d for n, d in under(clients, slot_prefix(SLOT1)).items() if n in kept} == kept  # superseded, kept


# -- failures and resuming --------------------------------------------------------------------------------------


def test_a_graph_failure_midway_leaves_what_was_published_and_the_next_run_resumes_from_the_checkpoint():
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_PAGE="2"))
    run_export(clients.settings, SLOT0, clients=clients)
    published = {**under(clients, slot_prefix(SLOT0)), LATEST_BLOB: blob(clients, LATEST_BLOB)}
    clients.graph.script(unavailable(None, when=users_page(4)))
    before = len(clients.graph.requests)

    with pytest.raises(GraphError, match="page 4 with HTTP 503") as failed:
        run_export(clients.settings, SLOT1, clients=clients)

    assert "GRAPH_MAX_RETRIES_PER_PAGE" in str(failed.value)
    assert requested_pages(clients, before) == [("users", n) for n in (1, 2, 3, 4, 4, 4)]  # two retries of page 4
    assert {**under(clients, slot_prefix(SLOT0)), LATEST_BLOB: blob(clients, LATEST_BLOB)} == published
    assert under(clients, slot_prefix(SLOT1)) == {}  # staged blocks only: nothing a reader can see
    assert slot_pointer_name(SLOT1) not in names(clients)
    assert document(clients, naming.checkpoint_blob_name(SLOT1))["pages"] == 3

    clients.graph.faults.clear()
    since = len(clients.graph.requests)
    resumed = run_export(clients.settings, SLOT1, clients=clients)

    assert resumed.status == "succeeded" and document(clients, resumed.manifest)["resumed"] is True
    assert requested_pages(clients, since) == [("users", 4), ("users", 5)]  # pages 1-3 were not read again
    assert exported_users(clients, resumed.blob) == clients.graph.directory.listing(PROPERTIES)
    uninterrupted = memory()
    whole = run_export(uninterrupted.settings, SLOT1, clients=uninterrupted)
    assert blob(clients, resumed.blob) == blob(uninterrupted, whole.blob)  # byte for byte, segments and all
    assert naming.checkpoint_blob_name(SLOT1) not in names(clients)


@pytest.mark.parametrize("fault, says", [
    # A status retried to the end hands its last answer back (raise_on_status=False), which names both limits;
    (throttled, "page 2 with HTTP 429 .*GRAPH_MAX_RETRIES_PER_RUN"),
    # a connection that fails every time has no answer to hand back: then the budget itself is named.
    (reset, "page 2 after retries \\(the run's retry budget is spent\\)"),
], ids=["throttled", "reset"])
def test_the_retry_budget_is_the_runs_own_and_a_second_run_in_the_process_has_all_of_it(fault, says):
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_RUN="5", GRAPH_MAX_RETRIES_PER_PAGE="8"))
    clients.graph.script(fault(10, when=users_page(2)))

    with pytest.raises(GraphError, match=says):
        run_export(clients.settings, SLOT1, clients=clients)
    assert (clients.budgets[0].used, clients.budgets[0].exhausted) == (5, True)
    # the first try and the five retries the run had, where the page alone would have had eight
    assert requested_pages(clients).count(("users", 2)) == 6

    second = run_export(clients.settings, SLOT1, clients=clients)  # the same process, the same clients

    assert (second.status, second.retries, second.users) == ("succeeded", 4, USERS)
    assert clients.budgets[1] is not clients.budgets[0] and clients.budgets[1].used == 4
    assert clients.budgets[0].used == 5  # nothing shared was reset either
    assert clients.graph.faults[0].used == 10


def test_a_page_cut_short_is_asked_for_again_and_the_export_is_complete():
    clients = memory()
    clients.graph.script(cut_short(when=users_page(2)))
    summary = run_export(clients.settings, SLOT1, clients=clients)
    assert summary.status == "succeeded" and requested_pages(clients).count(("users", 2)) == 2
    assert exported_users(clients, summary.blob) == clients.graph.directory.listing(PROPERTIES)


def test_a_redirect_is_refused_and_nothing_is_published_nor_any_credential_shown(caplog):
    clients = memory()
    clients.graph.script(redirected("https://elsewhere.invalid/v1.0/users", when=users_page(3)))
    with pytest.raises(GraphError, match="page 3 with HTTP 302, a redirect to https://elsewhere.invalid") as failed:
        run_export(clients.settings, SLOT1, clients=clients)
    assert not {LATEST_BLOB, slot_pointer_name(SLOT1)} & names(clients) and under(clients, "users/") == {}
    assert all(r.url.startswith(clients.graph.endpoint) for r in clients.graph.requests)
    shown = caplog.text + str(failed.value)
    assert clients.sign_in.credential.reveal() not in shown
    assert clients.sign_in.issued and not any(token in shown for token in clients.sign_in.issued)
    skiptokens = [r.url.split("$skiptoken=")[1] for r in clients.graph.requests if "$skiptoken=" in r.url]
    assert skiptokens and not any(token in shown for token in skiptokens)


# -- delta mode ----------------------------------------------------------------------------------------------


ADDED, UPDATED, REMOVED = make_users(1, start=USERS)[0], make_users(6)[5]["id"], make_users(8)[7]["id"]


def change_the_directory(directory: MemoryDirectory) -> None:
    directory.add(ADDED)
    directory.update(UPDATED, displayName="Changed", department="Finance")
    directory.remove(REMOVED)


def test_delta_mode_makes_the_next_snapshot_from_the_changes_since_the_last():
    clients = memory(settings(EXPORT_MODE="delta"))
    first = run_export(clients.settings, SLOT1, clients=clients)
    assert (first.status, document(clients, first.manifest)["mode"]) == ("succeeded", "full")
    assert document(clients, DELTA_STATE_BLOB)["base_manifest"] == first.manifest
    change_the_directory(clients.graph.directory)
    since = len(clients.graph.requests)

    second = run_export(clients.settings, SLOT2, clients=clients)

    manifest = document(clients, second.manifest)
    assert (second.status, manifest["mode"], second.users) == ("succeeded", "delta", USERS)
    assert {k: manifest["delta"][k] for k in ("base_manifest", "added", "updated", "removed", "change_records")} == {
        "base_manifest": first.manifest, "added": 1, "updated": 1, "removed": 1, "change_records": 3}
    assert exported_users(clients, second.blob) == clients.graph.directory.listing(PROPERTIES)
    assert {kind for kind, _ in requested_pages(clients, since)} == {"delta"}  # no /users page was read
    changes = [json.loads(line) for line in gzip.decompress(blob(clients, manifest["delta"]["changes_blob"])).splitlines()]
    assert [c["id"] for c in changes] == [ADDED["id"], UPDATED, REMOVED] and "@removed" in changes[2]
    assert document(clients, DELTA_STATE_BLOB)["base_manifest"] == second.manifest


@pytest.mark.parametrize("damage", ["missing", "not JSON", "naming a manifest that does not exist"])
def test_a_delta_state_that_is_missing_or_damaged_means_a_full_export(damage):
    clients = memory(settings(EXPORT_MODE="delta"))
    run_export(clients.settings, SLOT1, clients=clients)
    state = clients.container().get_blob_client(DELTA_STATE_BLOB)
    if damage == "missing":
        state.delete_blob()
    elif damage == "not JSON":
        state.upload_blob(b'{"format": "graph-users-delta-state/', overwrite=True)
    else:
        held = {**document(clients, DELTA_STATE_BLOB), "base_manifest": naming.run_names(SLOT1, "0" * 12).manifest}
        state.upload_blob(json.dumps(held).encode(), overwrite=True)
    change_the_directory(clients.graph.directory)
    since = len(clients.graph.requests)

    second = run_export(clients.settings, SLOT2, clients=clients)

    assert (second.status, document(clients, second.manifest)["mode"]) == ("succeeded", "full")
    assert exported_users(clients, second.blob) == clients.graph.directory.listing(PROPERTIES)
    assert ("users", 5) in requested_pages(clients, since)  # every page of /users was read
    assert document(clients, DELTA_STATE_BLOB)["base_manifest"] == second.manifest  # and delta mode can go on


# -- two runs of one slot ------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration, says", [(15, "Another run is exporting slot"), (-1, "locked by an infinite lease")])
def test_a_slot_whose_lock_another_holds_is_busy_and_nothing_is_written(duration, says):
    clients = memory()
    lock = clients.state_container().get_blob_client(naming.lock_blob_name(SLOT1))
    lock.upload_blob(b"")
    BlobLeaseClient(lock).acquire(lease_duration=duration)
    before, changes = clients.storage.contents(), len(clients.storage.journal)

    with pytest.raises(SlotBusyError, match=says):
        run_export(clients.settings, SLOT1, clients=clients)

    assert clients.storage.contents() == before and len(clients.storage.journal) == changes
    assert clients.graph.requests == [] and clients.sign_in.reads == 0  # stopped before signing in


def test_a_pointer_another_run_commits_meanwhile_makes_this_run_busy_and_latest_stays_as_it_was():
    clients = memory()
    run_export(clients.settings, SLOT0, clients=clients)
    latest = blob(clients, LATEST_BLOB)
    other = naming.run_names(SLOT1, "0123456789ab")
    theirs = json.dumps(SlotPointer(slot=SLOT1, run=other.run, manifest=other.manifest, etags={other.manifest: '"0x1"'},
                                    published=datetime.now(timezone.utc)).to_document()).encode()

    def another_run_commits(write: Write) -> None:  # after this run stood the slot, before its commit
        if write.name.startswith(slot_prefix(SLOT1)) and write.name.endswith(".manifest.json"):
            clients.state_container().upload_blob(slot_pointer_name(SLOT1), theirs, overwrite=True)

    clients.storage.on_write(another_run_commits)
    with pytest.raises(SlotBusyError, match="Another run committed slot"):
        run_export(clients.settings, SLOT1, clients=clients)

    assert blob(clients, LATEST_BLOB) == latest
    assert blob(clients, slot_pointer_name(SLOT1)) == theirs
