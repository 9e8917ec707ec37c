"""``cli.main``'s contract: one ``error:`` line on stderr, nothing on stdout, the error class's exit code."""

from __future__ import annotations

import json
import logging

import pytest

from graph_export import cli
from graph_export.settings import SETTINGS

GUID = "11111111-2222-3333-4444-555555555555"
VALID = {"TENANT_ID": "contoso.onmicrosoft.com", "CLIENT_ID": GUID, "KEY_VAULT_URL": "https://kv.vault.azure.net",
         "EXPORT_STORAGE__blobServiceUri": "https://st.blob.core.windows.net"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri"):
        monkeypatch.delenv(name, raising=False)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_settings_exit_2_with_one_line(capsys):
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: Invalid settings: TENANT_ID is missing") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("slot", ["yesterday", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00", "1999-12-31T23:00:00Z"])
def test_a_slot_that_is_no_slot_exits_2_naming_the_option(capsys, monkeypatch, slot):
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "--slot", slot)  # refused before anything is contacted
    assert code == 2 and out == "" and err.startswith("error: --slot ")


def test_a_settings_file_that_is_not_one_exits_2(capsys, tmp_path):
    broken = tmp_path / "local.settings.json"
    broken.write_text("{not json")
    code, _, err = run(capsys, "--settings", str(broken))
    assert code == 2 and "local.settings.json" in err
    broken.write_text(json.dumps({"Values": ["not", "an", "object"]}))
    code, _, err = run(capsys, "--settings", str(broken))
    assert code == 2 and "Values" in err


def test_a_settings_file_fills_the_environment_like_func_start(capsys, tmp_path, monkeypatch):
    values = {"TENANT_ID": "contoso.onmicrosoft.com", "CLIENT_ID": GUID, "KEY_VAULT_URL": "kv-without-scheme"}
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    code, _, err = run(capsys, "--settings", str(settings_file))
    assert code == 2  # read: the first missing setting is no longer TENANT_ID, the vault URL is named
    assert "TENANT_ID" not in err and "KEY_VAULT_URL" in err


# --- issue 20, item 2: nothing --debug prints carries a credential ------------------------------------

TOKEN = "U0JEMQIAa5ESIQAAAABB2sPfBv-LVwAAAAAAAAAA_so5cPF"


def test_debug_library_lines_are_redacted_before_any_handler_prints_them(capsys, caplog, monkeypatch):
    def export_that_logs(*args, **kwargs):  # what urllib3 logs for a delta request, then a failure
        logging.getLogger("urllib3.connectionpool").debug('%s://%s:%s "%s %s %s" %s %s', "https", "graph", 443, "GET",
                                                          f"/v1.0/users/delta?$deltatoken={TOKEN}", "HTTP/1.1", 200, 1)
        raise ConnectionError(f"Max retries exceeded with url: /v1.0/users/delta?$deltatoken={TOKEN}")

    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "run_export", export_that_logs)
    caplog.set_level(logging.DEBUG)
    code, out, err = run(capsys, "--debug", "--quiet")
    assert code == 1 and out == ""
    assert err.startswith("error: unexpected ConnectionError (Max retries exceeded with url: "
                          "/v1.0/users/delta?$deltatoken=REDACTED)")
    assert "$deltatoken=REDACTED" in caplog.text and "Traceback" in caplog.text  # the line, and --debug's traceback
    assert TOKEN not in caplog.text + err


# -- many tenants (issue 24): what the new commands refuse before contacting anything -------------------------

TENANT = "aaaaaaaa-0000-4000-8000-00000000000a"


@pytest.mark.parametrize("command", ["fan-out", "work"])
def test_fan_out_and_work_without_tenant_ids_exit_2_with_one_line(capsys, monkeypatch, command):
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    code = cli.main([command])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"error: {command} needs TENANT_IDS (the tenants to fan out to); with one tenant, use run.\n"


def test_run_with_tenant_ids_but_no_tenant_says_how_to_choose_one(capsys, monkeypatch):
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TENANT_ID")
    monkeypatch.setenv("TENANT_IDS", TENANT)
    monkeypatch.setenv("EXPORT_STORAGE__queueServiceUri", "https://st.queue.core.windows.net")
    code, out, err = run(capsys)
    assert code == 2 and out == "" and "run --tenant <id>" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("tenant, expect", [
    ("bbbbbbbb-0000-4000-8000-00000000000b", "is not one of TENANT_IDS"),
    (TENANT.upper() + "x", "is not one of TENANT_IDS"),
])
def test_run_tenant_must_be_one_of_tenant_ids(capsys, monkeypatch, tenant, expect):
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TENANT_IDS", TENANT)
    monkeypatch.setenv("TENANT_ID", TENANT)
    monkeypatch.setenv("EXPORT_STORAGE__queueServiceUri", "https://st.queue.core.windows.net")
    code, out, err = run(capsys, "--tenant", tenant)
    assert code == 2 and out == "" and expect in err and len(err.strip().splitlines()) == 1


def test_verify_tenant_must_be_a_guid(capsys, monkeypatch):
    monkeypatch.setenv("EXPORT_STORAGE__blobServiceUri", "https://st.blob.core.windows.net")
    code = cli.main(["verify", "--tenant", "contoso.onmicrosoft.com"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "expected a directory (tenant) ID GUID" in err
