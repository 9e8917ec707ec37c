"""EXPORT_FORMATS=jsonl,csv: one pass over Graph, two files with the same users, each in the manifest."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from datetime import datetime, timezone

import pytest

from graph_export import GraphError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.csvfile import cell
from graph_export.naming import LATEST_BLOB

from .helpers import blob_names, published_manifest, read_bytes, read_export, read_json, slot_files

SANDBOX_USERS = 6_000  # 7 pages of 999
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


@pytest.fixture
def csv_env(export_env, monkeypatch):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    return export_env


def csv_rows(env: dict, name: str) -> tuple[list[list[str]], str]:
    data = read_bytes(env, name)
    return list(csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8"), newline=""))), \
        hashlib.sha256(data).hexdigest()


def csv_of(env: dict, slot: datetime) -> str:
    """The CSV copy of the slot's export, as its manifest names it."""
    return published_manifest(env, slot)["csv"]["blob"]


def as_rows(users: list[dict], properties: tuple[str, ...]) -> list[list[str]]:
    return [[cell(u.get(p)) for p in properties] for u in users]


def test_one_pass_over_graph_publishes_both_files_with_the_same_users(csv_env, sandbox):
    summary = run_export(load_settings(), SLOT)
    properties = load_settings().user_properties
    manifest = read_json(csv_env, summary.manifest)
    users, _ = read_export(csv_env, manifest["blob"])
    rows, sha = csv_rows(csv_env, csv_of(csv_env, SLOT))
    assert rows[0] == list(properties) and rows[1:] == as_rows(users, properties)
    assert len(rows) - 1 == manifest["users"] == sandbox.users
    assert manifest["csv"] == {"blob": csv_of(csv_env, SLOT), "bytes": len(read_bytes(csv_env, csv_of(csv_env, SLOT))),
                               "uncompressed_bytes": manifest["csv"]["uncompressed_bytes"], "sha256": sha}
    pages = [r for r in sandbox.requests.entries("graph") if r.status == 200 and r.page is not None]
    assert len(pages) == 7  # one pass, never two
    assert any("Zoë" in r[2] for r in rows[1:])  # non-ASCII survives (UTF-8)


def test_excel_gets_a_byte_order_mark(csv_env, monkeypatch):
    monkeypatch.setenv("CSV_EXCEL", "true")
    run_export(load_settings(), SLOT)
    assert gzip.decompress(read_bytes(csv_env, csv_of(csv_env, SLOT))).startswith("\ufeffid,".encode())


def test_a_hostile_display_name_is_text_in_the_csv_and_intact_in_json_lines(csv_env, sandbox):
    uid = sandbox.directory.id_of(3)
    sandbox.directory.update(uid, displayName='=HYPERLINK("http://evil.example","click")')
    summary = run_export(load_settings(), SLOT)
    users, _ = read_export(csv_env, summary.blob)
    rows, _ = csv_rows(csv_env, csv_of(csv_env, SLOT))
    row = next(r for r in rows if r[0] == uid)
    assert row[2] == '\'=HYPERLINK("http://evil.example","click")'
    assert next(u for u in users if u["id"] == uid)["displayName"] == '=HYPERLINK("http://evil.example","click")'


def test_a_failed_run_publishes_neither_file_and_the_resumed_one_both(csv_env, sandbox, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_EVERY_PAGES", "2")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "0")
    sandbox.faults.add("graph", from_page=5, status=503)
    with pytest.raises(GraphError):
        run_export(load_settings(), SLOT)
    assert slot_files(csv_env, SLOT) == [] and LATEST_BLOB not in blob_names(csv_env)
    sandbox.faults.clear()
    app_clients.cache_clear()
    sandbox.requests.clear()
    summary = run_export(load_settings(), SLOT)
    manifest = read_json(csv_env, summary.manifest)
    assert manifest["resumed"] is True
    assert [r.page for r in sandbox.requests.entries("graph") if r.status == 200 and r.page is not None][0] == 5  # from the checkpoint
    users, _ = read_export(csv_env, summary.blob)
    rows, sha = csv_rows(csv_env, csv_of(csv_env, SLOT))
    properties = load_settings().user_properties
    assert rows[0] == list(properties) and rows[1:] == as_rows(users, properties)  # one header, every row once
    assert users == list(sandbox.expected_users(properties)) and manifest["csv"]["sha256"] == sha


def test_in_delta_mode_the_csv_is_a_complete_snapshot_too(csv_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    run_export(load_settings(), SLOT)
    sandbox.directory.update(sandbox.directory.id_of(8), jobTitle="Changed")
    sandbox.directory.hard_delete(sandbox.directory.id_of(9))
    app_clients.cache_clear()
    later = datetime(2026, 3, 8, 2, tzinfo=timezone.utc)
    summary = run_export(load_settings(), later)
    assert summary.mode == "delta"
    users, _ = read_export(csv_env, summary.blob)
    rows, sha = csv_rows(csv_env, csv_of(csv_env, later))
    properties = load_settings().user_properties
    assert rows[1:] == as_rows(users, properties) and len(rows) - 1 == sandbox.users
    assert read_json(csv_env, summary.manifest)["csv"]["sha256"] == sha
    assert json.dumps(users)  # and the snapshot is the tenant
    assert {u["id"]: u for u in users} == {u["id"]: u for u in sandbox.expected_users(properties)}
