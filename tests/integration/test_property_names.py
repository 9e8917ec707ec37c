"""USER_PROPERTIES in another case than Graph's (issue 19, item 5): everything published uses Graph's spelling.

Graph matches ``$select`` case-insensitively and answers ``department`` when asked for ``Department``.
The manifest, every JSON line, the CSV header and the delta merge (new users, changed users) must all
say ``department``/``jobTitle``, never the configured ``Department``/``JobTitle`` (which would be a
column of nulls).
"""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from graph_export import load_settings, run_export
from graph_export.clients import app_clients
from graph_export.csvfile import cell

from .helpers import published_manifest, read_bytes
from .test_delta import by_id, export, slot

SANDBOX_USERS = 1_200
CONFIGURED = "id,displayName,Department,JobTitle"
GRAPH_SPELLING = ["id", "displayName", "department", "jobTitle"]


@pytest.fixture
def names_env(export_env, monkeypatch):
    monkeypatch.setenv("USER_PROPERTIES", CONFIGURED)
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    return export_env


def tenant(sandbox) -> dict[str, dict]:
    return by_id(sandbox.expected_users(GRAPH_SPELLING))


def check_published(env: dict, n: int) -> tuple[dict, dict[str, dict]]:
    """The slot's manifest and users, after checking every key and the CSV against Graph's spelling."""
    manifest = published_manifest(env, slot(n))
    assert manifest["properties"] == GRAPH_SPELLING
    data = gzip.decompress(read_bytes(env, manifest["blob"]))
    assert b'"Department"' not in data and b'"JobTitle"' not in data
    users = [json.loads(line) for line in data.splitlines()]
    assert len(users) == manifest["users"]
    for user in users:
        assert list(user) == GRAPH_SPELLING, user  # exactly these keys, in this order
    text = gzip.decompress(read_bytes(env, manifest["csv"]["blob"])).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == GRAPH_SPELLING and len(rows) - 1 == len(users)
    for row, user in zip(rows[1:], users, strict=True):
        assert row == [cell(user[p]) for p in GRAPH_SPELLING]
    return manifest, by_id(users)


def test_a_full_export_publishes_graphs_spelling_everywhere(names_env, sandbox):
    assert load_settings().user_properties == tuple(GRAPH_SPELLING)
    d = sandbox.directory
    d.update(d.id_of(4), department="Research", jobTitle="Chemist")
    app_clients.cache_clear()
    run_export(load_settings(), slot(0))
    manifest, users = check_published(names_env, 0)
    assert manifest["mode"] == "full"
    assert users == tenant(sandbox)
    assert users[d.id_of(4)]["department"] == "Research" and users[d.id_of(4)]["jobTitle"] == "Chemist"
    assert any(u["department"] is not None for u in users.values())  # the column is not all null


def test_delta_slots_merge_under_graphs_spelling_and_equal_a_full_export(names_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    export(0)
    d = sandbox.directory
    new = d.add(displayName="New Lawyer", department="Legal", jobTitle=None)
    d.update(d.id_of(7), jobTitle="Head of Things")
    d.update(d.id_of(8), department=None)  # cleared: published as null under Graph's name
    summary = export(1)
    assert summary.mode == "delta"
    manifest, users = check_published(names_env, 1)
    assert manifest["delta"]["added"] == 1 and manifest["delta"]["updated"] == 2
    assert users[new] == {"id": new, "displayName": "New Lawyer", "department": "Legal", "jobTitle": None}
    assert users[d.id_of(7)]["jobTitle"] == "Head of Things" and users[d.id_of(8)]["department"] is None
    assert users == tenant(sandbox)

    # A full export of the same moment, into another container: the same users, key for key.
    other = f"{names_env['EXPORT_CONTAINER']}-full"
    with monkeypatch.context() as m:
        m.setenv("EXPORT_MODE", "full")
        m.setenv("EXPORT_CONTAINER", other)
        app_clients.cache_clear()
        run_export(load_settings(), slot(1))
        _, full_users = check_published({**names_env, "EXPORT_CONTAINER": other}, 1)
    assert full_users == users

    # The same properties spelled yet another way are the same selection: still a delta slot.
    monkeypatch.setenv("USER_PROPERTIES", "ID,displayname,department,jobtitle")
    d.update(d.id_of(9), department="Ops")
    assert export(2).mode == "delta"
    _, users = check_published(names_env, 2)
    assert users[d.id_of(9)]["department"] == "Ops" and users == tenant(sandbox)
