"""Microsoft Graph look-alike: ``GET /v1.0/users`` with ``$select``, ``$top`` and opaque ``$skiptoken``,
``GET /v1.0/users/delta`` with its rounds, ``$deltatoken`` links and ``Prefer`` headers, and
``GET /v1.0/users/$count``.

Users come from a :class:`sandbox.directory.Directory`: computed on demand by
:func:`sandbox.tenant.make_user`, so a million-user tenant costs no memory, plus the changes a test
made. The skiptoken is an HMAC-signed offset: clients must follow ``@odata.nextLink`` as a whole,
as Graph requires, and a forged or edited token is refused. Each page's user array is serialized
once (and kept in a small LRU for retries), then framed with Content-Length on a keep-alive
connection, so the sandbox is not what limits an export benchmark.

Delta (``/users/delta``): a round without a token is a snapshot of the tenant as of the round's first
request, paged in /users order; it ends with an ``@odata.deltaLink`` whose token means "from that
moment". Following it gives the changes since then (see :meth:`Directory.change_page`), again
ending with a deltaLink. Delta tokens are HMAC-signed too and carry the selection, the round's
sequence window, the position and the page number; they expire after ``delta_token_lifetime_s``
(400 ``syncStateNotFound``), or at once with :meth:`Graph.expire_delta_tokens`. Page size is
``Prefer: odata.maxpagesize=N`` (at most 200, default 100); ``Prefer: return=minimal`` makes updated
users carry only the properties changed since the token.

Count (``/users/$count``): the number of live users now, as ``text/plain``, with the same permissions
as ``/users``. Counting directory objects is an advanced query: with ``ConsistencyLevel: eventual``
only ("List users", Example 3 "Get only a count of users"). Without the header Graph answers 400
``Request_BadRequest`` "$count is not currently supported." (reported in
microsoftgraph/microsoft-graph-docs#13226, where Microsoft answers that the header is missing, and
microsoftgraph/microsoft-graph-docs-contrib#2716).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Iterator
from urllib.parse import unquote

from .directory import ALL_PROPERTIES, Directory
from .faults import FaultRule
from .server import Request, Response
from .tenant import (
    DEFAULT_PROPERTIES,
    EXTENSIONS,
    HOME_NAMESPACE,
    MANAGER,
    SINGLE_USER_ONLY,
    USER_PROPERTIES,
    canonical_properties,
    make_user,
    manager_reference,
    select,
)
from .tokens import AUDIENCE, EXPIRED, ISSUER, MISSING, NOT_YET_VALID, Resources, TokenError, TokenService, bearer

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
ERROR_JSON = "application/json"
DEFAULT_TOP = 100
MAX_TOP = 999
MAX_TOP_SIGN_IN_ACTIVITY = 500
#: Application permissions that allow listing users.
READ_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
#: signInActivity needs AuditLog.Read.All besides a read role ("List users", Example "Get users including their
#: last sign-in time": "Details for the signInActivity property require a Microsoft Entra ID P1 or P2 license and
#: the AuditLog.Read.All permission"). Without it Graph answers 403 Authentication_MSGraphPermissionMissing
#: (microsoftgraph/microsoft-graph-explorer-v4#2731, GET /v1.0/users?$select=displayName,signInActivity); in a
#: tenant without the licence 403 Authentication_RequestFromNonPremiumTenantOrB2CTenant
#: (microsoftgraph/microsoft-graph-docs#12772, #14120).
SIGN_IN_ACTIVITY_ROLES = frozenset({"AuditLog.Read.All"})
_PERMISSION_MISSING = ("Authentication_MSGraphPermissionMissing",
                       "Calling principal does not have required MSGraph permissions AuditLog.Read.All")
_NOT_PREMIUM = ("Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                "Neither tenant is B2C or tenant doesn't have premium license")
#: Application permissions that allow listing an application's extension properties (the least privileged first).
APPLICATION_READ_ROLES = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                                    "Directory.ReadWrite.All"})
_APP_EXTENSIONS = re.compile(r"/v1\.0/applications\(appId='([0-9a-fA-F-]{36})'\)/extensionProperties", re.IGNORECASE)
_EXTENSION_APPS = frozenset(e.app_id for e in EXTENSIONS)
#: Query options Graph has but this sandbox does not implement: refuse loudly instead of ignoring.
_UNSUPPORTED = ("filter", "orderby", "search", "count", "format", "skip")
#: The one $expand the sandbox serves on /users: the manager, whole or as its id. With $expand a page holds at
#: most 100 users, whatever $top asks ("$expand ... returns a maximum of 100 objects" on directory objects:
#: https://learn.microsoft.com/en-us/graph/query-parameters#expand-parameter; as reported in
#: https://techcommunity.microsoft.com/discussions/officegraph/the-top-parameter-does-not-work-together-with-the-expand-parameter-in-the-get-gr/3885391).
_EXPAND_MANAGER = re.compile(r"manager(\(\$?select=id\))?", re.IGNORECASE)
MAX_EXPANDED_PAGE = 100
_TOKEN_PREFIX = b"SBX1"
_SIGNATURE_BYTES = 16
#: Delta: page size without ``Prefer: odata.maxpagesize``, and the most a page holds whatever is asked.
DELTA_DEFAULT_PAGE = 100
DELTA_MAX_PAGE = 200
#: Directory delta tokens expire after 7 days (then 400 syncStateNotFound and a full resync).
DELTA_TOKEN_LIFETIME_S = 7 * 86400
_DELTA_PREFIX = b"SBD1"
_DELTA_SKIP, _DELTA_LINK = 1, 2                 # token kinds: a $skiptoken within a round, a $deltatoken
_F_INITIAL, _F_REPEATS, _F_DEFAULT = 1, 2, 4     # token flags
# prefix, kind, flags, directory epoch, expiry generation, issued (time.time()), since, until, limit,
# position, page number; then one byte per selected property (an index into ALL_PROPERTIES).
_DELTA_STRUCT = struct.Struct(">4sBBIIdQQQQI")
_PROPERTY_NUMBER = {p: n for n, p in enumerate(ALL_PROPERTIES)}
_SYNC_STATE_NOT_FOUND = ("The sync state generation is not found. The delta token is expired and data must be "
                         "synchronized again.")
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
#: /users/$count without ``ConsistencyLevel: eventual`` (see the module's docstring).
_COUNT_NEEDS_EVENTUAL = ("Request_BadRequest", "$count is not currently supported.")
_FAULT_CODES = {429: ("TooManyRequests", "Too many requests."),
                500: ("UnknownError", ""),
                502: ("BadGateway", "Bad gateway."),
                503: ("serviceNotAvailable", "Service unavailable."),
                504: ("GatewayTimeout", "Gateway timeout.")}


class BadRequest(ValueError):
    """A query the real Graph would refuse with 400 (error code ``code``, Request_BadRequest by default)."""

    def __init__(self, message: str, code: str = "Request_BadRequest") -> None:
        super().__init__(message)
        self.code = code


class NotListable(Exception):
    """A ``$select`` of a property Graph returns only for a single user: 501 NotImplemented."""


class SyncStateNotFound(Exception):
    """An expired delta token (or one from before the tenant was reset): 400 syncStateNotFound."""


@dataclass(frozen=True)
class DeltaToken:
    """What a delta ``$skiptoken`` or ``$deltatoken`` carries (signed, so a client cannot change it).

    A round covers the changes in (``since``, ``until``]; the first round of a sync (``initial``) is
    instead the tenant as of ``until``, users with index below ``limit``, ``position`` being the next
    index to look at. In a change round ``position`` is the offset in the round's list of changes.
    A deltaToken only has ``since`` (the round it starts takes ``until`` when it is followed).
    """

    kind: int
    properties: tuple[str, ...]
    default_selection: bool
    epoch: int
    generation: int
    issued: float
    since: int = 0
    until: int = 0
    limit: int = 0
    position: int = 0
    page: int = 1
    initial: bool = False
    repeats: bool = False


class Graph:
    """The ``graph.microsoft.com`` look-alike for one tenant's users."""

    name = "graph"

    def __init__(self, *, tenant_id: str, tenant_domain: str, tokens: TokenService, resources: Resources,
                 users: int, page_latency_ms: float = 0, page_cache_pages: int = 16,
                 namespace: bytes = HOME_NAMESPACE) -> None:
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.tokens = tokens
        self.resources = resources
        self.directory = Directory(users, tenant_domain, namespace)
        self.page_latency_ms = page_latency_ms
        self.base_url = ""                    # set by the Sandbox once the port is known
        #: The tenant has an Entra ID P1 or P2 licence, which Graph requires to serve signInActivity.
        self.premium_licence = True
        #: getAvailableExtensionProperties' documented known issue: an empty answer in tenants with more than
        #: 1,000 service principals.
        self.many_service_principals = False
        #: Delta: a user changed k times in a round appears k times (at its changes' places), as Graph may do.
        self.delta_repeats = False
        #: Delta tokens (and a round's skiptokens) older than this many seconds are refused as expired.
        self.delta_token_lifetime_s: float = DELTA_TOKEN_LIFETIME_S
        self._delta_generation = 0
        self._delta_requests = 0
        self._skiptoken_key = secrets.token_bytes(32)
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_pages = page_cache_pages
        self._cache_lock = threading.Lock()

    @property
    def users(self) -> int:
        """Live users now."""
        return len(self.directory)

    @users.setter
    def users(self, value: int) -> None:
        """A fresh tenant of ``value`` base users, without changes."""
        self.directory.reset(int(value))

    @property
    def delta_requests(self) -> int:
        """Requests for /users/delta that got past the fault plan (the request log has every one)."""
        return self._delta_requests

    def expire_delta_tokens(self) -> None:
        """Every delta token (and delta skiptoken) issued so far is expired from now on."""
        with self._cache_lock:
            self._delta_generation += 1

    # --- what a full paging yields --------------------------------------------------------------

    def expected_users(self, properties: list[str] | tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        """Exactly the users a complete paging with ``$select=properties`` returns, in order (with ``manager``
        among them: as ``$expand=manager`` returns them)."""
        manager = properties is not None and any(p.lower() == MANAGER for p in properties)
        selected = self._properties([p for p in properties if p.lower() != MANAGER] if properties is not None else None)
        return self.directory.users(selected + [MANAGER] if manager else selected)

    # --- HTTP -----------------------------------------------------------------------------------

    def page_of(self, request: Request) -> int | None:
        """Page number of a /users or /users/delta request, 1 for the first of a listing or delta round
        (as clients count them); None if it cannot be told."""
        path = request.path.rstrip("/").lower()
        if _is_delta(path):
            q = _query(request)
            if q.get("skiptoken") is not None:
                return self.decode_delta_token(q["skiptoken"], _DELTA_SKIP).page
            if q.get("deltatoken") is not None and q["deltatoken"].lower() != "latest":
                self.decode_delta_token(q["deltatoken"], _DELTA_LINK)
            return 1
        if path != "/v1.0/users":
            return None
        q = _query(request)
        try:
            top = int(q.get("top") or DEFAULT_TOP)
            offset = self.decode_skiptoken(q["skiptoken"]) if q.get("skiptoken") is not None else 0
        except (ValueError, BadRequest):
            return None
        if q.get("expand") is not None:
            top = min(top, MAX_EXPANDED_PAGE)
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
        path = request.path.rstrip("/")
        extensions = self._extension_route(request, path, ids, claims.roles)
        if extensions is not None:
            return extensions
        if not READ_ROLES.intersection(claims.roles):
            return self._error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.", ids)
        delta = _is_delta(path.lower())
        if _is_count(path) and request.method == "GET":
            return self._count(request, ids)
        if delta:
            with self._cache_lock:
                self._delta_requests += 1
        elif path.lower() != "/v1.0/users":
            segment = path.split("/")[-1] or path
            return self._error(400, "BadRequest", f"Resource not found for the segment '{segment}'.", ids)
        if request.method != "GET":
            return self._error(405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.", ids)
        try:
            return self._delta_page(request, ids) if delta else self._users_page(request, ids, claims.roles)
        except BadRequest as e:
            return self._error(400, e.code, str(e), ids)
        except NotListable:
            return self._error(501, "NotImplemented", "This operation target is not yet supported.", ids)
        except SyncStateNotFound:
            return self._error(400, "syncStateNotFound", _SYNC_STATE_NOT_FOUND, ids)

    def _count(self, request: Request, ids: tuple[str, str]) -> Response:
        """``/users/$count``: the live users now as text/plain, or Graph's 400 without ConsistencyLevel: eventual."""
        if (request.header("ConsistencyLevel") or "").strip().lower() != "eventual":
            return self._error(400, *_COUNT_NEEDS_EVENTUAL, ids)
        return Response(200, str(len(self.directory)).encode("ascii"), {
            "Content-Type": "text/plain", "Cache-Control": "no-cache", **self._common_headers(ids)})

    def fault_response(self, request: Request, status: int) -> Response:
        ids = (str(uuid.uuid4()), request.header("client-request-id") or str(uuid.uuid4()))
        code, message = _FAULT_CODES.get(status, ("BadRequest", "Sandbox fault injected."))
        return self._error(status, code, message, ids)

    def fault_page(self, request: Request, response: Response, rule: FaultRule) -> Response:
        """A normal page (``response``) with a page action of the fault plan applied to it.

        ``value`` replaces the page's users, ``repeat_user`` puts tenant user N first again (shaped by
        the request's ``$select``), ``pad_bytes`` streams whitespace before the closing brace, and
        ``chunked`` sends it all without a Content-Length, ``skip_next`` moves its nextLink on by one page;
        the page's other keys (context, nextLink) and headers stay as they were.
        """
        body = response.body
        if rule.skip_next:
            page = json.loads(body)
            if page.get("@odata.nextLink"):
                link = self._skipping_next(request, page["@odata.nextLink"])
                if link is None:
                    del page["@odata.nextLink"]  # the page after this one was the last: this one is now
                else:
                    page["@odata.nextLink"] = link
                body = _json_value(page)
        if rule.value is not None or rule.repeat_user is not None:
            page = json.loads(body)
            if rule.value is not None:
                page["value"] = rule.value
            elif _is_delta(request.path.rstrip("/").lower()):
                props = self._delta_selection(request)[0]
                page["value"].insert(0, self.directory.user_item(rule.repeat_user, props))
            else:
                props = self._properties(_selected(_query(request)))
                page["value"].insert(0, select(self.directory.record(rule.repeat_user), props))
            body = _json_value(page)
        pad = rule.pad_bytes or 0
        if not pad and not rule.chunked:
            return Response(response.status, body, response.headers)
        return Response(response.status, b"", response.headers, stream=_padded(body, pad),
                        length=None if rule.chunked else len(body) + pad)

    def _skipping_next(self, request: Request, link: str) -> str | None:
        """``link`` (a page's nextLink) moved on by one page: the client silently receives one page fewer.
        None when no page follows the skipped one (in a users listing; a delta round just ends sooner)."""
        found = re.search(r"\$skiptoken=([A-Za-z0-9_-]+)", link)
        if found is None:
            return link
        token = found.group(1)
        if _is_delta(request.path.rstrip("/").lower()):
            skip = self.decode_delta_token(token, _DELTA_SKIP)
            size = _delta_preferences(request)[0]
            moved = self.encode_delta_token(replace(skip, position=skip.position + size))
        else:
            q = _query(request)
            top = int(q.get("top") or DEFAULT_TOP)
            if q.get("expand") is not None:
                top = min(top, MAX_EXPANDED_PAGE)
            offset = self.decode_skiptoken(token) + top
            if offset >= len(self.directory):
                return None
            moved = self.encode_skiptoken(offset)
        return link[:found.start(1)] + moved + link[found.end(1):]

    # --- directory extensions ---------------------------------------------------------------------

    def _extension_route(self, request: Request, path: str, ids: tuple[str, str],
                         roles: tuple[str, ...]) -> Response | None:
        """The two ways to list directory extension definitions; None for any other path.

        ``GET /applications(appId='…')/extensionProperties`` (Application.Read.All, or a higher
        Application/Directory permission) lists one app's; ``POST
        /directoryObjects/getAvailableExtensionProperties`` (Directory.Read.All only) the tenant's,
        from every app: https://learn.microsoft.com/en-us/graph/api/application-list-extensionproperty and
        https://learn.microsoft.com/en-us/graph/api/directoryobject-getavailableextensionproperties (which
        answers an empty list in tenants with more than 1,000 service principals: ``many_service_principals``).
        """
        decoded = unquote(path)
        app = _APP_EXTENSIONS.fullmatch(decoded)
        if app is not None:
            if request.method != "GET":
                return self._error(405, "Request_BadRequest",
                                   "Specified HTTP method is not allowed for the request target.", ids)
            if not APPLICATION_READ_ROLES.intersection(roles):
                return self._error(403, "Authorization_RequestDenied",
                                   "Insufficient privileges to complete the operation.", ids)
            owned = [e for e in EXTENSIONS if e.app_id == app.group(1).lower()]
            if not owned and app.group(1).lower() not in _EXTENSION_APPS:
                return self._error(404, "Request_ResourceNotFound",
                                   f"Resource '{app.group(1)}' does not exist or one of its queried "
                                   "reference-property objects are not present.", ids)
            context = f"{self.base_url}/v1.0/$metadata#applications('{app.group(1)}')/extensionProperties"
            return self._json(200, {"@odata.context": context, "value": [e.resource() for e in owned]}, ids)
        if decoded.lower() != "/v1.0/directoryobjects/getavailableextensionproperties":
            return None
        if request.method != "POST":
            return self._error(405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.", ids)
        if "Directory.Read.All" not in roles:
            return self._error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.", ids)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return self._error(400, "BadRequest", "Invalid JSON in the request body.", ids)
        synced = body.get("isSyncedFromOnPremises") if isinstance(body, dict) else None
        listed = [] if self.many_service_principals else \
            [e for e in EXTENSIONS if synced is None or e.synced_from_on_premises == bool(synced)]
        context = f"{self.base_url}/v1.0/$metadata#Collection(microsoft.graph.extensionProperty)"
        return self._json(200, {"@odata.context": context, "value": [
            {"@odata.type": "#microsoft.graph.extensionProperty", **e.resource()} for e in listed]}, ids)

    def _json(self, status: int, document: dict[str, Any], ids: tuple[str, str]) -> Response:
        return Response(status, json.dumps(document, separators=(",", ":")).encode("utf-8"), {
            "Content-Type": ODATA_JSON, "OData-Version": "4.0", "Cache-Control": "no-cache",
            **self._common_headers(ids)})

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
        """The selected properties in Graph's spelling (matched case-insensitively, as Graph does).

        A name that is no user property fails the whole request, as Graph's OData layer fails it:
        400 ``BadRequest`` "Parsing OData Select and Expand failed: Could not find a property named 'x'
        on type 'microsoft.graph.user'." (code and text as reported from the real service in
        microsoftgraph/msgraph-sdk-powershell#2103 and mguessan/davmail#488, for other types). One of
        the properties Graph returns only for a single user (graph_export.properties.SINGLE_USER_ONLY,
        from the "List users" page) fails a listing with 501 NotImplemented "This operation target is
        not yet supported." (as reported in microsoftgraph/microsoft-graph-docs-contrib#5637).
        """
        if requested is None:
            return list(DEFAULT_PROPERTIES)
        known, unknown = canonical_properties(requested)
        not_listable = [name for name in unknown if name.lower() in SINGLE_USER_ONLY]
        unknown = [name for name in unknown if name.lower() not in SINGLE_USER_ONLY]
        if unknown:
            raise BadRequest("Parsing OData Select and Expand failed: Could not find a property named "
                             f"'{unknown[0]}' on type 'microsoft.graph.user'.", code="BadRequest")
        if not_listable:
            raise NotListable()
        return known

    def _users_page(self, request: Request, ids: tuple[str, str], roles: tuple[str, ...]) -> Response:
        q = _query(request)
        raw_select = q.get("select")
        props = self._properties(_selected(q))
        if "signInActivity" in props:
            if not SIGN_IN_ACTIVITY_ROLES.intersection(roles):
                return self._error(403, *_PERMISSION_MISSING, ids)
            if not self.premium_licence:
                return self._error(403, *_NOT_PREMIUM, ids)
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
        raw_expand = q.get("expand")
        if raw_expand is not None and not _EXPAND_MANAGER.fullmatch(raw_expand.strip()):
            raise BadRequest(f"The sandbox expands only the manager ('$expand=manager($select=id)'), not '{raw_expand}'.")
        expand = raw_expand is not None

        total = len(self.directory)
        end = min(offset + (min(top, MAX_EXPANDED_PAGE) if expand else top), total)
        value = self._page_value(tuple(props), offset, end, expand)
        context = f"{self.base_url}/v1.0/$metadata#users" + (f"({','.join(props)})" if raw_select is not None else "")
        parts = [b'{"@odata.context":', _json(context)]
        if end < total:
            link = [f"$select={','.join(props)}"] if raw_select is not None else []
            link += [f"$top={top}"] if raw_top is not None else []
            link += [f"$expand={raw_expand}"] if expand else []
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

    def _page_value(self, props: tuple[str, ...], start: int, end: int, expand: bool = False) -> bytes:
        """The JSON array of the live users at positions [start, end) of the /users order (``expand``: each
        with its manager), built once per distinct page and tenant version and cached briefly."""
        directory = self.directory
        version = directory.version
        key = (props, start, end, expand, self.tenant_domain, directory.epoch, version)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        domain, namespace = self.tenant_domain, directory.namespace
        if version == 0:  # nothing changed: the computed tenant, position = index
            records = [make_user(i, domain, namespace) for i in range(start, end)]
        else:
            version, rows = directory.live_slice(start, end)
            key = (props, start, end, expand, self.tenant_domain, directory.epoch, version)
            records = [make_user(i, domain, namespace) if record is None else record for i, record in rows]
        if props == USER_PROPERTIES and not expand:  # the records themselves, but for what follows those keys
            width = len(USER_PROPERTIES)
            users = [record if len(record) == width else select(record, props) for record in records]
        else:
            users = [select(record, props) for record in records]
        if expand:
            for user, record in zip(users, records, strict=True):
                if record.get(MANAGER) is not None:
                    user[MANAGER] = manager_reference(record[MANAGER])
        value = _json_value(users)
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_pages:
                self._cache.popitem(last=False)
        return value

    # --- delta ----------------------------------------------------------------------------------

    def encode_delta_token(self, token: DeltaToken) -> str:
        """Opaque, signed: the fields of ``token``, then a truncated HMAC, base64url without padding."""
        flags = ((_F_INITIAL if token.initial else 0) | (_F_REPEATS if token.repeats else 0)
                 | (_F_DEFAULT if token.default_selection else 0))
        payload = _DELTA_STRUCT.pack(_DELTA_PREFIX, token.kind, flags, token.epoch, token.generation, token.issued,
                                     token.since, token.until, token.limit, token.position, token.page)
        payload += bytes(_PROPERTY_NUMBER[p] for p in token.properties)
        mac = hmac.new(self._skiptoken_key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def decode_delta_token(self, text: str, kind: int) -> DeltaToken:
        """The token's fields if it is one this Graph signed, of ``kind``; else BadRequest. Expiry is not
        checked here (:meth:`_check_alive`)."""
        invalid = BadRequest("Invalid page token specified.")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            raise invalid from None
        payload, mac = raw[:-_SIGNATURE_BYTES], raw[-_SIGNATURE_BYTES:]
        expected = hmac.new(self._skiptoken_key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        if len(payload) <= _DELTA_STRUCT.size or not payload.startswith(_DELTA_PREFIX) \
                or not hmac.compare_digest(mac, expected):
            raise invalid
        (_, token_kind, flags, epoch, generation, issued, since, until, limit, position,
         page) = _DELTA_STRUCT.unpack_from(payload)
        numbers = payload[_DELTA_STRUCT.size:]
        if token_kind != kind or any(n >= len(ALL_PROPERTIES) for n in numbers):
            raise invalid
        return DeltaToken(kind=kind, properties=tuple(ALL_PROPERTIES[n] for n in numbers),
                          default_selection=bool(flags & _F_DEFAULT), epoch=epoch, generation=generation,
                          issued=issued, since=since, until=until, limit=limit, position=position, page=page,
                          initial=bool(flags & _F_INITIAL), repeats=bool(flags & _F_REPEATS))

    def _check_alive(self, token: DeltaToken) -> None:
        if token.epoch != self.directory.epoch or token.generation != self._delta_generation \
                or time.time() - token.issued > self.delta_token_lifetime_s:
            raise SyncStateNotFound()

    def _delta_selection(self, request: Request) -> tuple[tuple[str, ...], bool]:
        """The selected properties of a delta request (from its token when it has one) and whether they
        are the default set (no ``$select``)."""
        q = _query(request)
        for name, kind in (("skiptoken", _DELTA_SKIP), ("deltatoken", _DELTA_LINK)):
            value = q.get(name)
            if value is not None and value.lower() != "latest":
                token = self.decode_delta_token(value, kind)
                return token.properties, token.default_selection
        if q.get("expand") is not None:
            raise BadRequest("The query option '$expand' is not supported with delta queries; $select the manager "
                             "to track it.")
        selected = _selected(q)
        # users/delta tracks the manager when $select names it (the delta query overview, "Optional query
        # parameters"), and reports it as manager@delta.
        manager = [name for name in selected or [] if name.lower() == MANAGER]
        props = tuple(self._properties([name for name in selected if name.lower() != MANAGER]
                                       if selected is not None else None)) + ((MANAGER,) if manager else ())
        if "signInActivity" in props:
            raise BadRequest("Property 'signInActivity' is not supported in delta queries.")
        return props, selected is None

    def _delta_page(self, request: Request, ids: tuple[str, str]) -> Response:
        q = _query(request)
        if "top" in q:
            raise BadRequest("The query parameter '$top' is not supported with delta queries; "
                             "use the odata.maxpagesize preference instead.")
        skip, delta = q.get("skiptoken"), q.get("deltatoken")
        if skip is not None and delta is not None:
            raise BadRequest("'$skiptoken' and '$deltatoken' cannot be used together.")
        size, minimal, applied = _delta_preferences(request)
        directory = self.directory
        now = time.time()
        if skip is not None:
            token = self.decode_delta_token(skip, _DELTA_SKIP)
            self._check_alive(token)
        elif delta is not None and delta.lower() != "latest":
            link = self.decode_delta_token(delta, _DELTA_LINK)
            self._check_alive(link)
            token = replace(link, kind=_DELTA_SKIP, until=directory.position()[0], position=0, page=1,
                            repeats=self.delta_repeats)
        else:
            props, default = self._delta_selection(request)
            version, limit = directory.position()
            token = DeltaToken(kind=_DELTA_SKIP, properties=props, default_selection=default, epoch=directory.epoch,
                               generation=self._delta_generation, issued=now, until=version, limit=limit,
                               initial=True, repeats=self.delta_repeats)
            if delta is not None:  # $deltatoken=latest: no users, a link for "from now on"
                token = replace(token, initial=False, since=token.until, position=0, limit=0)
                return self._delta_response(request, ids, token, [], None, applied)

        props = token.properties
        if token.initial:
            items, position = directory.initial_page(props, token.until, token.limit, token.position, size)
        else:
            items, position = directory.change_page(props, token.since, token.until, token.position, size,
                                                    repeats=token.repeats, minimal=minimal,
                                                    tracked=None if token.default_selection else props)
        following = None if position is None else \
            replace(token, generation=self._delta_generation, issued=now, position=position, page=token.page + 1)
        return self._delta_response(request, ids, token, items, following, applied)

    def _delta_response(self, request: Request, ids: tuple[str, str], token: DeltaToken, items: list[dict[str, Any]],
                        following: DeltaToken | None, applied: list[str]) -> Response:
        props = token.properties
        context = f"{self.base_url}/v1.0/$metadata#users" + ("" if token.default_selection else f"({','.join(props)})")
        if following is not None:
            link_name, link = "@odata.nextLink", f"$skiptoken={self.encode_delta_token(following)}"
        else:  # the round is complete: the next one starts where this one's window ends
            after = DeltaToken(kind=_DELTA_LINK, properties=props, default_selection=token.default_selection,
                               epoch=token.epoch, generation=self._delta_generation, issued=time.time(),
                               since=token.until)
            link_name, link = "@odata.deltaLink", f"$deltatoken={self.encode_delta_token(after)}"
        body = b"".join([b'{"@odata.context":', _json(context), b',"', link_name.encode("ascii"), b'":',
                         _json(f"{self.base_url}/v1.0/users/delta?{link}"), b',"value":',
                         _json_value(items), b"}"])
        if self.page_latency_ms > 0:
            time.sleep(max(0.0, request.arrived + self.page_latency_ms / 1000.0 - time.monotonic()))
        headers = {"Content-Type": ODATA_JSON, "OData-Version": "4.0", "Cache-Control": "no-cache",
                   **self._common_headers(ids)}
        if applied:
            headers["Preference-Applied"] = ", ".join(applied)
        return Response(200, body, headers)

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


def _is_count(path: str) -> bool:
    """``/v1.0/users/$count`` (the ``$`` percent-encoded or not)."""
    return unquote(path).lower() == "/v1.0/users/$count"


def _is_delta(path: str) -> bool:
    """``/v1.0/users/delta`` (also written ``delta()``, as the OData function it is), lower-cased path."""
    return path in ("/v1.0/users/delta", "/v1.0/users/delta()")


def _delta_preferences(request: Request) -> tuple[int, bool, list[str]]:
    """Page size, return=minimal, and the preferences applied (for Preference-Applied), from ``Prefer``
    headers (one or several, each a comma-separated list). An unreadable page size is ignored."""
    size, minimal, applied = DELTA_DEFAULT_PAGE, False, []
    for header in request.headers.get_all("Prefer") or []:
        for preference in header.split(","):
            name, _, value = preference.strip().partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "odata.maxpagesize" and value.isdigit() and int(value) > 0:
                size = min(int(value), DELTA_MAX_PAGE)
                applied = [p for p in applied if not p.startswith("odata.maxpagesize=")]
                applied.insert(0, f"odata.maxpagesize={size}")
            elif name == "return" and value.lower() == "minimal" and not minimal:
                minimal = True
                applied.append("return=minimal")
    return size, minimal, applied


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


def _json_value(value: Any) -> bytes:
    """Compact UTF-8 JSON text; a lone UTF-16 surrogate in a string (a value a test gave a user, e.g.
    ``directory.update(uid, displayName="\\ud83d")``) is written as its escape, valid JSON as Graph sends it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # UTF-8 cannot hold a surrogate: only then look for one
        return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text).encode("utf-8")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")
