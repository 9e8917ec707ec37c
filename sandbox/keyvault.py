"""Key Vault secrets data plane look-alike (``GET /secrets/{name}[/{version}]``).

The Azure SDK's challenge policy first sends the request *without* a token; the vault answers 401
with a ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"``
challenge, and only then does the SDK ask its credential for ``https://vault.azure.net/.default``.
Reproducing that dance is the point: it is where tenant and audience mistakes show up.
``challenge_resource`` makes the challenge name another resource (a host that is not a vault asking
for a Storage or Graph token); ``presented_audiences`` records the audience of every token it was sent.
Access is RBAC-like: a set of principal object ids allowed to read secrets.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from .server import Request, Response, json_response
from .tokens import (
    AUDIENCE,
    EXPIRED,
    ISSUER,
    MISSING,
    NOT_YET_VALID,
    Resources,
    TokenError,
    TokenService,
    bearer,
    peek_claims,
)

VAULT_RESOURCE = "https://vault.azure.net"
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_VERSION = re.compile(r"^[0-9a-fA-F]{32}$")
_NOT_FOUND_HELP = ("If you recently deleted this secret you may be able to recover it using the correct "
                   "recovery command. For help resolving this issue, please see "
                   "https://go.microsoft.com/fwlink/?linkid=2125182")


@dataclass
class SecretVersion:
    """One immutable version of a secret."""

    value: str
    version: str
    created: int
    updated: int
    enabled: bool = True

    def __repr__(self) -> str:  # never show the value
        return f"SecretVersion(version={self.version!r}, created={self.created}, enabled={self.enabled})"


class KeyVault:
    """One vault with versioned secrets and a set of principals allowed to read them."""

    name = "keyvault"

    def __init__(self, *, tenant_id: str, authority_host: Callable[[], str], tokens: TokenService,
                 resources: Resources, vault_name: str = "kv-graph-export-sbx") -> None:
        self.tenant_id = tenant_id
        self._authority_host = authority_host   # a callable: Entra's port is known only after bind
        self.tokens = tokens
        self.resources = resources
        self.vault_name = vault_name
        self.base_url = ""                       # set by the Sandbox once the port is known
        self._secrets: dict[str, list[SecretVersion]] = {}
        self._allowed: set[str] = set()
        self._lock = threading.Lock()
        #: The resource the 401 challenge names; set another one (e.g. "https://storage.azure.com") to play
        #: a host that asks clients for a token meant for someone else. Tokens are still only accepted
        #: for the vault audience.
        self.challenge_resource = VAULT_RESOURCE
        #: The ``aud`` of every bearer token presented, valid or not, in order (never the token itself).
        self.presented_audiences: list[str] = []

    # --- Python API for tests -------------------------------------------------------------------

    def set_secret(self, name: str, value: str) -> str:
        """Add a new version (it becomes the latest) and return its 32-hex version id."""
        if not _NAME.match(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}")
        now = int(time.time())
        version = SecretVersion(value=value, version=uuid.uuid4().hex, created=now, updated=now)
        with self._lock:
            self._secrets.setdefault(name.lower(), []).append(version)
        return version.version

    def delete_secret(self, name: str) -> None:
        """Delete all versions (soft-delete is not modelled: reads answer SecretNotFound)."""
        with self._lock:
            self._secrets.pop(name.lower(), None)

    def versions(self, name: str) -> list[SecretVersion]:
        with self._lock:
            return list(self._secrets.get(name.lower(), []))

    def allow(self, principal_id: str) -> None:
        """Grant the principal 'Key Vault Secrets User' (getSecret)."""
        with self._lock:
            self._allowed.add(principal_id.lower())

    def deny(self, principal_id: str) -> None:
        """Remove the principal's role assignment: reads then answer 403 ForbiddenByRbac."""
        with self._lock:
            self._allowed.discard(principal_id.lower())

    # --- HTTP -----------------------------------------------------------------------------------

    def page_of(self, request: Request) -> int | None:
        return None

    def challenge(self) -> str:
        return (f'Bearer authorization="{self._authority_host()}/{self.tenant_id}", '
                f'resource="{self.challenge_resource}"')

    def handle(self, request: Request) -> Response:
        if not request.arg("api-version"):
            return self._error(400, "BadParameter", "The request URI contains an invalid parameter: "
                                                    "api-version is required.")
        token = bearer(request.header("Authorization"))
        if token:
            with self._lock:
                self.presented_audiences.append(_audience_of(token))
        try:
            claims = self.tokens.verify(token, audiences=self.resources.audiences("keyvault"),
                                        tenant_id=self.tenant_id)
        except TokenError as e:
            return self._unauthorized(e.reason)

        parts = [unquote(p) for p in request.path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0] != "secrets":
            return self._error(400, "BadParameter", f"The request URI '{request.path}' is not supported.")
        name = parts[1]
        version = parts[2] if len(parts) == 3 else None
        if request.method != "GET":
            return self._error(405, "MethodNotAllowed", f"The method '{request.method}' is not supported.")
        if not _NAME.match(name) or (version is not None and not _VERSION.match(version)):
            return self._error(400, "BadParameter", "The request URI contains an invalid name or version.")
        with self._lock:
            allowed = claims.oid.lower() in self._allowed
            versions = list(self._secrets.get(name.lower(), []))
        if not allowed:
            return self._forbidden(name, claims.appid, claims.oid)
        found = versions[-1] if version is None and versions else \
            next((v for v in versions if v.version == version.lower()), None) if version else None
        if found is None:
            shown = name if version is None else f"{name}/{version}"
            return self._error(404, "SecretNotFound",
                               f"A secret with (name/id) {shown} was not found in this key vault. {_NOT_FOUND_HELP}")
        return json_response(200, {
            "value": found.value,
            "id": f"{self.base_url}/secrets/{name}/{found.version}",
            "attributes": {"enabled": found.enabled, "created": found.created, "updated": found.updated,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        }, self._headers())

    def fault_response(self, request: Request, status: int) -> Response:
        if status == 429:
            return self._error(429, "Throttled", "Request was not processed because too many requests were "
                                                 "received. Reason: VaultRequestTypeLimitReached")
        if status == 401:
            return self._unauthorized(MISSING)
        if status >= 500:
            return self._error(status, "ServiceUnavailable", "The service is temporarily unavailable.")
        return self._error(status, "BadParameter", "Sandbox fault injected.")

    def _headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache", "x-ms-request-id": str(uuid.uuid4()),
                "x-ms-keyvault-region": "westeurope", "x-ms-keyvault-service-version": "1.9.2000.1"}

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return json_response(status, {"error": {"code": code, "message": message}},
                             {**self._headers(), **(headers or {})})

    def _unauthorized(self, reason: str) -> Response:
        message = {
            MISSING: "AKV10000: Request is missing a Bearer or PoP token.",
            EXPIRED: "AKV10022: Invalid token: the token has expired.",
            NOT_YET_VALID: "AKV10022: Invalid token: the token is not yet valid.",
            AUDIENCE: f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}.",
            ISSUER: f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{self.tenant_id}/.",
        }.get(reason, "AKV10022: Invalid token: the token signature or format is invalid.")
        return self._error(401, "Unauthorized", message, {"WWW-Authenticate": self.challenge()})

    def _forbidden(self, name: str, appid: str, oid: str) -> Response:
        message = (
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe "
            "propagation time.\r\n"
            f"Caller: appid={appid};oid={oid};iss=https://sts.windows.net/{self.tenant_id}/\r\n"
            "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
            f"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-graph-export-sbx/"
            f"providers/microsoft.keyvault/vaults/{self.vault_name}/secrets/{name.lower()}'\r\n"
            "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n"
            f"Vault: {self.vault_name};location=westeurope\r\n")
        return json_response(403, {"error": {"code": "Forbidden", "message": message,
                                             "innererror": {"code": "ForbiddenByRbac"}}}, self._headers())


def _audience_of(token: str) -> str:
    """The ``aud`` claim as presented (unverified), or "" when the token cannot be read."""
    try:
        aud = peek_claims(token).get("aud", "")
    except (ValueError, IndexError, AttributeError):
        return ""
    return aud if isinstance(aud, str) else ""
