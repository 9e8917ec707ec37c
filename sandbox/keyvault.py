"""Key Vault data plane look-alike: ``GET /secrets/{name}[/{version}]`` and ``GET /certificates/{name}[/{version}]``.

The Azure SDK's challenge policy first sends the request *without* a token; the vault answers 401
with a ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"``
challenge, and only then does the SDK ask its credential for ``https://vault.azure.net/.default``.
Reproducing that dance is the point: it is where tenant and audience mistakes show up.
``challenge_resource`` makes the challenge name another resource (a host that is not a vault asking
for a Storage or Graph token); ``presented_audiences`` records the audience of every token it was sent.
Access is RBAC-like: a set of principal object ids allowed to read secrets (and certificates).

Secrets carry the attributes the REST API returns (``enabled``, ``nbf``/``exp`` as epoch seconds when
set, ``created``, ``updated``, ``recoveryLevel``); a disabled version answers 403 ``Forbidden`` /
``SecretDisabled``. ``exp`` is informational for secrets, as in Azure: an expired secret is still
returned. A certificate is stored the way Key Vault does it: the certificate (``cer``, ``x5t``) plus a
*managed* backing secret of the same name and version holding key and certificate, as PKCS#12
(base64, no password) or PEM, with ``kid`` and ``exp`` = the certificate's notAfter.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from .certs import CONTENT_TYPES, inspect, pem_value, pkcs12_value
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


_UNSET: Any = object()
_RECOVERY = {"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}


@dataclass
class SecretVersion:
    """One version of a secret: an immutable value, and attributes that can be updated."""

    value: str
    version: str
    created: int
    updated: int
    enabled: bool = True
    expires: int | None = None       # ``attributes.exp``, epoch seconds
    not_before: int | None = None    # ``attributes.nbf``
    content_type: str | None = None
    managed: bool = False            # the backing secret of a certificate
    tags: dict[str, str] = field(default_factory=dict)

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": self.enabled}
        if self.not_before is not None:
            attributes["nbf"] = self.not_before
        if self.expires is not None:
            attributes["exp"] = self.expires
        return {**attributes, "created": self.created, "updated": self.updated, **_RECOVERY}

    def __repr__(self) -> str:  # never show the value
        return (f"SecretVersion(version={self.version!r}, created={self.created}, enabled={self.enabled}, "
                f"expires={self.expires}, managed={self.managed})")


@dataclass
class CertificateVersion:
    """One version of a Key Vault certificate: the public certificate and how its secret is encoded."""

    version: str
    cer: bytes                       # DER
    x5t: str                         # base64url SHA-1
    not_before: int
    not_after: int
    subject: str
    content_type: str
    created: int
    updated: int
    enabled: bool = True

    def __repr__(self) -> str:
        return f"CertificateVersion(version={self.version!r}, subject={self.subject!r}, exp={self.not_after})"


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
        self._certificates: dict[str, list[CertificateVersion]] = {}
        self._allowed: set[str] = set()
        self._lock = threading.Lock()
        #: The resource the 401 challenge names; set another one (e.g. "https://storage.azure.com") to play
        #: a host that asks clients for a token meant for someone else. Tokens are still only accepted
        #: for the vault audience.
        self.challenge_resource = VAULT_RESOURCE
        #: The ``aud`` of every bearer token presented, valid or not, in order (never the token itself).
        self.presented_audiences: list[str] = []

    # --- Python API for tests -------------------------------------------------------------------

    def set_secret(self, name: str, value: str, *, expires: float | None = None, content_type: str | None = None,
                   enabled: bool = True, not_before: float | None = None) -> str:
        """Add a new version (it becomes the latest) and return its 32-hex version id.

        ``expires``/``not_before`` are epoch seconds (``attributes.exp``/``nbf``); a disabled version is
        refused on read with 403 SecretDisabled.
        """
        if not _NAME.match(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}")
        with self._lock:
            if name.lower() in self._certificates:
                raise ValueError(f"secret {name!r} is managed by a certificate: import a new certificate version")
        version = SecretVersion(value=value, version=uuid.uuid4().hex, created=0, updated=0, enabled=enabled,
                                expires=_epoch(expires), not_before=_epoch(not_before), content_type=content_type)
        self._add_secret_version(name, version)
        return version.version

    def update_secret(self, name: str, *, version: str | None = None, expires: float | None = _UNSET,
                      enabled: bool = _UNSET, not_before: float | None = _UNSET,
                      content_type: str | None = _UNSET) -> None:
        """Change the attributes of one version (default: the latest), like ``PATCH /secrets/{name}/{version}``.

        Pass ``expires=None`` to remove the expiry. Raises KeyError for an unknown secret or version.
        """
        with self._lock:
            versions = self._secrets.get(name.lower(), [])
            found = versions[-1] if version is None and versions else \
                next((v for v in versions if v.version == (version or "").lower()), None)
            if found is None:
                raise KeyError(f"no secret {name!r} version {version!r}")
            if expires is not _UNSET:
                found.expires = _epoch(expires)
            if not_before is not _UNSET:
                found.not_before = _epoch(not_before)
            if enabled is not _UNSET:
                found.enabled = bool(enabled)
            if content_type is not _UNSET:
                found.content_type = content_type
            found.updated = int(time.time())

    def import_certificate(self, name: str, private_key_pem: bytes, cert_pem: bytes, *, form: str = "pkcs12") -> str:
        """Import a certificate with its private key (``az keyvault certificate import``); return the version.

        Like Key Vault, this creates a certificate version and a managed secret of the same name and
        version: ``form="pkcs12"`` stores it as ``application/x-pkcs12`` (base64 PFX without a password),
        ``form="pem"`` as ``application/x-pem-file`` (the PKCS#8 key, then the certificate). Importing again
        under the same name adds a new version (a rotation).
        """
        if not _NAME.match(name):
            raise ValueError(f"invalid Key Vault certificate name {name!r}")
        if form not in CONTENT_TYPES:
            raise ValueError(f"form must be 'pkcs12' or 'pem', not {form!r}")
        info = inspect(cert_pem)
        value = pkcs12_value(private_key_pem, cert_pem) if form == "pkcs12" else pem_value(private_key_pem, cert_pem)
        now = int(time.time())
        version = uuid.uuid4().hex
        certificate = CertificateVersion(
            version=version, cer=info.der, x5t=info.x5t, not_before=int(info.not_before),
            not_after=int(info.not_after), subject=info.subject, content_type=CONTENT_TYPES[form],
            created=now, updated=now)
        with self._lock:
            if name.lower() in self._secrets and name.lower() not in self._certificates:
                raise ValueError(f"a secret named {name!r} already exists (Key Vault answers 409 Conflict)")
            self._certificates.setdefault(name.lower(), []).append(certificate)
        self._add_secret_version(name, SecretVersion(
            value=value, version=version, created=now, updated=now, expires=int(info.not_after),
            not_before=int(info.not_before), content_type=CONTENT_TYPES[form], managed=True))
        return version

    def certificate_versions(self, name: str) -> list[CertificateVersion]:
        with self._lock:
            return list(self._certificates.get(name.lower(), []))

    def _add_secret_version(self, name: str, version: SecretVersion) -> None:
        now = int(time.time())
        version.created = version.created or now
        version.updated = version.updated or now
        with self._lock:
            self._secrets.setdefault(name.lower(), []).append(version)

    def delete_secret(self, name: str) -> None:
        """Delete all versions (soft-delete is not modelled: reads answer SecretNotFound).

        For a certificate's backing secret this deletes the certificate too, as deleting the certificate
        does in Key Vault.
        """
        with self._lock:
            self._secrets.pop(name.lower(), None)
            self._certificates.pop(name.lower(), None)

    def versions(self, name: str) -> list[SecretVersion]:
        with self._lock:
            return list(self._secrets.get(name.lower(), []))

    def allow(self, principal_id: str) -> None:
        """Grant the principal 'Key Vault Secrets User' (getSecret) and read access to certificates."""
        with self._lock:
            self._allowed.add(principal_id.lower())

    def deny(self, principal_id: str) -> None:
        """Remove the principal's role assignment: reads then answer 403 ForbiddenByRbac."""
        with self._lock:
            self._allowed.discard(principal_id.lower())

    # --- HTTP -----------------------------------------------------------------------------------

    def tenant_of(self, request: Request) -> str | None:
        """None: this service lives in the home tenant only, so fault rules cannot scope it to a tenant."""
        return None

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
        if len(parts) not in (2, 3) or parts[0] not in ("secrets", "certificates"):
            return self._error(400, "BadParameter", f"The request URI '{request.path}' is not supported.")
        collection, name = parts[0], parts[1]
        version = parts[2] if len(parts) == 3 else None
        if request.method != "GET":
            return self._error(405, "MethodNotAllowed", f"The method '{request.method}' is not supported.")
        if collection == "secrets" and version == "versions" and _NAME.match(name):
            return self._list_versions(name, claims.appid, claims.oid)
        if not _NAME.match(name) or (version is not None and not _VERSION.match(version)):
            return self._error(400, "BadParameter", "The request URI contains an invalid name or version.")
        if collection == "certificates":
            return self._get_certificate(name, version, claims.appid, claims.oid)
        with self._lock:
            allowed = claims.oid.lower() in self._allowed
            versions = list(self._secrets.get(name.lower(), []))
        if not allowed:
            return self._forbidden(name, claims.appid, claims.oid)
        found = _pick(versions, version)
        if found is None:
            shown = name if version is None else f"{name}/{version}"
            return self._error(404, "SecretNotFound",
                               f"A secret with (name/id) {shown} was not found in this key vault. {_NOT_FOUND_HELP}")
        if not found.enabled:
            return json_response(403, {"error": {"code": "Forbidden",
                                                 "message": "Operation get is not allowed on a disabled secret.",
                                                 "innererror": {"code": "SecretDisabled"}}}, self._headers())
        body: dict[str, Any] = {"value": found.value}
        if found.content_type is not None:
            body["contentType"] = found.content_type
        body["id"] = f"{self.base_url}/secrets/{name}/{found.version}"
        if found.managed:
            body["managed"] = True
        body["attributes"] = found.attributes()
        body["tags"] = dict(found.tags)
        if found.managed:
            body["kid"] = f"{self.base_url}/keys/{name}/{found.version}"
        return json_response(200, body, self._headers())

    def _list_versions(self, name: str, appid: str, oid: str) -> Response:
        """``GET /secrets/{name}/versions``: every version's id and attributes, never a value (one page)."""
        with self._lock:
            allowed = oid.lower() in self._allowed
            versions = list(self._secrets.get(name.lower(), []))
        if not allowed:
            return self._forbidden(name, appid, oid)
        items = []
        for found in versions:
            item: dict[str, Any] = {"id": f"{self.base_url}/secrets/{name}/{found.version}",
                                    "attributes": found.attributes(), "tags": dict(found.tags)}
            if found.content_type is not None:
                item["contentType"] = found.content_type
            if found.managed:
                item["managed"] = True
            items.append(item)
        return json_response(200, {"value": items, "nextLink": None}, self._headers())

    def _get_certificate(self, name: str, version: str | None, appid: str, oid: str) -> Response:
        with self._lock:
            allowed = oid.lower() in self._allowed
            versions = list(self._certificates.get(name.lower(), []))
        if not allowed:
            return self._forbidden(name, appid, oid, kind="certificates", action="certificates/read")
        found = _pick(versions, version)
        if found is None:
            shown = name if version is None else f"{name}/{version}"
            return self._error(404, "CertificateNotFound",
                               f"A certificate with (name/id) {shown} was not found in this key vault. "
                               f"{_NOT_FOUND_HELP}")
        attributes = {"enabled": found.enabled, "nbf": found.not_before, "exp": found.not_after,
                      "created": found.created, "updated": found.updated, **_RECOVERY}
        base = self.base_url
        return json_response(200, {
            "id": f"{base}/certificates/{name}/{found.version}",
            "kid": f"{base}/keys/{name}/{found.version}",
            "sid": f"{base}/secrets/{name}/{found.version}",
            "x5t": found.x5t,
            "cer": base64.b64encode(found.cer).decode("ascii"),
            "attributes": attributes,
            "tags": {},
            "policy": {
                "id": f"{base}/certificates/{name}/policy",
                "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
                "secret_props": {"contentType": found.content_type},
                "x509_props": {"subject": found.subject, "ekus": ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1"],
                               "key_usage": ["digitalSignature", "keyEncipherment"],
                               "validity_months": max(1, round((found.not_after - found.not_before) / (30 * 86400))),
                               "basic_constraints": {"ca": False}},
                "lifetime_actions": [{"trigger": {"lifetime_percentage": 80},
                                      "action": {"action_type": "EmailContacts"}}],
                "issuer": {"name": "Unknown"},    # what Key Vault shows for an imported certificate
                "attributes": {"enabled": True, "created": versions[0].created, "updated": found.updated},
            },
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

    def _forbidden(self, name: str, appid: str, oid: str, *, kind: str = "secrets",
                   action: str = "secrets/getSecret/action") -> Response:
        message = (
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe "
            "propagation time.\r\n"
            f"Caller: appid={appid};oid={oid};iss=https://sts.windows.net/{self.tenant_id}/\r\n"
            f"Action: 'Microsoft.KeyVault/vaults/{action}'\r\n"
            f"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-graph-export-sbx/"
            f"providers/microsoft.keyvault/vaults/{self.vault_name}/{kind}/{name.lower()}'\r\n"
            "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n"
            f"Vault: {self.vault_name};location=westeurope\r\n")
        return json_response(403, {"error": {"code": "Forbidden", "message": message,
                                             "innererror": {"code": "ForbiddenByRbac"}}}, self._headers())


def _pick(versions: list[Any], version: str | None) -> Any:
    """The latest version (None asked) or the one asked for, or None."""
    if version is None:
        return versions[-1] if versions else None
    return next((v for v in versions if v.version == version.lower()), None)


def _epoch(moment: float | None) -> int | None:
    return None if moment is None else int(moment)


def _audience_of(token: str) -> str:
    """The ``aud`` claim as presented (unverified), or "" when the token cannot be read."""
    try:
        aud = peek_claims(token).get("aud", "")
    except (ValueError, IndexError, AttributeError):
        return ""
    return aud if isinstance(aud, str) else ""
