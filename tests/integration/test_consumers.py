"""The README's "Read the newest export" snippets, run as a consumer runs them, against an export of the sandbox.

The Python snippet reads the storage settings from the environment (``export_env`` sets them to Azurite)
and saves the files it checked into the working directory, where the DuckDB snippet reads them (DuckDB's
azure extension downloads itself from the internet, which these tests do not have). The export's slot is
the one the snippets' file names show, so the snippets run exactly as written.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from graph_export import load_settings, run_export

from .helpers import REPO, container, read_bytes, read_json

SECTION = "## Read the newest export"
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)  # users-20260307T020000Z.*, as in the SQL snippet


def snippet(language: str) -> tuple[str, str]:
    """The README section's one fenced block of ``language``, and where it came from."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = [code for lang, code in re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.M | re.S)
              if lang == language]
    assert len(blocks) == 1, f"README.md: '{SECTION}' should have one ```{language} block, has {len(blocks)}"
    return blocks[0], f"README.md: {SECTION[3:]} ({language})"


def run_python_snippet() -> dict:
    """Execute the Python snippet as a script; its variables are what a reader would have afterwards."""
    code, origin = snippet("python")
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, origin, "exec"), namespace)
    return namespace


def sql_statements() -> list[str]:
    code, _ = snippet("sql")
    statements = (s.strip() for s in re.split(r";[ \t]*$", code, flags=re.M))
    return [s for s in statements if re.sub(r"--.*$", "", s, flags=re.M).strip()]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def published(export_env, monkeypatch, tmp_path):
    """The manifest of an export with its CSV copy, and a clean working directory for the snippets."""
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    summary = run_export(load_settings(), SLOT)
    workdir = tmp_path / "reader"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return read_json(export_env, summary.manifest)


@pytest.fixture
def known_user(sandbox):
    """A user in the middle of the tenant whose name the CSV copy keeps as it is (no formula apostrophe)."""
    users = [u for u in sandbox.expected_users(load_settings().user_properties)
             if u["displayName"] and not u["displayName"].startswith(("=", "+", "-", "@"))]
    return users[len(users) // 2]


def test_the_python_snippet_reads_the_newest_export_into_pandas(published, sandbox, known_user):
    reader = run_python_snippet()

    users = reader["users"]
    assert isinstance(users, pd.DataFrame)
    assert len(users) == published["users"] == sandbox.users
    assert list(users.columns) == published["properties"]
    # Every value as Graph returned it (a missing one is NaN in pandas, None in JSON).
    records = users.astype(object).where(users.notna(), None).to_dict("records")
    assert records == list(sandbox.expected_users(published["properties"]))
    assert users.loc[users["id"] == known_user["id"], "displayName"].tolist() == [known_user["displayName"]]
    assert reader["latest"]["manifest"] == published["manifest"] and reader["manifest"] == published

    # What it saved for DuckDB is what the export published, byte for byte (its sha256 check passed).
    saved = Path.cwd() / Path(published["blob"]).name
    assert sha256_of(saved) == published["sha256"] == reader["latest"]["sha256"]
    assert published["csv"] is not None, "EXPORT_FORMATS=jsonl,csv wrote no CSV copy"
    assert sha256_of(Path.cwd() / Path(published["csv"]["blob"]).name) == published["csv"]["sha256"]


def test_the_python_snippet_refuses_a_blob_that_does_not_match_its_sha256(published, export_env):
    # The last user dropped: still a well-formed gzip JSON Lines file, but not what the manifest describes.
    lines = gzip.decompress(read_bytes(export_env, published["blob"])).splitlines(keepends=True)
    container(export_env).upload_blob(published["blob"], gzip.compress(b"".join(lines[:-1])), overwrite=True)

    with pytest.raises(ValueError, match="does not match its sha256"):
        run_python_snippet()
    assert not (Path.cwd() / Path(published["blob"]).name).exists()  # nothing unchecked is left for DuckDB


def test_the_duckdb_snippet_reads_the_files_the_python_snippet_saved(published, sandbox, known_user):
    run_python_snippet()
    statements = sql_statements()
    assert any("read_json(" in s for s in statements) and any("read_csv(" in s for s in statements)

    db = duckdb.connect()
    for statement in statements:
        db.execute(statement)
    for table in ("users", "users_csv"):  # the JSON Lines, and the CSV copy of the same users
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (published["users"],)
        assert db.execute(f"SELECT displayName FROM {table} WHERE CAST(id AS VARCHAR) = ?",
                          [known_user["id"]]).fetchall() == [(known_user["displayName"],)]
    departments = db.execute("SELECT department, count(*) FROM users GROUP BY department").fetchall()
    assert sum(n for _, n in departments) == published["users"]
