"""The App Service / Azure Functions managed identity endpoint (``IDENTITY_ENDPOINT``).

In App Service this is plain HTTP on a local address, authenticated by the per-instance secret in
``IDENTITY_HEADER``. azure-identity 1.27 delegates to ``msal.ManagedIdentityClient``, which sends
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`` with ``X-IDENTITY-HEADER`` and reads
``access_token`` + ``expires_on`` (epoch seconds as a *string*); any other JSON is turned into an
error from ``statusCode`` and ``message``, which is therefore the error shape used here.

The app has its system-assigned identity and may have one user-assigned identity, chosen with
``client_id=``, ``principal_id=``/``object_id=`` or ``mi_res_id=`` (no selector: the system one).
The user-assigned identity can also get a token for the workload identity federation audiences
(``api://AzureADTokenExchange`` and its US Government / China twins): a v2.0 token with
``iss = {authority}/{tenant}/v2.0`` and ``sub`` = its principal id, which an app registration that
trusts it (a federated identity credential) accepts as its client assertion.
"""

from __future__ import annotations

import hmac
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from .entra import TOKEN_EXCHANGE_AUDIENCES
from .server import Request, Response, json_response
from .tokens import Resources, TokenService

PATH = "/msi/token"
API_VERSION = "2019-08-01"
_SELECTORS = ("client_id", "principal_id", "object_id", "mi_res_id")


@dataclass(frozen=True)
class Identity:
    """One managed identity the function app has."""

    kind: str            # "system" or "user"
    client_id: str
    principal_id: str    # object id: the token's ``oid``/``sub``, what role assignments name
    resource_id: str = ""

    def matches(self, value: str) -> bool:
        return value.lower() in (self.client_id, self.principal_id, self.resource_id.lower())


class ManagedIdentityEndpoint:
    """Issues tokens for the function app's system-assigned identity and its user-assigned one."""

    name = "identity"

    def __init__(self, *, tenant_id: str, principal_id: str, client_id: str, header_secret: str,
                 tokens: TokenService, resources: Resources, token_lifetime_s: int = 3599,
                 user_client_id: str | None = None, user_principal_id: str | None = None,
                 user_resource_id: str = "", authority_host: Callable[[], str] | None = None) -> None:
        self.tenant_id = tenant_id
        self.principal_id = principal_id
        self.client_id = client_id
        self.header_secret = header_secret
        self.tokens = tokens
        self.resources = resources
        self.token_lifetime_s = token_lifetime_s
        self._authority_host = authority_host or (lambda: "https://login.microsoftonline.com")
        self.system = Identity("system", client_id.lower(), principal_id.lower())
        self.user: Identity | None = None
        if user_client_id and user_principal_id:
            self.user = Identity("user", user_client_id.lower(), user_principal_id.lower(), user_resource_id)
        #: The sandbox's choice (the brief of this look-alike): only the user-assigned identity gets
        #: token-exchange tokens, since only a user-assigned identity can be an app's federated
        #: credential. Set True to let the system-assigned one have them too (Entra then refuses them
        #: with AADSTS700213, as its principal id is not the credential's subject).
        self.system_exchange_tokens = False
        self._lock = threading.Lock()
        #: The resource (audience) of every token issued, in order: what the identity handed out to whom
        #: asked. Tests check that a vault was never given a token meant for Storage or Graph.
        self.issued: list[str] = []
        #: ``(identity kind, resource)`` of every token issued: "system" or "user".
        self.issued_to: list[tuple[str, str]] = []

    def federation_issuer(self) -> str:
        """The ``iss`` of token-exchange tokens: ``{authority}/{tenant}/v2.0``."""
        return f"{self._authority_host()}/{self.tenant_id}/v2.0"

    def tenant_of(self, request: Request) -> str | None:
        """None: this service lives in the home tenant only, so fault rules cannot scope it to a tenant."""
        return None

    def page_of(self, request: Request) -> int | None:
        return None

    def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") != PATH:
            return _error(404, "Not found.")
        if request.method != "GET":
            return _error(405, "Method not allowed.")
        presented = request.header("X-IDENTITY-HEADER")
        if presented is None:
            return _error(400, "The request is missing the required header 'X-IDENTITY-HEADER'.")
        if not hmac.compare_digest(presented.encode(), self.header_secret.encode()):
            return _error(401, "Unauthorized request: the X-IDENTITY-HEADER value is not valid.")
        if request.arg("api-version") != API_VERSION:
            return _error(400, f"Unsupported api-version '{request.arg('api-version')}'. Use '{API_VERSION}'.")
        resource = request.arg("resource")
        if not resource:
            return _error(400, "Required query variable 'resource' is missing.")
        identity = self.system
        for name in _SELECTORS:
            wanted = request.arg(name)
            if not wanted:
                continue
            found = next((i for i in (self.system, self.user) if i is not None and i.matches(wanted)), None)
            if found is None:
                return _error(400, "No User Assigned or Delegated Managed Identity found for specified "
                                   "ClientId/ResourceId/PrincipalId.")
            identity = found
        exchange = next((a for a in TOKEN_EXCHANGE_AUDIENCES if resource.rstrip("/").lower() == a.lower()), None)
        if exchange is not None:
            if identity.kind == "system" and not self.system_exchange_tokens:
                return _error(500, "An unexpected error occured while fetching the AAD Token.")
            token, exp = self.tokens.issue(aud=exchange, tenant_id=self.tenant_id, appid=identity.client_id,
                                           oid=identity.principal_id, lifetime_s=self.token_lifetime_s,
                                           issuer=self.federation_issuer(), version="2.0")
        elif self.resources.kind_of(resource) is None:
            # What the real endpoint does for an unknown resource: a vague 500 (see msal's comment).
            return _error(500, "An unexpected error occured while fetching the AAD Token.")
        else:
            token, exp = self.tokens.issue(aud=resource, tenant_id=self.tenant_id, appid=identity.client_id,
                                           oid=identity.principal_id, lifetime_s=self.token_lifetime_s)
        with self._lock:
            self.issued.append(resource)
            self.issued_to.append((identity.kind, resource))
        return json_response(200, {
            "access_token": token,
            "expires_on": str(exp),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        })

    def fault_response(self, request: Request, status: int) -> Response:
        return _error(status, "Sandbox fault injected.")


def _error(status: int, message: str) -> Response:
    return json_response(status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())})
