"""``verify`` without storage: its report, its storage-only settings, its CLI's arguments and the README's
verify commands. The checks themselves, on exports built in Azurite: tests/storage/test_verify.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_export import VerifyError, cli, storage, verify
from graph_export.errors import ConfigError
from graph_export.settings import StorageTarget, load_settings, load_storage_settings

REPO = Path(__file__).resolve().parents[2]
STAMP = "2026-03-07T02:00:00Z"


def test_a_report_without_slots_is_not_ok():
    assert not verify.Report().ok
    assert verify.Report().summary() == "verify FAILED: no slot to verify"
    missing = verify.Report(latest=verify.Verdict("latest.json", "users/latest.json is missing"))
    assert missing.summary() == "verify FAILED: no slot to verify; latest.json FAILED"
    with pytest.raises(VerifyError) as raised:
        verify.Report().raise_if_failed()
    assert raised.value.exit_code == 7


def test_mismatch_is_no_value_error_so_storage_errors_passes_it_through():
    with pytest.raises(verify.Mismatch):
        with storage.storage_errors("reading x"):
            raise verify.Mismatch("x is missing")


# --- settings: only storage -----------------------------------------------------------------------------


def test_storage_settings_need_no_graph_or_key_vault_settings():
    s = load_storage_settings({"EXPORT_STORAGE": "UseDevelopmentStorage=true", "EXPORT_STATE_CONTAINER": "state-c"})
    assert s.storage == StorageTarget(connection_string="UseDevelopmentStorage=true", source="EXPORT_STORAGE")
    assert (s.container, s.state_container, s.retry_backoff_base_s) == ("graph-exports", "state-c", 1.0)
    same = load_storage_settings({"EXPORT_STORAGE": "UseDevelopmentStorage=true", "EXPORT_STATE_CONTAINER": "graph-exports"})
    assert same.state_container_name is None and same.state_container == "graph-exports"


def test_storage_settings_are_validated_as_load_settings_validates_them():
    env = {"EXPORT_STORAGE__blobServiceUri": "https://st.blob.core.windows.net?sv=secret", "EXPORT_CONTAINER": "Bad_Name",
           "RETRY_BACKOFF_BASE_SECONDS": "-1", "MANAGED_IDENTITY_CLIENT_ID": "nope"}
    with pytest.raises(ConfigError) as storage_only:
        load_storage_settings(env)
    with pytest.raises(ConfigError) as everything:
        load_settings(env)
    problems = str(storage_only.value).removeprefix("Invalid settings: ").removesuffix(".").split("; ")
    assert len(problems) == 4 and "secret" not in str(storage_only.value)
    for problem in problems:
        assert problem in str(everything.value)


def test_full_settings_carry_the_same_storage_settings():
    env = {"TENANT_ID": "contoso.onmicrosoft.com", "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
           "KEY_VAULT_URL": "https://kv.vault.azure.net", "EXPORT_STORAGE__blobServiceUri": "https://st.blob.core.windows.net",
           "EXPORT_CONTAINER": "exports", "EXPORT_STATE_CONTAINER": "state", "RETRY_BACKOFF_BASE_SECONDS": "0.5",
           "MANAGED_IDENTITY_CLIENT_ID": "11111111-2222-3333-4444-555555555556"}
    assert load_settings(env).storage_settings == load_storage_settings(env)


# --- the CLI --------------------------------------------------------------------------------------------




def test_cli_verify_without_storage_settings_exits_2(clean_environment, capsys):
    assert cli.main(["verify"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: Invalid settings: EXPORT_STORAGE__blobServiceUri (or EXPORT_STORAGE)")
    assert "TENANT_ID" not in err and len(err.strip().splitlines()) == 1


def test_cli_verify_slot_and_all_are_one_or_the_other(clean_environment, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["verify", "--slot", STAMP, "--all"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    clean_environment.setenv("EXPORT_STORAGE", "UseDevelopmentStorage=true")
    assert cli.main(["verify", "--slot", "0001-01-01T00:00:00+05:00"]) == 2
    assert capsys.readouterr().err.startswith("error: --slot ")


def test_the_readme_verify_commands_parse_and_its_exit_code_is_verify_errors():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Verify an export", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].split()[4:] for line in section.splitlines()
                if line.startswith("python -m graph_export verify")]
    assert len(commands) == 4
    for argv in commands:
        parsed = cli._parser().parse_args(["verify", *argv])
        assert parsed.command == "verify"
    assert f"exit {VerifyError.exit_code}" in section
    table = readme.split("## When something is wrong", 1)[1].split("\n## ", 1)[0]
    assert f"| {VerifyError.exit_code} | `VerifyError` |" in table
    for line in ("ok 2026-03-07T02:00:00Z 2500 users users/2026/03/07/", "verified 1 slot and latest.json: all ok"):
        assert line in section
