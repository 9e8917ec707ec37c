"""Many tenants (issue 24): TENANT_IDS and EXPORT_QUEUE settings, one Settings per tenant, and each tenant's
exports under ``tenants/<id>/`` in the shared containers, laid out exactly as a single-tenant container."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from graph_export import tenant_root, verify
from graph_export.clients import TENANTS_KEPT, app_clients, warm_clients
from graph_export.errors import ConfigError
from graph_export.export import run_export
from graph_export.naming import LATEST_BLOB, slot_pointer_name
from graph_export.settings import Settings, load_settings
from tests.unit.memory_clients import MemoryClients
from tests.unit.memory_graph import MemoryDirectory, make_users
from tests.unit.memory_storage import MemoryAccount
from tests.unit.orchestration import MULTI_TENANT_ENV

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
ENV = {
    "TENANT_IDS": f"{A.upper()}, {B},{A}",
    **MULTI_TENANT_ENV,
}
SLOT = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)


def problems(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return str(info.value)


# -- settings ----------------------------------------------------------------------------------------------------


def test_tenant_ids_are_lower_cased_de_duplicated_and_tenant_id_is_not_needed():
    s = load_settings(ENV)
    assert s.tenant_ids == (A, B)
    assert (s.tenant_id, s.tenant_root) == ("", "")
    assert s.export_queue == "graph-export-tenants"
    assert s.storage.queue_service_uri == "https://memoryaccount.queue.memory.invalid"
    one = s.for_tenant(B.upper())
    assert (one.tenant_id, one.tenant_root, one.authority) == (
        B, f"tenants/{B}/", f"https://login.microsoftonline.com/{B}")
    assert one.storage_settings.tenant_root == f"tenants/{B}/"


def test_without_tenant_ids_everything_is_as_before():
    s = load_settings({**{k: v for k, v in ENV.items() if k != "TENANT_IDS"}, "TENANT_ID": "contoso.onmicrosoft.com"})
    assert (s.tenant_ids, s.tenant_root, s.tenant_id) == ((), "", "contoso.onmicrosoft.com")
    with pytest.raises(ConfigError, match="TENANT_IDS is not set"):
        s.for_tenant(A)
    assert "TENANT_ID is missing" in problems({k: v for k, v in ENV.items() if k != "TENANT_IDS"})


@pytest.mark.parametrize("value, expect", [
    (f"{A},contoso.onmicrosoft.com", "TENANT_IDS has 'contoso.onmicrosoft.com': expected comma-separated"),
    (" , ", "TENANT_IDS names no tenant"),
    ("common", "TENANT_IDS has 'common'"),
])
def test_tenant_ids_must_be_guids(value, expect):
    assert expect in problems({**ENV, "TENANT_IDS": value})


def test_a_tenant_id_beside_tenant_ids_must_be_one_of_them():
    assert "TENANT_ID is 'contoso.onmicrosoft.com', which TENANT_IDS does not list" in problems(
        {**ENV, "TENANT_ID": "contoso.onmicrosoft.com"})
    assert load_settings({**ENV, "TENANT_ID": A}).tenant_id == ""


@pytest.mark.parametrize("name", ["Graph-Tenants", "ab", "a--b", "-ab", "q" * 57])
def test_queue_names_follow_azures_rules_with_room_for_the_poison_suffix(name):
    assert f"EXPORT_QUEUE is '{name}': queue names are 3-56" in problems({**ENV, "EXPORT_QUEUE": name})


def test_a_blob_service_uri_needs_the_queue_service_uri_of_the_same_account_with_tenant_ids():
    env = {k: v for k, v in ENV.items() if k != "EXPORT_STORAGE__queueServiceUri"}
    assert ("EXPORT_STORAGE__queueServiceUri is missing: TENANT_IDS fans out through a queue in the export storage "
            "account; set it to the account's queue URI, e.g. https://memoryaccount.queue.memory.invalid") in problems(env)
    conn = {k: v for k, v in env.items() if k != "EXPORT_STORAGE__blobServiceUri"}
    assert load_settings({**conn, "EXPORT_STORAGE": "UseDevelopmentStorage=true"}).tenant_ids == (A, B)


def test_a_sas_on_the_queue_service_uri_is_refused_without_echoing_it():
    text = problems({**ENV, "EXPORT_STORAGE__queueServiceUri": "https://acct.queue.core.windows.net/?sig=SECRETSIG"})
    assert "EXPORT_STORAGE__queueServiceUri has a query string" in text and "SECRETSIG" not in text


def test_an_unknown_tenant_is_refused_by_name():
    with pytest.raises(ConfigError, match="Tenant 'cccccccc-0000-4000-8000-00000000000c' is not one of TENANT_IDS"):
        load_settings(ENV).for_tenant("cccccccc-0000-4000-8000-00000000000c")


def test_run_export_refuses_the_settings_of_no_tenant():
    with pytest.raises(ConfigError, match="export one tenant at a time"):
        run_export(load_settings(ENV), SLOT)


# -- layout ------------------------------------------------------------------------------------------------------


def tenant_clients(account: MemoryAccount, tenant: str, users: int) -> MemoryClients:
    settings: Settings = load_settings(ENV).for_tenant(tenant)
    return MemoryClients(settings, MemoryDirectory(make_users(users)), storage=account)


def test_each_tenant_publishes_under_its_own_root_with_names_relative_to_it():
    account = MemoryAccount()
    a, b = tenant_clients(account, A, 120), tenant_clients(account, B, 30)
    summary_a = run_export(a.settings, SLOT, clients=a)
    summary_b = run_export(b.settings, SLOT, clients=b)

    names = {name for _, name in account.contents()}
    assert all(name.startswith((f"tenants/{A}/", f"tenants/{B}/")) for name in names), sorted(names)
    for tenant, summary, users in ((A, summary_a, 120), (B, summary_b, 30)):
        root = f"tenants/{tenant}/"
        latest = json.loads(account.contents()[("graph-exports", root + LATEST_BLOB)])
        manifest = json.loads(account.contents()[("graph-exports", root + summary.manifest)])
        # the records name blobs relative to the tenant's root, as a single-tenant container does
        assert latest["manifest"] == summary.manifest and latest["blob"] == summary.blob
        assert summary.blob.startswith("users/") and manifest["blob"] == summary.blob
        assert (manifest["tenant_id"], manifest["users"], latest["users"]) == (tenant, users, users)
        assert ("graph-exports", root + slot_pointer_name(SLOT)) in account.contents()
        assert summary.url.endswith(root + summary.blob)


def test_verify_reads_a_tenants_root_exactly_like_a_single_tenant_container():
    account = MemoryAccount()
    a, b = tenant_clients(account, A, 60), tenant_clients(account, B, 10)
    run_export(a.settings, SLOT, clients=a)
    run_export(b.settings, SLOT, clients=b)
    for clients, users in ((a, 60), (b, 10)):
        seen = tenant_root.under(clients.container(), clients.settings.tenant_root)
        report = verify.verify(seen, seen, clients.settings.container, every=True)
        report.raise_if_failed()  # VerifyError if any file, manifest or pointer below the root is not as committed
        assert report.summary() == "verified 1 slot and latest.json: all ok"
        assert [v.manifest.users for v in report.slots if v.manifest] == [users]


def test_a_second_run_of_one_tenant_skips_while_the_other_is_untouched():
    account = MemoryAccount()
    a, b = tenant_clients(account, A, 40), tenant_clients(account, B, 40)
    run_export(a.settings, SLOT, clients=a)
    before = dict(account.contents())
    assert run_export(a.settings, SLOT, clients=a).status == "skipped"
    assert account.contents() == before
    assert run_export(b.settings, SLOT, clients=b).status == "succeeded"  # B's slot is its own


def test_a_rooted_container_lists_and_strips_only_its_own_names():
    account = MemoryAccount()
    raw = account.container("c")
    raw.upload_blob(f"tenants/{A}/users/x", b"1")
    raw.upload_blob(f"tenants/{A}x/users/y", b"2")  # a longer id is another tenant
    raw.upload_blob("users/z", b"3")
    seen = tenant_root.under(raw, f"tenants/{A}/")  # type: ignore[arg-type]
    assert [b.name for b in seen.list_blobs(name_starts_with="users/")] == ["users/x"]
    assert seen.download_blob("users/x").readall() == b"1"
    assert seen.get_blob_client("users/x").blob_name == f"tenants/{A}/users/x"
    with pytest.raises(ValueError):
        tenant_root.under(raw, "tenants/no-slash")  # type: ignore[arg-type]


def test_a_connection_string_with_a_blob_endpoint_needs_its_queue_endpoint_with_tenant_ids():
    conn = {k: v for k, v in ENV.items() if not k.startswith("EXPORT_STORAGE__")}
    blob_only = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k;BlobEndpoint=http://127.0.0.1:1/a;"
    assert "EXPORT_STORAGE names a BlobEndpoint but no QueueEndpoint" in problems({**conn, "EXPORT_STORAGE": blob_only})
    both = blob_only + "QueueEndpoint=http://127.0.0.1:2/a;"
    assert load_settings({**conn, "EXPORT_STORAGE": both}).tenant_ids == (A, B)


def test_the_tenants_of_one_deployment_share_their_app_clients_and_the_recent_ones_keep_their_sign_in():
    app_clients.cache_clear()
    many = load_settings({**MULTI_TENANT_ENV, "TENANT_IDS": ",".join(f"{n:08d}-0000-4000-8000-000000000000"
                                                                    for n in range(TENANTS_KEPT + 1))})
    first, second = (warm_clients(many.for_tenant(t)) for t in many.tenant_ids[:2])
    assert first.app is second.app and first.tokens is not second.tokens
    assert first.settings.authority.endswith(many.tenant_ids[0]) and second.settings.authority.endswith(many.tenant_ids[1])
    assert warm_clients(many.for_tenant(many.tenant_ids[0])) is first
    for tenant in many.tenant_ids[2:]:
        warm_clients(many.for_tenant(tenant))
    assert warm_clients(many.for_tenant(many.tenant_ids[-1])).app is first.app
    assert warm_clients(many.for_tenant(many.tenant_ids[1])) is not second  # the oldest beyond TENANTS_KEPT
    app_clients.cache_clear()
