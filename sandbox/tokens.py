"""Access tokens: issued by the Entra and managed identity look-alikes, verified by Graph and Key Vault.

Real Entra tokens are RS256 JWTs checked against published keys. Clients never look inside an access
token, so the sandbox signs HS256 with a per-run random key: unforgeable by anything outside the
process, and one place (this module) decides what "valid" means for every resource server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

#: Why a token was rejected; the resource servers map these to their own error messages.
MISSING, MALFORMED, SIGNATURE, EXPIRED, NOT_YET_VALID, AUDIENCE, ISSUER = (
    "missing", "malformed", "signature", "expired", "not_yet_valid", "audience", "issuer")


class TokenError(Exception):
    """The bearer token is unusable; ``reason`` is one of the module constants."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    """The verified claims a resource server needs to make its decision."""

    aud: str
    tid: str
    oid: str
    appid: str
    roles: tuple[str, ...]
    exp: int
    raw: dict[str, Any]


def issuer_for(tenant_id: str) -> str:
    """The v1 issuer Entra puts in app-only tokens for resources such as Graph and Key Vault."""
    return f"https://sts.windows.net/{tenant_id}/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenService:
    """Issues and verifies the sandbox's JWTs with one random key per sandbox run."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def issue(self, *, aud: str, tenant_id: str, appid: str, oid: str,
              roles: Iterable[str] = (), lifetime_s: int = 3599, now: float | None = None,
              app_displayname: str | None = None, issuer: str | None = None,
              version: str = "1.0") -> tuple[str, int]:
        """Return ``(jwt, exp)`` for an app-only token. A negative lifetime gives an expired token.

        ``version="2.0"`` gives a v2.0-shaped token (``azp``/``azpacr`` instead of ``appid``/``appidacr``)
        whose ``iss`` is ``issuer``: what a managed identity gets for ``api://AzureADTokenExchange``.
        """
        iat = int(time.time() if now is None else now)
        exp = iat + int(lifetime_s)
        iss = issuer or issuer_for(tenant_id)
        claims: dict[str, Any] = {"aud": aud, "iss": iss, "iat": iat, "nbf": iat, "exp": exp}
        if version == "2.0":
            claims.update({"azp": appid, "azpacr": "2", "idtyp": "app", "oid": oid, "sub": oid,
                           "tid": tenant_id, "uti": _b64(uuid.uuid4().bytes), "ver": "2.0"})
        else:
            claims.update({
                "appid": appid,
                "azp": appid,
                "appidacr": "1",
                "idp": issuer_for(tenant_id),
                "idtyp": "app",
                "oid": oid,
                "sub": oid,
                "tid": tenant_id,
                "uti": _b64(uuid.uuid4().bytes),
                "ver": "1.0",
            })
        if app_displayname:
            claims["app_displayname"] = app_displayname
        roles = list(roles)
        if roles:
            claims["roles"] = roles  # Entra omits the claim entirely when no role is granted
        header = {"typ": "JWT", "alg": "HS256", "kid": "sandbox"}
        signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
            _b64(json.dumps(claims, separators=(",", ":")).encode())
        return signing_input + "." + _b64(self._sign(signing_input)), exp

    def signed_claims(self, token: str | None) -> dict[str, Any]:
        """The claims of a token this service signed, after checking the signature (and nothing else).

        Raises :class:`TokenError` (MISSING, MALFORMED or SIGNATURE). Lifetime, audience and issuer are
        the caller's to judge: Entra does that itself for a federated client assertion.
        """
        if not token:
            raise TokenError(MISSING)
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError(MALFORMED)
        try:
            expected = self._sign(parts[0] + "." + parts[1])
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                raise TokenError(SIGNATURE)
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeError):
            raise TokenError(MALFORMED) from None
        if not isinstance(claims, dict):
            raise TokenError(MALFORMED)
        return claims

    def verify(self, token: str | None, *, audiences: Iterable[str], tenant_id: str,
               now: float | None = None) -> Claims:
        """Check signature, lifetime, audience and issuer; raise :class:`TokenError` on the first failure.

        The order matches what resource servers report: an expired token says "expired" even if it
        was also meant for another audience.
        """
        claims = self.signed_claims(token)
        t = time.time() if now is None else now
        if t >= claims.get("exp", 0):
            raise TokenError(EXPIRED)
        if t < claims.get("nbf", 0):
            raise TokenError(NOT_YET_VALID)
        if _norm(claims.get("aud", "")) not in {_norm(a) for a in audiences}:
            raise TokenError(AUDIENCE)
        if claims.get("iss") != issuer_for(tenant_id) or claims.get("tid") != tenant_id:
            raise TokenError(ISSUER)
        return Claims(aud=claims["aud"], tid=claims["tid"], oid=claims.get("oid", ""),
                      appid=claims.get("appid", ""), roles=tuple(claims.get("roles", ())),
                      exp=int(claims["exp"]), raw=claims)

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()


def bearer(authorization: str | None) -> str | None:
    """Extract the token from an ``Authorization: Bearer ...`` header value (scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _norm(resource: str) -> str:
    """Resource identifiers compare case-insensitively and without a trailing slash."""
    return resource.rstrip("/").lower()


def peek_claims(token: str) -> dict[str, Any]:
    """Decode a token's claims WITHOUT verifying it: for tests and diagnostics only."""
    return json.loads(_unb64(token.split(".")[1]))


class Resources:
    """The resource identifiers (token audiences) the tenant knows, and which service owns each.

    Entra refuses scopes for unknown resources (AADSTS500011) and each resource server accepts only
    its own audiences, so both sides consult this one registry.
    """

    def __init__(self) -> None:
        self._kind_by_id: dict[str, str] = {}

    def add(self, kind: str, *identifiers: str) -> None:
        for identifier in identifiers:
            self._kind_by_id[_norm(identifier)] = kind

    def kind_of(self, resource: str) -> str | None:
        return self._kind_by_id.get(_norm(resource))

    def audiences(self, kind: str) -> tuple[str, ...]:
        return tuple(r for r, k in self._kind_by_id.items() if k == kind)
