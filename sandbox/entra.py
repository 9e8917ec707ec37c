"""Entra ID look-alike: OpenID discovery and the client-credentials token endpoint.

MSAL (``ConfidentialClientApplication`` with ``instance_discovery=False``) reads
``/{tenant}/v2.0/.well-known/openid-configuration`` and then POSTs to the ``token_endpoint`` it finds
there. Errors carry Entra's exact JSON shape and AADSTS codes, because production code and runbooks
key on ``error_codes`` (7000215 wrong secret, 7000222 expired secret, 700016 unknown app).

Besides a client secret, an app proves itself with a client assertion (``client_assertion_type=
urn:ietf:params:oauth:client-assertion-type:jwt-bearer``), checked offline and for real:

* a certificate assertion (its header names a certificate by ``x5t#S256`` or ``x5t``): the
  certificate must be one of the app's key credentials and valid now, the PS256/RS256 signature must
  verify with its public key, ``iss`` == ``sub`` == client_id, ``aud`` the tenant's token endpoint
  (v2 or v1 form), ``nbf``/``exp`` within 5 minutes of skew;
* a federated assertion (anything else, e.g. a managed identity token for
  ``api://AzureADTokenExchange``): (iss, sub, aud) must match one of the app's federated identity
  credentials, and the token must have been signed by this sandbox's token service and be unexpired.

Where each AADSTS code and text comes from is noted at :data:`ASSERTION_ERRORS`.

Besides its home tenant (where the app registrations live) Entra knows customer tenants
(:meth:`Entra.add_tenant`, :mod:`sandbox.consent`): a multi-tenant app (``sign_in_audience``
"AzureADMultipleOrgs") signs in at ``/{customer}/oauth2/v2.0/token`` with the same secret, certificate or
federated credential, and gets a token whose ``tid`` is that tenant and whose ``oid`` and ``roles`` are
its service principal's there; without one (no consent) AADSTS7000229. A single-tenant app is not found
in another tenant's directory: AADSTS700016, as for any app the tenant does not know.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .certs import CertificateInfo, decode_thumbprint, inspect
from .consent import MISSING_SERVICE_PRINCIPAL, MISSING_SERVICE_PRINCIPAL_TEXT, Organization, ServicePrincipal
from .server import JSON, Request, Response, json_response
from .tokens import Resources, TokenError, TokenService

_NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

#: Secrets never expire unless a test says so: ~2 years, like the portal's longest option.
DEFAULT_SECRET_LIFETIME_S = 730 * 86400

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Tolerated clock difference for an assertion's ``nbf``/``exp``. Entra documents no value; 5 minutes is
#: the default of Microsoft.IdentityModel's TokenValidationParameters.ClockSkew, which it is built on.
ASSERTION_CLOCK_SKEW_S = 300
#: The audiences a managed identity token for workload identity federation carries, one per cloud
#: (public, US Government, China), as the Entra docs list them.
TOKEN_EXCHANGE_AUDIENCES = ("api://AzureADTokenExchange", "api://AzureADTokenExchangeUSGov",
                            "api://AzureADTokenExchangeChina")
#: Graph's limit of federated identity credentials on one application.
MAX_FEDERATED_CREDENTIALS = 20

_CERT_DOCS = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"
_FIC_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
_GRAPH_KEYS_HELP = (
    "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id "
    "'{app}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the "
    "corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-"
    "1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/{app}'")

#: code -> (HTTP status, OAuth error) for every client assertion rejection, with where its wording was seen:
#: 700027 not registered / key expired / bad signature: responses quoted in AzureAD/microsoft-authentication-
#:   library-for-js#8339, microsoftgraph/msgraph-sdk-php#1585 and Microsoft's own troubleshooting pages;
#:   "Client assertion failed signature validation." is the docs table (reference-error-codes.md).
#: 700024 not within its valid time range: AzureAD/microsoft-authentication-library-for-dotnet#4951, Azure/login#180.
#: 700021 iss is not the client_id, 700023 aud not the token endpoint ("does not match Realm issuer"),
#:   50027 "JWT token is invalid or malformed.": azure-identity's TROUBLESHOOTING.md (ClientAssertionCredential);
#:   the docs table calls 700023 "InvalidResourcelessScope", but real responses carry the audience text
#:   (AzureAD/microsoft-authentication-library-for-dotnet#2746).
#: 50048 iss != sub: AzureAD/microsoft-authentication-library-for-java#430 and the docs table.
#: 70021 (invalid_request, 400) naming Issuer/Subject/Audience: Azure/azure-workload-identity#616;
#:   700211/700213 (invalid_client): Azure/azure-workload-identity#1200, Azure/login#482; 700212 by analogy.
#: 90011 "Unexpected client assertion type.": AzureAD/azure-activedirectory-library-for-ruby#53.
#: 50013 for a reused jti is the sandbox's own choice (see Entra.reject_replayed_assertions).
ASSERTION_ERRORS: dict[int, tuple[int, str]] = {
    700027: (401, "invalid_client"), 700024: (401, "invalid_client"), 700021: (401, "invalid_client"),
    700023: (401, "invalid_client"), 50048: (401, "invalid_client"), 50027: (400, "invalid_request"),
    70021: (400, "invalid_request"), 700211: (401, "invalid_client"), 700212: (401, "invalid_client"),
    700213: (401, "invalid_client"), 90011: (400, "invalid_request"), 50013: (401, "invalid_client"),
}


@dataclass
class ClientSecret:
    """One password credential of an app registration."""

    value: str
    expires_at: float
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __repr__(self) -> str:  # never show the value
        return f"ClientSecret(key_id={self.key_id!r}, hint={self.value[:3]!r}, expires_at={self.expires_at})"


@dataclass
class KeyCredential:
    """One certificate credential of an app registration: only the public part, as Entra keeps it."""

    cert_pem: bytes
    info: CertificateInfo
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def thumbprint(self) -> str:
        """SHA-1 thumbprint, upper-case hex (what the portal shows)."""
        return self.info.thumbprint

    @property
    def thumbprint_sha256(self) -> str:
        return self.info.sha256.hex().upper()

    @property
    def start(self) -> float:
        return self.info.not_before

    @property
    def end(self) -> float:
        return self.info.not_after

    def __repr__(self) -> str:
        return f"KeyCredential(thumbprint={self.thumbprint!r}, subject={self.info.subject!r}, end={self.end})"


@dataclass
class FederatedCredential:
    """One federated identity credential: tokens from ``issuer`` about ``subject`` for ``audiences``."""

    name: str
    issuer: str
    subject: str
    audiences: list[str]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    active_from: float = 0.0      # epoch s; before that it is still "propagating" and matches nothing


@dataclass(frozen=True)
class SignIn:
    """One token request: which kind of credential it used and, if refused, the AADSTS code.

    Holds no credential material: never the secret, the assertion or the token.
    """

    kind: str                 # "secret", "certificate", "federated" or "none"
    client_id: str
    code: int | None          # None: a token was issued
    at: float


@dataclass
class AppRegistration:
    """An app registration plus its service principal in this tenant."""

    client_id: str
    display_name: str
    principal_id: str                       # the service principal's object id (token ``oid``)
    roles: list[str] = field(default_factory=list)   # granted application permissions on Graph
    secrets: list[ClientSecret] = field(default_factory=list)
    certificates: list[KeyCredential] = field(default_factory=list)
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    #: "AzureADMyOrg" (this tenant only) or "AzureADMultipleOrgs" (any tenant where it has a service principal).
    sign_in_audience: str = "AzureADMyOrg"

    @property
    def multi_tenant(self) -> bool:
        return self.sign_in_audience != "AzureADMyOrg"


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
        #: Customer tenants by (lower-case) tenant id: where multi-tenant apps may have service principals.
        self.organizations: dict[str, Organization] = {}
        self._default_client_id: str | None = None
        self._lock = threading.Lock()
        #: Every token request with an app, in order: the kind of credential and the outcome (no values).
        self.sign_ins: list[SignIn] = []
        #: Real Entra accepts a client assertion more than once while it is valid (MSAL Python reuses its
        #: own for 9 minutes, MSAL.NET caches it for 5), so by default a reused ``jti`` is only counted in
        #: :attr:`reused_assertions`. Set True to refuse it (AADSTS50013) as a strict RFC 7523 server may.
        self.reject_replayed_assertions = False
        self.reused_assertions = 0
        self._seen_jti: dict[tuple[str, str], float] = {}

    # --- Python API for tests -------------------------------------------------------------------

    def register_app(self, *, display_name: str = "graph-users-export", roles: list[str] | None = None,
                     client_id: str | None = None, sign_in_audience: str = "AzureADMyOrg") -> AppRegistration:
        """Register an app (the first one becomes the default for the helpers below)."""
        app = AppRegistration(client_id=(client_id or str(uuid.uuid4())).lower(), display_name=display_name,
                              principal_id=str(uuid.uuid4()), roles=list(roles or []),
                              sign_in_audience=sign_in_audience)
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

    def add_certificate(self, cert_pem: bytes, *, client_id: str | None = None) -> KeyCredential:
        """Upload a certificate's public part (PEM) as a key credential of the app (Certificates & secrets).

        Expired or not-yet-valid certificates are accepted here, as Graph's keyCredentials are; Entra
        refuses assertions signed with them (AADSTS700027, "The key used is expired").
        """
        credential = KeyCredential(cert_pem=bytes(cert_pem), info=inspect(cert_pem))
        with self._lock:
            app = self.app(client_id)
            if any(c.info.sha256 == credential.info.sha256 for c in app.certificates):
                raise ValueError(f"certificate {credential.thumbprint} is already registered on {app.client_id}")
            app.certificates.append(credential)
        return credential

    def remove_certificate(self, thumbprint_or_pem: str | bytes, *, client_id: str | None = None) -> None:
        """Remove one certificate, named by its SHA-1 thumbprint (hex) or its PEM."""
        if isinstance(thumbprint_or_pem, bytes):
            wanted = inspect(thumbprint_or_pem).thumbprint
        else:
            wanted = thumbprint_or_pem.replace(":", "").upper()
        with self._lock:
            app = self.app(client_id)
            app.certificates = [c for c in app.certificates if c.thumbprint != wanted]

    def remove_certificates(self, client_id: str | None = None) -> None:
        """Remove every certificate credential of the app."""
        with self._lock:
            self.app(client_id).certificates = []

    def add_federated_credential(self, *, issuer: str, subject: str, audiences: list[str],
                                 name: str = "graph-export", client_id: str | None = None,
                                 propagation_s: float = 0.0) -> FederatedCredential:
        """Add a federated identity credential (Graph's rules: unique name, unique issuer+subject, at most 20).

        ``propagation_s`` > 0 keeps it invisible for that long, as a new credential is in Entra for a
        while (sign-ins meanwhile answer AADSTS70021).
        """
        if not issuer or not subject or not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("issuer, subject and at least one audience are required")
        credential = FederatedCredential(name=name, issuer=issuer, subject=subject, audiences=list(audiences),
                                         active_from=time.time() + max(0.0, propagation_s))
        with self._lock:
            app = self.app(client_id)
            if len(app.federated_credentials) >= MAX_FEDERATED_CREDENTIALS:
                raise ValueError(f"an application has at most {MAX_FEDERATED_CREDENTIALS} federated credentials")
            if any(f.name.lower() == name.lower() for f in app.federated_credentials):
                raise ValueError(f"a federated credential named {name!r} already exists on {app.client_id}")
            if any(f.issuer == issuer and f.subject == subject for f in app.federated_credentials):
                raise ValueError("a federated credential with this issuer and subject already exists")
            app.federated_credentials.append(credential)
        return credential

    def remove_federated_credentials(self, client_id: str | None = None) -> None:
        """Remove every federated identity credential of the app."""
        with self._lock:
            self.app(client_id).federated_credentials = []

    @property
    def grants(self) -> list[str]:
        """The credential kind of every token issued, in order: "secret", "certificate" or "federated"."""
        with self._lock:
            return [s.kind for s in self.sign_ins if s.code is None]

    def knows_tenant(self, tenant: str) -> bool:
        return self.resolve(tenant) is not None

    # --- customer tenants and consent -------------------------------------------------------------

    def add_tenant(self, tenant_id: str, domain: str) -> Organization:
        """Another tenant Entra serves; no app has a service principal there until :meth:`consent`."""
        organization = Organization(tenant_id=tenant_id.lower(), domain=domain)
        with self._lock:
            if self.resolve(tenant_id) is not None or self.resolve(domain) is not None:
                raise ValueError(f"tenant {tenant_id} ({domain}) is already known")
            self.organizations[organization.tenant_id] = organization
        return organization

    def organization(self, tenant_id: str) -> Organization:
        """A customer tenant by id or domain; KeyError for the home tenant or an unknown one."""
        resolved = self.resolve(tenant_id)
        if resolved is None or resolved not in self.organizations:
            raise KeyError(f"no customer tenant {tenant_id!r}")
        return self.organizations[resolved]

    def consent(self, tenant_id: str, roles: list[str], client_id: str | None = None) -> ServicePrincipal:
        """An administrator of ``tenant_id`` consents to the app: its service principal there, with ``roles``."""
        return self.organization(tenant_id).consent(self.app(client_id).client_id, roles)

    def revoke_consent(self, tenant_id: str, client_id: str | None = None) -> None:
        """The app's service principal in ``tenant_id`` is deleted: sign-ins there answer AADSTS7000229."""
        self.organization(tenant_id).revoke(self.app(client_id).client_id)

    def resolve(self, tenant: str) -> str | None:
        """The lower-case id of the tenant named by id or domain (home or customer), or None."""
        wanted = tenant.lower()
        if wanted in (self.tenant_id.lower(), self.tenant_domain.lower()):
            return self.tenant_id.lower()
        if wanted in self.organizations:
            return wanted
        return next((o.tenant_id for o in list(self.organizations.values()) if o.domain.lower() == wanted), None)

    def domain_of(self, tenant_id: str) -> str:
        """The initial domain of a known tenant (by id)."""
        if tenant_id.lower() == self.tenant_id.lower():
            return self.tenant_domain
        return self.organizations[tenant_id.lower()].domain

    def tenant_of(self, request: Request) -> str | None:
        """The id of the tenant the request's path names (by id or domain), else that segment as sent."""
        parts = [unquote_plus(p) for p in request.path.split("/") if p]
        if not parts:
            return None
        return self.resolve(parts[0]) or parts[0].lower()

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
            resolved = self.resolve(tenant)
            if resolved is None:
                return self.error(400, "invalid_tenant", 90002, _tenant_not_found(tenant), correlation_id)
            return json_response(200, self.openid_configuration(resolved), {"Cache-Control": "max-age=86400, private"})
        if rest == "discovery/v2.0/keys":
            return json_response(200, {"keys": []})
        if rest == "oauth2/v2.0/token":
            if request.method != "POST":
                message = f"The endpoint only accepts POST, OPTIONS requests. Received a {request.method} request."
                return self.error(400, "invalid_request", 900561, message, correlation_id)
            resolved = self.resolve(tenant)
            if resolved is None:
                return self.error(400, "invalid_request", 90002, _tenant_not_found(tenant), correlation_id)
            return self._token(request, tenant, resolved, correlation_id)
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

    def openid_configuration(self, tenant_id: str | None = None) -> dict[str, Any]:
        """The v2.0 discovery document of a tenant (default: home); endpoints use the tenant GUID even when
        asked by domain."""
        t = f"{self.base_url}/{tenant_id or self.tenant_id}"
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

    def _token(self, request: Request, tenant: str, tenant_id: str, correlation_id: str) -> Response:
        """A client-credentials request at ``/{tenant}/oauth2/v2.0/token`` (``tenant_id``: that tenant's id)."""
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
        kind = _credential_kind(client_secret, form)
        app = self.apps.get(client_id.lower())
        home = tenant_id == self.tenant_id.lower()
        if app is None or (not home and not app.multi_tenant):
            return self._record(kind, client_id, self.error(400, "unauthorized_client", 700016, (
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                "This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You may have sent your authentication "
                "request to the wrong tenant."), correlation_id))
        if not home and self.organizations[tenant_id].principal(app.client_id) is None:
            # Checked before the credential: the sandbox's choice (Entra does not document the order).
            return self._record(kind, app.client_id, self.error(401, "invalid_client", MISSING_SERVICE_PRINCIPAL,
                                MISSING_SERVICE_PRINCIPAL_TEXT.format(app=app.client_id, tenant=tenant_id),
                                correlation_id))
        if client_secret:
            refusal = self._check_secret(app, client_secret, correlation_id)
        elif form.get("client_assertion") or form.get("client_assertion_type"):
            refusal = self._check_assertion(app, form, correlation_id, tenant_id)
        else:
            refusal = self.error(401, "invalid_client", 7000218, (
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'."), correlation_id)
        if refusal is not None:
            return self._record(kind, app.client_id, refusal)
        return self._record(kind, app.client_id, self._issue(app, form, correlation_id, tenant_id))

    def _record(self, kind: str, client_id: str, response: Response) -> Response:
        code = None
        if response.status != 200:
            try:
                code = int(json.loads(response.body)["error_codes"][0])
            except (ValueError, KeyError, IndexError, TypeError):
                code = 0
        with self._lock:
            self.sign_ins.append(SignIn(kind=kind, client_id=client_id, code=code, at=time.time()))
        return response

    def _check_secret(self, app: AppRegistration, client_secret: str, correlation_id: str) -> Response | None:
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
        return None

    def _issue(self, app: AppRegistration, form: dict[str, str], correlation_id: str, tenant_id: str) -> Response:
        """A token for the app's service principal in ``tenant_id``: its object id, its roles there (Graph only)."""
        scope = (form.get("scope") or "").strip()
        resource_or_error = self._resource_for_scope(scope, correlation_id, self.domain_of(tenant_id))
        if isinstance(resource_or_error, Response):
            return resource_or_error
        resource = resource_or_error
        if tenant_id == self.tenant_id.lower():
            tid, oid, granted = self.tenant_id, app.principal_id, app.roles
        else:
            principal = self.organizations[tenant_id].principal(app.client_id)
            if principal is None:  # consent revoked while this request was being checked
                return self.error(401, "invalid_client", MISSING_SERVICE_PRINCIPAL,
                                  MISSING_SERVICE_PRINCIPAL_TEXT.format(app=app.client_id, tenant=tenant_id),
                                  correlation_id)
            tid, oid, granted = tenant_id, principal.object_id, principal.roles
        roles = list(granted) if self.resources.kind_of(resource) == "graph" else []
        token, _ = self.tokens.issue(aud=resource, tenant_id=tid, appid=app.client_id,
                                     oid=oid, roles=roles, lifetime_s=self.token_lifetime_s,
                                     app_displayname=app.display_name)
        return json_response(200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "ext_expires_in": self.token_lifetime_s,
            "access_token": token,
        }, {**_NO_CACHE, "x-ms-request-id": str(uuid.uuid4()), "client-request-id": correlation_id})

    # --- client assertions ------------------------------------------------------------------------

    def _assertion_error(self, code: int, message: str, correlation_id: str) -> Response:
        status, error = ASSERTION_ERRORS[code]
        return self.error(status, error, code, message, correlation_id)

    def _check_assertion(self, app: AppRegistration, form: dict[str, str], correlation_id: str,
                         tenant_id: str) -> Response | None:
        """None if the client assertion proves the app; else Entra's refusal. Never echoes the assertion."""
        assertion_type = form.get("client_assertion_type")
        if not assertion_type:
            return self.error(400, "invalid_request", 900144, (
                "The request body must contain the following parameter: 'client_assertion_type'."), correlation_id)
        if assertion_type != JWT_BEARER:
            return self._assertion_error(90011, "Unexpected client assertion type.", correlation_id)
        if not form.get("client_assertion"):
            return self.error(401, "invalid_client", 7000218, (
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'."), correlation_id)
        parsed = _parse_jwt(form["client_assertion"])
        if parsed is None:
            return self._assertion_error(50027, "JWT token is invalid or malformed.", correlation_id)
        header, claims, signing_input, signature = parsed
        if "x5t#S256" in header or "x5t" in header:
            return self._check_certificate_assertion(app, header, claims, signing_input, signature, correlation_id,
                                                     tenant_id)
        if claims.get("iss") == claims.get("sub") and str(claims.get("iss", "")).lower() == app.client_id:
            # A private_key_jwt assertion that does not say which certificate signed it.
            return self._assertion_error(
                50027, "Invalid JWT token. No certificate thumbprint specified in token header.", correlation_id)
        return self._check_federated_assertion(app, form["client_assertion"], claims, correlation_id)

    def _check_certificate_assertion(self, app: AppRegistration, header: dict[str, Any],
                                     claims: dict[str, Any], signing_input: bytes, signature: bytes,
                                     correlation_id: str, tenant_id: str) -> Response | None:
        # 1. Which certificate: SHA-256 thumbprint first (PS256, MSAL >= 1.35), else SHA-1 (RS256).
        presented = decode_thumbprint(header.get("x5t#S256")) or decode_thumbprint(header.get("x5t"))
        if presented is None:
            return self._assertion_error(
                50027, "Invalid JWT token. No certificate thumbprint specified in token header.", correlation_id)
        shown = presented.hex().upper()
        with self._lock:
            certificates = list(app.certificates)
        key = next((c for c in certificates if presented in (c.info.sha1, c.info.sha256)), None)
        if key is None:
            return self._assertion_error(700027, (
                "The certificate with identifier used to sign the client assertion is not registered on "
                f"application. [Reason - The key was not found., Thumbprint of key used by client: '{shown}', "
                + _GRAPH_KEYS_HELP.format(app=app.client_id) + "]"), correlation_id)
        found = f"Found key 'Start={_key_date(key.start)}, End={_key_date(key.end)}'"
        now = time.time()
        if not key.start <= now <= key.end:
            return self._assertion_error(700027, (
                "Client assertion contains an invalid signature. [Reason - The key used is expired., "
                f"Thumbprint of key used by client: '{shown}', {found}]"), correlation_id)
        # 2. The signature, with the registered certificate's public key: nothing below is trusted before.
        if not _verify_rsa(key, header.get("alg"), signing_input, signature):
            return self._assertion_error(700027, (
                "Client assertion contains an invalid signature. [Reason - Key was found, but use of the key to "
                f"verify the signature failed., Thumbprint of key used by client: '{shown}', {found}, "
                + _GRAPH_KEYS_HELP.format(app=app.client_id) + "]"), correlation_id)
        # 3. The claims.
        iss, sub = claims.get("iss"), claims.get("sub")
        if iss != sub:
            return self._assertion_error(50048, "Subject must match the issuer claim in the client assertion.",
                                         correlation_id)
        if not isinstance(iss, str) or iss.lower() != app.client_id:
            return self._assertion_error(700021, (
                "Client assertion application identifier doesn't match 'client_id' parameter. Review the "
                f"documentation at {_CERT_DOCS} ."), correlation_id)
        aud = claims.get("aud")
        if not isinstance(aud, str):  # a list of audiences is refused as malformed (panva/openid-client#348)
            return self._assertion_error(50027, "JWT token is invalid or malformed.", correlation_id)
        if aud.rstrip("/").lower() not in self._assertion_audiences(tenant_id):
            return self._assertion_error(700023, (
                "Client assertion audience claim does not match Realm issuer. Review the documentation at "
                f"{_CERT_DOCS} ."), correlation_id)
        refusal = self._check_lifetime(claims, correlation_id)
        if refusal is not None:
            return refusal
        return self._check_replay(app, claims, correlation_id)

    def _assertion_audiences(self, tenant_id: str) -> set[str]:
        """The token endpoint URLs a certificate assertion may name: the tenant signed in to, v2 and v1, by its
        GUID or domain (an assertion made for one tenant's endpoint does not sign in at another's)."""
        return {f"{self.base_url}/{t}/{path}".lower() for t in (tenant_id, self.domain_of(tenant_id))
                for path in ("oauth2/v2.0/token", "oauth2/token")}

    def _check_lifetime(self, claims: dict[str, Any], correlation_id: str) -> Response | None:
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not _is_number(exp) or not _is_number(nbf):
            return self._assertion_error(50027, "JWT token is invalid or malformed.", correlation_id)
        now = time.time()
        if now > float(exp) + ASSERTION_CLOCK_SKEW_S or now < float(nbf) - ASSERTION_CLOCK_SKEW_S:
            return self._assertion_error(700024, (
                f"Client assertion is not within its valid time range. Current time: {_iso7(now)}, assertion "
                f"valid from {_iso7(float(nbf))}, expiry time of assertion {_iso7(float(exp))}. Review the "
                f"documentation at {_CERT_DOCS} ."), correlation_id)
        return None

    def _check_replay(self, app: AppRegistration, claims: dict[str, Any], correlation_id: str) -> Response | None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return None
        now = time.time()
        key = (app.client_id, jti)
        with self._lock:
            for seen, until in list(self._seen_jti.items()):
                if until < now:
                    del self._seen_jti[seen]
            reused = key in self._seen_jti
            self._seen_jti[key] = float(claims["exp"]) + ASSERTION_CLOCK_SKEW_S
            if reused:
                self.reused_assertions += 1
        if reused and self.reject_replayed_assertions:
            return self._assertion_error(50013, (
                f"Assertion is invalid because of various reasons - The client assertion with jti '{jti}' has "
                f"already been used. Create a new assertion for each request. Review the documentation at "
                f"{_CERT_DOCS} ."), correlation_id)
        return None

    def _check_federated_assertion(self, app: AppRegistration, assertion: str, claims: dict[str, Any],
                                   correlation_id: str) -> Response | None:
        iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(iss, str) or not isinstance(sub, str) or not isinstance(audiences, list) \
                or not audiences or not all(isinstance(a, str) for a in audiences):
            return self._assertion_error(50027, "JWT token is invalid or malformed.", correlation_id)
        # 1. Which federated credential trusts (issuer, subject, audience): exact, case-sensitive matches.
        now = time.time()
        with self._lock:
            records = [f for f in app.federated_credentials if f.active_from <= now]
        if not records:
            return self._assertion_error(70021, (
                f"No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. "
                f"Assertion Subject: '{sub}'. Assertion Audience: '{audiences[0]}'. {_FIC_DOCS}"), correlation_id)
        check = "Check your federated identity credential Subject, Audience and Issuer against the presented " \
                f"assertion. {_FIC_DOCS}"
        by_issuer = [f for f in records if f.issuer == iss]
        if not by_issuer:
            return self._assertion_error(700211, (
                f"No matching federated identity record found for presented assertion issuer '{iss}'. {check}"),
                correlation_id)
        by_subject = [f for f in by_issuer if f.subject == sub]
        if not by_subject:
            return self._assertion_error(700213, (
                f"No matching federated identity record found for presented assertion subject '{sub}'. {check}"),
                correlation_id)
        if not any(a in f.audiences for f in by_subject for a in audiences):
            return self._assertion_error(700212, (
                f"No matching federated identity record found for presented assertion audience "
                f"'{audiences[0]}'. {check}"), correlation_id)
        # 2. Only this tenant's token service could have signed it (the issuer's keys, in Entra's terms).
        try:
            verified = self.tokens.signed_claims(assertion)
        except TokenError:
            return self._assertion_error(700027, "Client assertion failed signature validation.", correlation_id)
        # 3. Its lifetime, from the verified claims (the same token, so the same values).
        return self._check_lifetime(verified, correlation_id)

    def _match_secret(self, app: AppRegistration, presented: str) -> ClientSecret | None:
        with self._lock:
            candidates = list(app.secrets)
        found = None
        for s in candidates:  # compare against all, in constant time each
            if hmac.compare_digest(s.value.encode("utf-8"), presented.encode("utf-8")):
                found = s
        return found

    def _resource_for_scope(self, scope: str, correlation_id: str, domain: str) -> str | Response:
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
                f"{domain}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You might have sent "
                "your authentication request to the wrong tenant."), correlation_id)
        return resource


def _credential_kind(client_secret: str | None, form: dict[str, str]) -> str:
    """What a token request tried to prove itself with, for :attr:`Entra.sign_ins` (never the value)."""
    if client_secret:
        return "secret"
    assertion = form.get("client_assertion")
    if not assertion:
        return "none"
    parsed = _parse_jwt(assertion)
    if parsed is None:
        return "assertion"
    header, claims = parsed[0], parsed[1]
    if "x5t#S256" in header or "x5t" in header or claims.get("iss") == claims.get("sub"):
        return "certificate"
    return "federated"


def _b64url_decode(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """``(header, claims, signing input, signature)`` of a compact JWS, or None when it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 3 or len(token) > 64 * 1024:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2]) if parts[2] else b""
    except (ValueError, UnicodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, (parts[0] + "." + parts[1]).encode("ascii"), signature


def _verify_rsa(key: KeyCredential, alg: object, signing_input: bytes, signature: bytes) -> bool:
    """PS256 (RSASSA-PSS, MGF1-SHA256, salt = digest length) or RS256 (PKCS#1 v1.5) with the cert's key."""
    public_key = key.info.certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey) or alg not in ("PS256", "RS256"):
        return False
    pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH) \
        if alg == "PS256" else padding.PKCS1v15()
    try:
        public_key.verify(signature, signing_input, pad, hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _iso7(epoch: float) -> str:
    """Entra's timestamps in AADSTS700024: ``2024-10-02T22:05:03.6755165Z`` (seven fractional digits)."""
    moment = dt.datetime.fromtimestamp(min(max(0.0, epoch), 253402300799.0), dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _key_date(epoch: float) -> str:
    """Entra's key dates in AADSTS700027: ``06/29/2021 21:13:15``."""
    return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(min(max(0.0, epoch), 253402300799.0)))


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
