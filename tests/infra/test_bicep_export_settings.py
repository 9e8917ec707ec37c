"""The export settings people change (issue 21 item 10) are main.bicep parameters, because the deployment writes
the app settings as a whole and one set by hand in the portal is gone after the next deployment. Each is typed and
bounded as the app bounds it (graph_export/settings.py, checked by loading the values), wired to its app setting,
and read by main.bicepparam from the GRAPH_EXPORT_* variable deploy.sh sets, with a fallback equal to main.bicep's
default and to the code's. deploy.sh's side is test_deploy_export_settings.py.
"""

from __future__ import annotations

import pytest

from graph_export.errors import ConfigError
from graph_export.settings import SETTINGS, load_settings

from . import bicepparam
from .bicep_helpers import INFRA, wired_parameter

# App setting: (main.bicep parameter, its type, the GRAPH_EXPORT_* variable main.bicepparam reads).
EXPORT_SETTINGS = {
    "EXPORT_SCHEDULE": ("exportSchedule", "string", "GRAPH_EXPORT_SCHEDULE"),
    "EXPORT_MODE": ("exportMode", "string", "GRAPH_EXPORT_MODE"),
    "EXPORT_FORMATS": ("exportFormats", "string", "GRAPH_EXPORT_FORMATS"),
    "CSV_EXCEL": ("csvExcel", "bool", "GRAPH_EXPORT_CSV_EXCEL"),
    "FULL_SYNC_EVERY_DAYS": ("fullSyncEveryDays", "int", "GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS"),
    "USER_PROPERTIES": ("userProperties", "string", "GRAPH_EXPORT_USER_PROPERTIES"),
}
CODE_DEFAULTS = {s.name: s.default for s in SETTINGS}
# Just enough for load_settings to accept a configuration, so that only the value under test can fail it.
BASE = {"TENANT_ID": "11111111-2222-3333-4444-555555555555", "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "KEY_VAULT_URL": "https://kv-export.vault.azure.net/", "EXPORT_STORAGE": "UseDevelopmentStorage=true"}


def app_accepts(**settings: str) -> bool:
    try:
        load_settings({**BASE, **settings})
    except ConfigError:
        return False
    return True


def decorator(param: dict, kind: str) -> object:
    return next((d["argument"] for d in param.get("decorators", []) if d["type"] == kind), None)


@pytest.mark.parametrize("setting", EXPORT_SETTINGS)
def test_each_is_a_typed_parameter_wired_to_its_app_setting(bicep, setting):
    name, kind, _ = EXPORT_SETTINGS[setting]
    main = bicep["main.bicep"]
    param = main["parameters"][name]
    assert param["type"] == kind
    assert setting in decorator(param, "description"), "the description names the app setting"
    wired = wired_parameter(main["variables"]["exportAppSettings"]["value"][setting])
    assert wired is not None and wired[0] == name, f"{setting} is not made of parameter {name}"


@pytest.mark.parametrize("setting", EXPORT_SETTINGS)
def test_main_bicepparam_reads_each_from_its_variable_with_the_apps_default(bicep, setting):
    name, _, variable = EXPORT_SETTINGS[setting]
    param = bicepparam.params((INFRA / "main.bicepparam").read_text())[name]
    assert param.variable == variable, f"main.bicepparam must read {name} from {variable} (deploy.sh sets it)"
    default = bicep["main.bicep"]["parameters"][name]["default"]
    assert param.value({}) == default, "main.bicepparam's fallback is main.bicep's default"
    wired = wired_parameter(bicep["main.bicep"]["variables"]["exportAppSettings"]["value"][setting])
    assert wired is not None and wired[1](default) == CODE_DEFAULTS[setting], "... and the code's"


def test_the_parameters_allow_exactly_what_the_app_accepts(bicep):
    params = bicep["main.bicep"]["parameters"]
    assert decorator(params["exportMode"], "allowed") == ["full", "delta"]
    assert decorator(params["exportFormats"], "allowed") == ["jsonl", "jsonl,csv"]
    for mode in decorator(params["exportMode"], "allowed"):
        assert app_accepts(EXPORT_MODE=mode), mode
    for formats in decorator(params["exportFormats"], "allowed"):
        assert app_accepts(EXPORT_FORMATS=formats), formats
    assert not app_accepts(EXPORT_FORMATS="csv"), "JSON Lines is always written: the app refuses csv alone"
    low, high = decorator(params["fullSyncEveryDays"], "min_value"), decorator(params["fullSyncEveryDays"], "max_value")
    assert (low, high) == (0, 7)
    assert app_accepts(FULL_SYNC_EVERY_DAYS=str(low)) and app_accepts(FULL_SYNC_EVERY_DAYS=str(high))
    assert not app_accepts(FULL_SYNC_EVERY_DAYS=str(low - 1)) and not app_accepts(FULL_SYNC_EVERY_DAYS=str(high + 1))
    for flag in (False, True):
        assert app_accepts(CSV_EXCEL=wired_parameter(bicep["main.bicep"]["variables"]["exportAppSettings"]["value"][
            "CSV_EXCEL"])[1](flag))


def test_a_variable_set_reaches_the_parameter():
    """What deploy.sh exports is what the deployment gets: text, `== 'true'` and int()."""
    params = bicepparam.params((INFRA / "main.bicepparam").read_text())
    env = {"GRAPH_EXPORT_SCHEDULE": "0 30 3 * * 1-5", "GRAPH_EXPORT_CSV_EXCEL": "true",
           "GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS": "3"}
    assert params["exportSchedule"].value(env) == "0 30 3 * * 1-5"
    assert params["csvExcel"].value(env) is True and params["csvExcel"].value({}) is False
    assert params["fullSyncEveryDays"].value(env) == 3
    with pytest.raises(ValueError, match="could not convert 'x'"):
        params["fullSyncEveryDays"].value({"GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS": "x"})
    with pytest.raises(ValueError, match="assigned multiple times"):
        bicepparam.params("param exportMode = 'full'\nparam exportMode = 'delta'\n")
