"""Microsoft Graph look-alike: ``GET /v1.0/users`` with ``$select``, ``$top`` and opaque ``$skiptoken``.

Users are computed on demand by :func:`sandbox.tenant.make_user`, so a million-user tenant costs no
memory. The skiptoken is an HMAC-signed offset: clients must follow ``@odata.nextLink`` as a whole,
as Graph requires, and a forged or edited token is refused. Each page's user array is serialized
once (and kept in a small LRU for retries), then framed with Content-Length on a keep-alive
connection, so the sandbox is not what limits an export benchmark.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Iterator

from .faults import FaultRule
from .server import Request, Response
from .tenant import DEFAULT_PROPERTIES, USER_PROPERTIES, canonical_properties, make_user, select
from .tokens import AUDIENCE, EXPIRED, ISSUER, MISSING, NOT_YET_VALID, Resources, TokenError, TokenService, bearer

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
ERROR_JSON = "application/json"
DEFAULT_TOP = 100
MAX_TOP = 999
MAX_TOP_SIGN_IN_ACTIVITY = 500
#: Application permissions that allow listing users.
READ_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
#: Query options Graph has but this sandbox does not implement: refuse loudly instead of ignoring.
_UNSUPPORTED = ("filter", "orderby", "search", "count", "expand", "format", "skip")
_TOKEN_PREFIX = b"SBX1"
_SIGNATURE_BYTES = 16
_AUTH_MESSAGES = {
    MISSING: "Access token is empty.",
    EXPIRED: "Access token has expired or is not yet valid.",
    NOT_YET_VALID: "Access token has expired or is not yet valid.",
    AUDIENCE: "Access token validation failure. Invalid audience.",
    ISSUER: "Access token validation failure. Invalid issuer.",
}
_CHALLENGE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
              'client_id="00000003-0000-0000-c000-000000000000"')
#: What ``pad_bytes`` streams, a piece at a time: JSON whitespace, so the padded page stays valid JSON.
_PADDING = b" " * (1024 * 1024)
_FAULT_CODES = {429: ("TooManyRequests", "Too many requests."),
                500: ("UnknownError", ""),
                502: ("BadGateway", "Bad gateway."),
                503: ("serviceNotAvailable", "Service unavailable."),
                504: ("GatewayTimeout", "Gateway timeout.")}


class BadRequest(ValueError):
    """A query the real Graph would refuse with 400 Request_BadRequest."""


class Graph:
    """The ``graph.microsoft.com`` look-alike for one tenant's users."""

    name = "graph"

    def __init__(self, *, tenant_id: str, tenant_domain: str, tokens: TokenService, resources: Resources,
                 users: int, page_latency_ms: float = 0, page_cache_pages: int = 16) -> None:
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.tokens = tokens
        self.resources = resources
        self.users = users
        self.page_latency_ms = page_latency_ms
        self.base_url = ""                    # set by the Sandbox once the port is known
        self._skiptoken_key = secrets.token_bytes(32)
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_pages = page_cache_pages
        self._cache_lock = threading.Lock()

    # --- what a full paging yields --------------------------------------------------------------

    def expected_users(self, properties: list[str] | tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        """Exactly the users a complete paging with ``$select=properties`` returns, in order."""
        props = self._properties(properties)
        for i in range(self.users):
            yield select(make_user(i, self.tenant_domain), props)

    # --- HTTP -----------------------------------------------------------------------------------

    def page_of(self, request: Request) -> int | None:
        """Page number of a /users request, 1 for the first (as clients count them); None if it cannot be told."""
        if request.path.rstrip("/").lower() != "/v1.0/users":
            return None
        q = _query(request)
        try:
            top = int(q.get("top") or DEFAULT_TOP)
            offset = self.decode_skiptoken(q["skiptoken"]) if q.get("skiptoken") is not None else 0
        except (ValueError, BadRequest):
            return None
        return offset // top + 1 if top > 0 else None

    def handle(self, request: Request) -> Response:
        ids = (str(uuid.uuid4()), request.header("client-request-id") or str(uuid.uuid4()))
        try:
            claims = self.tokens.verify(bearer(request.header("Authorization")),
                                        audiences=self.resources.audiences("graph"), tenant_id=self.tenant_id)
        except TokenError as e:
            return self._error(401, "InvalidAuthenticationToken",
                               _AUTH_MESSAGES.get(e.reason, "Access token validation failure."), ids,
                               {"WWW-Authenticate": _CHALLENGE})
        if not READ_ROLES.intersection(claims.roles):
            return self._error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.", ids)
        path = request.path.rstrip("/")
        if path.lower() != "/v1.0/users":
            segment = path.split("/")[-1] or path
            return self._error(400, "BadRequest", f"Resource not found for the segment '{segment}'.", ids)
        if request.method != "GET":
            return self._error(405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.", ids)
        try:
            return self._users_page(request, ids)
        except BadRequest as e:
            return self._error(400, "Request_BadRequest", str(e), ids)

    def fault_response(self, request: Request, status: int) -> Response:
        ids = (str(uuid.uuid4()), request.header("client-request-id") or str(uuid.uuid4()))
        code, message = _FAULT_CODES.get(status, ("BadRequest", "Sandbox fault injected."))
        return self._error(status, code, message, ids)

    def fault_page(self, request: Request, response: Response, rule: FaultRule) -> Response:
        """A normal page (``response``) with a page action of the fault plan applied to it.

        ``value`` replaces the page's users, ``repeat_user`` puts tenant user N first again (shaped by
        the request's ``$select``), ``pad_bytes`` streams whitespace before the closing brace, and
        ``chunked`` sends it all without a Content-Length; the page's other keys (context, nextLink)
        and headers stay as they were.
        """
        body = response.body
        if rule.value is not None or rule.repeat_user is not None:
            page = json.loads(body)
            if rule.value is not None:
                page["value"] = rule.value
            else:
                props = self._properties(_selected(_query(request)))
                page["value"].insert(0, select(make_user(rule.repeat_user, self.tenant_domain), props))
            body = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        pad = rule.pad_bytes or 0
        if not pad and not rule.chunked:
            return Response(response.status, body, response.headers)
        return Response(response.status, b"", response.headers, stream=_padded(body, pad),
                        length=None if rule.chunked else len(body) + pad)

    # --- paging ---------------------------------------------------------------------------------

    def encode_skiptoken(self, offset: int) -> str:
        """Opaque token for ``offset``: prefix + offset + truncated HMAC, base64url without padding."""
        payload = _TOKEN_PREFIX + struct.pack(">Q", offset)
        mac = hmac.new(self._skiptoken_key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def decode_skiptoken(self, token: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise BadRequest("Invalid page token specified.") from None
        payload, mac = raw[:-_SIGNATURE_BYTES], raw[-_SIGNATURE_BYTES:]
        expected = hmac.new(self._skiptoken_key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        if len(payload) != len(_TOKEN_PREFIX) + 8 or not payload.startswith(_TOKEN_PREFIX) \
                or not hmac.compare_digest(mac, expected):
            raise BadRequest("Invalid page token specified.")
        return struct.unpack(">Q", payload[len(_TOKEN_PREFIX):])[0]

    def _properties(self, requested: list[str] | tuple[str, ...] | None) -> list[str]:
        if requested is None:
            return list(DEFAULT_PROPERTIES)
        known, unknown = canonical_properties(requested)
        if unknown:
            raise BadRequest(f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.")
        return known

    def _users_page(self, request: Request, ids: tuple[str, str]) -> Response:
        q = _query(request)
        raw_select = q.get("select")
        props = self._properties(_selected(q))
        raw_top = q.get("top")
        max_top = MAX_TOP_SIGN_IN_ACTIVITY if "signInActivity" in props else MAX_TOP
        bad_top = f"Invalid page size specified: '{raw_top}'. Must be between 1 and {max_top} inclusive."
        try:
            top = int(raw_top) if raw_top is not None else DEFAULT_TOP
        except ValueError:
            raise BadRequest(bad_top) from None
        if not 1 <= top <= max_top:
            raise BadRequest(bad_top)
        offset = self.decode_skiptoken(q["skiptoken"]) if q.get("skiptoken") is not None else 0

        total = self.users
        end = min(offset + top, total)
        value = self._page_value(tuple(props), offset, end)
        context = f"{self.base_url}/v1.0/$metadata#users" + (f"({','.join(props)})" if raw_select is not None else "")
        parts = [b'{"@odata.context":', _json(context)]
        if end < total:
            link = [f"$select={','.join(props)}"] if raw_select is not None else []
            link += [f"$top={top}"] if raw_top is not None else []
            link.append(f"$skiptoken={self.encode_skiptoken(end)}")
            parts += [b',"@odata.nextLink":', _json(f"{self.base_url}/v1.0/users?{'&'.join(link)}")]
        parts += [b',"value":', value, b"}"]
        if self.page_latency_ms > 0:
            # The page is due page_latency_ms after the request arrived, however long checking the token
            # and building the page took: latency models the service's time to answer, not a delay on top.
            time.sleep(max(0.0, request.arrived + self.page_latency_ms / 1000.0 - time.monotonic()))
        return Response(200, b"".join(parts), {
            "Content-Type": ODATA_JSON, "OData-Version": "4.0", "Cache-Control": "no-cache",
            **self._common_headers(ids)})

    def _page_value(self, props: tuple[str, ...], start: int, end: int) -> bytes:
        """The JSON array of users [start, end), built once per distinct page and cached briefly."""
        key = (props, start, end, self.tenant_domain)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        domain = self.tenant_domain
        if props == USER_PROPERTIES:
            users = [make_user(i, domain) for i in range(start, end)]
        else:
            users = [select(make_user(i, domain), props) for i in range(start, end)]
        value = json.dumps(users, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_pages:
                self._cache.popitem(last=False)
        return value

    # --- errors ---------------------------------------------------------------------------------

    def _common_headers(self, ids: tuple[str, str]) -> dict[str, str]:
        return {
            "request-id": ids[0],
            "client-request-id": ids[1],
            "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Sandbox","Slice":"E","Ring":"0",'
                                   '"ScaleUnit":"000","RoleInstance":"SBX","ADSiteName":"SBX"}}',
            "Strict-Transport-Security": "max-age=31536000",
        }

    def _error(self, status: int, code: str, message: str, ids: tuple[str, str],
               headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"code": code, "message": message, "innerError": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "request-id": ids[0], "client-request-id": ids[1]}}}
        return Response(status, json.dumps(body, separators=(",", ":")).encode("utf-8"),
                        {"Content-Type": ERROR_JSON, "Cache-Control": "no-cache",
                         **self._common_headers(ids), **(headers or {})})


def _query(request: Request) -> dict[str, str]:
    """Query options by lower-case name without ``$`` (v1.0 accepts both forms); rejects unsupported ones."""
    out: dict[str, str] = {}
    for key, values in request.query.items():
        name = key.lower().lstrip("$")
        if name in _UNSUPPORTED:
            if name == "skip":
                raise BadRequest("'$skip' is not supported by the service.")
            raise BadRequest(f"The query option '${name}' is not supported by the sandbox.")
        out[name] = values[0]
    return out


def _selected(q: dict[str, str]) -> list[str] | None:
    """The ``$select`` property names, or None without one."""
    raw = q.get("select")
    return [p.strip() for p in raw.split(",") if p.strip()] if raw is not None else None


def _padded(body: bytes, pad: int) -> Iterator[bytes]:
    """``body`` with ``pad`` bytes of whitespace before its final ``}``, a piece at a time."""
    yield body[:-1]
    while pad > 0:
        piece = _PADDING if pad >= len(_PADDING) else _PADDING[:pad]
        yield piece
        pad -= len(piece)
    yield body[-1:]


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")
