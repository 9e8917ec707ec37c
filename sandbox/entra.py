"""Entra ID look-alike: OpenID discovery and the client-credentials token endpoint.

MSAL (``ConfidentialClientApplication`` with ``instance_discovery=False``) reads
``/{tenant}/v2.0/.well-known/openid-configuration`` and then POSTs to the ``token_endpoint`` it finds
there. Errors carry Entra's exact JSON shape and AADSTS codes, because production code and runbooks
key on ``error_codes`` (7000215 wrong secret, 7000222 expired secret, 700016 unknown app).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from .server import JSON, Request, Response, json_response
from .tokens import Resources, TokenService

_NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

#: Secrets never expire unless a test says so: ~2 years, like the portal's longest option.
DEFAULT_SECRET_LIFETIME_S = 730 * 86400


@dataclass
class ClientSecret:
    """One password credential of an app registration."""

    value: str
    expires_at: float
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __repr__(self) -> str:  # never show the value
        return f"ClientSecret(key_id={self.key_id!r}, hint={self.value[:3]!r}, expires_at={self.expires_at})"


@dataclass
class AppRegistration:
    """An app registration plus its service principal in this tenant."""

    client_id: str
    display_name: str
    principal_id: str                       # the service principal's object id (token ``oid``)
    roles: list[str] = field(default_factory=list)   # granted application permissions on Graph
    secrets: list[ClientSecret] = field(default_factory=list)


def new_client_secret() -> str:
    """A secret shaped like the portal's: 40 characters, with a ``~`` and ``.`` like real ones."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    body = "".join(secrets.choice(alphabet) for _ in range(34))
    return f"{body[:3]}8Q~{body[3:]}.{secrets.choice(alphabet)}{secrets.choice(alphabet)}"


class Entra:
    """The ``login.microsoftonline.com`` look-alike for one tenant."""

    name = "entra"

    def __init__(self, *, tenant_id: str, tenant_domain: str, tokens: TokenService,
                 resources: Resources, token_lifetime_s: int = 3599) -> None:
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.tokens = tokens
        self.resources = resources
        self.token_lifetime_s = token_lifetime_s
        self.base_url = ""          # set by the Sandbox once the port is known
        self.apps: dict[str, AppRegistration] = {}
        self._default_client_id: str | None = None
        self._lock = threading.Lock()

    # --- Python API for tests -------------------------------------------------------------------

    def register_app(self, *, display_name: str = "graph-users-export", roles: list[str] | None = None,
                     client_id: str | None = None) -> AppRegistration:
        """Register an app (the first one becomes the default for the helpers below)."""
        app = AppRegistration(client_id=(client_id or str(uuid.uuid4())).lower(), display_name=display_name,
                              principal_id=str(uuid.uuid4()), roles=list(roles or []))
        with self._lock:
            self.apps[app.client_id] = app
            self._default_client_id = self._default_client_id or app.client_id
        return app

    def app(self, client_id: str | None = None) -> AppRegistration:
        key = (client_id or self._default_client_id or "").lower()
        if key not in self.apps:
            raise KeyError(f"no app registration {key!r}")
        return self.apps[key]

    def add_secret(self, value: str, expires_at: float | None = None,
                   client_id: str | None = None) -> ClientSecret:
        """Add a password credential; ``expires_at`` is epoch seconds (default: ~2 years ahead)."""
        secret = ClientSecret(value, expires_at if expires_at is not None else time.time() + DEFAULT_SECRET_LIFETIME_S)
        with self._lock:
            self.app(client_id).secrets.append(secret)
        return secret

    def remove_secret(self, value: str, client_id: str | None = None) -> None:
        with self._lock:
            app = self.app(client_id)
            app.secrets = [s for s in app.secrets if s.value != value]

    def expire_secrets(self, client_id: str | None = None) -> None:
        """Make every secret of the app expired (as if the portal's end date passed)."""
        with self._lock:
            for s in self.app(client_id).secrets:
                s.expires_at = time.time() - 1

    def set_roles(self, roles: list[str], client_id: str | None = None) -> None:
        """Replace the app's granted Graph application permissions (affects tokens issued later)."""
        with self._lock:
            self.app(client_id).roles = list(roles)

    def knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id.lower(), self.tenant_domain.lower())

    # --- HTTP -----------------------------------------------------------------------------------

    def page_of(self, request: Request) -> int | None:
        return None

    def handle(self, request: Request) -> Response:
        parts = [unquote_plus(p) for p in request.path.split("/") if p]
        correlation_id = request.header("client-request-id") or str(uuid.uuid4())
        if len(parts) < 2:
            return self._not_found()
        tenant, rest = parts[0], "/".join(parts[1:])
        if rest == "v2.0/.well-known/openid-configuration":
            if not self.knows_tenant(tenant):
                return self.error(400, "invalid_tenant", 90002, _tenant_not_found(tenant), correlation_id)
            return json_response(200, self.openid_configuration(), {"Cache-Control": "max-age=86400, private"})
        if rest == "discovery/v2.0/keys":
            return json_response(200, {"keys": []})
        if rest == "oauth2/v2.0/token":
            if request.method != "POST":
                message = f"The endpoint only accepts POST, OPTIONS requests. Received a {request.method} request."
                return self.error(400, "invalid_request", 900561, message, correlation_id)
            if not self.knows_tenant(tenant):
                return self.error(400, "invalid_request", 90002, _tenant_not_found(tenant), correlation_id)
            return self._token(request, tenant, correlation_id)
        return self._not_found()

    def fault_response(self, request: Request, status: int) -> Response:
        correlation_id = request.header("client-request-id") or str(uuid.uuid4())
        if status == 429:
            return self.error(429, "temporarily_unavailable", 50196,
                              "The server terminated an operation because it encountered a client request loop.",
                              correlation_id)
        if status >= 500:
            return self.error(status, "temporarily_unavailable", 90033,
                              "A transient error has occurred. Please try again.", correlation_id)
        return self.error(status, "invalid_request", 90000, "Sandbox fault injected.", correlation_id)

    def openid_configuration(self) -> dict[str, Any]:
        """The v2.0 discovery document; endpoints use the tenant GUID even when asked by domain."""
        t = f"{self.base_url}/{self.tenant_id}"
        return {
            "token_endpoint": f"{t}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{t}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{t}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                                 "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                                 "c_hash", "email"],
            "kerberos_endpoint": f"{t}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def error(self, status: int, error: str, code: int, message: str, correlation_id: str) -> Response:
        """Entra's error body: description = 'AADSTSn: message' + trace/correlation/timestamp lines."""
        trace_id = str(uuid.uuid4())
        now = time.gmtime()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", now)
        description = (f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}"
                       f"\r\nTimestamp: {stamp}Z")
        return json_response(status, {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": f"{stamp}Z",
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.base_url}/error?code={code}",
        }, {**_NO_CACHE, "x-ms-request-id": trace_id, "client-request-id": correlation_id})

    def _not_found(self) -> Response:
        return Response(404, b"", {"Content-Type": JSON})

    def _token(self, request: Request, tenant: str, correlation_id: str) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_auth(request.header("Authorization"))
        if basic is not None:
            client_id = client_id or basic[0]
            client_secret = client_secret or basic[1]

        grant_type = form.get("grant_type")
        if not grant_type:
            return self.error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'grant_type'.", correlation_id)
        if grant_type != "client_credentials":
            return self.error(400, "unsupported_grant_type", 70003,
                              f"The app requested an unsupported grant type '{grant_type}'.", correlation_id)
        if not client_id:
            return self.error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'client_id'.", correlation_id)
        app = self.apps.get(client_id.lower())
        if app is None:
            return self.error(400, "unauthorized_client", 700016, (
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                "This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You may have sent your authentication "
                "request to the wrong tenant."), correlation_id)
        if not client_secret:
            if form.get("client_assertion"):
                return self.error(401, "invalid_client", 700027,
                                  "Client assertion failed signature validation.", correlation_id)
            return self.error(401, "invalid_client", 7000218, (
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'."), correlation_id)
        matched = self._match_secret(app, client_secret)
        if matched is None:
            return self.error(401, "invalid_client", 7000215, (
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'."),
                correlation_id)
        if matched.expires_at <= time.time():
            return self.error(401, "invalid_client", 7000222, (
                f"The provided client secret keys for app '{app.client_id}' are expired. Visit the Azure "
                "portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
                "certificate credentials for added security: https://aka.ms/certCreds."), correlation_id)

        scope = (form.get("scope") or "").strip()
        resource_or_error = self._resource_for_scope(scope, correlation_id)
        if isinstance(resource_or_error, Response):
            return resource_or_error
        resource = resource_or_error
        roles = app.roles if self.resources.kind_of(resource) == "graph" else []
        token, _ = self.tokens.issue(aud=resource, tenant_id=self.tenant_id, appid=app.client_id,
                                     oid=app.principal_id, roles=roles, lifetime_s=self.token_lifetime_s,
                                     app_displayname=app.display_name)
        return json_response(200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "ext_expires_in": self.token_lifetime_s,
            "access_token": token,
        }, {**_NO_CACHE, "x-ms-request-id": str(uuid.uuid4()), "client-request-id": correlation_id})

    def _match_secret(self, app: AppRegistration, presented: str) -> ClientSecret | None:
        with self._lock:
            candidates = list(app.secrets)
        found = None
        for s in candidates:  # compare against all, in constant time each
            if hmac.compare_digest(s.value.encode("utf-8"), presented.encode("utf-8")):
                found = s
        return found

    def _resource_for_scope(self, scope: str, correlation_id: str) -> str | Response:
        """Client credentials need exactly one ``<resource>/.default`` scope for a known resource."""
        if not scope:
            return self.error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'scope'.", correlation_id)
        scopes = scope.split()
        if any(not s.endswith("/.default") for s in scopes):
            bad = next(s for s in scopes if not s.endswith("/.default"))
            return self.error(400, "invalid_scope", 1002012, (
                f"The provided value for scope {bad} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI)."), correlation_id)
        resources = {s[: -len("/.default")] for s in scopes}
        if len(resources) != 1:
            return self.error(400, "invalid_scope", 70011, (
                f"The provided request must include a 'scope' input parameter. The provided value for the "
                f"input parameter 'scope' is not valid. The scope {scope} is not valid."), correlation_id)
        resource = resources.pop()
        if self.resources.kind_of(resource) is None:
            return self.error(400, "invalid_resource", 500011, (
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.tenant_domain}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You might have sent "
                "your authentication request to the wrong tenant."), correlation_id)
        return resource


def _tenant_not_found(tenant: str) -> str:
    return (f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
            "signing in to the correct cloud. Check with your subscription administrator, this may happen "
            "if there are no active subscriptions for the tenant.")


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 client_secret_basic: base64(urlencode(id) ':' urlencode(secret))."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except ValueError:
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None
