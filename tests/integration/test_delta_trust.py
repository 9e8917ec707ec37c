"""Delta mode trusts its inputs only as far as they check out (issue 19, items 6 to 9).

A delta slot is made from three things read back from storage: the delta state (state/delta.json),
the manifest it names and that manifest's snapshot. Any of them can be damaged, restored from a
backup, edited by hand or belong to someone else. Whatever is wrong with them, a slot must either
publish exactly what a full export of the moment would (falling back to one, with the reason
logged) or fail; it must never publish a wrong snapshot with exit 0. And nothing wrong with them
may stick the tenant: the slot after a fallback is a delta slot again. The drift measurement of a
full export is a measurement only: whatever stops it, the export it measures stands.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import struct
import zlib
from datetime import datetime

import pytest

from graph_export.cli import main
from graph_export.clients import app_clients
from graph_export.csvfile import read_cell
from graph_export.graph import latest_delta_url
from graph_export.naming import DELTA_STATE_BLOB, run_names
from graph_export.records import iso
from sandbox.blobproxy import BlobFaultProxy

from .helpers import (
    container,
    published,
    published_manifest,
    read_bytes,
    read_json,
    state_container,
)
from .test_delta import by_id, export, slot, tenant_now

SANDBOX_USERS = 1_500
#: The reason every fallback logs starts this way (export.py), followed by delta.py's reason.
FALLBACK = "Delta mode: exporting slot {} in full, as "


@pytest.fixture
def delta_env(export_env, monkeypatch):  # as test_delta's
    monkeypatch.setenv("EXPORT_MODE", "delta")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    return export_env


@pytest.fixture
def blob_proxy(azurite, delta_env, monkeypatch):
    with BlobFaultProxy(azurite) as proxy:
        monkeypatch.setenv("EXPORT_STORAGE", proxy.connection_string)
        yield proxy


# --- reading and tampering with what is stored ------------------------------------------------------

def delta_state(env: dict) -> dict:
    return json.loads(state_container(env).download_blob(DELTA_STATE_BLOB).readall())


def write_state(env: dict, state: dict) -> None:
    state_container(env).upload_blob(DELTA_STATE_BLOB, json.dumps(state).encode(), overwrite=True)


def base_blob(env: dict) -> str:
    """The data blob the delta state's base manifest names: what the next delta slot reads."""
    return read_json(env, delta_state(env)["base_manifest"])["blob"]


def overwrite_keeping_metadata(env: dict, name: str, data: bytes) -> None:
    """Replace a blob's bytes; its metadata (the sha256 the export recorded) stays as it was."""
    blob = container(env).get_blob_client(name)
    metadata = blob.get_blob_properties().metadata
    blob.upload_blob(data, overwrite=True, metadata=metadata)


def gzip_of_size(content: bytes, size: int) -> bytes:
    """Valid gzip of ``content`` that is exactly ``size`` bytes long (padded with a header comment)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(content) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(content), len(content) & 0xFFFFFFFF)
    pad = size - (10 + 1 + len(body) + len(trailer))
    assert pad >= 0, "the altered content does not compress below the original's size"
    data = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x02\xff" + b"x" * pad + b"\x00" + body + trailer  # FCOMMENT
    assert len(data) == size and gzip.decompress(data) == content
    return data


def same_size_other_user(real: bytes) -> bytes:
    """The real snapshot with one user's displayName changed, recompressed to the very same size."""
    lines = gzip.decompress(real).split(b"\n")
    user = json.loads(lines[10])
    lines[10] = json.dumps({**user, "displayName": "Not Who They Are"}, ensure_ascii=False,
                           separators=(",", ":")).encode()
    altered = gzip_of_size(b"\n".join(lines), len(real))
    assert altered != real
    return altered


def truncated_mid_line(real: bytes) -> bytes:
    text = gzip.decompress(real)
    cut = text.index(b"\n", len(text) // 2) + 25  # 25 bytes into a line
    assert text[cut - 1:cut] != b"\n"
    return gzip.compress(text[:cut])


CORRUPTIONS = {
    "hello": lambda real: gzip.compress(b"hello\n"),
    "a JSON array": lambda real: gzip.compress(b"[1,2,3]\n"),
    "truncated mid-line": truncated_mid_line,
    "same size, other bytes": same_size_other_user,
}


def cli(capsys, n: int) -> tuple[int, dict]:
    """``python -m graph_export run --slot <slot n>``: the exit code and the summary it printed."""
    app_clients.cache_clear()
    capsys.readouterr()
    code = main(["run", "--slot", iso(slot(n)), "--quiet"])
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if code == 0 else {"error": out}


def fallback_slot(env: dict, sandbox, caplog, capsys, n: int, reason: str) -> dict:
    """Slot ``n`` through the CLI: exit 0, a full export with ``reason`` logged, the tenant exactly."""
    caplog.clear()
    caplog.set_level(logging.INFO)
    code, summary = cli(capsys, n)
    assert code == 0, summary
    assert summary["status"] == "succeeded" and summary["mode"] == "full", summary
    manifest, users = published(env)
    assert manifest["mode"] == "full" and manifest["slot"] == iso(slot(n))
    assert by_id(users) == tenant_now(sandbox)
    assert FALLBACK.format(iso(slot(n))) + reason in caplog.text, caplog.text
    return manifest


def delta_again(env: dict, sandbox, n: int) -> None:
    """The slot after a fallback is a delta slot again, and right: nothing stuck."""
    sandbox.directory.update(sandbox.directory.id_of(n + 100), jobTitle=f"After the fallback {n}")
    assert export(n).mode == "delta"
    assert by_id(published(env)[1]) == tenant_now(sandbox)


# --- item 6: a corrupted base snapshot -------------------------------------------------------------

@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_base_snapshot_means_a_logged_full_export_and_then_delta_again(
        delta_env, sandbox, caplog, capsys, corruption):
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Changed since slot 0")
    name = base_blob(delta_env)
    overwrite_keeping_metadata(delta_env, name, CORRUPTIONS[corruption](read_bytes(delta_env, name)))
    manifest = fallback_slot(delta_env, sandbox, caplog, capsys, 1, "the base snapshot")
    assert manifest["drift"] is None  # nothing trustworthy to measure against
    delta_again(delta_env, sandbox, 2)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_the_periodic_full_sync_with_a_corrupted_base_succeeds_without_drift(
        delta_env, sandbox, caplog, capsys, monkeypatch, corruption):
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Changed since slot 0")
    name = base_blob(delta_env)
    overwrite_keeping_metadata(delta_env, name, CORRUPTIONS[corruption](read_bytes(delta_env, name)))
    monkeypatch.setenv("FULL_SYNC_EVERY_DAYS", "0")
    manifest = fallback_slot(delta_env, sandbox, caplog, capsys, 1, "the delta link is")
    assert "FULL_SYNC_EVERY_DAYS" in caplog.text
    assert manifest["drift"] is None
    assert "Drift not measured: the base snapshot" in caplog.text, caplog.text
    monkeypatch.delenv("FULL_SYNC_EVERY_DAYS")
    delta_again(delta_env, sandbox, 2)


# --- item 7: the drift measurement never fails the export it measures ------------------------------

def test_storage_failing_every_read_of_the_base_during_the_full_sync_leaves_drift_unmeasured(
        delta_env, sandbox, blob_proxy, caplog, monkeypatch):
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Changed since slot 0")
    base = base_blob(delta_env).rsplit("/", 1)[1]
    fault = blob_proxy.add("503", method="GET", path_contains=base, count=None)
    monkeypatch.setenv("FULL_SYNC_EVERY_DAYS", "0")
    caplog.set_level(logging.INFO)
    summary = export(1)  # once: no retry needed
    assert summary.status == "succeeded" and summary.mode == "full"
    manifest, users = published(delta_env)
    assert manifest["slot"] == iso(slot(1)) and manifest["drift"] is None
    assert by_id(users) == tenant_now(sandbox)
    assert fault.fired > 0  # the measurement did try to read the base
    assert "Drift not measured: " in caplog.text and base in caplog.text, caplog.text
    blob_proxy.clear()
    monkeypatch.delenv("FULL_SYNC_EVERY_DAYS")
    delta_again(delta_env, sandbox, 2)


# --- item 8: the delta state is trusted only as far as it checks out -------------------------------

OTHER_TENANT = "0badbad0-0000-4000-8000-000000000000"


def foreign_copy(env: dict, manifest: dict, **changes) -> str:
    """A copy of ``manifest`` under a name of its own, with ``changes``, naming a snapshot of another
    tenant (its own users, its own blob, consistent sizes and digest): returns the copy's name."""
    names = run_names(datetime.fromisoformat(manifest["slot"].replace("Z", "+00:00")), "0f0f0f0f0f0f")
    content = b"".join(json.dumps({**user, "displayName": f"Stranger {i}"}, ensure_ascii=False,
                                  separators=(",", ":")).encode() + b"\n"
                       for i, user in enumerate(json.loads(line) for line in
                                                gzip.decompress(read_bytes(env, manifest["blob"])).splitlines()[:5]))
    data = gzip.compress(content)
    container(env).upload_blob(names.jsonl, data)
    copy = {**manifest, "manifest": names.manifest, "blob": names.jsonl, "users": 5, "bytes": len(data),
            "uncompressed_bytes": len(content), "sha256": hashlib.sha256(data).hexdigest(), **changes}
    container(env).upload_blob(names.manifest, json.dumps(copy).encode())
    return names.manifest


def older_base(env, state, m0, m1):
    """After slots 0 and 1: the state names slot 0's snapshot, but keeps slot 1's link."""
    return {**state, "base_manifest": m0["manifest"], "base_slot": m0["slot"]}


def older_base_and_time(env, state, m0, m1):
    """The same, with the link's time set back to when slot 0 was finished (as a restore could)."""
    return {**state, "base_manifest": m0["manifest"], "base_slot": m0["slot"], "taken": m0["finished"]}


def latest_request(env, state, m0, m1):
    return {**state, "delta_link": latest_delta_url(env["GRAPH_ENDPOINT"], tuple(state["properties"]))}


def not_users_delta(env, state, m0, m1):
    return {**state, "delta_link": f"{env['GRAPH_ENDPOINT']}/v1.0/users?$deltatoken=x"}


def other_tenant(env, state, m0, m1):
    return {**state, "base_manifest": foreign_copy(env, m1, tenant_id=OTHER_TENANT)}


def other_container(env, state, m0, m1):
    return {**state, "base_manifest": foreign_copy(env, m1, container="another-container")}


def base_slot_disagrees(env, state, m0, m1):
    return {**state, "base_slot": m0["slot"]}


TAMPERED = {
    "(a) an older slot's manifest": (older_base, "the delta state"),
    "(a) an older slot's manifest and time": (older_base_and_time, "the delta state"),
    "(b) the $deltatoken=latest request": (latest_request, "the saved delta link holds no delta token"),
    "(c) not a users/delta link": (not_users_delta, "the saved delta link is not a users/delta link"),
    "(d) another tenant's manifest": (other_tenant, "the delta state"),
    "(d) another container's manifest": (other_container, "the delta state"),
    "(e) a base_slot that is not the manifest's": (base_slot_disagrees, "the delta state"),
}


@pytest.mark.parametrize("tampering", list(TAMPERED))
def test_a_delta_state_that_does_not_check_out_means_a_logged_full_export_that_misses_nothing(
        delta_env, sandbox, caplog, capsys, tampering):
    d = sandbox.directory
    export(0)
    between = [d.id_of(10), d.add(displayName="Hired after slot 0")]
    d.update(between[0], jobTitle="Changed between slots 0 and 1")
    assert export(1).mode == "delta"
    d.update(d.id_of(11), jobTitle="Changed after slot 1")
    gone = d.id_of(12)
    d.hard_delete(gone)
    m0, m1 = published_manifest(delta_env, slot(0)), published_manifest(delta_env, slot(1))
    tamper, reason = TAMPERED[tampering]
    write_state(delta_env, tamper(delta_env, delta_state(delta_env), m0, m1))

    fallback_slot(delta_env, sandbox, caplog, capsys, 2, reason)
    users = by_id(published(delta_env)[1])
    assert users[between[0]]["jobTitle"] == "Changed between slots 0 and 1" and between[1] in users
    assert users[d.id_of(11)]["jobTitle"] == "Changed after slot 1" and gone not in users
    assert "deltatoken=" not in caplog.text.lower()  # a link holds state: never logged
    delta_again(delta_env, sandbox, 3)


def test_an_older_state_restored_whole_still_checks_out_and_replays_every_change_since(delta_env, sandbox):
    """Not too strict either: slot 0's own state (from a backup) after slot 1 is a good base."""
    d = sandbox.directory
    export(0)
    saved = delta_state(delta_env)
    d.update(d.id_of(10), jobTitle="Changed between slots 0 and 1")
    export(1)
    d.update(d.id_of(11), jobTitle="Changed after slot 1")
    write_state(delta_env, saved)
    assert export(2).mode == "delta"
    manifest, users = published(delta_env)
    assert manifest["delta"]["base_manifest"] == saved["base_manifest"]
    assert by_id(users) == tenant_now(sandbox)


def test_a_base_manifest_rewritten_after_its_commit_is_not_a_base(delta_env, sandbox, caplog, capsys):
    """The manifest the state names, edited in place to name another (self-consistent) snapshot."""
    export(0)
    sandbox.directory.update(sandbox.directory.id_of(3), jobTitle="Changed since slot 0")
    m0 = published_manifest(delta_env, slot(0))
    foreign = read_json(delta_env, foreign_copy(delta_env, m0))
    container(delta_env).upload_blob(m0["manifest"], json.dumps({**foreign, "manifest": m0["manifest"]}).encode(),
                                     overwrite=True)
    fallback_slot(delta_env, sandbox, caplog, capsys, 1, "the delta state")
    assert not any(u["displayName"].startswith("Stranger") for u in published(delta_env)[1])
    delta_again(delta_env, sandbox, 2)


def test_a_delta_state_claiming_a_later_base_slot_does_not_keep_the_slots_after_it_in_full(
        delta_env, sandbox, caplog, capsys):
    export(0)
    write_state(delta_env, {**delta_state(delta_env), "base_slot": iso(slot(30))})  # (e), the other way
    fallback_slot(delta_env, sandbox, caplog, capsys, 1, "the delta state")
    delta_again(delta_env, sandbox, 2)


# --- item 9: a lone surrogate survives delta slots -------------------------------------------------

def test_a_lone_surrogate_survives_delta_slots_exactly_and_the_csv_holds_the_replacement(
        delta_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    d = sandbox.directory
    export(0)
    changed = d.id_of(20)
    d.update(changed, displayName="Ann \ud83d")  # served as the JSON text "Ann \ud83d"
    new = d.add(displayName="\udc00 Bob")

    def check(n: int) -> None:
        manifest = published_manifest(delta_env, slot(n))
        assert manifest["mode"] == "delta"
        lines = gzip.decompress(read_bytes(delta_env, manifest["blob"])).split(b"\n")
        assert lines[-1] == b""
        [ann] = [line for line in lines if changed.encode() in line]
        [bob] = [line for line in lines if new.encode() in line]
        assert b'"displayName":"Ann \\ud83d"' in ann and b'"displayName":"\\udc00 Bob"' in bob
        assert by_id(json.loads(line) for line in lines[:-1]) == tenant_now(sandbox)
        properties = manifest["properties"]
        text = gzip.decompress(read_bytes(delta_env, manifest["csv"]["blob"])).decode("utf-8")
        rows = {row[0]: row for row in csv.reader(io.StringIO(text, newline=""))}
        column = properties.index("displayName")
        assert read_cell(rows[changed][column]) == "Ann \ufffd" and read_cell(rows[new][column]) == "\ufffd Bob"

    assert export(1).mode == "delta"  # both arrive as changes
    check(1)
    d.update(changed, jobTitle="Still Ann")  # merged into a base line that holds the escape
    assert export(2).mode == "delta"  # the new user's line is copied from the base as it is
    check(2)
