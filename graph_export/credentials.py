"""The app registration's client secret, read from Azure Key Vault with the app's own identity.

``DefaultAzureCredential`` is managed identity in Azure and ``az login`` or environment variables on
a workstation; the vault is the only place the secret lives. The value is wrapped in
:class:`Secret` so that a stray ``print`` or log line shows ``Secret(***)``, never the value.

The vault is only ever sent a token for the vault audience of its cloud (:func:`vault_audience`):
whatever resource its 401 challenge names, a host in KEY_VAULT_URL cannot obtain a Storage or Graph
token from the managed identity.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential, TokenRequestOptions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from .errors import AuthError, first_line

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


class Secret:
    """A secret string that does not show itself in ``repr``/``str``, logs or tracebacks."""

    __slots__ = ("_value", "version")

    def __init__(self, value: str, version: str | None = None) -> None:
        self._value = value
        self.version = version

    def reveal(self) -> str:
        """The value itself; call only where it is handed to the library that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(***, version={self.version!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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
    which decides the cloud of a vault that is not on a vault domain).
    """
    return SecretClient(
        vault_url,
        VaultAudienceCredential(credential, vault_audience(vault_url, authority_host), vault_url),
        verify_challenge_resource=is_vault_host(vault_url),
        **client_kwargs,
    )


def read_client_secret(client: SecretClient, name: str) -> Secret:
    """Read the latest version of ``name``; map every failure to an :class:`AuthError` a human can act on."""
    vault = client.vault_url
    try:
        bundle = client.get_secret(name)
    except ResourceNotFoundError:
        raise AuthError(
            f"Key Vault {vault} has no secret named '{name}': store the app registration's client secret "
            f"value there (az keyvault secret set --vault-name <vault> --name {name} --file /dev/stdin) "
            "or set CLIENT_SECRET_NAME to the secret's name."
        ) from None
    except ClientAuthenticationError as exc:
        raise AuthError(
            f"Could not get a token to read Key Vault {vault}: enable the function app's managed identity, "
            "or sign in with 'az login' when running locally "
            f"({first_line(exc.message)})."
        ) from None
    except ValueError:  # the SDK refuses a challenge naming a resource off the vault's own domain
        raise AuthError(
            f"Key Vault {vault} answered with an authentication challenge for a resource that is not this "
            "vault: check that KEY_VAULT_URL is your vault's URL (https://<name>.vault.azure.net)."
        ) from None
    except ServiceRequestError:
        raise AuthError(
            f"Key Vault {vault} is unreachable: check KEY_VAULT_URL and the network path "
            "(private endpoint, firewall, DNS)."
        ) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise AuthError(
                f"The identity running the export may not read secret '{name}' in Key Vault {vault}: "
                "assign it the 'Key Vault Secrets User' role on the vault or the secret "
                "(and check the vault firewall)."
            ) from None
        raise AuthError(
            f"Key Vault {vault} failed reading secret '{name}' with HTTP {exc.status_code} "
            f"{_error_code(exc)}: retry later or check the vault's health."
        ) from None
    if not bundle.value:
        raise AuthError(f"Secret '{name}' in Key Vault {vault} is empty: store the client secret value in it.")
    return Secret(bundle.value, bundle.properties.version)


def _error_code(exc: HttpResponseError) -> str:
    return (exc.error.code if exc.error and exc.error.code else "").strip()

