"""A sandbox that hosts several tenants: the provider's home tenant and customer tenants, over real sockets.

The one multi-tenant app registration signs in at each customer tenant with the same secret, certificate
or federated credential (MSAL, as the export does) and gets a token of that tenant; a tenant without the
app's service principal refuses it with Entra's AADSTS7000229; Graph serves each token its own tenant's
users only; faults and the request log tell the tenants apart.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from email.message import Message
from pathlib import Path

import msal
import pytest
import requests
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets._shared import http_challenge_cache

from sandbox import Sandbox
from sandbox.server import Request
from sandbox.tenant import USER_PROPERTIES, id_namespace, make_user, select, user_id
from sandbox.tokens import peek_claims
from tests.sandbox.sandbox_env import FOREIGN_ENV

REPO = Path(__file__).resolve().parents[2]
EXCHANGE = "api://AzureADTokenExchange"
PROPS = ["id", "displayName", "userPrincipalName"]


@pytest.fixture
def sbx(tmp_path):
    with Sandbox(users=40, workdir=tmp_path / "sandbox", customer_tenants=[30, 250]) as sb:
        yield sb


@pytest.fixture
def env(sbx, monkeypatch):
    http_challenge_cache.clear()
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in sbx.settings.items():
        monkeypatch.setenv(name, value)
    return sbx.settings


def msal_app(sb: Sandbox, tenant: str, credential=None, client_id: str | None = None):
    return msal.ConfidentialClientApplication(
        client_id or sb.client_id, client_credential=credential or sb.client_secret,
        authority=f"{sb.url('entra')}/{tenant}", instance_discovery=False)


def sign_in(sb: Sandbox, tenant: str, credential=None, client_id: str | None = None) -> dict:
    return msal_app(sb, tenant, credential, client_id).acquire_token_for_client([f"{sb.url('graph')}/.default"])


def graph_get(sb: Sandbox, url: str, token: str, **headers: str) -> requests.Response:
    if not url.startswith("https://"):
        url = sb.url("graph") + url
    return requests.get(url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=10)


def all_users(sb: Sandbox, token: str, query: str = "$select=id,displayName,userPrincipalName&$top=100") -> list:
    users, url = [], f"/v1.0/users?{query}"
    while url:
        page = graph_get(sb, url, token)
        assert page.status_code == 200, page.text
        users += page.json()["value"]
        url = page.json().get("@odata.nextLink")
    return users


# --- sign-in ----------------------------------------------------------------------------------------

def test_the_app_signs_in_at_each_customer_tenant_with_its_one_secret_and_gets_that_tenants_token(env, sbx):
    home = peek_claims(sign_in(sbx, sbx.tenant_id)["access_token"])
    seen = {home["oid"]}
    for customer in sbx.customers:
        for named in (customer.tenant_id, customer.domain):   # by GUID or by domain, as Entra accepts
            result = sign_in(sbx, named)
            assert "access_token" in result, result.get("error_description")
            claims = peek_claims(result["access_token"])
            assert claims["tid"] == customer.tenant_id and claims["iss"] == f"https://sts.windows.net/{customer.tenant_id}/"
            assert claims["appid"] == sbx.client_id and claims["roles"] == ["User.Read.All"]
            assert claims["oid"] == customer.principal.object_id  # the app's service principal there
        seen.add(claims["oid"])
    assert len(seen) == 3 and sbx.entra.grants == ["secret"] * 5
    assert [r.tenant for r in sbx.requests.entries("entra") if r.path.endswith("/token")] == \
        [sbx.tenant_id] + [c.tenant_id for c in sbx.customers for _ in (1, 2)]


def test_a_certificate_and_a_federated_credential_sign_in_at_a_customer_tenant(env, sbx):
    customer = sbx.customers[0]
    key_pem, cert_pem = sbx.new_certificate()
    sbx.entra.add_certificate(cert_pem)
    # MSAL makes the assertion for the authority's token endpoint: the customer tenant's.
    certificate = {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()}
    result = sign_in(sbx, customer.tenant_id, certificate)
    assert "access_token" in result, result.get("error_description")
    assert peek_claims(result["access_token"])["tid"] == customer.tenant_id

    sbx.use_federated()   # trusts the home tenant's user-assigned identity, whatever tenant the app signs in to
    identity = ManagedIdentityCredential(client_id=sbx.user_identity_client_id)
    federated = {"client_assertion": lambda: identity.get_token(f"{EXCHANGE}/.default").token}
    result = sign_in(sbx, customer.tenant_id, federated)
    assert "access_token" in result, result.get("error_description")
    assert peek_claims(result["access_token"])["tid"] == customer.tenant_id
    assert sbx.entra.grants == ["certificate", "federated"]


def test_a_certificate_assertion_made_for_one_tenant_does_not_sign_in_at_another(env, sbx):
    from msal.oauth2cli.assertion import JwtAssertionCreator

    from sandbox import certs

    key_pem, cert_pem = sbx.new_certificate()
    sbx.entra.add_certificate(cert_pem)
    creator = JwtAssertionCreator(key_pem, "RS256", sha1_thumbprint=certs.inspect(cert_pem).thumbprint)
    home_endpoint = f"{sbx.url('entra')}/{sbx.tenant_id}/oauth2/v2.0/token"
    refused = sign_in(sbx, sbx.tenant_ids[0], {
        "client_assertion": lambda: creator.create_normal_assertion(home_endpoint, sbx.client_id).decode()})
    assert refused["error_codes"] == [700023] and "does not match Realm issuer" in refused["error_description"]


def test_a_tenant_without_the_apps_service_principal_refuses_it_with_aadsts7000229(env, sbx):
    unconsented = sbx.add_tenant(10, consent=False)
    assert not unconsented.consented and unconsented.tenant_id in sbx.tenant_ids
    refused = sign_in(sbx, unconsented.tenant_id)
    assert refused["error"] == "invalid_client" and refused["error_codes"] == [7000229]
    assert refused["error_description"].startswith(
        f"AADSTS7000229: The client application {sbx.client_id} is missing service principal in the tenant "
        f"{unconsented.tenant_id}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119")
    assert sbx.client_secret not in refused["error_description"]

    unconsented.consent(["User.Read.All"])
    assert "access_token" in sign_in(sbx, unconsented.tenant_id)
    unconsented.revoke_consent()
    assert sign_in(sbx, unconsented.tenant_id)["error_codes"] == [7000229]
    assert [s.code for s in sbx.entra.sign_ins] == [7000229, None, 7000229]


def test_a_single_tenant_app_is_not_found_in_a_customer_tenant(env, sbx):
    local = sbx.entra.register_app(display_name="home-only", roles=["User.Read.All"])
    sbx.entra.add_secret("home-only-secret-value", client_id=local.client_id)
    assert "access_token" in sign_in(sbx, sbx.tenant_id, "home-only-secret-value", local.client_id)
    refused = sign_in(sbx, sbx.tenant_ids[0], "home-only-secret-value", local.client_id)
    assert refused["error_codes"] == [700016] and sbx.tenant_ids[0] in refused["error_description"]


def test_roles_are_granted_per_tenant(env, sbx):
    first, second = sbx.customers
    second.set_roles([])   # consented, but no Graph permission granted there
    assert "roles" not in peek_claims(sign_in(sbx, second.tenant_id)["access_token"])
    denied = graph_get(sbx, "/v1.0/users", sign_in(sbx, second.tenant_id)["access_token"])
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    assert graph_get(sbx, "/v1.0/users", sign_in(sbx, first.tenant_id)["access_token"]).status_code == 200

    second.set_roles(["Directory.Read.All"])
    assert second.roles == ["Directory.Read.All"]
    claims = peek_claims(sign_in(sbx, second.tenant_id)["access_token"])
    assert claims["roles"] == ["Directory.Read.All"]
    with pytest.raises(KeyError, match="not consented"):
        sbx.add_tenant(5, consent=False).set_roles(["User.Read.All"])


# --- Graph ------------------------------------------------------------------------------------------

def test_each_tenant_reads_its_own_users_from_the_one_graph_url(env, sbx):
    ids = {}
    for tenant, size in ((sbx.tenant_id, 40), *((c.tenant_id, c.users) for c in sbx.customers)):
        token = sign_in(sbx, tenant)["access_token"]
        users = all_users(sbx, token)
        assert len(users) == size
        count = graph_get(sbx, "/v1.0/users/$count", token, ConsistencyLevel="eventual")
        assert count.text == str(size)
        ids[tenant] = {u["id"] for u in users}
    assert [len(v) for v in ids.values()] == [40, 30, 250]
    assert not set.intersection(*ids.values()) and len(set.union(*ids.values())) == 320   # no id in two tenants

    second = sbx.customers[1]
    token = sign_in(sbx, second.tenant_id)["access_token"]
    namespace = id_namespace(second.tenant_id)
    assert all_users(sbx, token) == list(second.expected_users(PROPS)) == \
        [select(make_user(i, second.domain, namespace), PROPS) for i in range(250)]
    assert all_users(sbx, token)[7]["id"] == user_id(7, namespace) != user_id(7)
    assert all_users(sbx, token, f"$select={','.join(USER_PROPERTIES)}")[5]["userPrincipalName"].endswith(
        "@customer2.onmicrosoft.com")


def test_a_change_in_one_tenant_is_seen_there_only(env, sbx):
    first, second = sbx.customers
    first.directory.update(first.directory.id_of(3), displayName="Only In First")
    first.directory.add(displayName="Newcomer")
    assert first.users == 31 and second.users == 250 and sbx.users == 40
    names = [u["displayName"] for u in all_users(sbx, sign_in(sbx, first.tenant_id)["access_token"])]
    assert names[3] == "Only In First" and names[-1] == "Newcomer"
    for other in (second.tenant_id, sbx.tenant_id):
        assert "Only In First" not in {u["displayName"] for u in all_users(sbx, sign_in(sbx, other)["access_token"])}


def test_a_token_of_one_tenant_never_reads_another_tenants_users(env, sbx):
    first, second = sbx.customers
    first_token = sign_in(sbx, first.tenant_id)["access_token"]
    second_page = graph_get(sbx, "/v1.0/users?$top=100", sign_in(sbx, second.tenant_id)["access_token"]).json()
    # The second tenant's nextLink followed with the first tenant's token: the first tenant's Graph serves
    # it, and its skiptokens are its own, so the page token is refused rather than read as an offset.
    crossed = graph_get(sbx, second_page["@odata.nextLink"], first_token)
    assert crossed.status_code == 400 and crossed.json()["error"]["message"] == "Invalid page token specified."

    # A token of a tenant this Graph does not host: 401 InvalidAuthenticationToken, as Graph refuses a token
    # it cannot validate ("Microsoft Graph error responses": 401 "Required authentication information is
    # either missing or not valid for the resource").
    stranger = sbx.issue_token(tenant_id="0b7e1f3c-0000-4000-8000-00000000dead")
    refused = graph_get(sbx, "/v1.0/users", stranger)
    error = refused.json()["error"]
    assert refused.status_code == 401 and (error["code"], error["message"]) == (
        "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer.")

    # Each tenant's Graph keeps its own strictness: the second tenant's refuses the first tenant's token.
    headers = Message()
    headers["Authorization"] = f"Bearer {first_token}"
    direct = second.graph.handle(Request("GET", "/v1.0/users", {}, headers))
    assert direct.status == 401 and b"Invalid issuer" in direct.body


def test_faults_and_the_request_log_tell_tenants_apart(env, sbx):
    first, second = sbx.customers
    rule = sbx.faults.add("graph", tenant=second.tenant_id.upper(), status=503, headers={"Retry-After": "1"})
    first_token, second_token = (sign_in(sbx, c.tenant_id)["access_token"] for c in (first, second))
    assert graph_get(sbx, "/v1.0/users", first_token).status_code == 200
    failed = graph_get(sbx, "/v1.0/users", second_token)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1" and rule.fired == 1
    assert f"tenant={second.tenant_id}" in rule.describe()
    graph = sbx.requests.entries("graph")
    assert [(r.tenant, r.status) for r in graph] == [(first.tenant_id, 200), (second.tenant_id, 503)]
    assert [r.status for r in sbx.requests.entries("graph", tenant=second.tenant_id)] == [503]

    # Entra too: one tenant's token endpoint fails, the other's does not.
    sbx.faults.clear()
    sbx.faults.add("entra", tenant=first.tenant_id, path_contains="/token", status=400, count=1)
    assert "access_token" in sign_in(sbx, second.tenant_id)
    assert "error" in sign_in(sbx, first.domain)   # named by domain: still that tenant's fault
    with pytest.raises(ValueError, match="tenant only applies"):
        sbx.faults.add("keyvault", tenant=first.tenant_id, status=500)


def test_multi_tenant_settings_name_every_customer_tenant_and_no_single_tenant(sbx):
    settings = sbx.multi_tenant_settings()
    assert settings["TENANT_IDS"] == ",".join(sbx.tenant_ids) and "TENANT_ID" not in settings
    assert {k: v for k, v in settings.items() if k != "TENANT_IDS"} == \
        {k: v for k, v in sbx.settings.items() if k != "TENANT_ID"}
    assert sbx.settings["TENANT_ID"] == sbx.tenant_id and sbx.tenant_id not in sbx.tenant_ids
    assert sbx.multi_tenant_settings(sbx.tenant_ids[1:])["TENANT_IDS"] == sbx.tenant_ids[1]
    assert [c.users for c in sbx.customers] == [30, 250] and len(set(sbx.tenant_ids)) == 2
    assert sbx.tenant(sbx.tenant_ids[0].upper()) is sbx.customers[0]
    with pytest.raises(KeyError):
        sbx.tenant(sbx.tenant_id)


def test_customer_tenants_of_the_home_tenants_size_by_default(tmp_path):
    sb = Sandbox(users=12, workdir=tmp_path, customer_tenants=2)
    assert [c.users for c in sb.customers] == [12, 12] and all(c.consented for c in sb.customers)
    assert [c.domain for c in sb.customers] == ["customer1.onmicrosoft.com", "customer2.onmicrosoft.com"]
    assert "customer_tenants=2" in repr(sb)


def test_cli_serve_hosts_customer_tenants_and_prints_their_ids(tmp_path, monkeypatch):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--users", "7", "--customer-tenants", "2", "--no-azurite",
         "--json", "--workdir", str(tmp_path), "--max-seconds", "60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # bounded: one JSON object, then it waits
            lines.append(line)
            if line.rstrip() == "}":
                break
        settings = json.loads("".join(lines))
        assert "TENANT_ID" not in settings and len(settings["TENANT_IDS"].split(",")) == 2
        customer = settings["TENANT_IDS"].split(",")[1]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", settings["REQUESTS_CA_BUNDLE"])  # requests prefers it to verify=
        app = msal.ConfidentialClientApplication(
            settings["CLIENT_ID"], client_credential="not-the-secret", instance_discovery=False,
            authority=f"{settings['AUTHORITY_HOST']}/{customer}")
        # The tenant exists and the app is consented there: only the (deliberately wrong) secret is refused.
        assert app.acquire_token_for_client([f"{settings['GRAPH_ENDPOINT']}/.default"])["error_codes"] == [7000215]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
