import json
import logging
import random
import types

import pytest
import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets._shared import http_challenge_cache

from graph_export.credentials import (
    Secret,
    VaultAudienceCredential,
    is_vault_host,
    make_secret_client,
    read_client_secret,
    vault_audience,
)
from graph_export.errors import AuthError


def test_secret_never_shows_its_value(caplog):
    secret = Secret("s3cr3t-value", version="abc")
    assert "s3cr3t-value" not in repr(secret) and "s3cr3t-value" not in str(secret)
    assert "s3cr3t-value" not in f"{secret} {secret!r} {[secret]} {({'k': secret})}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("secret is %s / %r", secret, secret)
    assert "s3cr3t-value" not in caplog.text
    assert secret.reveal() == "s3cr3t-value"


def test_secrets_compare_by_value():
    assert Secret("a") == Secret("a", version="2") and Secret("a") != Secret("b")


def test_only_hosts_on_a_vault_domain_count_as_real_vaults():
    # Real vaults keep the SDK's challenge-resource check; it is off only for other hosts (emulators).
    for url in ("https://kv.vault.azure.net", "https://kv.vault.azure.cn/", "https://kv.vault.usgovcloudapi.net"):
        assert is_vault_host(url), url
    for url in ("https://127.0.0.1:8443", "https://kv.vault.azure.net.example.com", "https://vault.azure.net.evil"):
        assert not is_vault_host(url), url


# --- the vault only ever gets a token for the vault audience ---------------------------------------


PUBLIC, CHINA, USGOV = "https://vault.azure.net", "https://vault.azure.cn", "https://vault.usgovcloudapi.net"


@pytest.mark.parametrize("vault_url, authority_host, audience", [
    # a real vault's host names its cloud, whatever AUTHORITY_HOST says
    ("https://kv.vault.azure.net/", "https://login.microsoftonline.com", PUBLIC),
    ("https://KV.Vault.Azure.NET:443", None, PUBLIC),
    ("https://kv.vault.azure.cn", "https://login.microsoftonline.com", CHINA),
    ("https://kv.vault.usgovcloudapi.net", None, USGOV),
    ("https://hsm.managedhsm.azure.net", None, "https://managedhsm.azure.net"),
    ("https://hsm.managedhsm.azure.cn", None, "https://managedhsm.azure.cn"),
    ("https://hsm.managedhsm.usgovcloudapi.net", None, "https://managedhsm.usgovcloudapi.net"),
    # any other host: the vault audience of AUTHORITY_HOST's cloud
    ("https://127.0.0.1:8443", "https://127.0.0.1:9443", PUBLIC),
    ("https://127.0.0.1:8443", None, PUBLIC),
    ("https://127.0.0.1:8443", "https://login.microsoftonline.us", USGOV),
    ("https://127.0.0.1:8443", "https://login.chinacloudapi.cn", CHINA),
    ("https://127.0.0.1:8443", "https://login.partner.microsoftonline.cn", CHINA),
    # look-alikes are not vaults
    ("https://kv.vault.azure.net.example.com", None, PUBLIC),
    ("https://kv.vault.azure.cn.example.com", "https://login.microsoftonline.us", USGOV),
    ("https://kv-vault.azure.cn", None, PUBLIC),
    ("https://vault.azure.cn", None, PUBLIC),
])
def test_vault_audience_comes_from_the_vault_domain_else_the_sign_in_cloud(vault_url, authority_host, audience):
    assert vault_audience(vault_url, authority_host) == audience


class RecordingCredential:
    """Records what it was asked for; answers with a fixed token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def get_token(self, *scopes, **kwargs):
        self.calls.append(("get_token", scopes, kwargs))
        return AccessToken("vault-token", 4_102_444_800)

    def get_token_info(self, *scopes, options=None):
        self.calls.append(("get_token_info", scopes, dict(options or {})))
        return AccessTokenInfo("vault-token", 4_102_444_800)


class InfoLessCredential:
    """A credential with get_token only (the older protocol)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def get_token(self, *scopes, **kwargs):
        self.calls.append((scopes, kwargs))
        return AccessToken("vault-token", 4_102_444_800)


def test_the_wrapped_credential_asks_for_the_vault_audience_only_and_keeps_the_options(caplog):
    inner = RecordingCredential()
    credential = VaultAudienceCredential(inner, PUBLIC, "https://127.0.0.1:8443")
    options = {"tenant_id": "t1", "claims": "c1", "enable_cae": True}
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        credential.get_token_info("https://storage.azure.com/.default", options=options)
        credential.get_token_info("https://graph.microsoft.com/.default", options=options)
        credential.get_token("https://storage.azure.com/.default", tenant_id="t2", enable_cae=True)
    assert inner.calls == [
        ("get_token_info", (f"{PUBLIC}/.default",), options),
        ("get_token_info", (f"{PUBLIC}/.default",), options),
        ("get_token", (f"{PUBLIC}/.default",), {"tenant_id": "t2", "enable_cae": True}),
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "https://storage.azure.com" in warnings[0].getMessage()  # once


def test_the_wrapped_credential_is_quiet_for_the_vault_audience_and_works_without_get_token_info(caplog):
    inner = InfoLessCredential()
    credential = VaultAudienceCredential(inner, USGOV, "https://kv.vault.usgovcloudapi.net")
    with caplog.at_level(logging.WARNING):
        info = credential.get_token_info(f"{USGOV}/.default", options={"tenant_id": "t1", "enable_cae": True})
    assert (info.token, info.expires_on) == ("vault-token", 4_102_444_800)
    assert inner.calls == [((f"{USGOV}/.default",), {"tenant_id": "t1", "enable_cae": True})]
    assert caplog.records == []


class FakeVault(requests.adapters.BaseAdapter):
    """A vault behind requests: 401 with a challenge for ``resource`` until a bearer token comes, then the secret."""

    def __init__(self, resource: str) -> None:
        super().__init__()
        self.resource = resource
        self.authorizations: list[str | None] = []

    def send(self, request, **kwargs):
        authorization = request.headers.get("Authorization")
        self.authorizations.append(authorization)
        response = requests.Response()
        response.request, response.url, response.raw = request, request.url, types.SimpleNamespace()
        response.headers["Content-Type"] = "application/json"
        if authorization is None:
            response.status_code = 401
            response.headers["WWW-Authenticate"] = (
                f'Bearer authorization="https://login.microsoftonline.com/tenant", resource="{self.resource}"')
            response._content = json.dumps({"error": {"code": "Unauthorized", "message": "AKV10000"}}).encode()
        else:
            response.status_code = 200
            base = request.url.split("/secrets/")[0]
            response._content = json.dumps({"value": "the-secret-value", "id": f"{base}/secrets/s/{'0' * 32}",
                                            "attributes": {"enabled": True}}).encode()
        return response

    def close(self) -> None:
        pass


def fake_vault_client(vault_url: str, resource: str, credential, authority_host: str | None = None):
    http_challenge_cache.clear()
    vault = FakeVault(resource)
    session = requests.Session()
    session.mount("https://", vault)
    client = make_secret_client(vault_url, credential, authority_host=authority_host,
                                transport=RequestsTransport(session=session, session_owner=False), retry_total=0)
    return client, vault


@pytest.mark.parametrize("challenge", ["https://storage.azure.com", "https://graph.microsoft.com",
                                       "https://management.azure.com/", "api://some-app"])
def test_a_host_that_is_not_a_vault_cannot_choose_the_token_audience(challenge):
    inner = RecordingCredential()
    url = f"https://127.0.0.1:{random.randint(20_000, 60_000)}"
    client, vault = fake_vault_client(url, challenge, inner, authority_host="https://login.microsoftonline.us")
    assert read_client_secret(client, "s").reveal() == "the-secret-value"
    assert [scopes for _, scopes, _ in inner.calls] == [(f"{USGOV}/.default",)]
    assert inner.calls[0][2].get("tenant_id") == "tenant"  # the challenge's tenant still passes through
    assert vault.authorizations == [None, "Bearer vault-token"]


def test_a_real_vault_host_challenging_for_another_resource_is_refused_before_any_token():
    inner = RecordingCredential()
    client, vault = fake_vault_client("https://kv.vault.azure.net", "https://storage.azure.com", inner)
    with pytest.raises(AuthError, match="KEY_VAULT_URL") as raised:
        read_client_secret(client, "s")
    assert "\n" not in str(raised.value)
    assert inner.calls == [] and vault.authorizations == [None]
