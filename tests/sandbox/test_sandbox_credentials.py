"""Signing in without a long-lived secret, against the sandbox over real sockets.

Certificate assertions (built with MSAL's own JwtAssertionCreator, PS256/x5t#S256 and RS256/x5t) and
federated assertions (a user-assigned managed identity's token for api://AzureADTokenExchange) are
validated by the Entra look-alike for real; the certificate lives in the Key Vault look-alike the way
Key Vault keeps one (a certificate plus a managed backing secret), read with azure-keyvault-secrets.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from msal.oauth2cli.assertion import JwtAssertionCreator

from sandbox import Sandbox, certs
from sandbox.entra import JWT_BEARER
from sandbox.tokens import TokenService, peek_claims
from tests.sandbox.sandbox_env import point_at

EXCHANGE = "api://AzureADTokenExchange"


@pytest.fixture
def sbx(tmp_path):
    with Sandbox(users=150, workdir=tmp_path / "sandbox") as sb:
        yield sb


@pytest.fixture
def env(sbx, monkeypatch):
    return point_at(sbx, monkeypatch)


# --- helpers ---------------------------------------------------------------------------------------

def token_endpoint(sb: Sandbox, tenant: str | None = None, v1: bool = False) -> str:
    return f"{sb.url('entra')}/{tenant or sb.tenant_id}/oauth2/{'token' if v1 else 'v2.0/token'}"


def graph_scope(sb: Sandbox) -> str:
    return f"{sb.url('graph')}/.default"


def cert_assertion(sb: Sandbox, key_pem: bytes, cert_pem: bytes, *, alg: str = "PS256", aud: str | None = None,
                   iss: str | None = None, sub: str | None = None, **kwargs) -> str:
    """An assertion exactly as MSAL builds one: PS256 + x5t#S256, or RS256 + x5t (SHA-1)."""
    info = certs.inspect(cert_pem)
    if alg == "PS256":
        creator = JwtAssertionCreator(key_pem, "PS256", sha256_thumbprint=info.sha256.hex())
    else:
        creator = JwtAssertionCreator(key_pem, "RS256", sha1_thumbprint=info.sha1.hex())
    issuer = iss or sb.client_id
    raw = creator.create_normal_assertion(aud or token_endpoint(sb), issuer, sub or issuer, **kwargs)
    return raw.decode("ascii") if isinstance(raw, bytes) else raw


def post_assertion(sb: Sandbox, assertion: str | None, **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": sb.client_id, "scope": graph_scope(sb),
            "client_assertion_type": JWT_BEARER, **form}
    if assertion is not None:
        data["client_assertion"] = assertion
    return requests.post(token_endpoint(sb), data=data, timeout=10)


def mi_token(sb: Sandbox, resource: str = EXCHANGE, **selector: str) -> requests.Response:
    params = {"api-version": "2019-08-01", "resource": resource, **selector}
    return requests.get(sb.settings["IDENTITY_ENDPOINT"], params=params,
                        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10)


def exchange_token(sb: Sandbox, audience: str = EXCHANGE) -> str:
    r = mi_token(sb, audience, client_id=sb.user_identity_client_id)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def assert_entra_error(r: requests.Response, status: int, error: str, code: int, *secrets: str) -> str:
    """Entra's exact error shape; returns the description. No credential material may appear in it."""
    body = r.json()
    assert r.status_code == status, body
    assert set(body) >= {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}
    assert body["error"] == error and body["error_codes"] == [code], body
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: "), description
    assert re.search(r"\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}"
                     r"\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", description), description
    assert f"Trace ID: {body['trace_id']}" in description and re.fullmatch(r"[\d-]+ [\d:]+Z", body["timestamp"])
    for secret in secrets:
        assert secret not in r.text
    return description


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return ".".join((head, payload, signature[:middle] + flipped + signature[middle + 1:]))


def registered_cert(sb: Sandbox, days: float = 365) -> tuple[bytes, bytes]:
    key_pem, cert_pem = sb.new_certificate(days=days)
    sb.entra.add_certificate(cert_pem)
    return key_pem, cert_pem


# --- certificate assertions ------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["PS256", "RS256"])
def test_a_certificate_assertion_built_like_msal_gets_a_token(env, sbx, alg):
    key_pem, cert_pem = registered_cert(sbx)
    assertion = cert_assertion(sbx, key_pem, cert_pem, alg=alg)
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == alg and ("x5t#S256" if alg == "PS256" else "x5t") in header
    r = post_assertion(sbx, assertion)
    assert r.status_code == 200, r.text
    claims = peek_claims(r.json()["access_token"])
    assert (claims["appid"], claims["roles"], claims["aud"]) == (sbx.client_id, ["User.Read.All"], sbx.url("graph"))
    assert sbx.entra.grants == ["certificate"]
    assert [(s.kind, s.code) for s in sbx.entra.sign_ins] == [("certificate", None)]


@pytest.mark.parametrize("encoding", ["base64url", "base64url-padded", "base64-padded", "hex"])
def test_every_thumbprint_encoding_entra_meets_is_accepted(env, sbx, encoding):
    key_pem, cert_pem = registered_cert(sbx)
    sha1 = certs.inspect(cert_pem).sha1
    x5t = {"base64url": certs.b64url(sha1), "base64url-padded": base64.urlsafe_b64encode(sha1).decode(),
           "base64-padded": base64.b64encode(sha1).decode(), "hex": sha1.hex().upper()}[encoding]
    now = int(time.time())
    assertion = jwt.encode({"aud": token_endpoint(sbx), "iss": sbx.client_id, "sub": sbx.client_id,
                            "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600},
                           key_pem, algorithm="RS256", headers={"x5t": x5t})
    assert post_assertion(sbx, assertion).status_code == 200


@pytest.mark.parametrize("audience", ["v1", "domain", "upper-case"])
def test_the_token_endpoint_in_other_spellings_is_a_valid_audience(env, sbx, audience):
    key_pem, cert_pem = registered_cert(sbx)
    aud = {"v1": token_endpoint(sbx, v1=True), "domain": token_endpoint(sbx, sbx.tenant_domain),
           "upper-case": token_endpoint(sbx).replace("oauth2/v2.0/token", "OAuth2/V2.0/Token")}[audience]
    assert post_assertion(sbx, cert_assertion(sbx, key_pem, cert_pem, aud=aud)).status_code == 200


def _case(sb: Sandbox, case: str) -> tuple[str, bytes]:
    """The assertion for one rejection case, and the private key used (which must never be echoed)."""
    now = time.time()
    if case == "unregistered":
        key_pem, cert_pem = sb.new_certificate()
        return cert_assertion(sb, key_pem, cert_pem), key_pem
    if case == "expired-certificate":
        key_pem, cert_pem = registered_cert(sb, days=-1)
        return cert_assertion(sb, key_pem, cert_pem), key_pem
    key_pem, cert_pem = registered_cert(sb)
    if case == "tampered":
        return tamper_signature(cert_assertion(sb, key_pem, cert_pem)), key_pem
    if case == "signed-by-another-key":
        other_key, _ = sb.new_certificate()
        return cert_assertion(sb, other_key, cert_pem, alg="RS256"), key_pem
    if case == "wrong-aud":
        return cert_assertion(sb, key_pem, cert_pem, aud=f"https://login.microsoftonline.com/{sb.tenant_id}"
                                                         "/oauth2/v2.0/token"), key_pem
    if case == "aud-list":
        return cert_assertion(sb, key_pem, cert_pem, additional_claims={"aud": [token_endpoint(sb)]}), key_pem
    if case == "iss-not-client-id":
        return cert_assertion(sb, key_pem, cert_pem, iss=str(uuid.uuid4())), key_pem
    if case == "iss-not-sub":
        return cert_assertion(sb, key_pem, cert_pem, sub=str(uuid.uuid4())), key_pem
    if case == "expired":
        return cert_assertion(sb, key_pem, cert_pem, issued_at=now - 1000, expires_at=now - 400), key_pem
    if case == "not-yet-valid":
        return cert_assertion(sb, key_pem, cert_pem, not_before=now + 400, expires_at=now + 900), key_pem
    if case == "no-thumbprint":
        return jwt.encode({"aud": token_endpoint(sb), "iss": sb.client_id, "sub": sb.client_id, "exp": now + 600},
                          key_pem, algorithm="RS256"), key_pem
    if case == "alg-none":
        head = certs.b64url(json.dumps({"alg": "none", "x5t": certs.inspect(cert_pem).x5t}).encode())
        body = certs.b64url(json.dumps({"aud": token_endpoint(sb), "iss": sb.client_id, "sub": sb.client_id,
                                        "exp": now + 600}).encode())
        return f"{head}.{body}.", key_pem
    assert case == "unparsable"
    return "this-is-not-a-jwt", key_pem


@pytest.mark.parametrize("case, status, error, code, says", [
    ("unregistered", 401, "invalid_client", 700027, "is not registered on application. [Reason - The key was not found"),
    ("expired-certificate", 401, "invalid_client", 700027, "[Reason - The key used is expired."),
    ("tampered", 401, "invalid_client", 700027, "Key was found, but use of the key to verify the signature failed"),
    ("signed-by-another-key", 401, "invalid_client", 700027, "use of the key to verify the signature failed"),
    ("alg-none", 401, "invalid_client", 700027, "use of the key to verify the signature failed"),
    ("wrong-aud", 401, "invalid_client", 700023, "Client assertion audience claim does not match Realm issuer."),
    ("iss-not-client-id", 401, "invalid_client", 700021,
     "Client assertion application identifier doesn't match 'client_id' parameter."),
    ("iss-not-sub", 401, "invalid_client", 50048, "Subject must match the issuer claim in the client assertion."),
    ("expired", 401, "invalid_client", 700024, "Client assertion is not within its valid time range. Current time: "),
    ("not-yet-valid", 401, "invalid_client", 700024, "Client assertion is not within its valid time range."),
    ("aud-list", 400, "invalid_request", 50027, "JWT token is invalid or malformed."),
    ("no-thumbprint", 400, "invalid_request", 50027, "No certificate thumbprint specified in token header."),
    ("unparsable", 400, "invalid_request", 50027, "JWT token is invalid or malformed."),
])
def test_certificate_assertion_rejections_have_entra_codes(env, sbx, case, status, error, code, says):
    assertion, key_pem = _case(sbx, case)
    r = post_assertion(sbx, assertion)
    description = assert_entra_error(r, status, error, code, assertion, key_pem.decode())
    assert says in description, description
    if code == 700027 and case != "alg-none":
        assert re.search(r"Thumbprint of key used by client: '[0-9A-F]{40,64}'", description), description
    if case in ("expired-certificate", "tampered"):
        assert re.search(r"Found key 'Start=\d\d/\d\d/\d{4} \d\d:\d\d:\d\d, End=\d\d/\d\d/\d{4} \d\d:\d\d:\d\d'",
                         description), description
    if code == 700024:
        assert re.search(r"Current time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z, assertion valid from "
                         r"\d{4}-.{22}Z, expiry time of assertion \d{4}-.{22}Z", description), description
    assert sbx.entra.grants == [] and sbx.entra.sign_ins[-1].code == code


def test_five_minutes_of_clock_skew_are_tolerated(env, sbx):
    key_pem, cert_pem = registered_cert(sbx)
    now = time.time()
    late = cert_assertion(sbx, key_pem, cert_pem, issued_at=now - 900, expires_at=now - 200)
    early = cert_assertion(sbx, key_pem, cert_pem, not_before=now + 200, expires_at=now + 800)
    assert [post_assertion(sbx, a).status_code for a in (late, early)] == [200, 200]


def test_client_assertion_type_is_required(env, sbx):
    key_pem, cert_pem = registered_cert(sbx)
    assertion = cert_assertion(sbx, key_pem, cert_pem)
    missing = post_assertion(sbx, assertion, client_assertion_type="")
    assert_entra_error(missing, 400, "invalid_request", 900144, assertion)
    wrong = post_assertion(sbx, assertion, client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
    assert_entra_error(wrong, 400, "invalid_request", 90011, assertion)
    neither = post_assertion(sbx, None, client_assertion_type="")
    assert_entra_error(neither, 401, "invalid_client", 7000218)
    assert [s.kind for s in sbx.entra.sign_ins] == ["certificate", "certificate", "none"]


def test_a_reused_assertion_is_accepted_like_entra_unless_replays_are_refused(env, sbx):
    key_pem, cert_pem = registered_cert(sbx)
    assertion = cert_assertion(sbx, key_pem, cert_pem)
    # MSAL itself reuses an assertion for up to 9 minutes, so Entra must (and the sandbox does) accept it.
    assert [post_assertion(sbx, assertion).status_code for _ in range(2)] == [200, 200]
    assert sbx.entra.reused_assertions == 1
    sbx.entra.reject_replayed_assertions = True
    fresh = cert_assertion(sbx, key_pem, cert_pem)
    assert post_assertion(sbx, fresh).status_code == 200
    description = assert_entra_error(post_assertion(sbx, fresh), 401, "invalid_client", 50013, fresh)
    assert "already been used" in description
    assert sbx.entra.grants == ["certificate"] * 3


def test_a_removed_certificate_no_longer_signs_in(env, sbx):
    key_pem, cert_pem = registered_cert(sbx)
    assert post_assertion(sbx, cert_assertion(sbx, key_pem, cert_pem)).status_code == 200
    with pytest.raises(ValueError, match="already registered"):
        sbx.entra.add_certificate(cert_pem)
    sbx.entra.remove_certificates()
    assert_entra_error(post_assertion(sbx, cert_assertion(sbx, key_pem, cert_pem)), 401, "invalid_client", 700027)


# --- managed identity and federated assertions -----------------------------------------------------

def test_the_user_assigned_identity_gets_exchange_tokens_and_the_system_one_does_not(env, sbx):
    r = mi_token(sbx, client_id=sbx.user_identity_client_id)
    assert r.status_code == 200 and r.json()["client_id"] == sbx.user_identity_client_id
    claims = peek_claims(r.json()["access_token"])
    assert claims["iss"] == f"{sbx.url('entra')}/{sbx.tenant_id}/v2.0" == sbx.federation_issuer
    assert claims["sub"] == claims["oid"] == sbx.user_identity_principal_id
    assert (claims["aud"], claims["tid"], claims["ver"]) == (EXCHANGE, sbx.tenant_id, "2.0")
    assert claims["exp"] > time.time() + 3000
    for selector in ({"principal_id": sbx.user_identity_principal_id}, {"object_id": sbx.user_identity_principal_id},
                     {"mi_res_id": sbx.identity.user.resource_id}):
        assert peek_claims(mi_token(sbx, **selector).json()["access_token"])["sub"] == sbx.user_identity_principal_id
    for cloud in ("api://AzureADTokenExchangeUSGov", "api://AzureADTokenExchangeChina"):
        assert peek_claims(exchange_token(sbx, cloud))["aud"] == cloud

    system = mi_token(sbx)  # no selector: the system-assigned identity
    assert system.status_code == 500 and system.json()["statusCode"] == 500
    assert mi_token(sbx, client_id=str(uuid.uuid4())).status_code == 400
    # The user-assigned identity gets resource tokens too, as itself, and may read the vault.
    vault = peek_claims(mi_token(sbx, "https://vault.azure.net", client_id=sbx.user_identity_client_id)
                        .json()["access_token"])
    assert (vault["oid"], vault["appid"]) == (sbx.user_identity_principal_id, sbx.user_identity_client_id)
    assert sbx.identity.issued_to[-1] == ("user", "https://vault.azure.net")


def test_a_federated_assertion_from_the_user_assigned_identity_gets_a_token(env, sbx):
    settings = sbx.use_federated()
    assert settings == {"CLIENT_CREDENTIAL": "federated", "MANAGED_IDENTITY_CLIENT_ID": sbx.user_identity_client_id}
    credential = sbx.app.federated_credentials[0]
    assert (credential.issuer, credential.subject, credential.audiences) == (
        sbx.federation_issuer, sbx.user_identity_principal_id, [EXCHANGE])
    r = post_assertion(sbx, exchange_token(sbx))
    assert r.status_code == 200, r.text
    assert peek_claims(r.json()["access_token"])["appid"] == sbx.client_id
    assert sbx.entra.grants == ["federated"]


@pytest.mark.parametrize("case, status, error, code", [
    ("none-registered", 400, "invalid_request", 70021),
    ("still-propagating", 400, "invalid_request", 70021),
    ("wrong-issuer", 401, "invalid_client", 700211),
    ("wrong-subject", 401, "invalid_client", 700213),
    ("wrong-audience", 401, "invalid_client", 700212),
])
def test_federated_assertions_without_a_matching_record(env, sbx, case, status, error, code):
    if case == "still-propagating":
        sbx.entra.add_federated_credential(issuer=sbx.federation_issuer, subject=sbx.user_identity_principal_id,
                                           audiences=[EXCHANGE], propagation_s=60)
    elif case == "wrong-issuer":
        sbx.entra.add_federated_credential(issuer="https://token.actions.githubusercontent.com",
                                           subject=sbx.user_identity_principal_id, audiences=[EXCHANGE])
    elif case == "wrong-subject":
        sbx.use_federated(subject=str(uuid.uuid4()))
    elif case == "wrong-audience":
        sbx.use_federated(audience="api://AzureADTokenExchangeUSGov")
    token = exchange_token(sbx)
    description = assert_entra_error(post_assertion(sbx, token), status, error, code, token)
    iss, sub = sbx.federation_issuer, sbx.user_identity_principal_id
    expected = {
        70021: (f"No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. "
                f"Assertion Subject: '{sub}'. Assertion Audience: '{EXCHANGE}'."),
        700211: f"No matching federated identity record found for presented assertion issuer '{iss}'.",
        700213: f"No matching federated identity record found for presented assertion subject '{sub}'.",
        700212: f"No matching federated identity record found for presented assertion audience '{EXCHANGE}'.",
    }[code]
    assert description.startswith(f"AADSTS{code}: {expected}"), description
    assert sbx.entra.sign_ins[-1].kind == "federated" and sbx.entra.grants == []


@pytest.mark.parametrize("case", ["expired", "forged", "tampered"])
def test_federated_assertions_must_be_genuine_and_current(env, sbx, case):
    sbx.use_federated()
    if case == "expired":
        sbx.identity.token_lifetime_s = -400  # beyond the 5 minutes of skew
        token = exchange_token(sbx)
    elif case == "forged":  # right claims, signed by another token service: not this tenant's identity
        token, _ = TokenService().issue(aud=EXCHANGE, tenant_id=sbx.tenant_id, appid=sbx.user_identity_client_id,
                                        oid=sbx.user_identity_principal_id, issuer=sbx.federation_issuer,
                                        version="2.0")
    else:
        token = tamper_signature(exchange_token(sbx))
    r = post_assertion(sbx, token)
    if case == "expired":
        assert "Client assertion is not within its valid time range" in \
            assert_entra_error(r, 401, "invalid_client", 700024, token)
    else:
        assert "Client assertion failed signature validation." in \
            assert_entra_error(r, 401, "invalid_client", 700027, token)


def test_a_system_identity_token_is_refused_as_the_wrong_subject(env, sbx):
    sbx.use_federated()
    sbx.identity.system_exchange_tokens = True
    token = mi_token(sbx).json()["access_token"]
    description = assert_entra_error(post_assertion(sbx, token), 401, "invalid_client", 700213, token)
    assert sbx.principal_id in description


def test_federated_credential_rules(sbx):
    sbx.entra.add_federated_credential(issuer="https://issuer.example", subject="a", audiences=[EXCHANGE])
    with pytest.raises(ValueError, match="named"):
        sbx.entra.add_federated_credential(issuer="https://issuer.example", subject="b", audiences=[EXCHANGE])
    with pytest.raises(ValueError, match="issuer and subject"):
        sbx.entra.add_federated_credential(issuer="https://issuer.example", subject="a", audiences=[EXCHANGE],
                                           name="other")
    with pytest.raises(ValueError, match="required"):
        sbx.entra.add_federated_credential(issuer="https://issuer.example", subject="c", audiences=[], name="c")
    for i in range(19):
        sbx.entra.add_federated_credential(issuer="https://issuer.example", subject=f"s{i}", audiences=[EXCHANGE],
                                           name=f"n{i}")
    with pytest.raises(ValueError, match="at most 20"):
        sbx.entra.add_federated_credential(issuer="https://issuer.example", subject="x", audiences=[EXCHANGE],
                                           name="x")
    sbx.entra.remove_federated_credentials()
    assert sbx.app.federated_credentials == []


# --- MSAL end to end ---------------------------------------------------------------------------------

def graph_users(sb: Sandbox, token: str) -> requests.Response:
    return requests.get(f"{sb.url('graph')}/v1.0/users?$top=5", headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


def msal_app(sb: Sandbox, credential) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(sb.client_id, client_credential=credential,
                                              authority=f"{sb.url('entra')}/{sb.tenant_id}", instance_discovery=False)


@pytest.mark.parametrize("form", ["pkcs12", "pem"])
def test_msal_signs_in_with_the_vault_certificate_through_a_client_assertion_callable(env, sbx, form):
    settings = {**sbx.settings, **sbx.use_certificate(form=form)}
    assert settings["CLIENT_CREDENTIAL"] == "certificate" and "CLIENT_SECRET_NAME" in settings
    # What the export does: read the backing secret with the managed identity, sign assertions with it.
    vault = SecretClient(settings["KEY_VAULT_URL"], ManagedIdentityCredential(), verify_challenge_resource=False)
    bundle = vault.get_secret(settings["CLIENT_CERTIFICATE_NAME"])
    if form == "pkcs12":
        key, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(bundle.value), None)
    else:
        key = serialization.load_pem_private_key(bundle.value.encode(), None)
        cert = x509.load_pem_x509_certificate(bundle.value.encode())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    creator = JwtAssertionCreator(key_pem, "PS256", sha256_thumbprint=cert.fingerprint(hashes.SHA256()).hex())
    calls = []

    def assertion() -> str:
        calls.append(1)
        return creator.create_normal_assertion(token_endpoint(sbx), sbx.client_id, expires_in=600).decode()

    app = msal_app(sbx, {"client_assertion": assertion})
    result = app.acquire_token_for_client([graph_scope(sbx)])
    assert "access_token" in result, result.get("error_description")
    assert graph_users(sbx, result["access_token"]).status_code == 200
    assert app.acquire_token_for_client([graph_scope(sbx)])["token_source"] == "cache"
    assert len(calls) == 1 and sbx.entra.grants == ["certificate"]
    _assert_nothing_sensitive_logged(sbx, key_pem, result["access_token"])


@pytest.mark.parametrize("credential", ["public_certificate", "thumbprint"])
def test_msal_own_certificate_credential_works_and_reuses_its_assertion(env, sbx, credential):
    key_pem, cert_pem = registered_cert(sbx)
    extra = {"public_certificate": cert_pem.decode()} if credential == "public_certificate" else \
        {"thumbprint": certs.inspect(cert_pem).thumbprint}
    app = msal_app(sbx, {"private_key": key_pem.decode(), **extra})
    for scope in (graph_scope(sbx), "https://vault.azure.net/.default"):
        result = app.acquire_token_for_client([scope])
        assert "access_token" in result, result.get("error_description")
    # Both token requests carried MSAL's one cached assertion (same jti): accepted, as Entra does.
    assert sbx.entra.grants == ["certificate", "certificate"] and sbx.entra.reused_assertions == 1


def test_msal_signs_in_with_the_user_assigned_identity_as_federated_credential(env, sbx):
    settings = {**sbx.settings, **sbx.use_federated()}
    identity = ManagedIdentityCredential(client_id=settings["MANAGED_IDENTITY_CLIENT_ID"])
    app = msal_app(sbx, {"client_assertion": lambda: identity.get_token(f"{EXCHANGE}/.default").token})
    result = app.acquire_token_for_client([graph_scope(sbx)])
    assert "access_token" in result, result.get("error_description")
    assert graph_users(sbx, result["access_token"]).status_code == 200
    assert sbx.entra.grants == ["federated"] and sbx.identity.issued_to == [("user", EXCHANGE)]

    sbx.entra.remove_federated_credentials()
    refused = msal_app(sbx, {"client_assertion": lambda: identity.get_token(f"{EXCHANGE}/.default").token}) \
        .acquire_token_for_client([graph_scope(sbx)])
    assert refused["error_codes"] == [70021] and sbx.user_identity_principal_id in refused["error_description"]
    _assert_nothing_sensitive_logged(sbx, b"", result["access_token"])


def _assert_nothing_sensitive_logged(sb: Sandbox, key_pem: bytes, access_token: str) -> None:
    logged = " ".join(repr(x) for x in (sb.requests.entries(), sb.entra.sign_ins, sb.entra.app(), sb))
    key_body = "".join(key_pem.decode().splitlines()[1:-1])[:64]
    for sensitive in (access_token, "eyJ", *([key_body] if key_body else [])):
        assert sensitive not in logged
    assert all("BEGIN" not in repr(v) for v in sb.vault.versions("graph-client-certificate"))


# --- Key Vault: certificates, their backing secrets, secret attributes -------------------------------

def vault_get(sb: Sandbox, path: str, principal_id: str | None = None) -> requests.Response:
    token = sb.issue_token("keyvault", principal_id=principal_id or sb.principal_id)
    return requests.get(f"{sb.url('keyvault')}{path}?api-version=7.6", headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


@pytest.mark.parametrize("form, content_type", [("pkcs12", "application/x-pkcs12"), ("pem", "application/x-pem-file")])
def test_key_vault_certificate_and_its_backing_secret_have_key_vault_shapes(env, sbx, form, content_type):
    sbx.use_certificate(form=form, days=30)
    key_pem, cert_pem = sbx.certificate()
    info = certs.inspect(cert_pem)
    name = "graph-client-certificate"
    version = sbx.vault.certificate_versions(name)[-1].version

    secret = SecretClient(env["KEY_VAULT_URL"], ManagedIdentityCredential(),
                          verify_challenge_resource=False).get_secret(name)
    assert secret.properties.content_type == content_type and secret.properties.managed is True
    assert secret.properties.version == version
    assert secret.properties.key_id == f"{env['KEY_VAULT_URL']}/keys/{name}/{version}"
    assert int(secret.properties.expires_on.timestamp()) == int(info.not_after)
    assert int(secret.properties.not_before.timestamp()) == int(info.not_before)
    if form == "pkcs12":
        key, cert, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
        assert extra == [] and cert.fingerprint(hashes.SHA256()) == info.sha256
    else:
        assert secret.value.index("KEY-----") < secret.value.index("CERTIFICATE-----")  # the key first, then the chain
        key = serialization.load_pem_private_key(secret.value.encode(), None)
        assert x509.load_pem_x509_certificate(secret.value.encode()).fingerprint(hashes.SHA256()) == info.sha256
    assert key.private_numbers() == serialization.load_pem_private_key(key_pem, None).private_numbers()

    raw = vault_get(sbx, f"/secrets/{name}").json()
    assert list(raw) == ["value", "contentType", "id", "managed", "attributes", "tags", "kid"]
    assert raw["attributes"]["exp"] == int(info.not_after) and raw["attributes"]["enabled"] is True

    for path in (f"/certificates/{name}", f"/certificates/{name}/{version}"):
        r = vault_get(sbx, path)
        assert r.status_code == 200, r.text
        bundle = r.json()
        base = env["KEY_VAULT_URL"]
        assert (bundle["id"], bundle["kid"], bundle["sid"]) == (f"{base}/certificates/{name}/{version}",
                                                                f"{base}/keys/{name}/{version}",
                                                                f"{base}/secrets/{name}/{version}")
        assert base64.b64decode(bundle["cer"]) == info.der and bundle["x5t"] == info.x5t
        assert "=" not in bundle["x5t"] and certs.decode_thumbprint(bundle["x5t"]) == info.sha1
        assert bundle["attributes"]["exp"] == int(info.not_after) and bundle["attributes"]["nbf"] == int(info.not_before)
        assert bundle["policy"]["secret_props"]["contentType"] == content_type
        assert bundle["policy"]["key_props"]["exportable"] is True
    assert vault_get(sbx, "/certificates/nope").json()["error"]["code"] == "CertificateNotFound"
    denied = vault_get(sbx, f"/certificates/{name}", principal_id=str(uuid.uuid4()))
    assert denied.status_code == 403 and "certificates/read" in denied.json()["error"]["message"]


def test_certificate_rotation_adds_a_version_and_moves_the_registration(env, sbx):
    settings = sbx.use_certificate()
    name = settings["CLIENT_CERTIFICATE_NAME"]
    old_key, old_cert = sbx.certificate()
    new_version = sbx.rotate_certificate()
    new_key, new_cert = sbx.certificate()
    versions = sbx.vault.certificate_versions(name)
    assert len(versions) == 2 and versions[-1].version == new_version
    assert [v.version for v in sbx.vault.versions(name)] == [v.version for v in versions]
    client = SecretClient(env["KEY_VAULT_URL"], ManagedIdentityCredential(), verify_challenge_resource=False)
    assert client.get_secret(name).properties.version == new_version
    assert post_assertion(sbx, cert_assertion(sbx, new_key, new_cert)).status_code == 200
    assert_entra_error(post_assertion(sbx, cert_assertion(sbx, old_key, old_cert)), 401, "invalid_client", 700027)

    sbx.rotate_certificate(keep_old_registered=True)
    newest_key, newest_cert = sbx.certificate()
    for key_pem, cert_pem in ((new_key, new_cert), (newest_key, newest_cert)):
        assert post_assertion(sbx, cert_assertion(sbx, key_pem, cert_pem)).status_code == 200
    assert sbx.vault.certificate_versions(name)[-1].content_type == "application/x-pkcs12"
    with pytest.raises(ValueError, match="managed by a certificate"):
        sbx.vault.set_secret(name, "plain")


def test_use_certificate_without_registering_fails_sign_in_with_700027(env, sbx):
    sbx.use_certificate(register=False)
    key_pem, cert_pem = sbx.certificate()
    assert sbx.app.certificates == []
    assert_entra_error(post_assertion(sbx, cert_assertion(sbx, key_pem, cert_pem)), 401, "invalid_client", 700027)


def test_the_client_secret_expiry_is_in_the_vault_and_can_be_moved(env, sbx):
    client = SecretClient(env["KEY_VAULT_URL"], ManagedIdentityCredential(), verify_challenge_resource=False)
    name = env["CLIENT_SECRET_NAME"]
    secret = client.get_secret(name)
    app_secret = sbx.entra.app().secrets[0]
    assert int(secret.properties.expires_on.timestamp()) == int(app_secret.expires_at)
    assert secret.properties.content_type is None and not secret.properties.managed

    expires_at = sbx.set_secret_expiry(days=3)
    assert int(client.get_secret(name).properties.expires_on.timestamp()) == int(expires_at)
    assert app_secret.expires_at == expires_at
    sbx.set_secret_expiry(days=-1)
    # Key Vault still returns an expired secret (exp is informational); Entra refuses the expired secret.
    assert client.get_secret(name).value == sbx.client_secret
    r = requests.post(token_endpoint(sbx), timeout=10, data={
        "grant_type": "client_credentials", "client_id": sbx.client_id, "client_secret": sbx.client_secret,
        "scope": graph_scope(sbx)})
    assert_entra_error(r, 401, "invalid_client", 7000222, sbx.client_secret)
    assert sbx.entra.sign_ins[-1].kind == "secret"

    sbx.rotate_secret()
    assert client.get_secret(name).properties.expires_on.timestamp() > time.time() + 700 * 86400


def test_secret_attributes_and_a_disabled_secret(env, sbx):
    client = SecretClient(env["KEY_VAULT_URL"], ManagedIdentityCredential(), verify_challenge_resource=False)
    expires = time.time() + 86400
    sbx.vault.set_secret("with-attributes", "v1", expires=expires, content_type="text/plain")
    got = client.get_secret("with-attributes")
    assert (got.value, got.properties.content_type) == ("v1", "text/plain")
    assert int(got.properties.expires_on.timestamp()) == int(expires) and got.properties.enabled is True
    raw = vault_get(sbx, "/secrets/with-attributes").json()
    assert set(raw["attributes"]) == {"enabled", "exp", "created", "updated", "recoveryLevel", "recoverableDays"}

    sbx.vault.set_secret("off", "v", enabled=False)
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("off")
    assert disabled.value.status_code == 403 and disabled.value.error.code == "Forbidden"
    assert disabled.value.error.message == "Operation get is not allowed on a disabled secret."
    assert vault_get(sbx, "/secrets/off").json()["error"]["innererror"] == {"code": "SecretDisabled"}
    sbx.vault.update_secret("off", enabled=True)
    assert client.get_secret("off").value == "v"
    sbx.vault.update_secret(env["CLIENT_SECRET_NAME"], enabled=False)
    assert vault_get(sbx, f"/secrets/{env['CLIENT_SECRET_NAME']}").status_code == 403


def test_the_user_assigned_identity_reads_the_vault(env, sbx):
    identity = ManagedIdentityCredential(client_id=sbx.user_identity_client_id)
    client = SecretClient(env["KEY_VAULT_URL"], identity, verify_challenge_resource=False)
    assert client.get_secret(env["CLIENT_SECRET_NAME"]).value == sbx.client_secret
    assert sbx.identity.issued_to == [("user", "https://vault.azure.net")]
    sbx.vault.deny(sbx.user_identity_principal_id)
    with pytest.raises(HttpResponseError) as denied:
        client.get_secret(env["CLIENT_SECRET_NAME"])
    assert denied.value.status_code == 403 and sbx.user_identity_principal_id in denied.value.error.message


def test_new_certificate_validity(sbx):
    for days in (365, 0.0001, -2):
        key_pem, cert_pem = sbx.new_certificate(days=days, common_name="expiry-test")
        info = certs.inspect(cert_pem)
        assert abs(info.not_after - (time.time() + days * 86400)) < 5 and info.not_before < info.not_after
        assert info.subject == "CN=expiry-test"
        public = serialization.load_pem_private_key(key_pem, None).public_key()
        assert public.key_size == 2048 and public.public_numbers() == info.certificate.public_key().public_numbers()
