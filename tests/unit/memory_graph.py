"""Microsoft Graph's users served from memory, at the transport seam: no socket, everything above it real.

:class:`MemoryGraph` answers ``GET /v1.0/users`` (``$select``, ``$top``, ``@odata.nextLink`` with an
opaque ``$skiptoken``), ``GET /v1.0/users/$count`` and ``GET /v1.0/users/delta`` (``$deltatoken=latest``, rounds of changes with
``@removed``, ``@odata.deltaLink``) from a :class:`MemoryDirectory`, checks the bearer token against
:class:`MemorySignIn`, and answers scripted faults (:func:`throttled`, :func:`unavailable`,
:func:`cut_short`, :func:`redirected`, :func:`reset`) when their request comes.

:meth:`MemoryGraph.serve` plugs it into a session from ``transport.make_session`` by giving that
session's urllib3 pools a connection class that answers from memory instead of a socket. So
urllib3's retry loop with the export's own ``BudgetedRetry`` (Retry-After, the run's budget),
requests, the announcing connections of ``transport`` and ``graph.GraphUsers`` (page checks,
prefetching, the re-read of a page cut short) all run as they do against Graph. (A
``requests.adapters.BaseAdapter`` of its own would have skipped urllib3, and with it the retries.)
"""

from __future__ import annotations

import base64
import http
import io
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError

from graph_export.credentials import Secret
from graph_export.errors import CredentialRejectedError
from graph_export.modes import CredentialKind

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
#: users/delta's page size without a Prefer header, and the most Prefer: odata.maxpagesize may ask for.
DELTA_DEFAULT_PAGE, DELTA_MAX_PAGE = 100, 200
MAX_TOP = 999


# -- the tenant ---------------------------------------------------------------------------------------------


def make_users(count: int, start: int = 0) -> list[dict[str, Any]]:
    """``count`` users as Graph holds them (every property this file's tests select, some null)."""
    departments = ["Sales", "Engineering", None, "Zoë's Team"]
    return [{"id": f"{i:08x}-0000-4000-8000-{i:012x}", "displayName": f"User {i} Ünïcode",
             "mail": None if i % 7 == 0 else f"user{i}@contoso.example", "department": departments[i % 4]}
            for i in range(start, start + count)]


class MemoryDirectory:
    """The tenant's users in ``/users`` order, and when each last changed, for users/delta."""

    def __init__(self, users: Iterable[dict[str, Any]] = ()) -> None:
        self._users: dict[str, dict[str, Any]] = {u["id"]: dict(u) for u in users}
        self._changed: dict[str, int] = {}  # id -> the sequence number of its last change (removal included)
        self.seq = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def add(self, user: dict[str, Any]) -> None:
        with self._lock:
            self._users[user["id"]] = dict(user)
            self._touch(user["id"])

    def update(self, user_id: str, **properties: Any) -> None:
        with self._lock:
            self._users[user_id].update(properties)
            self._touch(user_id)

    def remove(self, user_id: str) -> None:
        with self._lock:
            del self._users[user_id]
            self._touch(user_id)

    def listing(self, properties: Iterable[str]) -> list[dict[str, Any]]:
        """Every user as a full export with ``$select=properties`` publishes it, in ``/users`` order."""
        with self._lock:
            return [_select(u, tuple(properties)) for u in self._users.values()]

    def page(self, offset: int, size: int, properties: tuple[str, ...]) -> tuple[list[dict[str, Any]], bool]:
        """The users at [offset, offset + size), selected; and whether more follow."""
        with self._lock:
            users = list(self._users.values())
            return [_select(u, properties) for u in users[offset:offset + size]], offset + size < len(users)

    def changes(self, since: int, upto: int, properties: tuple[str, ...]) -> list[dict[str, Any]]:
        """Each user that changed after ``since`` up to ``upto`` once, as it is now (or ``@removed``)."""
        with self._lock:
            changed = sorted((seq, i) for i, seq in self._changed.items() if since < seq <= upto)
            return [_select(self._users[i], properties) if i in self._users else
                    {"id": i, "@removed": {"reason": "changed"}} for _, i in changed]

    def _touch(self, user_id: str) -> None:
        self.seq += 1
        self._changed[user_id] = self.seq


def _select(user: dict[str, Any], properties: tuple[str, ...]) -> dict[str, Any]:
    """As Graph answers ``$select``: ``id`` and every selected property, null when the user has none."""
    return {p: user.get(p) for p in ("id", *[p for p in properties if p != "id"])}


# -- sign-in -----------------------------------------------------------------------------------------------


class MemorySignIn:
    """Entra ID and the vault in memory: the client secret the vault holds, and the tokens Graph accepts.

    :meth:`read_credential` and :meth:`sign_in` are what ``token.GraphTokens`` is built from.
    """

    def __init__(self, secret: str = "memory-client-secret") -> None:
        self.credential = Secret(secret, version="v1")
        self.registered = {secret}
        self.reads = 0
        self._tokens: set[str] = set()  # issued, and accepted by Graph
        self._lock = threading.Lock()

    def read_credential(self) -> Secret:
        self.reads += 1
        return self.credential

    def sign_in(self, credential: Any) -> "MemoryTokenProvider":
        return MemoryTokenProvider(self, credential)

    def issue(self, credential: Any) -> str:
        if getattr(credential, "kind", None) != CredentialKind.SECRET or credential.reveal() not in self.registered:
            raise CredentialRejectedError("Sign-in for app memory failed with AADSTS7000215 (invalid_client): the "
                                          "client secret is wrong.")
        token = f"memory-access-{secrets.token_hex(8)}"
        with self._lock:
            self._tokens.add(token)
        return token

    @property
    def issued(self) -> set[str]:
        """Every access token signed so far (to check none of them is shown anywhere)."""
        with self._lock:
            return set(self._tokens)

    def accepts(self, token: str) -> bool:
        with self._lock:
            return token in self._tokens



class MemoryTokenProvider:
    """What ``GraphTokens`` asks of a signed-in provider: a token (cached), and a fresh one after a rejection."""

    def __init__(self, sign_in: MemorySignIn, credential: Any) -> None:
        self._sign_in, self._credential = sign_in, credential
        self._token: str | None = None

    def acquire(self) -> str:
        if self._token is None:
            self._token = self._sign_in.issue(self._credential)
        return self._token

    def refresh(self, rejected: str) -> str:
        if self._token == rejected:
            self._token = None
        return self.acquire()


# -- requests, answers, faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphRequest:
    """One request as the memory Graph saw it (the bearer token only as whether it was accepted)."""

    method: str
    url: str
    kind: str  # "users", "delta", "count" or "other"
    #: The page of its listing or round (1 for the first): the skiptoken's offset in pages.
    page: int
    authorized: bool


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: What Content-Length says: the body's length, unless the answer is cut short.
    length: int | None = None
    #: No answer at all: the connection is reset once the request is sent.
    reset: bool = False


@dataclass
class Fault:
    """Answer the requests ``when`` matches (at most ``times``; None: always) with ``answer`` of the normal one."""

    answer: Callable[[GraphRequest, Answer], Answer]
    when: Callable[[GraphRequest], bool]
    times: int | None = 1
    used: int = 0

    def takes(self, request: GraphRequest) -> bool:
        return (self.times is None or self.used < self.times) and self.when(request)


def any_request(request: GraphRequest) -> bool:
    return True


def users_page(number: int) -> Callable[[GraphRequest], bool]:
    """A fault's ``when``: page ``number`` of a /users listing."""
    return lambda request: request.kind == "users" and request.page == number


def count_request(request: GraphRequest) -> bool:
    """A fault's ``when``: ``/users/$count``."""
    return request.kind == "count"


def delta_request(request: GraphRequest) -> bool:
    return request.kind == "delta"


def _graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    request_id = str(uuid.uuid4())
    body = json.dumps({"error": {"code": code, "message": message,
                                 "innerError": {"request-id": request_id}}}).encode()
    return Answer(status, body, {"Content-Type": "application/json", "request-id": request_id, **(headers or {})})


def throttled(times: int | None = 1, *, retry_after: int = 0, when: Callable[[GraphRequest], bool] = any_request
              ) -> Fault:
    """429 TooManyRequests with Retry-After, as Graph throttles."""
    return Fault(lambda request, normal: _graph_error(
        429, "TooManyRequests", "Too many requests.", {"Retry-After": str(retry_after)}), when, times)


def unavailable(times: int | None = 1, *, when: Callable[[GraphRequest], bool] = any_request) -> Fault:
    """503 ServiceUnavailable, without Retry-After."""
    return Fault(lambda request, normal: _graph_error(
        503, "ServiceUnavailable", "Service is temporarily unavailable."), when, times)


def cut_short(times: int | None = 1, *, when: Callable[[GraphRequest], bool] = any_request) -> Fault:
    """The normal answer, its body broken off halfway (Content-Length still says the whole)."""
    def cut(request: GraphRequest, normal: Answer) -> Answer:
        return Answer(normal.status, normal.body[:len(normal.body) // 2], normal.headers, len(normal.body))
    return Fault(cut, when, times)


def reset(times: int | None = 1, *, when: Callable[[GraphRequest], bool] = any_request) -> Fault:
    """No answer: the connection is reset by the peer once the request has been sent."""
    return Fault(lambda request, normal: Answer(0, reset=True), when, times)


def redirected(to: str, times: int | None = 1, *, when: Callable[[GraphRequest], bool] = any_request) -> Fault:
    """302 Found to ``to``."""
    return Fault(lambda request, normal: Answer(302, b"", {"Location": to, "Content-Type": "text/html"}), when, times)


# -- the service ---------------------------------------------------------------------------------------------


class MemoryGraph:
    """Graph's /v1.0/users and /v1.0/users/delta for ``directory``, at ``endpoint``, in memory.

    A page holds at most ``max_page`` users whatever ``$top`` asks (Graph may send fewer), so a small
    tenant still has several pages. ``requests`` lists every request it answered, in order.
    """

    def __init__(self, directory: MemoryDirectory, sign_in: MemorySignIn, *,
                 endpoint: str = "https://graph.memory.invalid", max_page: int = 50) -> None:
        self.directory, self.sign_in = directory, sign_in
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.max_page = max_page
        self.faults: list[Fault] = []
        self.requests: list[GraphRequest] = []
        self._nonce = secrets.token_hex(4)  # skiptokens and delta tokens of another MemoryGraph are refused
        self._lock = threading.Lock()

    def script(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def serve(self, session: requests.Session) -> None:
        """Answer ``session``'s requests from here: its pools' connections become memory connections.

        The session keeps its adapters (and their retry policy); a host other than this Graph's has
        nothing listening. Environment proxies are ignored: there is no network to reach through them.
        """
        session.trust_env = False
        for adapter in {id(a): a for a in session.adapters.values()}.values():
            manager = adapter.poolmanager  # type: ignore[attr-defined]  # an HTTPAdapter's
            manager.pool_classes_by_scheme = {scheme: _memory_pool(pool, self)
                                              for scheme, pool in manager.pool_classes_by_scheme.items()}

    def answer(self, method: str, url: str, headers: dict[str, str]) -> Answer:
        """What Graph answers this request (a scripted fault, when one takes it)."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        authorized = authorization.startswith("Bearer ") and self.sign_in.accepts(authorization[len("Bearer "):])
        kind = {"/v1.0/users": "users", "/v1.0/users/delta": "delta",
                "/v1.0/users/$count": "count"}.get(parts.path.rstrip("/"), "other")
        with self._lock:
            request = GraphRequest(method, url, kind, self._page_number(kind, query, headers), authorized)
            self.requests.append(request)
            fault = next((f for f in self.faults if f.takes(request)), None)
            if fault is not None:
                fault.used += 1
        normal = self._route(request, query, headers)
        return fault.answer(request, normal) if fault is not None else normal

    # -- routes -------------------------------------------------------------------------------------------

    def _route(self, request: GraphRequest, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if not request.authorized:
            return _graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        if request.method != "GET" or request.kind == "other":
            return _graph_error(404, "Request_ResourceNotFound", "Resource not found.")
        if request.kind == "count":
            return self._count(headers)
        try:
            return self._users(query) if request.kind == "users" else self._delta(query, headers)
        except _BadToken:
            return _graph_error(400, "Directory_ExpiredPageToken", "The specified page token value has expired.")

    def _count(self, headers: dict[str, str]) -> Answer:
        """``/users/$count``: the users now as text/plain; Graph's 400 without ``ConsistencyLevel: eventual``."""
        if next((v for k, v in headers.items() if k.lower() == "consistencylevel"), "").lower() != "eventual":
            return _graph_error(400, "Request_BadRequest", "$count is not currently supported.")
        return Answer(200, str(len(self.directory)).encode(), {"Content-Type": "text/plain",
                                                               "request-id": str(uuid.uuid4())})

    def _users(self, query: dict[str, str]) -> Answer:
        properties = _properties(query.get("$select", ""))
        top = int(query.get("$top", "100"))
        if not 1 <= top <= MAX_TOP:
            return _graph_error(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'.")
        offset = self._token(query["$skiptoken"], "users")["offset"] if "$skiptoken" in query else 0
        users, more = self.directory.page(offset, min(top, self.max_page), properties)
        body: dict[str, Any] = {"@odata.context": f"{self.endpoint}/v1.0/$metadata#users"}
        if more:
            token = self._encode("users", offset=offset + len(users))
            body["@odata.nextLink"] = (f"{self.endpoint}/v1.0/users?"
                                       f"{urlencode({'$select': ','.join(properties), '$top': top}, safe='$,')}"
                                       f"&$skiptoken={token}")
        body["value"] = users
        return _ok(body)

    def _delta(self, query: dict[str, str], headers: dict[str, str]) -> Answer:
        size = min(_max_page_size(headers), self.max_page)
        if "$skiptoken" in query:  # within a round
            round_ = self._token(query["$skiptoken"], "delta-page")
        elif query.get("$deltatoken", "").lower() == "latest":
            round_ = {"since": self.directory.seq, "upto": self.directory.seq, "offset": 0,
                      "select": query.get("$select", "")}
        elif "$deltatoken" in query:  # a deltaLink: the changes since its round ended
            saved = self._token(query["$deltatoken"], "delta-link")
            round_ = {"since": saved["upto"], "upto": self.directory.seq, "offset": 0, "select": saved["select"]}
        else:  # a first round: every user there is
            round_ = {"since": None, "upto": self.directory.seq, "offset": 0, "select": query.get("$select", "")}
        properties = _properties(round_["select"])
        changes = self.directory.listing(properties) if round_["since"] is None else \
            self.directory.changes(round_["since"], round_["upto"], properties)
        offset = round_["offset"]
        body: dict[str, Any] = {"@odata.context": f"{self.endpoint}/v1.0/$metadata#users(delta)"}
        if offset + size < len(changes):
            token = self._encode("delta-page", **{**round_, "offset": offset + size})
            body["@odata.nextLink"] = f"{self.endpoint}/v1.0/users/delta?$skiptoken={token}"
        body["value"] = changes[offset:offset + size]
        if "@odata.nextLink" not in body:
            token = self._encode("delta-link", upto=round_["upto"], select=round_["select"])
            body["@odata.deltaLink"] = f"{self.endpoint}/v1.0/users/delta?$deltatoken={token}"
        return _ok(body)

    # -- tokens -------------------------------------------------------------------------------------------

    def _encode(self, kind: str, **values: Any) -> str:
        raw = json.dumps({"nonce": self._nonce, "kind": kind, **values}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _token(self, token: str, kind: str) -> dict[str, Any]:
        try:
            values: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except ValueError:
            raise _BadToken() from None
        if values.get("nonce") != self._nonce or values.get("kind") != kind:
            raise _BadToken()
        return values

    def _page_number(self, kind: str, query: dict[str, str], headers: dict[str, str]) -> int:
        try:
            if kind == "users" and "$skiptoken" in query:
                size = min(int(query.get("$top", "100")), self.max_page)
                return int(self._token(query["$skiptoken"], "users")["offset"]) // size + 1
            if kind == "delta" and "$skiptoken" in query:
                size = min(_max_page_size(headers), self.max_page)
                return int(self._token(query["$skiptoken"], "delta-page")["offset"]) // size + 1
        except (_BadToken, ValueError):
            return 0
        return 1


class _BadToken(Exception):
    pass


def _properties(select: str) -> tuple[str, ...]:
    return tuple(p for p in select.split(",") if p) or ("id", "displayName")


def _max_page_size(headers: dict[str, str]) -> int:
    prefer = next((v for k, v in headers.items() if k.lower() == "prefer"), "")
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name == "odata.maxpagesize" and value.isdigit():
            return min(int(value), DELTA_MAX_PAGE)
    return DELTA_DEFAULT_PAGE


def _ok(body: dict[str, Any]) -> Answer:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Answer(200, data, {"Content-Type": ODATA_JSON, "OData-Version": "4.0", "request-id": str(uuid.uuid4())})


# -- the transport seam ------------------------------------------------------------------------------------


class _MemoryConnection(HTTPSConnection):
    """An HTTPS connection whose peer is a :class:`MemoryGraph` (``service``) in this process."""

    service: ClassVar[MemoryGraph]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open = False
        self._answer: Answer | None = None
        self._options: dict[str, Any] = {}

    def connect(self) -> None:
        if self.host != self.service.host.split(":")[0]:
            raise NewConnectionError(self, f"Failed to establish a new connection: nothing answers at {self.host}")
        self._open, self.is_verified = True, True

    @property
    def is_closed(self) -> bool:
        return not self._open

    @property
    def is_connected(self) -> bool:
        return self._open

    @property
    def has_connected_to_proxy(self) -> bool:
        return False

    def close(self) -> None:
        self._open = False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, *,  # type: ignore[override]
                chunked: bool = False,
                preload_content: bool = True, decode_content: bool = True, enforce_content_length: bool = True
                ) -> None:
        if not self._open:
            self.connect()
        self._answer = self.service.answer(method, f"https://{self.service.host}{url}", dict(headers or {}))
        self._options = {"preload_content": preload_content, "decode_content": decode_content,
                         "enforce_content_length": enforce_content_length, "request_method": method,
                         "request_url": url}

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        answer, self._answer = self._answer, None
        assert answer is not None, "getresponse() before request()"
        if answer.reset:
            self._open = False
            raise ConnectionResetError(104, "Connection reset by peer")
        headers = HTTPHeaderDict({**answer.headers, "Content-Length": str(
            len(answer.body) if answer.length is None else answer.length)})
        return HTTPResponse(body=io.BytesIO(answer.body), headers=headers, status=answer.status,
                            reason=http.HTTPStatus(answer.status).phrase, version=11, version_string="HTTP/1.1",
                            **self._options)


class _NoPlainHttp(HTTPConnection):
    """Graph is only ever asked over HTTPS; a plain-HTTP request finds nothing listening."""

    def connect(self) -> None:
        raise NewConnectionError(self, f"Failed to establish a new connection: nothing answers at {self.host}")


def _memory_pool(pool: type[HTTPConnectionPool], service: MemoryGraph) -> type[HTTPConnectionPool]:
    """``pool`` with connections that answer from ``service``; any connection subclass it has (transport's
    announcing ones) keeps its behaviour, with memory where the socket was."""
    https = issubclass(pool.ConnectionCls, HTTPSConnection)
    memory: type = _MemoryConnection if https else _NoPlainHttp
    base = pool.ConnectionCls
    bases = (memory,) if base in (HTTPConnection, HTTPSConnection) else (base, memory)
    connection = type(f"Memory{base.__name__}", bases, {"service": service})
    return type(f"Memory{pool.__name__}", (pool,), {"ConnectionCls": connection})


def denied(times: int | None = None, *, when: Callable[[GraphRequest], bool] = any_request) -> Fault:
    """403 Authorization_RequestDenied: the app has no consent (User.Read.All) in this tenant."""
    return Fault(lambda request, normal: _graph_error(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."), when, times)
