"""App-only access tokens for Microsoft Graph, from MSAL's confidential client (client credentials).

One :class:`GraphTokenProvider` per app registration lives as long as the warm instance, so MSAL's
in-memory token cache answers repeated runs and refreshes ahead of expiry on its own; we never keep
or expire tokens ourselves.

Sign-in has its own small HTTP transport (:func:`make_sign_in_session`): every request times out,
throttling and 5xx are retried a few times, but a host that cannot be reached is not retried at all,
so a wrong AUTHORITY_HOST fails in seconds. Whatever goes wrong while signing in (unknown tenant, a
host that is not Entra ID, nothing listening, a proxy answering HTML) ends in one :class:`AuthError`
line naming TENANT_ID or AUTHORITY_HOST.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import msal
import msal.exceptions
import requests

from .credentials import FEDERATION_MISMATCH_CODES, FederatedAssertion
from .errors import (
    AuthError,
    CredentialRejectedError,
    certificate_failure,
    first_line,
    origin_of,
    refused_or_unresolved,
    untrusted_certificate,
)
from .modes import CredentialKind
from .transport import RETRY_STATUSES, BudgetedRetry, make_session

log = logging.getLogger(__name__)

#: Seconds to wait for a connection to the sign-in host; HTTP_TIMEOUT_SECONDS bounds each answer.
CONNECT_TIMEOUT_S = 10.0
#: Retries of one sign-in request answered 429 or 5xx (Retry-After is honoured), or cut off mid-answer.
SIGN_IN_RETRIES = 4

_T = TypeVar("_T")

# What each Entra error code means for the person running the export, and what to do.
_SIGN_IN_ADVICE = {
    7000215: "the client secret in Key Vault is wrong (often the secret's ID was stored instead of its "
             "value): create a new client secret and store its value in the vault",
    7000222: "the client secret has expired: create a new client secret for the app registration and "
             "store its value in the vault",
    700016: "no application with this CLIENT_ID exists in the tenant: check CLIENT_ID and TENANT_ID, and "
            "that the app registration has a service principal in this tenant (az ad sp create --id <CLIENT_ID>)",
    90002: "the tenant was not found: check TENANT_ID",
    700024: "the certificate assertion is outside its validity (check the clock, or the certificate has expired): "
            "renew the certificate in Key Vault and upload its public part to the app registration",
    700027: "the certificate in Key Vault is not one of the app registration's certificates (or its signature "
            "does not verify): register its public part (infra/deploy.sh, or az ad app credential reset --id "
            "<CLIENT_ID> --cert <certificate name> --keyvault <vault> --append) or set CLIENT_CERTIFICATE_NAME "
            "to the registered one",
    7000112: "the application is disabled in this tenant: enable its service principal",
    65001: "admin consent is missing: grant admin consent for the app's Microsoft Graph permissions",
    1002012: "the requested scope is invalid: check GRAPH_ENDPOINT",
    70011: "the requested scope is invalid: check GRAPH_ENDPOINT",
}


#: Entra's answer to a token request for a resource (audience) it does not know in the tenant.
UNKNOWN_RESOURCE = 500011


class Credential(Protocol):
    """A client secret, a certificate or a federated assertion (see ``credentials``), as MSAL takes it."""

    kind: CredentialKind
    rejected_codes: frozenset[int]
    expires: datetime | None
    version: str | None
    described: str

    def msal_credential(self, client_id: str, token_endpoint: Callable[[], str]) -> Any: ...


def make_sign_in_session(backoff_base_s: float = 1.0) -> requests.Session:
    """The HTTP transport MSAL signs in through (its documented ``http_client`` seam).

    Throttling and transient 5xx are retried with urllib3's ``Retry`` (Retry-After first, then
    exponential backoff with jitter from ``backoff_base_s``), and so is a connection cut off while
    answering (a stale keep-alive connection). A connection that cannot be made (refused, DNS, TLS
    handshake) is not retried: that is a setting to fix, not a blip, and the next run retries anyway.
    """
    retry = BudgetedRetry(
        service="The sign-in service",
        total=SIGN_IN_RETRIES,
        connect=0,
        read=2,
        other=0,
        status=SIGN_IN_RETRIES,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),  # discovery and token requests, both safe to repeat
        backoff_factor=backoff_base_s,
        backoff_jitter=backoff_base_s,
        backoff_max=30.0,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand the last answer to MSAL, which reports it
    )
    return make_session(retry, pool_size=2)


@dataclass(frozen=True)
class _Answer:
    """What the sign-in host last answered: enough to explain a failure, nothing secret."""

    method: str                   # GET: the OpenID configuration; POST: the token request
    url: str
    status: int
    codes: tuple[int, ...] = ()   # Entra's AADSTS error codes, when the answer is an Entra error

    @classmethod
    def of(cls, method: str, response: Any) -> "_Answer":
        codes: tuple[int, ...] = ()
        if response.status_code >= 400:  # error bodies only: a 200 may carry an access token
            try:
                body = response.json()
                codes = tuple(int(c) for c in body.get("error_codes") or () if str(c).isdigit())
            except (ValueError, AttributeError, TypeError):
                pass
        return cls(method=method, url=str(response.url or "").split("?")[0], status=response.status_code,
                   codes=codes)


class _SignInHttp:
    """What MSAL calls (``get``/``post``/``close``): the session with timeouts, keeping the last answer.

    MSAL applies its ``timeout`` only to a session it builds itself, so every request gets one here.
    MSAL reports an unusable discovery document as a bare ValueError/KeyError; the last answer's
    status and Entra error codes say what was wrong with it.
    """

    def __init__(self, session: Any, read_timeout_s: float | None) -> None:
        self._session = session
        self._timeout = (CONNECT_TIMEOUT_S, read_timeout_s)
        self.last: _Answer | None = None

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._send("GET", self._session.get, url, kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._send("POST", self._session.post, url, kwargs)

    def close(self) -> None:
        self._session.close()

    def _send(self, name: str, method: Callable[..., Any], url: str, kwargs: dict[str, Any]) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        # Never followed: a 307/308 would post the form, client secret and all, to wherever it points.
        kwargs["allow_redirects"] = False
        self.last = None
        response = method(url, **kwargs)
        self.last = _Answer.of(name, response)
        if response.is_redirect or 300 <= response.status_code < 400:
            response.close()
            raise AuthError(
                f"The sign-in service at {origin_of(url)} answered HTTP {response.status_code}, a redirect to "
                f"{origin_of(urljoin(url, response.headers.get('Location') or ''))}: sign-in requests are never redirected (the "
                "client secret would go along); check AUTHORITY_HOST and any proxy in between."
            )
        return response


class GraphTokenProvider:
    """Acquires Graph tokens for one app registration with its credential (secret, certificate or assertion).

    Sign-in requests go through :func:`make_sign_in_session` (or ``http_client``, any object with
    ``get``/``post`` such as a ``requests.Session``), each with a connect timeout of
    :data:`CONNECT_TIMEOUT_S` and a read timeout of ``timeout_s``.
    """

    def __init__(
        self,
        *,
        authority: str,
        client_id: str,
        scope: str,
        credential: Credential,
        timeout_s: float | None = 60.0,
        backoff_base_s: float = 1.0,
        http_client: Any = None,
    ) -> None:
        self._scopes = [scope]
        self._client_id = client_id
        self._authority = authority.rstrip("/")
        parts = urlsplit(self._authority)
        self._host = f"{parts.scheme}://{parts.netloc}"
        self._tenant = parts.path.strip("/")
        self._timeout_s = timeout_s
        self._http = _SignInHttp(http_client if http_client is not None else make_sign_in_session(backoff_base_s),
                                 timeout_s)
        self._credential = credential
        # MSAL reads the authority's OpenID configuration here, in the constructor; an assertion's
        # audience is the token endpoint it found there.
        self._app = self._signing_in(lambda: msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential.msal_credential(client_id, lambda: str(self._app.authority.token_endpoint)),
            authority=self._authority,
            http_client=self._http,
            # Instance discovery only exists to validate unknown hosts against the public cloud's
            # list, which sovereign clouds and emulators are not on; MSAL skips it for known hosts.
            instance_discovery=False,
        ))

    def acquire(self) -> str:
        """An access token for Graph; served from MSAL's cache while it is fresh."""
        result: dict[str, Any] = self._signing_in(lambda: self._app.acquire_token_for_client(scopes=self._scopes))
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return token
        codes = {int(c) for c in result.get("error_codes") or [] if str(c).isdigit()}
        if codes & FEDERATION_MISMATCH_CODES and isinstance(self._credential, FederatedAssertion):
            raise AuthError(describe_federation_mismatch(result, self._client_id, self._credential))
        error = CredentialRejectedError if codes & self._credential.rejected_codes else AuthError
        raise error(describe_sign_in_error(result, self._client_id, self._scopes[0]))

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

    def _signing_in(self, call: Callable[[], _T]) -> _T:
        """Run one MSAL call; whatever it raises becomes one AuthError line naming the setting to fix."""
        self._http.last = None
        try:
            return call()
        except (msal.exceptions.MsalServiceError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # OSError: requests' errors (no answer); the rest: MSAL could not use what it was answered.
            log.debug("sign-in at %s failed", self._authority, exc_info=True)
            raise AuthError(self._explain(exc)) from None

    def _explain(self, exc: Exception) -> str:
        host, tenant, answer = self._host, self._tenant, self._http.last
        untrusted = certificate_failure(exc)
        if untrusted is not None:
            line = untrusted_certificate("The sign-in service", host, "AUTHORITY_HOST", untrusted)
            return f"{line}; nothing was published."
        if isinstance(exc, OSError) and getattr(exc, "response", None) is None:
            why = _why_unreachable(exc, self._timeout_s)
            return (f"Could not reach the sign-in service at AUTHORITY_HOST {host}: {why}; check AUTHORITY_HOST "
                    "(your cloud's Entra ID sign-in host, e.g. https://login.microsoftonline.com) and the network "
                    "path (DNS, firewall, proxy).")
        if isinstance(exc, msal.exceptions.MsalServiceError) or (answer is not None and answer.status >= 500):
            status = f"HTTP {answer.status}" if answer is not None else first_line(str(exc), 120)
            return (f"The sign-in service at AUTHORITY_HOST {host} kept failing ({status}): nothing was "
                    "published; run again later, and check AUTHORITY_HOST if it persists.")
        if answer is not None and 90002 in answer.codes:
            return (f"Tenant '{tenant}' was not found by the sign-in service at {host} (AADSTS90002): check "
                    "TENANT_ID, your directory (tenant) ID or a verified domain, and that AUTHORITY_HOST is the "
                    "sign-in host of the tenant's cloud.")
        if answer is not None and answer.codes:
            code = answer.codes[0]
            advice = _SIGN_IN_ADVICE.get(code, "check TENANT_ID and AUTHORITY_HOST")
            return f"The sign-in service at {host} refused tenant '{tenant}' with AADSTS{code}: {advice}."
        if answer is not None and answer.method == "POST":  # the OpenID configuration was fine
            return (f"The sign-in service at AUTHORITY_HOST {host} answered the token request with HTTP "
                    f"{answer.status} and something that is not Entra ID's answer, as a proxy or firewall in the "
                    "way would: check AUTHORITY_HOST and the network path.")
        seen = (f"{answer.url} answered HTTP {answer.status}" if answer is not None
                else "it gave no answer MSAL could use")
        if answer is not None and answer.status < 400:
            seen += " with something that is not an OpenID configuration"
        return (f"AUTHORITY_HOST {host} is not an Entra ID sign-in host: {seen}; set AUTHORITY_HOST to your "
                "cloud's sign-in host (e.g. https://login.microsoftonline.com) and check TENANT_ID.")


class GraphTokens:
    """A valid Graph token for one app registration, re-reading the vault once if Entra rejects its credential.

    What ``graph.GraphUsers`` asks for tokens (``get``, and ``refresh`` after Graph rejected one).
    The credential (secret, certificate or federated assertion) and the signed-in
    :class:`GraphTokenProvider` are kept for the life of the warm instance. When Entra rejects the
    secret or certificate itself (wrong, expired, not registered), someone may have rotated it since
    it was read: the vault is read again and, if it now holds another one, sign-in is tried once more
    with it; if Entra knows neither, older versions still valid are tried (``read_older``: a renewed
    certificate not yet registered). Any other sign-in failure forgets both, so the next run starts
    afresh. ``read_credential`` (whatever credential the settings name), ``read_older`` and ``sign_in`` are
    the seams to Key Vault and Entra; ``read_after`` is how a credential is read once this one forgot
    ``forgotten`` (by default the vault is read again; tenants sharing one credential
    (``clients.AppClients``) read it again only if no other tenant has since).
    """

    def __init__(self, read_credential: Callable[[], Credential],
                 sign_in: Callable[[Credential], GraphTokenProvider],
                 read_older: Callable[[Credential], list[Credential]] = lambda newest: [],
                 read_after: Callable[[Credential], Credential] | None = None) -> None:
        self._read_credential = read_credential
        self._read_after = read_after or (lambda forgotten: read_credential())
        self._read_older = read_older
        self._sign_in = sign_in
        self._credential: Credential | None = None
        self._forgotten: Credential | None = None
        self._provider: GraphTokenProvider | None = None

    def check_expiry(self, warning: timedelta, now: datetime) -> datetime | None:
        """When the credential expires (None if it does not say); AuthError if it has expired.

        Within ``warning`` of its expiry the vault is read again first (it may have been renewed or
        rotated meanwhile), and a warning line starting ``Credential expiry:`` is logged, which the
        infrastructure alerts on. An expired credential fails before Entra is asked.
        """
        expires = self._current_credential().expires
        if expires is not None and expires - now <= warning:
            self._forget()
            credential = self._current_credential()
            expires = credential.expires
            if expires is not None and expires <= now:
                self._forget()
                raise AuthError(f"{_capital(credential.described)} expired on {expires:%Y-%m-%d %H:%M} UTC: "
                                f"{_renew_advice(credential.kind)}; nothing was published.")
            if expires is not None and expires - now <= warning:
                days = (expires - now).total_seconds() / 86400
                log.warning("Credential expiry: %s expires on %s UTC (in %.0f days): %s.", credential.described,
                            f"{expires:%Y-%m-%d %H:%M}", days, _renew_advice(credential.kind))
        return expires

    def get(self) -> str:
        """An access token for Graph, from MSAL's cache while it is fresh."""
        return self._signed_in(lambda provider: provider.acquire())

    def refresh(self, rejected: str) -> str:
        """A new access token after Graph rejected ``rejected``."""
        return self._signed_in(lambda provider: provider.refresh(rejected))

    def _signed_in(self, call: Callable[[GraphTokenProvider], str]) -> str:
        try:
            return call(self._current())
        except CredentialRejectedError as first:
            rejected = self._credential
            self._forget()
            if self._current_credential() != rejected:
                log.warning("Entra rejected the cached %s; retrying once with the vault's latest version",
                            "client secret" if rejected is None else rejected.kind)
                try:
                    return call(self._current())
                except CredentialRejectedError:
                    pass
                except AuthError:
                    self._forget()
                    raise
            return self._with_an_older_version(call, first)
        except AuthError:
            self._forget()
            raise

    def _with_an_older_version(self, call: Callable[[GraphTokenProvider], str], rejected: AuthError) -> str:
        """Entra does not know the vault's newest version: an older one still valid may be registered.

        Key Vault renews a certificate with a new key before the old one expires; until someone registers
        the new one on the app registration, the old one still signs in. The warning starts with
        ``Credential expiry:`` so that the expiry alert fires well before the old one runs out.
        """
        newest = self._current_credential()
        for older in self._read_older(newest):
            self._credential, self._provider = older, None
            try:
                token = call(self._current())
            except CredentialRejectedError:
                continue
            except AuthError:
                self._forget()
                raise
            until = f"{older.expires:%Y-%m-%d %H:%M} UTC" if older.expires else "its end"
            log.warning("Credential expiry: the newest version of %s is not registered on the app registration, so "
                        "the previous version signed in; it works until %s: %s.", newest.described, until,
                        _renew_advice(newest.kind))
            return token
        self._forget()
        raise rejected

    def _current_credential(self) -> Credential:
        if self._credential is None:
            forgotten, self._forgotten = self._forgotten, None
            self._credential = self._read_credential() if forgotten is None else self._read_after(forgotten)
        return self._credential

    def _current(self) -> GraphTokenProvider:
        if self._provider is None:
            self._provider = self._sign_in(self._current_credential())
        return self._provider

    def _forget(self) -> None:
        if self._credential is not None:
            self._forgotten = self._credential
        self._credential = self._provider = None


def _renew_advice(kind: CredentialKind) -> str:
    if kind == CredentialKind.CERTIFICATE:
        return ("renew the certificate in Key Vault (or check its rotation policy) and register its public part on "
                "the app registration (infra/deploy.sh, or az ad app credential reset --id <CLIENT_ID> --cert "
                "<certificate name> --keyvault <vault> --append)")
    return ("create a new client secret (az ad app credential reset --id <CLIENT_ID> --append) and store its "
            "value in Key Vault with its end date as the secret's expiry (az keyvault secret set --expires)")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_federation_mismatch(result: dict[str, Any], client_id: str, credential: FederatedAssertion) -> str:
    """No federated credential of the app trusts the identity: say exactly which one it must trust."""
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    presented = credential.presented
    issuer, subject = presented.get("iss", "<issuer>"), presented.get("sub", "<principal id>")
    audience = presented.get("aud", credential.audience)
    parameters = ('{"name":"graph-export","issuer":"%s","subject":"%s","audiences":["%s"]}'
                  % (issuer, subject, audience))
    correlation = result.get("correlation_id")
    suffix = f" (correlation id {correlation})" if correlation else ""
    return (f"Sign-in for app {client_id} failed with AADSTS{codes[0]}: the app registration has no federated "
            f"credential trusting the function's managed identity (issuer {issuer}, subject {subject}, audience "
            f"{audience}); add it (az ad app federated-credential create --id {client_id} --parameters "
            f"'{parameters}'); a new federated credential takes a few minutes to be accepted, so if you just "
            f"added it, run again shortly{suffix}.")


def _why_unreachable(exc: OSError, read_timeout_s: float | None) -> str:
    """A few words on why a connection failed; never the request (it may carry the client secret)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {read_timeout_s:g} s (HTTP_TIMEOUT_SECONDS)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    return refused_or_unresolved(exc) or "the connection was refused or reset"


def describe_sign_in_error(result: dict[str, Any], client_id: str, scope: str | None = None) -> str:
    """One actionable line for an MSAL error dict; carries Entra's codes and correlation id, no secrets.

    ``scope`` is what the token was asked for (``{GRAPH_ENDPOINT}/.default``): an audience Entra does not
    know (AADSTS500011) is a GRAPH_ENDPOINT to fix. Entra's own text, for a code without advice here,
    is its first line, cut at a word boundary.
    """
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    advice = next((_SIGN_IN_ADVICE[c] for c in codes if c in _SIGN_IN_ADVICE), None)
    if UNKNOWN_RESOURCE in codes:
        resource = origin_of(scope[: -len("/.default")]) if scope and scope.endswith("/.default") else "it"
        advice = (f"Entra ID knows no resource named {resource} in this tenant, and that is GRAPH_ENDPOINT (tokens "
                  "are asked for GRAPH_ENDPOINT/.default): set GRAPH_ENDPOINT to the Microsoft Graph root of the "
                  "cloud AUTHORITY_HOST signs in to (public: https://graph.microsoft.com; US Government: "
                  "https://graph.microsoft.us; China: https://microsoftgraph.chinacloudapi.cn), without /v1.0")
    error = result.get("error") or "unknown_error"
    described = f"AADSTS{codes[0]}" if codes else error
    if advice is None:
        advice = f"{first_line(result.get('error_description'))}"
    correlation = result.get("correlation_id")
    suffix = f" (correlation id {correlation})" if correlation else ""
    return f"Sign-in for app {client_id} failed with {described} ({error}): {advice}{suffix}."
