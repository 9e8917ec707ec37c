"""Drift between the code's settings contract (graph_export/settings.py SETTINGS) and the app settings
the Bicep configures on the function app.

SETTINGS is read at test time, so a setting added to the code fails this test until it is either wired
in infra/main.bicep (`exportAppSettings`, with a parameter whose default equals the code's default) or
listed in NOT_SET_IN_AZURE below with the reason.
"""

from __future__ import annotations

import pytest

from graph_export.settings import PUBLIC_FEDERATED_AUDIENCE, SETTINGS, federated_audience

from .bicep_helpers import mentions, only, param_default, wired_parameter

# Settings the code reads that the deployed app deliberately does not get, and why.
NOT_SET_IN_AZURE = {
    "EXPORT_STORAGE": "a connection string needs the account key, and shared key access is disabled; "
                      "the app uses EXPORT_STORAGE__blobServiceUri with its managed identity instead",
    **{name: "a tuning knob whose code default suits Azure; set by hand (az functionapp config appsettings "
             "set), it lasts until the next deployment, which writes the app settings as a whole"
       for name in ("GRAPH_MAX_RETRIES_PER_PAGE", "GRAPH_MAX_RETRIES_PER_RUN", "HTTP_TIMEOUT_SECONDS",
                    "CHECKPOINT_EVERY_PAGES", "CHECKPOINT_MAX_AGE_HOURS", "DELTA_MAX_CHANGES",
                    "USER_COUNT_TOLERANCE",
                    "PROGRESS_EVERY_SECONDS", "LIBRARY_LOG_LEVEL")},
    "CLIENT_CERTIFICATE_SEND_X5C": "only for subject name + issuer authentication, which needs a certificate from a "
                                   "CA Entra ID trusts for that; the Key Vault certificate here is self-signed and "
                                   "its public key is registered on the app (deploy.sh), so the code default (false) "
                                   "is right",
}

# Settings the platform reads (not the app's contract); added by infra/modules/functionapp.bicep. EXPORT_STORAGE__credential
# and __clientId name the identity the host's queue trigger (connection EXPORT_STORAGE) uses; the app itself uses
# MANAGED_IDENTITY_CLIENT_ID.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "EXPORT_STORAGE__credential", "EXPORT_STORAGE__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}


def _app_settings(bicep) -> dict:
    return bicep["main.bicep"]["variables"]["exportAppSettings"]["value"]


def test_the_settings_object_reaches_the_function_app(bicep):
    main = bicep["main.bicep"]
    assert main["modules"]["functionApp"]["config"]["params"]["appSettings"] == "exportAppSettings"
    module = bicep["modules/functionapp.bicep"]
    merged = module["variables"]["allSettings"]["value"]["function"]
    assert merged["type"] == "union"
    assert list(merged["parameters"].values()) == ["appSettings", "hostSettings"]
    loop = module["variables"]["settingsList"]["value"]
    assert loop["loop_type"]["detail"]["object_name"] == "allSettings"  # for setting in items(allSettings)
    assert loop["config"]["name"]["operator"]["operands"] == {"operand_1": "setting", "operand_2": "key"}
    site = only(module, "Microsoft.Web/sites")
    assert site["properties"]["siteConfig"]["appSettings"] == "settingsList"


def test_bicep_configures_every_setting_the_code_reads(bicep):
    code = {s.name for s in SETTINGS}
    configured = set(_app_settings(bicep))
    missing = code - configured - set(NOT_SET_IN_AZURE)
    unknown = configured - code
    assert not missing, (
        f"settings in graph_export/settings.py that infra/main.bicep does not set: {sorted(missing)}. "
        "Add each to `exportAppSettings` (with a parameter defaulting to the code's default), or to "
        "NOT_SET_IN_AZURE in tests/infra/test_settings_drift.py with the reason.")
    assert not unknown, f"infra/main.bicep sets settings the code does not read: {sorted(unknown)}"


def test_excluded_settings_are_real_and_optional(bicep):
    by_name = {s.name: s for s in SETTINGS}
    configured = set(_app_settings(bicep))
    for name, reason in NOT_SET_IN_AZURE.items():
        assert name in by_name, f"NOT_SET_IN_AZURE names {name}, which settings.py no longer has"
        assert not by_name[name].required, f"{name} is required by the code: it must be configured"
        assert name not in configured, f"NOT_SET_IN_AZURE names {name}, which infra/main.bicep sets: remove the entry"
        assert reason


def test_platform_settings_do_not_clash_with_the_app_contract(bicep):
    host = set(bicep["modules/functionapp.bicep"]["variables"]["hostSettings"]["value"])
    assert host == PLATFORM_SETTINGS
    assert not host & {s.name for s in SETTINGS}
    assert not host & set(_app_settings(bicep)), "one writer per setting: union() would let the host's win silently"


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name not in NOT_SET_IN_AZURE], ids=lambda s: s.name)
def test_parameter_defaults_equal_the_code_defaults(bicep, setting):
    main = bicep["main.bicep"]
    value = _app_settings(bicep).get(setting.name)
    if value is None:
        pytest.fail(f"{setting.name} is not configured (see test_bicep_configures_every_setting_the_code_reads)")
    wired = wired_parameter(value)
    if wired is not None and wired[0] in main["parameters"]:
        name, as_text = wired
        default = main["parameters"][name].get("default")
        if setting.required:
            assert not isinstance(default, str) or default == "", (
                f"{setting.name} is required: its parameter {name} must not hard-code a value")
        elif isinstance(default, (str, bool, int)):  # a literal default (not an expression such as environment())
            assert _same_default(as_text(default), setting.default), (
                f"parameter {name} defaults to {default!r} but settings.py's default for {setting.name} "
                f"is {setting.default!r}")
    else:  # wired from a resource (vault URI, storage endpoint)
        assert not isinstance(value, str), f"{setting.name} is a hard-coded literal {value!r}: use a parameter"


def _same_default(text: str, code_default: str | None) -> bool:
    """Whether an app setting of ``text`` means the code's default: the same text, or empty for a setting without a
    default (load_settings reads an empty setting as unset)."""
    return text == (code_default if code_default is not None else "")


def test_an_empty_setting_means_unset_to_the_code():
    """_same_default's premise, on the code itself: an empty value loads like none at all (and the check can fail)."""
    from graph_export.settings import load_settings

    base = {"TENANT_ID": "11111111-2222-3333-4444-555555555555", "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "KEY_VAULT_URL": "https://kv-export.vault.azure.net/", "EXPORT_STORAGE": "UseDevelopmentStorage=true"}
    assert load_settings({**base, "EXPORT_STATE_CONTAINER": ""}) == load_settings(base)
    assert _same_default("", None) and _same_default("full", "full")
    assert not _same_default("x", None) and not _same_default("", "full")


def test_the_wiring_reader_sees_each_form():
    """wired_parameter must be able to fail: it reads exactly the three forms main.bicep uses."""
    assert wired_parameter("exportMode") == ("exportMode", str)
    name, as_text = wired_parameter({"function": {"type": "string", "parameters": {"value_to_convert": "days"}}})
    assert (name, as_text(6)) == ("days", "6")
    name, as_text = wired_parameter({"operator": {"type": "conditional", "operands": {
        "condition": "csvExcel", "true_value": "true", "false_value": "false"}}})
    assert (name, as_text(False), as_text(True)) == ("csvExcel", "false", "true")
    assert wired_parameter({"operator": {"type": "conditional", "operands": {
        "condition": "useKeyVault", "true_value": "x", "false_value": ""}}}) is None


def test_the_federated_audience_is_the_one_the_code_derives_for_each_cloud(bicep):
    """FEDERATED_TOKEN_AUDIENCE is set explicitly (the federated credential deploy.sh adds uses the same
    Bicep value), so it must agree with the code's own per-cloud default for each cloud's sign-in host."""
    default = param_default(bicep["main.bicep"], "federatedTokenAudience")
    expected = {
        "AzureUSGovernment": federated_audience("https://login.microsoftonline.us"),
        "AzureChinaCloud": federated_audience("https://login.chinacloudapi.cn"),
    }
    assert expected == {"AzureUSGovernment": "api://AzureADTokenExchangeUSGov",
                        "AzureChinaCloud": "api://AzureADTokenExchangeChina"}
    # environment().name == 'AzureUSGovernment' ? <USGov> : (environment().name == 'AzureChinaCloud' ? <China> : <public>)
    outer = default["operator"]["operands"]
    assert mentions(outer["condition"], "AzureUSGovernment") and outer["true_value"] == expected["AzureUSGovernment"]
    inner = outer["false_value"]["operator"]["operands"]
    assert mentions(inner["condition"], "AzureChinaCloud") and inner["true_value"] == expected["AzureChinaCloud"]
    assert inner["false_value"] == PUBLIC_FEDERATED_AUDIENCE == federated_audience("https://login.microsoftonline.com")
