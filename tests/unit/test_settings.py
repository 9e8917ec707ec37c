import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from graph_export.errors import ConfigError
from graph_export.setting_names import CASE_SENSITIVE, misnamed_settings, prefixes
from graph_export.settings import (
    DEFAULT_LIBRARY_LOG_LEVEL,
    DEFAULT_USER_PROPERTIES,
    SETTINGS,
    CredentialKind,
    ExportFormat,
    ExportMode,
    Settings,
    StorageSettings,
    StorageTarget,
    load_settings,
    load_storage_settings,
)
from tests.integration.helpers import invocation_context

GUID = "11111111-2222-3333-4444-555555555555"
BASE = {
    "TENANT_ID": "contoso.onmicrosoft.com",
    "CLIENT_ID": GUID,
    "KEY_VAULT_URL": "https://kv-export.vault.azure.net/",
    "EXPORT_STORAGE__blobServiceUri": "https://stexport.blob.core.windows.net/",
}


def problems(env):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return str(info.value)


def test_defaults_fill_every_optional_setting():
    s = load_settings(BASE)
    assert s.client_secret_name == "graph-client-secret"
    assert s.authority_host == "https://login.microsoftonline.com"
    assert s.graph_endpoint == "https://graph.microsoft.com"
    assert s.container == "graph-exports"
    assert s.schedule == "0 0 2 * * *"
    assert s.user_properties == DEFAULT_USER_PROPERTIES
    assert s.key_vault_url == "https://kv-export.vault.azure.net"
    assert s.storage.blob_service_uri == "https://stexport.blob.core.windows.net"
    assert s.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.page_size == 999


def test_every_documented_setting_has_a_description_and_required_ones_have_no_default():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.description
        assert not (setting.required and setting.default)


def test_all_missing_required_settings_are_named_in_one_error():
    message = problems({})
    for name in ("TENANT_ID", "CLIENT_ID", "KEY_VAULT_URL", "EXPORT_STORAGE"):
        assert name in message
    assert "\n" not in message


@pytest.mark.parametrize("name,value,expect", [
    ("TENANT_ID", "common", "multi-tenant alias"),
    ("TENANT_ID", "not a tenant", "expected a GUID or a domain"),
    ("CLIENT_ID", "my-app", "Application (client) ID GUID"),
    ("KEY_VAULT_URL", "http://kv.vault.azure.net", "https://"),
    ("KEY_VAULT_URL", "https://kv.vault.azure.net/secrets/x", "without a path"),
    ("GRAPH_ENDPOINT", "https://graph.microsoft.com/v1.0", "without a path"),
    ("AUTHORITY_HOST", "login.microsoftonline.com", "https://"),
    ("CLIENT_SECRET_NAME", "bad_name!", "Key Vault secret names"),
    ("EXPORT_CONTAINER", "Graph_Exports", "container names"),
    ("EXPORT_SCHEDULE", "0 2 * * *", "6-field NCRONTAB"),
    ("USER_PROPERTIES", "id,display Name", "invalid property names"),
    ("RETRY_BACKOFF_BASE_SECONDS", "-1", "expected a number from 0 to 60"),
    ("GRAPH_MAX_RETRIES_PER_PAGE", "2.5", "whole number"),
    ("CHECKPOINT_EVERY_PAGES", "0", "whole number from 1"),
    ("HTTP_TIMEOUT_SECONDS", "fast", "expected a number"),
])
def test_malformed_setting_is_named_with_what_is_expected(name, value, expect):
    message = problems({**BASE, name: value})
    assert name in message and expect in message


def test_id_is_always_selected_first_and_duplicates_dropped():
    s = load_settings({**BASE, "USER_PROPERTIES": " mail, displayName ,mail,id "})
    assert s.user_properties == ("id", "mail", "displayName")


def test_sign_in_activity_lowers_the_page_size_to_graphs_limit():
    assert load_settings({**BASE, "USER_PROPERTIES": "id,signInActivity"}).page_size == 500


def test_storage_connection_string_is_never_echoed():
    env = {k: v for k, v in BASE.items() if not k.startswith("EXPORT_STORAGE")}
    message = problems({**env, "EXPORT_STORAGE": "AccountKey=c2VjcmV0a2V5;nonsense"})
    assert "EXPORT_STORAGE" in message
    assert "c2VjcmV0a2V5" not in message


def test_connection_string_target_hides_its_value_in_repr():
    env = {k: v for k, v in BASE.items() if not k.startswith("EXPORT_STORAGE")}
    s = load_settings({**env, "EXPORT_STORAGE": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0"})
    assert s.storage.connection_string and "c2VjcmV0" not in repr(s)


def test_host_storage_is_the_fallback_for_exports():
    env = {k: v for k, v in BASE.items() if not k.startswith("EXPORT_STORAGE")}
    s = load_settings({**env, "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert s.storage.connection_string == "UseDevelopmentStorage=true"
    assert s.storage.source == "AzureWebJobsStorage"
    s = load_settings({**env, "AzureWebJobsStorage__blobServiceUri": "https://host.blob.core.windows.net"})
    assert s.storage.blob_service_uri == "https://host.blob.core.windows.net"


def test_both_kinds_of_export_storage_at_once_is_ambiguous():
    message = problems({**BASE, "EXPORT_STORAGE": "UseDevelopmentStorage=true"})
    assert "both set" in message


def test_settings_are_hashable_for_the_warm_instance_cache():
    assert hash(load_settings(BASE)) == hash(load_settings(dict(BASE)))


NO_EXPORT_STORAGE = {k: v for k, v in BASE.items() if not k.startswith("EXPORT_STORAGE")}


@pytest.mark.parametrize("name,url", [
    ("KEY_VAULT_URL", "https://kvuser:Pa55w0rd@kv-export.vault.azure.net/"),
    ("KEY_VAULT_URL", "kvuser:Pa55w0rd@kv-export.vault.azure.net"),  # no scheme: urlsplit sees no user info
    ("AUTHORITY_HOST", "https://kvuser:Pa55w0rd@login.microsoftonline.com"),
    ("GRAPH_ENDPOINT", "https://kvuser@graph.microsoft.com"),
    ("EXPORT_STORAGE__blobServiceUri", "https://kvuser:Pa55w0rd@stexport.blob.core.windows.net/"),
    ("AzureWebJobsStorage__blobServiceUri", "http://kvuser:Pa55w0rd@127.0.0.1:10000/devstoreaccount1"),
])
def test_user_info_in_a_url_setting_is_refused_without_echoing_any_of_it(name, url):
    env = {**NO_EXPORT_STORAGE, name: url} if name.startswith("AzureWebJobs") else {**BASE, name: url}
    message = problems(env)
    assert f"{name} contains a user name or password" in message
    assert "kvuser" not in message and "Pa55w0rd" not in message
    host = url.split("@", 1)[1].split("/", 1)[0].split(":", 1)[0]
    assert host not in message  # not the value at all: where the password ends is uncertain


@pytest.mark.parametrize("name,url", [
    ("KEY_VAULT_URL", "https://kv-export.vault.azure.net/?sig=S3CRETSIG"),
    ("AUTHORITY_HOST", "https://login.microsoftonline.com?sig=S3CRETSIG"),
    ("GRAPH_ENDPOINT", "https://graph.microsoft.com/#access_token=S3CRETSIG"),
    ("KEY_VAULT_URL", "http://kv-export.vault.azure.net/?sig=S3CRETSIG"),  # wrong scheme and a query
])
def test_a_query_or_fragment_in_an_https_setting_is_never_echoed(name, url):
    message = problems({**BASE, name: url})
    assert f"{name} has a query string or fragment after '{url.split('?')[0].split('#')[0]}'" in message
    assert "S3CRETSIG" not in message and "sig=" not in message and "access_token" not in message


@pytest.mark.parametrize("name,conn_name", [
    ("EXPORT_STORAGE__blobServiceUri", "EXPORT_STORAGE"),
    ("AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage"),
])
def test_a_sas_on_a_blob_service_uri_is_refused_without_echoing_it(name, conn_name):
    sas = "sv=2024-08-04&ss=b&sp=rwl&sig=S3CRETSIG%3D"
    message = problems({**NO_EXPORT_STORAGE, name: f"https://stexport.blob.core.windows.net/?{sas}"})
    assert name in message and "S3CRETSIG" not in message and "sig=" not in message
    assert f"set {conn_name} to a connection string" in message and "SharedAccessSignature=" in message


@pytest.mark.parametrize("uri", [
    "https://stexport.blob.core.windows.net/?sv=2024-08-04&sig=S3CRETSIG",
    "https://kvuser:S3CRETSIG@stexport.blob.core.windows.net",
])
def test_storage_target_repr_never_shows_a_sas_or_a_password(uri):
    shown = repr(StorageTarget(blob_service_uri=uri, source="EXPORT_STORAGE__blobServiceUri"))
    assert "S3CRETSIG" not in shown and "sig=" not in shown and "kvuser" not in shown
    assert "EXPORT_STORAGE__blobServiceUri" in shown


def test_a_port_that_is_no_number_is_refused():
    message = problems({**BASE, "GRAPH_ENDPOINT": "https://graph.microsoft.com:443x"})
    assert "GRAPH_ENDPOINT" in message and "port is not a number from 0 to 65535" in message


def test_an_invalid_secret_name_is_not_echoed_as_it_may_be_the_secret():
    message = problems({**BASE, "CLIENT_SECRET_NAME": "Xy8Q~abcDEF.ghi_jklMNO"})
    assert "CLIENT_SECRET_NAME" in message and "Key Vault secret names" in message
    assert "Xy8Q~abcDEF.ghi_jklMNO" not in message


@pytest.mark.parametrize("schedule,expect", [
    ("99 99 99 99 99 99", "its second field '99' has 99, outside 0-59"),
    ("0 60 * * * *", "its minute field '60' has 60, outside 0-59"),
    ("0 0 24 * * *", "its hour field '24' has 24, outside 0-23"),
    ("0 0 2 0 * *", "its day field '0' has 0, outside 1-31"),
    ("0 0 2 * 13 *", "its month field '13' has 13, outside 1-12"),
    ("0 0 2 * * 7", "its day-of-week field '7' has 7, outside 0-6 (Sunday is 0)"),
    ("*/0 * * * * *", "its second field '*/0' has the step /0: a step must be 1 or more"),
    ("0 0 2 * * 5-1", "its day-of-week field '5-1' has the range 5-1, whose start is after its end"),
    ("0 0 2 * Jly *", "its month field 'Jly' has 'Jly', which is not a number from 1 to 12 or a name such as Jan"),
    ("0 0 2 * * Ju", "its day-of-week field 'Ju' has 'Ju', which is not a number from 0 to 6 or a name such as Sun"),
    ("0 0 2 * * Jan", "its day-of-week field 'Jan' has 'Jan', which is not a number"),  # a month is no weekday
    ("0 0 Mon * * *", "its hour field 'Mon' has 'Mon', which is not a number from 0 to 23"),
    ("0 0 2 1-* * *", "its day field '1-*' has '1-*', which is not *, N or N-M with an optional /step"),
    ("0 0 2 */ * *", "its day field '*/' has '*/', which is not *, N or N-M with an optional /step"),
    ("0 0 2 * * 1,,5", "its day-of-week field '1,,5' has an empty item between commas"),
    ("0 0 2 * * * *", "it has 7 fields, not 6"),
    ("0 0 0 31 2 *", "it never fires"),
    ("0 0 0 30,31 Feb *", "it never fires"),
    ("0 0 0 31 4,6,9,11 *", "it never fires"),
])
def test_schedule_fields_are_checked_as_the_functions_host_reads_them(schedule, expect):
    message = problems({**BASE, "EXPORT_SCHEDULE": schedule})
    assert f"EXPORT_SCHEDULE is '{schedule}': {expect}" in message
    assert "6-field NCRONTAB" in message and "\n" not in message


@pytest.mark.parametrize("valid,typo", [
    ("0 0 2 * * *", "0 0 2 * * 8"),
    ("0 */5 * * * *", "0 */0 * * * *"),
    ("0 30 9 * * 1-5", "0 30 9 * * 1-7"),
    ("0 0 0 1 Jan,Jul *", "0 0 0 1 Jan,Jly *"),
    ("0 0 12 * * Mon-Fri", "0 0 12 * * Fri-Mon"),
    ("0 0 12 * * mon,WEDNESDAY,Fri", "0 0 12 * * mo,we,fr"),  # names: 3 letters or more, any case
    ("0 0 0 29 2 *", "0 0 0 30 2 *"),  # 29 February comes round in leap years
    ("0 0 0 31 */2 *", "0 0 0 31 4/5 *"),  # */2: January has a 31st; 4/5: April and September do not
    ("59 59 23 31 12 6", "59 59 23 32 12 6"),
    ("5/15 0 0 * * *", "5/15 0 0 * * */0"),
])
def test_valid_schedules_pass_and_their_near_misses_do_not(valid, typo):
    assert load_settings({**BASE, "EXPORT_SCHEDULE": valid}).schedule == valid
    assert "EXPORT_SCHEDULE" in problems({**BASE, "EXPORT_SCHEDULE": typo})


@pytest.mark.parametrize("value", [",,,", " , ,"])
def test_user_properties_without_any_name_is_an_error(value):
    message = problems({**BASE, "USER_PROPERTIES": value})
    assert "USER_PROPERTIES names no property" in message and "such as 'id,displayName,mail'" in message


def test_user_properties_differing_only_in_case_are_one_property():
    s = load_settings({**BASE, "USER_PROPERTIES": "mail,Mail,ID,displayName,MAIL,Id,DisplayName"})
    assert s.user_properties == ("id", "mail", "displayName")


def test_sign_in_activity_in_any_spelling_lowers_the_page_size():
    assert load_settings({**BASE, "USER_PROPERTIES": "id,SignInActivity"}).page_size == 500


def test_user_properties_are_resolved_to_graphs_spelling():
    # Graph answers $select=Department with "department": the manifest, the JSON Lines keys and the CSV
    # header must all say "department" too.
    s = load_settings({**BASE, "USER_PROPERTIES": "id,displayName,Department,JobTitle,ONPREMISESSAMACCOUNTNAME"})
    assert s.user_properties == ("id", "displayName", "department", "jobTitle", "onPremisesSamAccountName")
    assert load_settings({**BASE, "USER_PROPERTIES": "Department,department,DEPARTMENT"}).user_properties == (
        "id", "department")
    assert load_settings({**BASE, "USER_PROPERTIES": "id,SignInActivity"}).user_properties == ("id", "signInActivity")


def test_extension_names_are_accepted_with_graphs_spelling_of_their_prefix():
    app = "0123456789ABCDEF0123456789abcdef"
    s = load_settings({**BASE, "USER_PROPERTIES": f"id,Extension_{app}_costCenter,extkvbmkofy_courses"})
    assert s.user_properties == ("id", f"extension_{app.lower()}_costCenter", "extkvbmkofy_courses")
    # Case variants of one extension are one property (the first spelling of its name is kept).
    s = load_settings({**BASE, "USER_PROPERTIES": f"extension_{app}_costCenter,EXTENSION_{app}_CostCenter"})
    assert s.user_properties == ("id", f"extension_{app.lower()}_costCenter")


def test_unknown_property_names_are_an_error_with_the_closest_property():
    message = problems({**BASE, "USER_PROPERTIES": "id,jobTitel,shoeSize,Departement"})
    assert ("USER_PROPERTIES has names that are not Microsoft Graph v1.0 user properties: 'jobTitel' (did you "
            "mean 'jobTitle'?), 'shoeSize', 'Departement' (did you mean 'department'?): use the names of "
            "https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0") in message
    assert "\n" not in message


def test_a_malformed_directory_extension_name_says_what_the_form_is():
    message = problems({**BASE, "USER_PROPERTIES": "id,extension_1234_costCenter"})
    assert "'extension_1234_costCenter' (a directory extension is extension_ then the app's appId as 32 hex" in message


def test_relationships_and_single_user_properties_are_refused_with_why():
    message = problems({**BASE, "USER_PROPERTIES": "id,DirectReports,aboutMe,Skills"})
    assert "USER_PROPERTIES has 'directReports', a relationship of user, not a property" in message
    assert "only 'manager' is exported" in message
    assert "USER_PROPERTIES has 'directReports', 'memberOf', relationships of user" in problems(
        {**BASE, "USER_PROPERTIES": "manager,directreports,memberof"})
    assert "USER_PROPERTIES has 'aboutMe', 'skills', which Graph returns only when reading one user" in message
    assert "did you mean" not in message


def test_the_default_user_properties_are_graphs_spelling():
    from graph_export.properties import graph_spelling
    assert all(graph_spelling(p) == p for p in DEFAULT_USER_PROPERTIES)


def test_new_checks_still_report_every_problem_in_one_line():
    message = problems({**BASE, "KEY_VAULT_URL": "https://u:Pa55w0rd@kv.vault.azure.net",
                        "EXPORT_SCHEDULE": "0 0 0 31 2 *", "USER_PROPERTIES": ",,,"})
    for name in ("KEY_VAULT_URL", "EXPORT_SCHEDULE", "USER_PROPERTIES"):
        assert name in message
    assert "\n" not in message and "Pa55w0rd" not in message


def test_export_mode_is_full_or_delta_and_delta_has_its_defaults():
    assert load_settings(BASE).export_mode == "full"
    delta = load_settings({**BASE, "EXPORT_MODE": "Delta"})
    assert (delta.export_mode, delta.full_sync_every_days, delta.delta_max_changes) == ("delta", 6.0, 250_000)
    assert "EXPORT_MODE is 'incremental': expected 'full' or 'delta'" in problems({**BASE, "EXPORT_MODE": "incremental"})
    assert "FULL_SYNC_EVERY_DAYS" in problems({**BASE, "FULL_SYNC_EVERY_DAYS": "8"})  # past Graph's 7-day expiry
    assert "DELTA_MAX_CHANGES" in problems({**BASE, "DELTA_MAX_CHANGES": "0"})


def test_sign_in_activity_is_allowed_in_delta_mode_which_reads_it_apart():
    env = {**BASE, "USER_PROPERTIES": "id,displayName,SIGNINACTIVITY", "EXPORT_MODE": "delta"}
    assert load_settings(env).user_properties == ("id", "displayName", "signInActivity")


@pytest.mark.parametrize("untracked, spelled", [("licenseAssignmentStates", "licenseAssignmentStates"),
                                                ("LICENSEASSIGNMENTSTATES", "licenseAssignmentStates")])
def test_properties_users_delta_does_not_track_are_refused_in_delta_mode_only(untracked, spelled):
    env = {**BASE, "USER_PROPERTIES": f"id,displayName,{untracked}"}
    assert load_settings(env).export_mode == "full"
    message = problems({**env, "EXPORT_MODE": "delta"})
    # Named as Graph spells it, whatever the configured case.
    assert f"USER_PROPERTIES holds {spelled}, which Graph does not track in users/delta" in message


# --- issue 20: names that look like a setting, placeholders left in, token credentials over http ----------


REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
README = (REPO / "README.md").read_text(encoding="utf-8")
NAMES = [s.name for s in SETTINGS]


def _clean_environment(monkeypatch):
    for name in [*NAMES, "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", *EXAMPLE]:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", ["EXPORT_STORAGE__blobServiceUri", "AzureWebJobsStorage__blobServiceUri"])
@pytest.mark.parametrize("uri", ["http://127.0.0.1:10000/devstoreaccount1", "HTTP://stexport.blob.core.windows.net"])
def test_an_http_blob_service_uri_is_a_config_error(name, uri):
    with pytest.raises(ConfigError) as info:
        load_settings({**NO_EXPORT_STORAGE, name: uri})
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"Invalid settings: {name} is an http:// URL, and the export's identity (a token) is sent over https "
        "only: use https://, or for Azurite set EXPORT_STORAGE to a connection string such as "
        "'UseDevelopmentStorage=true'.")


def test_http_is_fine_in_a_connection_string():
    azurite = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
               "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    assert load_settings({**NO_EXPORT_STORAGE, "EXPORT_STORAGE": azurite}).storage.connection_string == azurite


def test_the_storage_sdk_does_refuse_a_token_credential_over_http():
    """Why the http check exists: the SDK refuses at once, so every run would fail at its first blob call."""
    from azure.core.credentials import AccessToken
    from azure.storage.blob import BlobServiceClient

    class Token:
        def get_token(self, *scopes, **kwargs):
            return AccessToken("t", 0)

    with pytest.raises(ValueError, match="Token credential is only supported with HTTPS"):
        BlobServiceClient("http://127.0.0.1:10000/devstoreaccount1", credential=Token())


# Values of local.settings.json.example that work as they are: a local run against Azurite, and the
# settings whose example value is the code's default. Every other value in it is a placeholder.
WORKS_UNEDITED = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "EXPORT_STORAGE"}
EXAMPLE_PLACEHOLDERS = {name: value for name, value in EXAMPLE.items()
                        if name not in WORKS_UNEDITED and value != next(
                            (s.default for s in SETTINGS if s.name == name), None)}


def test_the_example_has_placeholders_and_its_other_values_work():
    assert {"TENANT_ID", "CLIENT_ID", "KEY_VAULT_URL"} <= set(EXAMPLE_PLACEHOLDERS)
    assert set(EXAMPLE) - set(NAMES) <= WORKS_UNEDITED  # every other name in it is a setting
    filled = {**EXAMPLE, **{name: BASE.get(name, GUID) for name in EXAMPLE_PLACEHOLDERS}}
    assert load_settings(filled).storage.connection_string == "UseDevelopmentStorage=true"


@pytest.mark.parametrize("name", sorted(EXAMPLE_PLACEHOLDERS))
def test_each_placeholder_of_the_example_is_a_config_error_naming_its_setting(name):
    value = EXAMPLE_PLACEHOLDERS[name]
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, name: value})
    message = str(info.value)
    assert info.value.exit_code == 2
    assert f"{name} is still a placeholder (as in local.settings.json.example): replace it with" in message
    assert value not in message and value.strip("/") not in message  # never the value
    assert message.count(name) == 1  # said once, not also as malformed or missing


def test_the_example_unedited_fails_at_validation_without_reading_the_example(monkeypatch):
    def no_files(*args, **kwargs):
        raise AssertionError("load_settings read a file: the function app package does not ship the example")

    monkeypatch.setattr("builtins.open", no_files)
    monkeypatch.setattr(Path, "read_text", no_files)
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE)
    assert str(info.value) == (
        "Invalid settings: TENANT_ID is still a placeholder (as in local.settings.json.example): replace it with "
        "your directory (tenant) ID; CLIENT_ID is still a placeholder (as in local.settings.json.example): replace "
        "it with the app registration's Application (client) ID; KEY_VAULT_URL is still a placeholder (as in "
        "local.settings.json.example): replace it with your vault's URL, e.g. https://kv-name.vault.azure.net/.")


def test_the_cli_with_the_example_settings_file_exits_2(capsys, monkeypatch):
    from graph_export import cli
    _clean_environment(monkeypatch)
    for name in EXAMPLE:  # cli.main writes the file's Values into os.environ: monkeypatch restores them
        monkeypatch.setenv(name, "")
    assert cli.main(["run", "--settings", str(REPO / "local.settings.json.example")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: Invalid settings: TENANT_ID is still a placeholder")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("name,value", [
    ("MANAGED_IDENTITY_CLIENT_ID", "00000000-0000-0000-0000-000000000000"),
    ("TENANT_ID", " 00000000-0000-0000-0000-000000000000 "),
    ("EXPORT_CONTAINER", "<your-container>"),
    ("KEY_VAULT_URL", "https://<vault>.vault.azure.net"),
    ("USER_PROPERTIES", "id,<more properties>"),
])
def test_other_placeholders_are_config_errors_too(name, value):
    message = problems({**BASE, name: value})
    assert f"{name} is still a placeholder" in message and value not in message


@pytest.mark.parametrize("name,conn_name", [
    ("EXPORT_STORAGE__blobServiceUri", "EXPORT_STORAGE"),
    ("AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage"),
])
def test_a_placeholder_storage_setting_is_refused_without_echoing_it(name, conn_name):
    for setting in (name, conn_name):
        message = problems({**NO_EXPORT_STORAGE, setting: "<your-storage>"})
        assert f"{setting} is still a placeholder" in message and "<your-storage>" not in message


def test_a_placeholder_in_the_host_storage_settings_matters_only_when_they_are_the_fallback():
    s = load_settings({**BASE, "AzureWebJobsStorage": "<host storage>", "AzureWebJobsStorage__blobServiceUri": "<x>"})
    assert s.storage.source == "EXPORT_STORAGE__blobServiceUri"


def warnings_of(caplog, env):
    """What load_settings logs as warnings for ``env`` (whether or not it then raises)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        try:
            load_settings(env)
        except ConfigError:
            pass
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_misspelled_setting_name_is_one_warning_with_the_name_it_resembles(caplog):
    caplog.set_level(logging.WARNING, logger="graph_export")
    s = load_settings({**BASE, "EXPORT_CONTAINR": "my-exports"})
    assert s.container == "graph-exports"  # still ignored: a warning, not an error
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in records] == ["EXPORT_CONTAINR is not a setting; did you mean EXPORT_CONTAINER?"]
    assert records[0].name.startswith("graph_export")  # shown by the CLI and by the function alike
    assert "my-exports" not in caplog.text


@pytest.mark.parametrize("name,line", [
    ("TENANTID", "TENANTID is not a setting; did you mean TENANT_ID?"),
    ("KEYVAULT_URL", "KEYVAULT_URL is not a setting; did you mean KEY_VAULT_URL?"),
    ("CLIENT_SECRET", "CLIENT_SECRET is not a setting; did you mean CLIENT_SECRET_NAME?"),
    ("EXPORT_FORMAT", "EXPORT_FORMAT is not a setting; did you mean EXPORT_FORMATS?"),
    ("GRAPH_RETRIES_PER_PAGE", "GRAPH_RETRIES_PER_PAGE is not a setting; did you mean GRAPH_MAX_RETRIES_PER_PAGE?"),
    ("EXPORT_STORAGE_BLOBSERVICEURI",
     "EXPORT_STORAGE_BLOBSERVICEURI is not a setting; did you mean EXPORT_STORAGE__blobServiceUri?"),
    ("EXPORT_STORAGE__blobServiceUrl",
     "EXPORT_STORAGE__blobServiceUrl is not a setting; did you mean EXPORT_STORAGE__blobServiceUri?"),
    ("EXPORT_CONTAINER ", "'EXPORT_CONTAINER ' is not a setting; did you mean EXPORT_CONTAINER?"),  # a stray space
    # One of our prefixes but like no setting.
    ("EXPORT_FOLDER", "EXPORT_FOLDER is not a setting and is ignored: see the README's Settings for the names"),
    ("GRAPH_URL", "GRAPH_URL is not a setting and is ignored: see the README's Settings for the names"),
    ("DELTA_LINK", "DELTA_LINK is not a setting and is ignored: see the README's Settings for the names"),
    ("CSV_DELIMITER", "CSV_DELIMITER is not a setting and is ignored: see the README's Settings for the names"),
    ("CHECKPOINT_BLOB", "CHECKPOINT_BLOB is not a setting and is ignored: see the README's Settings for the names"),
])
def test_names_that_look_like_a_setting_are_warned_about_by_name_only(caplog, name, line):
    assert warnings_of(caplog, {**BASE, name: "S3CRETVALUE"}) == [line]
    assert "S3CRETVALUE" not in caplog.text


@pytest.mark.parametrize("name", [
    "AzureWebJobsStorage", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobs.export_users.Disabled", "AzureWebJobsFeatureFlags",
    "EXPORT_STORAGE__credential", "EXPORT_STORAGE__clientId", "EXPORT_STORAGE__queueServiceUri",
    "EXPORT_STORAGE__tableServiceUri", "EXPORT_STORAGE__accountName",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_SITE_NAME", "WEBSITE_TIME_ZONE",
    "APPSETTING_EXPORT_CONTAINER", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST",
    "GRAPH_EXPORT_CLIENT_ID", "GRAPH_EXPORT_IMMUTABILITY_DAYS",  # infra/deploy.sh's Bicep parameters
    "HTTP_PROXY", "HTTPS_PROXY", "REQUESTS_CA_BUNDLE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "CONTAINER_NAME",
    "ARM_TENANT_ID", "ARM_CLIENT_ID", "AZ_TENANT_ID", "PATH", "HOME", "SANDBOX_FAULTS",
])
def test_names_the_platform_or_other_tools_read_are_not_warned_about(caplog, name):
    assert warnings_of(caplog, {**BASE, name: "x"}) == []


def test_every_setting_name_is_read_without_a_warning(caplog):
    assert warnings_of(caplog, {**BASE, **{n: "x" for n in NAMES}}) == []  # invalid values, but no name warning


def test_names_differing_only_in_case_are_warned_about_where_names_are_case_sensitive():
    names = ["export_container", "EXPORT_STORAGE__BLOBSERVICEURI", "Tenant_Id"]
    assert misnamed_settings(names, NAMES, case_sensitive=True) == [
        "EXPORT_STORAGE__BLOBSERVICEURI is not a setting; did you mean EXPORT_STORAGE__blobServiceUri? "
        "(setting names are case-sensitive)",
        "Tenant_Id is not a setting; did you mean TENANT_ID? (setting names are case-sensitive)",
        "export_container is not a setting; did you mean EXPORT_CONTAINER? (setting names are case-sensitive)",
    ]
    # Windows: environment names are case-insensitive (os.environ gives them in upper case), so each is read.
    assert misnamed_settings(names, NAMES, case_sensitive=False) == []
    assert CASE_SENSITIVE == (os.name != "nt")


def test_a_misspelled_name_is_warned_about_even_when_validation_then_fails(caplog):
    env = {k: v for k, v in BASE.items() if k != "TENANT_ID"}
    assert warnings_of(caplog, {**env, "TENANTID": "contoso.onmicrosoft.com"}) == [
        "TENANTID is not a setting; did you mean TENANT_ID?"]
    assert "TENANT_ID is missing" in problems({**env, "TENANTID": "contoso.onmicrosoft.com"})


def test_the_prefixes_are_our_settings_first_words():
    assert set(prefixes(NAMES)) >= {"EXPORT_", "GRAPH_", "CLIENT_", "CHECKPOINT_", "DELTA_", "CSV_", "KEY_VAULT_",
                                    "HTTP_TIMEOUT_"}
    assert "HTTP_" not in prefixes(NAMES) and "KEY_" not in prefixes(NAMES)  # HTTP_PROXY is not ours
    assert all(f"{name.upper()}_".startswith(prefixes(NAMES)) for name in NAMES)


def test_the_cli_prints_the_warning_line_on_stderr():
    env = {k: v for k, v in os.environ.items() if k not in {*NAMES, *EXAMPLE, "AzureWebJobsStorage__blobServiceUri"}}
    env.update({**BASE, "KEY_VAULT_URL": "not a url", "EXPORT_CONTAINR": "my-exports"})
    result = subprocess.run([sys.executable, "-m", "graph_export", "run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""  # the bad KEY_VAULT_URL stops it before any request
    err = result.stderr.splitlines()
    assert err[0].endswith(" WARNING graph_export.settings: EXPORT_CONTAINR is not a setting; "
                           "did you mean EXPORT_CONTAINER?"), result.stderr
    assert err[1].startswith("error: Invalid settings: KEY_VAULT_URL") and len(err) == 2
    assert "my-exports" not in result.stderr


def test_the_function_logs_the_warning_line(monkeypatch, caplog):
    import function_app
    _clean_environment(monkeypatch)
    monkeypatch.setenv("EXPORT_CONTAINR", "my-exports")
    caplog.set_level(logging.INFO)  # the Functions worker's root level
    with pytest.raises(ConfigError):
        function_app.export_users._function.get_user_function()(TimerRequest(), invocation_context())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["EXPORT_CONTAINR is not a setting; did you mean EXPORT_CONTAINER?"]


def test_the_readme_quotes_each_of_these_lines_as_they_are():
    section = " ".join(README.split("## When something is wrong", 1)[1].split("\n## ", 1)[0].split())
    lines = [*misnamed_settings(["EXPORT_CONTAINR"], NAMES), _message(EXAMPLE).split("; ")[0],
             _message({**NO_EXPORT_STORAGE, "EXPORT_STORAGE__blobServiceUri": "http://127.0.0.1:10000/x"})]
    for line in lines:
        assert f"`{line.removeprefix('Invalid settings: ').removesuffix('.')}`" in section, line


def _message(env):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return str(info.value)


# --- issue 22: one table of settings (name, default, parser), enums for the choices -----------------------


ROWS = [s for s in SETTINGS if s.parse is not None]


def test_each_row_with_a_parser_fills_one_field_and_the_storage_pair_fills_storage():
    assert {s.name for s in SETTINGS if s.parse is None} == {"EXPORT_STORAGE", "EXPORT_STORAGE__blobServiceUri",
                                                             "EXPORT_STORAGE__queueServiceUri"}
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert [f for f in fields if f != "storage"] == [s.field for s in ROWS]  # one each, in the table's order


@pytest.mark.parametrize("record", [Settings, StorageSettings])
def test_the_defaults_are_the_tables_only(record):
    """No dataclass default to drift from SETTINGS: a field has the value its row's parser makes of the text."""
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(record))


@pytest.mark.parametrize("row", [s for s in ROWS if s.default is not None], ids=lambda s: s.name)
def test_an_unset_setting_is_its_default_as_its_row_parses_it(row):
    problems_seen: list[str] = []
    assert getattr(load_settings(BASE), row.field) == row.parse(row.name, row.default, problems_seen)
    assert problems_seen == []


def test_the_storage_settings_are_the_same_rows_read_alone():
    env = {**NO_EXPORT_STORAGE, "EXPORT_STORAGE": "UseDevelopmentStorage=true", "EXPORT_STATE_CONTAINER": "state",
           "MANAGED_IDENTITY_CLIENT_ID": GUID.upper(), "RETRY_BACKOFF_BASE_SECONDS": "2.5"}
    assert load_storage_settings(env) == load_settings(env).storage_settings
    assert load_storage_settings({**env, "EXPORT_STATE_CONTAINER": "graph-exports"}).state_container_name is None
    assert DEFAULT_LIBRARY_LOG_LEVEL == logging.WARNING == load_settings(BASE).library_log_level


def test_modes_formats_and_credential_kinds_are_enums_read_in_any_case():
    s = load_settings({**BASE, "EXPORT_MODE": "Delta", "EXPORT_FORMATS": " JSONL, csv,jsonl",
                       "CLIENT_CREDENTIAL": "Certificate"})
    assert s.export_mode is ExportMode.DELTA
    assert s.export_formats == (ExportFormat.JSONL, ExportFormat.CSV)
    assert all(type(f) is ExportFormat for f in s.export_formats)
    assert s.client_credential is CredentialKind.CERTIFICATE
    defaults = load_settings(BASE)
    assert (defaults.export_mode, defaults.export_formats, defaults.client_credential) == (
        ExportMode.FULL, (ExportFormat.JSONL,), CredentialKind.SECRET)


@pytest.mark.parametrize("name,choices", [("EXPORT_MODE", ExportMode), ("CLIENT_CREDENTIAL", CredentialKind)])
def test_a_choice_that_is_none_of_its_values_names_each_value(name, choices):
    quoted = [f"'{c.value}'" for c in choices]
    assert f"{name} is 'Other': expected {', '.join(quoted[:-1])} or {quoted[-1]}." in problems(
        {**BASE, name: "Other"})


def test_every_row_checks_its_own_setting():
    message = problems({**BASE, **{s.name: "bad value!" for s in ROWS}})
    for row in ROWS:
        assert f"{row.name} " in message, row.name


def test_each_settings_problems_come_in_the_tables_order():
    message = problems({**NO_EXPORT_STORAGE, "EXPORT_STORAGE": "UseDevelopmentStorage=true",
                        **{s.name: "bad value!" for s in ROWS}})
    order = [s.name for s in SETTINGS]
    named = [p.split(" ", 1)[0] for p in message.removeprefix("Invalid settings: ").split("; ")]
    named = [n for n in named if n in order]  # a problem's own "; expected ..." part names none
    assert len(named) == len(ROWS) and named == sorted(named, key=order.index)
