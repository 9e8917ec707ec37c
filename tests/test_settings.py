import pytest

from graph_export.errors import ConfigError
from graph_export.settings import DEFAULT_USER_PROPERTIES, SETTINGS, load_settings

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
