"""What the app registration proves itself with: a client secret or a certificate read from Azure
Key Vault with the app's own identity, or a federated assertion from its user-assigned identity.

``DefaultAzureCredential`` is managed identity in Azure and ``az login`` or environment variables on
a workstation; the vault is the only place a secret or private key lives, and neither touches disk.
Values are wrapped (:class:`Secret`, :class:`ClientCertificate`) so that a stray ``print`` or log
line shows ``***``, never the value. Each kind says how MSAL takes it (:meth:`msal_credential`),
which Entra error codes mean "this one is rejected, read the vault again", and when it expires.

The vault is only ever sent a token for the vault audience of its cloud (:func:`vault_audience`):
whatever resource its 401 challenge names, a host in KEY_VAULT_URL cannot obtain a Storage or Graph
token from the managed identity.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential, TokenRequestOptions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from msal.oauth2cli.assertion import JwtAssertionCreator

from .errors import AuthError, certificate_failure, first_line, origin_of, refused_or_unresolved, untrusted_certificate
from .modes import CredentialKind
from .retrying import VaultRetry

log = logging.getLogger(__name__)

# Key Vault and Managed HSM DNS suffixes of the Azure clouds, and the token audience each one accepts
# (azure-cli's cloud definitions). For these hosts the SDK also checks that the vault's 401 challenge
# names a resource on the vault's own domain; a vault elsewhere (an emulator on loopback) cannot pass
# that check, so it is only switched off for hosts that are not real vaults.
_VAULT_AUDIENCE_BY_SUFFIX = (
    (".vault.azure.net", "https://vault.azure.net"),
    (".vault.azure.cn", "https://vault.azure.cn"),
    (".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"),
    (".managedhsm.azure.net", "https://managedhsm.azure.net"),
    (".managedhsm.azure.cn", "https://managedhsm.azure.cn"),
    (".managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net"),
)
# For any other vault host (an emulator, the sandbox): the vault audience of AUTHORITY_HOST's cloud.
_VAULT_AUDIENCE_BY_AUTHORITY = {
    "login.microsoftonline.us": "https://vault.usgovcloudapi.net",
    "login.usgovcloudapi.net": "https://vault.usgovcloudapi.net",
    "login-us.microsoftonline.com": "https://vault.usgovcloudapi.net",
    "login.chinacloudapi.cn": "https://vault.azure.cn",
    "login.partner.microsoftonline.cn": "https://vault.azure.cn",
}
PUBLIC_VAULT_AUDIENCE = "https://vault.azure.net"


#: Entra's codes for a client secret that is wrong or expired, and for a certificate assertion that is
#: not registered, badly signed or outside its validity: a rotated credential in the vault may fix them.
SECRET_REJECTED_CODES = frozenset({7000215, 7000222})
CERTIFICATE_REJECTED_CODES = frozenset({700027, 700024})
#: What Entra answers when no federated credential of the app matches the presented assertion.
FEDERATION_MISMATCH_CODES = frozenset({70021, 700211, 700212, 700213})
#: The lifetime of a certificate assertion (MSAL's default).
ASSERTION_LIFETIME_S = 600


class Secret:
    """A secret string that does not show itself in ``repr``/``str``, logs or tracebacks."""

    __slots__ = ("_value", "version", "expires", "described")
    kind = CredentialKind.SECRET
    rejected_codes = SECRET_REJECTED_CODES

    def __init__(self, value: str, version: str | None = None, expires: datetime | None = None,
                 described: str = "the client secret") -> None:
        self._value = value
        self.version = version
        #: When the vault says it expires (its ``exp`` attribute), if it says.
        self.expires = expires
        #: For messages: which credential this is and where it lives.
        self.described = described

    def reveal(self) -> str:
        """The value itself; call only where it is handed to the library that needs it."""
        return self._value

    def msal_credential(self, client_id: str, token_endpoint: Callable[[], str]) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(***, version={self.version!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class ClientCertificate:
    """A Key Vault certificate's private key and public part: MSAL signs each sign-in assertion with it.

    The assertion is PS256 with the SHA-256 thumbprint (``x5t#S256``), as MSAL does for certificates
    it can compute that thumbprint for; ``send_x5c`` adds the public certificate chain (``x5c``) for
    subject name + issuer authentication. The key stays in memory, never in a repr.
    """

    kind = CredentialKind.CERTIFICATE
    rejected_codes = CERTIFICATE_REJECTED_CODES

    def __init__(self, private_key_pem: bytes, chain: list[x509.Certificate], *, version: str | None = None,
                 expires: datetime | None = None, send_x5c: bool = False,
                 described: str = "the client certificate") -> None:
        self._key = private_key_pem
        self.certificate = chain[0]
        self._chain = chain
        self.version = version
        self.expires = expires
        self.send_x5c = send_x5c
        self.described = described
        self.thumbprint_sha256 = self.certificate.fingerprint(hashes.SHA256()).hex()

    def msal_credential(self, client_id: str, token_endpoint: Callable[[], str]) -> Any:
        headers = {"x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
                           for c in self._chain]} if self.send_x5c else {}
        creator = JwtAssertionCreator(self._key, "PS256", sha256_thumbprint=self.thumbprint_sha256, headers=headers)

        def assertion() -> str:
            # The audience is the token endpoint MSAL discovered, known only once the app is built.
            now = int(time.time())  # Entra's documented claims include nbf, which MSAL leaves out
            signed = creator.create_normal_assertion(token_endpoint(), client_id, client_id, issued_at=now,
                                                     not_before=now, expires_at=now + ASSERTION_LIFETIME_S)
            return signed.decode("ascii") if isinstance(signed, bytes) else str(signed)

        return {"client_assertion": assertion}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientCertificate) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ClientCertificate(***, thumbprint_sha256={self.thumbprint_sha256!r}, version={self.version!r})"

    __str__ = __repr__


class FederatedAssertion:
    """The app's credential is its trust in the function's user-assigned managed identity.

    Each sign-in presents a fresh token of that identity for the token exchange audience as the
    client assertion (a callable, so MSAL asks for one whenever it needs a new access token; the
    identity's own token cache serves repeats). Nothing secret is stored anywhere.
    """

    kind = CredentialKind.FEDERATED
    rejected_codes: frozenset[int] = frozenset()
    expires: datetime | None = None
    version: str | None = None
    described = "the federated credential"

    def __init__(self, identity: TokenCredential, audience: str) -> None:
        self._identity = identity
        self.audience = audience
        #: Issuer, subject and audience of the last assertion: what the app registration must trust.
        self.presented: dict[str, str] = {}

    def msal_credential(self, client_id: str, token_endpoint: Callable[[], str]) -> Any:
        return {"client_assertion": self.assertion}

    def assertion(self) -> str:
        try:
            token = self._identity.get_token(f"{self.audience}/.default").token
        except ClientAuthenticationError as exc:
            log.debug("The managed identity could not get a token for %s", self.audience, exc_info=True)
            raise AuthError(
                f"The function's user-assigned managed identity could not get a token for {self.audience}: "
                "check MANAGED_IDENTITY_CLIENT_ID (the identity's client ID) and that the identity is assigned "
                f"to the function app ({first_line(exc.message)})."
            ) from None
        self.presented = _claims_of(token)
        return token

    def __repr__(self) -> str:
        return f"FederatedAssertion(audience={self.audience!r})"


def _claims_of(token: str) -> dict[str, str]:
    """``iss``, ``sub`` and ``aud`` of a JWT, unverified: only to say what the app registration must trust."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return {k: str(claims[k]) for k in ("iss", "sub", "aud") if k in claims}
    except (IndexError, ValueError, TypeError, AttributeError):
        return {}


def vault_audience(vault_url: str, authority_host: str | None = None) -> str:
    """The token audience of the vault at ``vault_url``: the only audience it is ever sent a token for.

    A real vault's host names its cloud (``kv.vault.azure.cn`` → ``https://vault.azure.cn``); any other
    host (an emulator) gets the vault audience of ``authority_host``'s cloud, public unless it is the
    US Government or China sign-in host. A host that merely contains a vault domain
    (``kv.vault.azure.net.example.com``) is not a vault.
    """
    host = (urlsplit(vault_url).hostname or "").lower()
    for suffix, audience in _VAULT_AUDIENCE_BY_SUFFIX:
        if host.endswith(suffix):
            return audience
    authority = (urlsplit(authority_host or "").hostname or "").lower()
    return _VAULT_AUDIENCE_BY_AUTHORITY.get(authority, PUBLIC_VAULT_AUDIENCE)


def is_vault_host(vault_url: str) -> bool:
    """Whether ``vault_url`` is on a Key Vault or Managed HSM domain of an Azure cloud."""
    host = (urlsplit(vault_url).hostname or "").lower()
    return host.endswith(tuple(suffix for suffix, _ in _VAULT_AUDIENCE_BY_SUFFIX))


class VaultAudienceCredential:
    """A credential that only ever asks for a token for one vault audience, whatever scope it is given.

    Key Vault's client asks its credential for the scope named in the vault's 401 challenge. With the
    SDK's challenge check off (a vault that is not on a vault domain) that lets any host in
    KEY_VAULT_URL pick the audience of the managed identity token it is sent: a Storage or Graph
    token would be handed to it. Wrapped in this, the request is always for ``<audience>/.default``;
    ``claims``, ``tenant_id`` and ``enable_cae`` pass through as the SDK gives them.
    """

    def __init__(self, credential: Any, audience: str, vault_url: str = "") -> None:
        self._credential = credential
        self.audience = audience.rstrip("/")
        self.scope = f"{self.audience}/.default"
        self._vault_url = vault_url
        self._warned = False

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self._check(scopes)
        token: AccessToken = self._credential.get_token(self.scope, **kwargs)
        return token

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        self._check(scopes)
        if hasattr(self._credential, "get_token_info"):
            info: AccessTokenInfo = self._credential.get_token_info(self.scope, options=options)
            return info
        token = self._credential.get_token(self.scope, **dict(options or {}))
        return AccessTokenInfo(token.token, token.expires_on)

    def close(self) -> None:
        """Nothing to close: the wrapped credential belongs to the caller (it may serve Storage too)."""

    def __enter__(self) -> "VaultAudienceCredential":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check(self, scopes: tuple[str, ...]) -> None:
        asked = [s for s in scopes if _resource_of(s) != self.audience.lower()]
        if asked and not self._warned:
            self._warned = True
            log.warning("Key Vault %s asked for a token for %s; only a token for %s is requested "
                        "(check KEY_VAULT_URL if this is not a Key Vault)", self._vault_url or "(vault)",
                        first_line(" ".join(asked), 200), self.audience)

    def __repr__(self) -> str:
        return f"VaultAudienceCredential({self.audience!r})"


def _resource_of(scope: str) -> str:
    resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
    return resource.rstrip("/").lower()


def make_secret_client(vault_url: str, credential: TokenCredential, *, authority_host: str | None = None,
                       **client_kwargs: Any) -> SecretClient:
    """The one place a SecretClient is built (tests and the sandbox pass transport options here).

    Its credential only ever asks for :func:`vault_audience` (``authority_host`` is AUTHORITY_HOST,
    which decides the cloud of a vault that is not on a vault domain). Its retries
    (:class:`~graph_export.retrying.VaultRetry`, with ``retry_total``/``retry_backoff_factor`` as given)
    never repeat a certificate failure, nor a refused connection or unknown name before the vault has
    answered once, and announce a wait of more than a few seconds.
    """
    retry = {key: client_kwargs.pop(key) for key in ("retry_total", "retry_backoff_factor", "retry_backoff_max")
             if key in client_kwargs}
    return SecretClient(
        vault_url,
        VaultAudienceCredential(credential, vault_audience(vault_url, authority_host), vault_url),
        verify_challenge_resource=is_vault_host(vault_url),
        retry_policy=client_kwargs.pop("retry_policy", None) or VaultRetry(**retry),
        **client_kwargs,
    )


def read_client_secret(client: SecretClient, name: str) -> Secret:
    """Read the latest version of ``name``; map every failure to an :class:`AuthError` a human can act on."""
    vault = client.vault_url
    bundle = _get_secret(client, name, f"secret '{name}'", (
        "store the app registration's client secret value there (az keyvault secret set --vault-name <vault> "
        f"--name {name} --file /dev/stdin) or set CLIENT_SECRET_NAME to the secret's name"))
    if not bundle.value:
        raise AuthError(f"Secret '{name}' in Key Vault {vault} is empty: store the client secret value in it.")
    return Secret(bundle.value, bundle.properties.version, _utc(bundle.properties.expires_on),
                  f"the client secret '{name}' in Key Vault {vault}")


def older_certificate_versions(client: SecretClient, name: str, newest: str | None, *, send_x5c: bool = False,
                               limit: int = 2) -> list[ClientCertificate]:
    """Versions of certificate ``name`` other than ``newest`` that are enabled and unexpired, newest first.

    What still signs in while a renewed certificate waits to be registered; an empty list when the
    vault cannot list them (the role may not allow it): the rejection then stands.
    """
    now = datetime.now(timezone.utc)
    try:
        versions = [v for v in client.list_properties_of_secret_versions(name)
                    if v.enabled and v.version and v.version != newest
                    and (v.expires_on is None or v.expires_on.astimezone(timezone.utc) > now)]
        versions.sort(key=lambda v: v.created_on or now, reverse=True)
        return [read_client_certificate(client, name, send_x5c=send_x5c, version=v.version)
                for v in versions[:limit]]
    except (HttpResponseError, ServiceRequestError, AuthError) as why:
        log.info("Older versions of certificate '%s' could not be read (%s)", name, first_line(str(why), 120))
        return []


def read_client_certificate(client: SecretClient, name: str, *, send_x5c: bool = False,
                            version: str | None = None) -> ClientCertificate:
    """The private key and certificate of Key Vault certificate ``name``, read through its backing secret.

    Key Vault keeps a certificate's key in a secret of the same name: PKCS#12 (base64, no password) or
    PEM, as its content type says. Any failure is an :class:`AuthError` saying what to fix.
    """
    vault = client.vault_url
    bundle = _get_secret(client, name, f"certificate '{name}'", version=version, create_hint=(
        f"create it (az keyvault certificate create --vault-name <vault> --name {name} --policy @policy.json), "
        "or set CLIENT_CERTIFICATE_NAME to its name"))
    kind = (bundle.properties.content_type or "").lower()
    where = f"certificate '{name}' in Key Vault {vault}"
    try:
        if kind == "application/x-pkcs12":
            key, certificate, others = pkcs12.load_key_and_certificates(base64.b64decode(bundle.value or ""), None)
            chain = [c for c in (certificate, *others) if c is not None]
        elif kind == "application/x-pem-file":
            data = (bundle.value or "").encode("utf-8")
            key = serialization.load_pem_private_key(data, None)
            chain = x509.load_pem_x509_certificates(data)
        else:
            raise AuthError(f"The {where} is not a certificate Key Vault manages (its secret's content type is "
                            f"{kind or 'not set'!r}, not PKCS#12 or PEM): import or create it as a certificate.")
    except (ValueError, TypeError):
        log.debug("The %s could not be loaded", where, exc_info=True)  # cryptography's reason, never the key
        raise AuthError(f"The private key of the {where} could not be read (not a PKCS#12 or PEM certificate with "
                        "an unencrypted key): create or import it again with an exportable key.") from None
    if key is None or not chain:
        raise AuthError(f"The {where} has no exportable private key or no certificate: create it with an "
                        "exportable key (policy keyProperties.exportable=true).")
    chain = _key_first(chain, key, where)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    expires = _utc(bundle.properties.expires_on) or chain[0].not_valid_after_utc
    return ClientCertificate(pem, chain, version=bundle.properties.version, expires=expires, send_x5c=send_x5c,
                             described=f"the {where}")


def _key_first(chain: list[x509.Certificate], key: Any, where: str) -> list[x509.Certificate]:
    """``chain`` with the certificate that belongs to ``key`` first: the one whose public key is the key's.

    A PEM may hold its chain in any order (a CA certificate first, say) and a PKCS#12 file may pair a key
    with another certificate; signing with the key while presenting another certificate's thumbprint is
    refused by Entra as an unregistered certificate (AADSTS700027), so it is told apart here, before
    Entra is asked. AuthError when no certificate in it belongs to the key.
    """
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    own = key.public_key().public_bytes(*spki)
    matching = [c for c in chain if _public_bytes(c, spki) == own]
    if not matching:
        held = (f"any of the {len(chain)} certificates stored with it (first: " if len(chain) > 1
                else "the certificate stored with it (")
        raise AuthError(
            f"The private key of the {where} does not match {held}{_subject_of(chain[0])}, SHA-1 thumbprint "
            f"{chain[0].fingerprint(hashes.SHA1()).hex().upper()}): import the certificate together with its own "
            "private key (az keyvault certificate import --file <pfx or pem>), or set CLIENT_CERTIFICATE_NAME to a "
            "Key Vault certificate whose key matches; Entra was not asked."
        )
    return [matching[0], *(c for c in chain if c is not matching[0])]


def _public_bytes(certificate: x509.Certificate, spki: tuple[Any, Any]) -> bytes | None:
    try:
        return certificate.public_key().public_bytes(*spki)
    except (ValueError, TypeError):  # a key type cryptography cannot serialize: it is not the key's
        return None


def _subject_of(certificate: x509.Certificate) -> str:
    try:
        return first_line(certificate.subject.rfc4514_string(), 80) or "no subject"
    except ValueError:
        return "an unreadable subject"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _get_secret(client: SecretClient, name: str, what: str, create_hint: str, version: str | None = None) -> Any:
    """Secret ``name`` (its latest version unless ``version``; ``what`` it is, for messages); every failure an
    AuthError, the SDK's own error logged at DEBUG first (``--debug``: the one line drops its chain)."""
    try:
        return client.get_secret(name, version)
    except (HttpResponseError, ServiceRequestError, ValueError) as exc:
        log.debug("Reading the %s from Key Vault %s failed", what, client.vault_url, exc_info=True)
        raise _vault_error(exc, client.vault_url, what, create_hint) from None


def _vault_error(exc: HttpResponseError | ServiceRequestError | ValueError, vault: str, what: str, create_hint: str) -> AuthError:
    """The one line for Key Vault's failure ``exc`` to read the ``what``: what is wrong and what to do."""
    if isinstance(exc, ResourceNotFoundError):
        return AuthError(f"Key Vault {vault} has no {what}: {create_hint}.")
    if isinstance(exc, ClientAuthenticationError):
        return AuthError(
            f"Could not get a token to read Key Vault {vault}: enable the function app's managed identity "
            "(and set MANAGED_IDENTITY_CLIENT_ID for a user-assigned one), or sign in with 'az login' when "
            f"running locally ({first_line(exc.message)})."
        )
    if isinstance(exc, ValueError):  # the SDK refuses a challenge naming a resource off the vault's own domain
        return AuthError(
            f"Key Vault {vault} answered with an authentication challenge for a resource that is not this "
            "vault: check that KEY_VAULT_URL is your vault's URL (https://<name>.vault.azure.net)."
        )
    if isinstance(exc, ServiceRequestError):
        untrusted = certificate_failure(exc)
        if untrusted is not None:
            return AuthError(f"{untrusted_certificate('Key Vault', origin_of(vault), 'KEY_VAULT_URL', untrusted)}; "
                             "nothing was published.")
        why = refused_or_unresolved(exc)
        return AuthError(
            f"Key Vault {vault} is unreachable{f' ({why})' if why else ''}: check KEY_VAULT_URL and the network "
            "path (private endpoint, firewall, DNS)."
        )
    if exc.status_code == 403 and "disabled" in _inner_code(exc).lower():
        return AuthError(f"The {what} in Key Vault {vault} is disabled: enable it, or store a new version.")
    if exc.status_code == 403:
        return AuthError(
            f"The identity running the export may not read {what} in Key Vault {vault}: "
            "assign it the 'Key Vault Secrets User' role on the vault or the secret "
            "(and check the vault firewall)."
        )
    return AuthError(
        f"Key Vault {vault} failed reading {what} with HTTP {exc.status_code} "
        f"{_error_code(exc)}: retry later or check the vault's health."
    )


def _inner_code(exc: HttpResponseError) -> str:
    """Key Vault's inner error code (``SecretDisabled`` under an outer ``Forbidden``)."""
    inner = getattr(exc.error, "innererror", None) if exc.error else None
    return str(inner.get("code") or "") if isinstance(inner, dict) else ""


def _error_code(exc: HttpResponseError) -> str:
    return (exc.error.code if exc.error and exc.error.code else "").strip()

