"""The app registration's client secret, read from Azure Key Vault with the app's own identity.

``DefaultAzureCredential`` is managed identity in Azure and ``az login`` or environment variables on
a workstation; the vault is the only place the secret lives. The value is wrapped in
:class:`Secret` so that a stray ``print`` or log line shows ``Secret(***)``, never the value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from .errors import AuthError, first_line

# Key Vault DNS suffixes of the Azure clouds. For these the SDK checks that the vault's 401 challenge
# names a resource on the vault's own domain; a vault elsewhere (an emulator on loopback) cannot pass
# that check, so it is only switched off for hosts that are not real vaults.
_KEY_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
)


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


def make_secret_client(vault_url: str, credential: TokenCredential, **client_kwargs: Any) -> SecretClient:
    """The one place a SecretClient is built (tests and the sandbox pass transport options here)."""
    host = (urlsplit(vault_url).hostname or "").lower()
    return SecretClient(
        vault_url,
        credential,
        verify_challenge_resource=host.endswith(_KEY_VAULT_SUFFIXES),
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

