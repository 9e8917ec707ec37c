"""JSON text Graph may send that orjson alone refuses: a lone surrogate escape, exported whole."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import datetime, timezone

from graph_export import load_settings, run_export
from graph_export.csvfile import read_cell

from .helpers import read_bytes, read_json

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


def test_a_lone_surrogate_in_a_display_name_is_exported_exactly_and_the_csv_holds_the_replacement(
        export_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    uid = sandbox.directory.id_of(1500)  # on page 2 of 3
    sandbox.directory.update(uid, displayName="Ann \ud83d")  # served as the JSON text "Ann \ud83d"
    run_export(load_settings(), SLOT)
    properties = load_settings().user_properties

    latest = read_json(export_env, "users/latest.json")  # blob names are the export's own: found, not built
    manifest = read_json(export_env, latest["manifest"])
    lines = gzip.decompress(read_bytes(export_env, manifest["blob"])).split(b"\n")
    assert lines[-1] == b"" and manifest["users"] == sandbox.users
    [line] = [line for line in lines if uid.encode() in line]
    assert b'"displayName":"Ann \\ud83d"' in line  # the exact escape, the exact value
    users = [json.loads(line) for line in lines[:-1]]
    assert users == list(sandbox.expected_users(properties))  # every other user as ever

    data = gzip.decompress(read_bytes(export_env, manifest["csv"]["blob"])).decode("utf-8")  # UTF-8 throughout
    rows = list(csv.reader(io.StringIO(data, newline="")))
    assert rows[0] == list(properties) and len(rows) - 1 == sandbox.users
    [row] = [row for row in rows if row[0] == uid]
    assert read_cell(row[properties.index("displayName")]) == "Ann \ufffd"  # U+FFFD, as csvfile documents
