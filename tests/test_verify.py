"""The storage part of the settings on its own (``load_storage_settings``): what reading the export back
needs, validated as ``load_settings`` validates it, without any Graph or Key Vault setting."""

from __future__ import annotations

import pytest

from graph_export.errors import ConfigError
from graph_export.settings import StorageTarget, load_settings, load_storage_settings

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
