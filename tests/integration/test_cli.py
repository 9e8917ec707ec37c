"""``python -m graph_export run`` as a user runs it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import blob_names, read_export

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"status", "users", "container", "blob", "manifest", "bytes", "duration_s", "sha256", "slot"}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph_export", "run", *args], cwd=REPO,
                          env=env if env is not None else dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_success_prints_one_json_summary(export_env, sandbox):
    result = run_cli("--slot", "2026-03-07T02:00:00Z")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["status"] == "succeeded" and summary["users"] == 2_500
    assert re.fullmatch(r"users/2026/03/07/users-20260307T020000Z-[0-9a-f]{12}\.jsonl\.gz", summary["blob"])
    users, sha = read_export(export_env, summary["blob"])
    assert len(users) == 2_500 and sha == summary["sha256"]
    assert sandbox.client_secret not in result.stdout + result.stderr


def test_settings_file_is_read_like_func_start(export_env, tmp_path):
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": export_env}))
    bare = {k: v for k, v in os.environ.items() if k not in export_env}
    result = run_cli("--settings", str(settings_file), env=bare)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["users"] == 2_500


def test_failure_is_one_actionable_line_and_a_nonzero_exit(export_env, sandbox):
    sandbox.vault.set_secret(export_env["CLIENT_SECRET_NAME"], "wrong-value-0123456789")
    result = run_cli()
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "AADSTS7000215" in lines[0]
    assert "Traceback" not in result.stderr
    assert "wrong-value-0123456789" not in result.stderr and sandbox.client_secret not in result.stderr
    assert blob_names(export_env) == []


def test_configuration_error_exit_code_names_the_setting(export_env):
    env = dict(os.environ, KEY_VAULT_URL="kv.vault.azure.net")
    result = run_cli(env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Invalid settings: KEY_VAULT_URL")
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback_and_still_no_secret_or_token(export_env, sandbox):
    ok = run_cli("--debug", "--slot", "2026-03-07T02:00:00Z")
    assert ok.returncode == 0
    sandbox.entra.expire_secrets()
    failed = run_cli("--debug", "--slot", "2026-03-07T02:00:00Z", "--force")
    assert failed.returncode == 3 and "Traceback" in failed.stderr
    everything = ok.stdout + ok.stderr + failed.stdout + failed.stderr
    assert "DEBUG" in everything  # debug logging really was on
    assert sandbox.client_secret not in everything
    assert "eyJ" not in everything


@pytest.mark.parametrize("slot", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00"])
def test_a_slot_out_of_bounds_is_a_configuration_error_and_touches_nothing(export_env, slot):
    result = run_cli("--slot", slot)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --slot {slot} is out of range")
    assert "slots must be between 2000-01-01T00:00:00Z and 5 minutes past now" in lines[0]
    assert blob_names(export_env) == []
