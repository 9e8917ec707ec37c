"""App-only access tokens for Microsoft Graph, from MSAL's confidential client (client credentials).

One :class:`GraphTokenProvider` per app registration lives as long as the warm instance, so MSAL's
in-memory token cache answers repeated runs and refreshes ahead of expiry on its own; we never keep
or expire tokens ourselves.
"""

from __future__ import annotations

from typing import Any

import msal
import msal.exceptions

from .credentials import Secret
from .errors import AuthError, first_line

# What each Entra error code means for the person running the export, and what to do.
_SIGN_IN_ADVICE = {
    7000215: "the client secret in Key Vault is wrong (often the secret's ID was stored instead of its "
             "value): create a new client secret and store its value in the vault",
    7000222: "the client secret has expired: create a new client secret for the app registration and "
             "store its value in the vault",
    700016: "no application with this CLIENT_ID exists in the tenant: check CLIENT_ID and TENANT_ID, and "
            "that the app registration has a service principal in this tenant (az ad sp create --id <CLIENT_ID>)",
    90002: "the tenant was not found: check TENANT_ID",
    700024: "the client assertion is not valid: check the app registration's credentials",
    7000112: "the application is disabled in this tenant: enable its service principal",
    65001: "admin consent is missing: grant admin consent for the app's Microsoft Graph permissions",
    1002012: "the requested scope is invalid: check GRAPH_ENDPOINT",
    70011: "the requested scope is invalid: check GRAPH_ENDPOINT",
}


#: Entra codes meaning "this secret is not (or no longer) valid": worth re-reading the vault once.
SECRET_REJECTED_CODES = frozenset({7000215, 7000222})


class SecretRejectedError(AuthError):
    """Entra refused the client secret itself (wrong or expired); a rotated secret may fix it."""


class GraphTokenProvider:
    """Acquires Graph tokens for one app registration with a client secret.

    ``http_client`` is the transport seam MSAL documents (an object with ``get``/``post``, e.g. a
    ``requests.Session`` with retries and timeouts mounted).
    """

    def __init__(
        self,
        *,
        authority: str,
        client_id: str,
        scope: str,
        secret: Secret,
        http_client: Any,
        timeout_s: float | None = None,
    ) -> None:
        self._scopes = [scope]
        self._client_id = client_id
        self._authority = authority
        self._app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret.reveal(),
            authority=authority,
            http_client=http_client,
            timeout=timeout_s,
            # Instance discovery only exists to validate unknown hosts against the public cloud's
            # list, which sovereign clouds and emulators are not on; MSAL skips it for known hosts.
            instance_discovery=False,
        )

    def acquire(self) -> str:
        """An access token for Graph; served from MSAL's cache while it is fresh."""
        try:
            result: dict = self._app.acquire_token_for_client(scopes=self._scopes)
        except ValueError as exc:  # MSAL raises ValueError when the authority's metadata cannot be read
            raise AuthError(
                f"Could not read the sign-in metadata of authority {self._authority}: check TENANT_ID and "
                f"AUTHORITY_HOST ({first_line(str(exc))})."
            ) from None
        except msal.exceptions.MsalServiceError as exc:  # 429/5xx that outlasted our retries
            raise AuthError(
                f"The sign-in service at {self._authority} kept failing ({first_line(str(exc), 120)}): "
                "nothing was published; run again later."
            ) from None
        except OSError as exc:
            raise AuthError(
                f"Could not reach the sign-in service at {self._authority}: check AUTHORITY_HOST and the "
                f"network path ({type(exc).__name__})."
            ) from None
        token = result.get("access_token")
        if token:
            return token
        codes = {int(c) for c in result.get("error_codes") or [] if str(c).isdigit()}
        error = SecretRejectedError if codes & SECRET_REJECTED_CODES else AuthError
        raise error(describe_sign_in_error(result, self._client_id))

    def refresh(self, rejected: str) -> str:
        """A new token after a resource rejected ``rejected`` (revoked, or expired early).

        Only that token is evicted from MSAL's cache, so MSAL goes back to Entra for this request and
        keeps serving and refreshing every other entry as usual.
        """
        cache = self._app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=self._scopes)):
            if item.get("secret") == rejected:
                cache.remove_at(item)
        return self.acquire()


def describe_sign_in_error(result: dict, client_id: str) -> str:
    """One actionable line for an MSAL error dict; carries Entra's codes and correlation id, no secrets."""
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    advice = next((_SIGN_IN_ADVICE[c] for c in codes if c in _SIGN_IN_ADVICE), None)
    error = result.get("error") or "unknown_error"
    described = f"AADSTS{codes[0]}" if codes else error
    if advice is None:
        advice = f"{first_line(result.get('error_description'))}"
    correlation = result.get("correlation_id")
    suffix = f" (correlation id {correlation})" if correlation else ""
    return f"Sign-in for app {client_id} failed with {described} ({error}): {advice}{suffix}."

