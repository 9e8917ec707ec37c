"""infra/deploy.sh's export settings flags (issue 21 item 10), against the fake `az` (fake_az.py): --schedule,
--export-mode, --formats, --csv-excel / --no-csv-excel, --full-sync-every-days and --user-properties reach the
deployment (GRAPH_EXPORT_* variables, which main.bicepparam reads); without its flag a setting keeps the last
deployment's value (its recorded parameter), else main.bicepparam's default, which is the code's; a value the app
would refuse stops the script before anything is created, with one line saying what to give instead.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from graph_export.settings import SETTINGS

from .bicep_helpers import INFRA
from .fake_azure import NEW_APP, FakeAzure, deploy, deployed

RG = "rg-export"
CREATES = ["group create", "ad app create", "ad app permission add", "deployment group create"]
CODE_DEFAULTS = {s.name: s.default for s in SETTINGS}
# GRAPH_EXPORT_* variable: the app setting it becomes.
VARIABLES = {"GRAPH_EXPORT_SCHEDULE": "EXPORT_SCHEDULE", "GRAPH_EXPORT_MODE": "EXPORT_MODE",
             "GRAPH_EXPORT_FORMATS": "EXPORT_FORMATS", "GRAPH_EXPORT_CSV_EXCEL": "CSV_EXCEL",
             "GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS": "FULL_SYNC_EVERY_DAYS",
             "GRAPH_EXPORT_USER_PROPERTIES": "USER_PROPERTIES"}
CHANGED = ("--schedule", "0 30 3 * * 1-5", "--export-mode", "delta", "--formats", "jsonl,csv", "--csv-excel",
           "--full-sync-every-days", "3", "--user-properties", "id,displayName,mail")
CHANGED_VALUES = {"GRAPH_EXPORT_SCHEDULE": "0 30 3 * * 1-5", "GRAPH_EXPORT_MODE": "delta",
                  "GRAPH_EXPORT_FORMATS": "jsonl,csv", "GRAPH_EXPORT_CSV_EXCEL": "true",
                  "GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS": "3", "GRAPH_EXPORT_USER_PROPERTIES": "id,displayName,mail"}


def passed(fake: FakeAzure) -> dict[str, str]:
    env = fake.call("deployment group create")["env"]
    return {name: env[name] for name in VARIABLES}


def recorded(fake: FakeAzure) -> dict[str, object]:
    """The export settings' parameters the last deployment recorded."""
    parameters = fake.state["deployment"]["parameters"]
    return {name: parameters[name]["value"] for name in (
        "exportSchedule", "exportMode", "exportFormats", "csvExcel", "fullSyncEveryDays", "userProperties")}


def test_a_first_run_without_flags_passes_the_apps_defaults(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake)
    assert passed(fake) == {name: CODE_DEFAULTS[setting] for name, setting in VARIABLES.items()}
    assert "exportMode: full (default)" in proc.stderr
    assert recorded(fake) == {"exportSchedule": "0 0 2 * * *", "exportMode": "full", "exportFormats": "jsonl",
                              "csvExcel": False, "fullSyncEveryDays": 6,
                              "userProperties": CODE_DEFAULTS["USER_PROPERTIES"]}


def test_flags_reach_the_deployment_and_a_plain_rerun_keeps_them(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, *CHANGED)
    assert passed(fake) == CHANGED_VALUES
    assert recorded(fake)["csvExcel"] is True and recorded(fake)["fullSyncEveryDays"] == 3
    assert "exportSchedule: 0 30 3 * * 1-5 (--schedule)" in proc.stderr
    again = deployed(fake)
    assert passed(fake) == CHANGED_VALUES, "a re-run without the flags must not revert them"
    assert "exportMode: delta (the last deployment)" in again.stderr
    assert "csvExcel: true (the last deployment)" in again.stderr


def test_one_flag_changes_one_setting_and_keeps_the_others(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, *CHANGED)
    deployed(fake, "--no-csv-excel", "--export-mode", "full")
    assert passed(fake) == {**CHANGED_VALUES, "GRAPH_EXPORT_CSV_EXCEL": "false", "GRAPH_EXPORT_MODE": "full"}


def test_what_if_previews_with_the_same_values(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, *CHANGED)
    proc = fake.run("-g", RG, "--what-if", "--formats", "jsonl")
    assert proc.returncode == 0, proc.stderr
    env = fake.call("deployment group what-if")["env"]
    assert {name: env[name] for name in VARIABLES} == {**CHANGED_VALUES, "GRAPH_EXPORT_FORMATS": "jsonl"}


@pytest.mark.parametrize(("args", "message"), [
    (("--schedule", "0 0 2 * *"), "--schedule takes 6 NCRONTAB fields"),
    (("--schedule", "0 0 2 * * * *"), "--schedule takes 6 NCRONTAB fields"),
    (("--schedule", "0 0 2 * * ;rm"), "--schedule takes 6 NCRONTAB fields"),
    (("--export-mode", "incremental"), "--export-mode must be full or delta, got 'incremental'"),
    (("--formats", "csv"), "--formats must be jsonl or jsonl,csv (JSON Lines is always written), got 'csv'"),
    (("--formats", "jsonl,xlsx"), "--formats must be jsonl or jsonl,csv"),
    (("--full-sync-every-days", "8"), "--full-sync-every-days must be a whole number of days from 0 to 7"),
    (("--full-sync-every-days", "1.5"), "--full-sync-every-days must be a whole number of days from 0 to 7"),
    (("--user-properties", ",,"), "--user-properties takes comma-separated Graph user property names"),
    (("--user-properties", "id,display Name"), "--user-properties takes comma-separated Graph user property names"),
    (("--user-properties", "id,manager/id"), "--user-properties takes comma-separated Graph user property names"),
    (("--export-mode", "delta", "--user-properties", "id,signinactivity"),
     "selects a property users/delta does not track"),
    (("--schedule", ""), "--schedule needs a value"),
])
def test_a_bad_value_is_refused_before_any_az_call(tmp_path, args, message):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, *args)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line or "needs a value" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert fake.commands() == []


def test_delta_is_refused_for_properties_the_last_deployment_chose(tmp_path):
    """The combination is checked on the values the run ends up with, before anything is created."""
    fake = FakeAzure(tmp_path)
    deployed(fake, "--user-properties", "id,displayName,signInActivity")
    proc = deploy(fake, "--export-mode", "delta")
    assert proc.returncode == 1
    assert "USER_PROPERTIES 'id,displayName,signInActivity' selects a property users/delta does not track" in proc.stderr
    assert "remove it with --user-properties, or use --export-mode full" in proc.stderr
    assert not set(CREATES) & set(fake.commands())


def test_a_deployment_from_before_the_settings_keeps_what_it_had(tmp_path):
    """An older deployment has exportMode and userProperties but not the newer parameters (az prints None)."""
    fake = FakeAzure(tmp_path)
    deployed(fake, "--export-mode", "delta", "--formats", "jsonl,csv")
    fake.update(missing_parameters=["exportFormats", "csvExcel", "fullSyncEveryDays"])
    proc = deployed(fake)
    assert passed(fake)["GRAPH_EXPORT_MODE"] == "delta"
    assert passed(fake)["GRAPH_EXPORT_FORMATS"] == "jsonl", "no recorded value: main.bicepparam's default"
    assert "exportFormats: jsonl (default)" in proc.stderr


def test_a_default_changed_in_main_bicepparam_is_the_first_runs_value(tmp_path):
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    params = copy / "main.bicepparam"
    text = params.read_text()
    assert "readEnvironmentVariable('GRAPH_EXPORT_MODE', 'full')" in text
    params.write_text(text.replace("readEnvironmentVariable('GRAPH_EXPORT_MODE', 'full')",
                                   "readEnvironmentVariable('GRAPH_EXPORT_MODE', 'delta')"))
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, infra=copy)
    assert proc.returncode == 0, proc.stderr
    assert passed(fake)["GRAPH_EXPORT_MODE"] == "delta" and "exportMode: delta (default)" in proc.stderr


def test_a_value_written_into_main_bicepparam_instead_of_the_flag_is_refused(tmp_path):
    """Written there, it would beat the flag; earlier versions of the README said to add this line."""
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    with (copy / "main.bicepparam").open("a") as params:
        params.write("\nparam userProperties = 'id,displayName,signInActivity'\n")
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, infra=copy)
    assert proc.returncode == 1
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert ("infra/main.bicepparam must set userProperties once, as param userProperties = "
            "readEnvironmentVariable('GRAPH_EXPORT_USER_PROPERTIES', '<default>'): restore that line and pass the "
            "value with --user-properties instead") in line
    assert not set(CREATES) & set(fake.commands())


def test_the_fake_refuses_what_main_bicep_refuses(tmp_path):
    """The deployment itself (ARM) refuses a value outside main.bicep's @allowed or range: deploy.sh checks first."""
    fake = FakeAzure(tmp_path)
    deployed(fake)
    for variable, value, message in (("GRAPH_EXPORT_MODE", "incremental", "The value must be one of: full, delta"),
                                     ("GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS", "9", "must be between 0 and 7"),
                                     ("GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS", "x", "could not convert 'x'")):
        proc = subprocess.run(["az", "deployment", "group", "create", "-g", RG, "-n", "graph-export",
                               "--parameters", str(INFRA / "main.bicepparam")], capture_output=True, text=True,
                              check=False, env=fake.env(GRAPH_EXPORT_CLIENT_ID=NEW_APP, **{variable: value}))
        assert proc.returncode == 1 and message in proc.stderr, (variable, value, proc.stderr)


def test_help_lists_each_flag_and_why_not_the_portal(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("--help")
    assert proc.returncode == 0
    for flag in ("--schedule NCRONTAB", "--export-mode MODE", "--formats LIST", "--csv-excel, --no-csv-excel",
                 "--full-sync-every-days N", "--user-properties LIST"):
        assert flag in proc.stdout, flag
    assert "one set by hand in the portal is gone after the next run" in proc.stdout
    assert fake.calls == []
