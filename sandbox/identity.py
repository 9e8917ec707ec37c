"""The App Service / Azure Functions managed identity endpoint (``IDENTITY_ENDPOINT``).

In App Service this is plain HTTP on a local address, authenticated by the per-instance secret in
``IDENTITY_HEADER``. azure-identity 1.27 delegates to ``msal.ManagedIdentityClient``, which sends
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`` with ``X-IDENTITY-HEADER`` and reads
``access_token`` + ``expires_on`` (epoch seconds as a *string*); any other JSON is turned into an
error from ``statusCode`` and ``message``, which is therefore the error shape used here.
"""

from __future__ import annotations

import hmac
import uuid

from .server import Request, Response, json_response
from .tokens import Resources, TokenService

PATH = "/msi/token"
API_VERSION = "2019-08-01"


class ManagedIdentityEndpoint:
    """Issues tokens for one system-assigned managed identity (the function app's)."""

    name = "identity"

    def __init__(self, *, tenant_id: str, principal_id: str, client_id: str, header_secret: str,
                 tokens: TokenService, resources: Resources, token_lifetime_s: int = 3599) -> None:
        self.tenant_id = tenant_id
        self.principal_id = principal_id
        self.client_id = client_id
        self.header_secret = header_secret
        self.tokens = tokens
        self.resources = resources
        self.token_lifetime_s = token_lifetime_s
        #: The resource (audience) of every token issued, in order: what the identity handed out to whom
        #: asked. Tests check that a vault was never given a token meant for Storage or Graph.
        self.issued: list[str] = []

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
        for name in ("client_id", "principal_id", "object_id", "mi_res_id"):
            wanted = request.arg(name)
            if wanted and wanted.lower() not in (self.client_id, self.principal_id):
                return _error(400, "No User Assigned or Delegated Managed Identity found for specified "
                                   "ClientId/ResourceId/PrincipalId.")
        if self.resources.kind_of(resource) is None:
            # What the real endpoint does for an unknown resource: a vague 500 (see msal's comment).
            return _error(500, "An unexpected error occured while fetching the AAD Token.")
        token, exp = self.tokens.issue(aud=resource, tenant_id=self.tenant_id, appid=self.client_id,
                                       oid=self.principal_id, lifetime_s=self.token_lifetime_s)
        self.issued.append(resource)
        return json_response(200, {
            "access_token": token,
            "expires_on": str(exp),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.client_id,
        })

    def fault_response(self, request: Request, status: int) -> Response:
        return _error(status, "Sandbox fault injected.")


def _error(status: int, message: str) -> Response:
    return json_response(status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())})
