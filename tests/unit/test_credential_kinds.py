"""Certificates from Key Vault's backing secret, federated assertions and expiry, without sockets.

The Key Vault client here is a stand-in for azure-keyvault-secrets' ``SecretClient`` (only
``get_secret`` and ``vault_url``); the certificates, keys and signatures are real.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import types
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from graph_export.credentials import ClientCertificate, FederatedAssertion, Secret, read_client_certificate
from graph_export.errors import AuthError
from graph_export.token import GraphTokens

NOW = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
CLIENT = "11111111-2222-3333-4444-555555555555"
ENDPOINT = "https://login.example/tenant/oauth2/v2.0/token"


def make_certificate(days: float = 365) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graph-export")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
                   .not_valid_after(NOW + timedelta(days=days)).sign(key, hashes.SHA256()))
    return key, certificate


KEY, CERT = make_certificate()
KEY_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())


class Vault:
    """What read_client_certificate calls on a SecretClient."""

    vault_url = "https://kv.vault.azure.net/"

    def __init__(self, value: str | None, content_type: str | None, expires: datetime | None = None) -> None:
        self.value, self.content_type, self.expires = value, content_type, expires

    def get_secret(self, name: str, version: str | None = None):
        if self.value is None:
            raise ResourceNotFoundError("SecretNotFound")
        return types.SimpleNamespace(value=self.value, properties=types.SimpleNamespace(
            content_type=self.content_type, expires_on=self.expires, version="v1"))


def pkcs12_vault(expires: datetime | None = None) -> Vault:
    data = pkcs12.serialize_key_and_certificates(None, KEY, CERT, None, serialization.NoEncryption())
    return Vault(base64.b64encode(data).decode(), "application/x-pkcs12", expires)


def pem_vault() -> Vault:
    return Vault((KEY_PEM + CERT.public_bytes(serialization.Encoding.PEM)).decode(), "application/x-pem-file")


@pytest.mark.parametrize("vault", [pkcs12_vault(), pem_vault()], ids=["pkcs12", "pem"])
def test_a_certificate_signs_a_ps256_assertion_with_its_sha256_thumbprint(vault):
    certificate = read_client_certificate(vault, "graph-client-certificate")
    assertion = certificate.msal_credential(CLIENT, lambda: ENDPOINT)["client_assertion"]()
    header = jwt.get_unverified_header(assertion)
    der = CERT.public_bytes(serialization.Encoding.DER)
    assert header["alg"] == "PS256" and "x5c" not in header
    # base64url of the SHA-256 of the certificate, padded as MSAL writes it (Entra accepts that)
    assert header["x5t#S256"].rstrip("=") == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    claims = jwt.decode(assertion, CERT.public_key(), algorithms=["PS256"], audience=ENDPOINT)  # signature checked
    assert claims["iss"] == claims["sub"] == CLIENT and claims["exp"] - claims["nbf"] == 600 and claims["jti"]
    assert certificate.expires == CERT.not_valid_after_utc  # no exp on the secret: the certificate's own end


def test_x5c_is_sent_only_when_asked_for():
    certificate = read_client_certificate(pkcs12_vault(), "c", send_x5c=True)
    header = jwt.get_unverified_header(certificate.msal_credential(CLIENT, lambda: ENDPOINT)["client_assertion"]())
    assert header["x5c"] == [base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()]


def test_the_vaults_expiry_wins_and_the_key_never_shows(caplog):
    expires = NOW + timedelta(days=3)
    certificate = read_client_certificate(pkcs12_vault(expires), "c")
    assert certificate.expires == expires
    logging.getLogger("test").warning("%s %r", certificate, certificate)
    assert "PRIVATE KEY" not in caplog.text and KEY_PEM.decode()[40:80] not in repr(certificate)
    assert certificate == read_client_certificate(pem_vault(), "c")  # the same key, whichever form


@pytest.mark.parametrize("vault, says", [
    (Vault(None, None), "has no certificate 'c'.*CLIENT_CERTIFICATE_NAME"),
    (Vault("a secret, not a certificate", None), "not a certificate Key Vault manages"),
    (Vault(base64.b64encode(b"not pkcs12").decode(), "application/x-pkcs12"), "could not be read"),
    (Vault(CERT.public_bytes(serialization.Encoding.PEM).decode(), "application/x-pem-file"), "could not be read"),
])
def test_what_is_wrong_with_a_certificate_is_one_line(vault, says):
    with pytest.raises(AuthError, match=says) as info:
        read_client_certificate(vault, "c")
    assert "\n" not in str(info.value)


class Identity:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.scopes = fail, []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")
        claims = {"iss": "https://login.example/t/v2.0", "sub": "principal-1", "aud": "api://AzureADTokenExchange"}
        return AccessToken(jwt.encode(claims, "k" * 32, algorithm="HS256"), 0)


def test_a_federated_assertion_is_the_identitys_token_for_the_exchange_audience():
    identity = Identity()
    federated = FederatedAssertion(identity, "api://AzureADTokenExchange")
    callable_ = federated.msal_credential(CLIENT, lambda: ENDPOINT)["client_assertion"]
    assert jwt.decode(callable_(), options={"verify_signature": False})["sub"] == "principal-1"
    assert identity.scopes == [("api://AzureADTokenExchange/.default",)]
    assert federated.presented == {"iss": "https://login.example/t/v2.0", "sub": "principal-1",
                                   "aud": "api://AzureADTokenExchange"}
    with pytest.raises(AuthError, match="MANAGED_IDENTITY_CLIENT_ID"):
        FederatedAssertion(Identity(fail=True), "api://AzureADTokenExchange").assertion()


# --- expiry: checked every run, the vault read again near the end ----------------------------------

class Reads:
    def __init__(self, *expiries: datetime | None) -> None:
        self.expiries, self.count = list(expiries), 0

    def __call__(self) -> Secret:
        self.count += 1
        return Secret("s", expires=self.expiries[min(self.count, len(self.expiries)) - 1],
                      described="the client secret 'graph-client-secret' in Key Vault https://kv")


def tokens(reads: Reads) -> GraphTokens:
    return GraphTokens(reads, lambda credential: pytest.fail("no sign-in in these tests"))


def test_far_from_expiry_nothing_is_said_and_the_vault_is_read_once(caplog):
    reads = Reads(NOW + timedelta(days=200))
    for _ in range(3):
        assert tokens_check(tokens_once := tokens(reads)) == NOW + timedelta(days=200)
    assert "Credential expiry" not in caplog.text
    del tokens_once


def tokens_check(t: GraphTokens):
    return t.check_expiry(timedelta(days=30), NOW)


def test_near_expiry_the_vault_is_read_again_and_one_warning_names_the_date(caplog):
    reads = Reads(NOW + timedelta(days=6), NOW + timedelta(days=6))
    t = tokens(reads)
    assert tokens_check(t) == NOW + timedelta(days=6) and reads.count == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("Credential expiry: the client secret 'graph-client-secret'")
    assert "2026-12-01 12:00 UTC (in 6 days)" in warnings[0]


def test_a_renewed_credential_in_the_vault_ends_the_warning(caplog):
    reads = Reads(NOW + timedelta(days=2), NOW + timedelta(days=400))
    assert tokens_check(tokens(reads)) == NOW + timedelta(days=400) and "Credential expiry" not in caplog.text


def test_an_expired_credential_fails_before_sign_in():
    reads = Reads(NOW - timedelta(hours=1))
    with pytest.raises(AuthError, match=r"The client secret 'graph-client-secret' .* expired on 2026-11-25 11:00 UTC"):
        tokens_check(tokens(reads))


def test_a_credential_without_an_expiry_and_a_federated_one_are_not_checked():
    assert tokens_check(tokens(Reads(None))) is None
    federated = GraphTokens(lambda: FederatedAssertion(Identity(), "api://x"), lambda c: pytest.fail("no"))
    assert tokens_check(federated) is None


def test_a_certificate_object_is_a_credential():
    certificate = ClientCertificate(KEY_PEM, [CERT])
    assert certificate.kind == "certificate" and 700027 in certificate.rejected_codes


# --- the certificate used is the one that belongs to the key --------------------------------------

OTHER_KEY, OTHER_CERT = make_certificate()


def pem_of(*certificates: x509.Certificate, key: bytes = KEY_PEM) -> Vault:
    return Vault((key + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)).decode(),
                 "application/x-pem-file")


def test_in_a_pem_with_another_certificate_first_the_keys_own_certificate_is_used():
    certificate = read_client_certificate(pem_of(OTHER_CERT, CERT), "graph-client-certificate", send_x5c=True)
    assert certificate.certificate == CERT and certificate.expires == CERT.not_valid_after_utc
    assertion = certificate.msal_credential(CLIENT, lambda: ENDPOINT)["client_assertion"]()
    header = jwt.get_unverified_header(assertion)
    der = CERT.public_bytes(serialization.Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header["x5t#S256"].rstrip("=") == thumbprint
    assert header["x5c"][0] == base64.b64encode(der).decode()  # the rest of the chain follows it
    jwt.decode(assertion, CERT.public_key(), algorithms=["PS256"], audience=ENDPOINT)


@pytest.mark.parametrize("vault", [
    pem_of(OTHER_CERT),
    pem_of(OTHER_CERT, make_certificate()[1]),
    # cryptography refuses to pair a key with a certificate not its own; a file may still hold them apart
    Vault(base64.b64encode(pkcs12.serialize_key_and_certificates(
        None, KEY, None, [OTHER_CERT], serialization.NoEncryption())).decode(), "application/x-pkcs12"),
], ids=["pem-one-other", "pem-two-others", "pkcs12-another-certificate"])
def test_a_key_that_belongs_to_no_certificate_is_one_line_before_entra_is_asked(vault):
    with pytest.raises(AuthError) as info:
        read_client_certificate(vault, "graph-client-certificate")
    message = str(info.value)
    assert message.startswith("The private key of the certificate 'graph-client-certificate' in Key Vault "
                              "https://kv.vault.azure.net/ does not match ")
    assert OTHER_CERT.fingerprint(hashes.SHA1()).hex().upper() in message and "CN=graph-export" in message
    assert "CLIENT_CERTIFICATE_NAME" in message and "az keyvault certificate import" in message
    assert "stored with it" in message and "\n" not in message and "PRIVATE KEY" not in message
