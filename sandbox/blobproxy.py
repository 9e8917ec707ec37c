"""A fault-injecting HTTP proxy in front of Azurite, for testing what Blob faults do to an export.

It forwards every request to Azurite unchanged (Shared Key signatures cover the account and path,
not the port, so they stay valid) and, when a rule matches, answers 503/500 in Azure Storage's own
error shape or resets the connection instead of forwarding.

It can also act as a locked, container-level time-based retention policy (WORM), which Azurite lacks
(Azure/Azurite#2648): in a container given to :meth:`BlobFaultProxy.protect_container`, a request that
would overwrite, change or delete a blob that exists (the proxy asks Azurite first, with a HEAD it signs
itself) is answered 409 ``BlobImmutableDueToPolicy`` as Azure answers it, and Delete Container 409
``ContainerImmutabilityPolicyLocked``; creating blobs, Put Block, reads and leases pass, and a condition
that already fails (``If-None-Match: *``, a stale ``If-Match``) gets Azurite's own 409/412. Faults come
first. Blob Batch requests (``delete_blobs``) are not inspected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from .azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from .server import LOOPBACK

_ERRORS = {
    "503": (503, "ServerBusy", "The server is busy."),
    "500": (500, "InternalError", "The server encountered an internal error. Please retry the request."),
}
# Blob Storage error codes, https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes
# ("BlobImmutableDueToPolicy | Conflict (409) | This operation is not permitted as the blob is immutable
# due to a policy."); what is refused follows the "Scenarios" table of "Container-level WORM policies for
# immutable blob data", https://learn.microsoft.com/azure/storage/blobs/immutable-container-level-worm-policies
BLOB_IMMUTABLE = (409, "BlobImmutableDueToPolicy",
                  "This operation is not permitted as the blob is immutable due to a policy.")
# Not on that page: what Delete Container answers on the data plane under a locked container policy, as
# Azure printed it in Azure/azure-powershell#22564 and #26148 (that page: "You can delete a container that
# has a container-level WORM policy only by using control plane operations").
CONTAINER_LOCKED = (409, "ContainerImmutabilityPolicyLocked",
                    "The requested operation is not allowed as the container has a locked immutability policy.")
# PUT ?comp=… (None: no comp) that rewrite an existing blob's bytes, metadata or properties, or add a snapshot.
# Not in that table, so passed: Put Block (no committed data changes), Lease Blob, Set Blob Tier and Tags.
# Append Block is allowed by Azure only under allowProtectedAppendWrites(All), which is not modelled.
_PUT_REFUSED = {None, "blocklist", "metadata", "properties", "snapshot", "page", "appendblock", "incrementalcopy"}
# Whether Azure reports a failing condition or the policy when both apply is not documented; here the
# condition wins (no write happens either way) and Azurite answers it, but only where Azurite 3.37 was
# seen to enforce it (409/412, nothing written): it ignores If-None-Match: * on Set Blob Metadata and
# Properties and on Delete Blob, for one, and those get the policy's 409.
_AZURITE_CHECKS_IF_MATCH = {"put", "copy", "blocklist", "metadata", "properties", "snapshot", "delete"}
_AZURITE_CHECKS_IF_NONE_MATCH = {"put", "copy", "blocklist"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}



class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client resetting a kept-alive connection (it does after a 503) is normal: no traceback for it."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

@dataclass
class BlobFault:
    """Answer matching requests with ``action`` ("reset", "503" or "500"), ``count`` times (None: always).

    "hold" keeps a matching request from Azurite until :meth:`release` (or a minute), then resets
    it: where a test kills the client mid-request, to stop a run exactly before that write.
    "lose-answer" forwards the request, then resets the connection instead of answering: the write
    happened, and the client does not know it (it will retry).
    """

    action: str
    method: str | None = None
    query_contains: str | None = None
    path_contains: str | None = None
    request: int | None = None
    count: int | None = 1
    fired: int = 0
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def wait_held(self, timeout: float = 60.0) -> bool:
        """Block until a request is being held by this rule; False if none came within ``timeout``."""
        return self.held.wait(timeout)

    def release(self) -> None:
        self.released.set()

    def matches(self, number: int, method: str, target: str) -> bool:
        path, _, query = target.partition("?")
        return ((self.count is None or self.fired < self.count)
                and (self.request is None or self.request == number)
                and (self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path)
                and (self.query_contains is None or self.query_contains in query))


@dataclass(frozen=True)
class _Target:
    """A request that a container-level WORM policy may refuse: which blob, and which kind of write."""

    container: str  # decoded, compared exactly
    blob: str  # decoded; "" for the container itself
    operation: str  # "put", "copy", "copy-from-url", a comp value, "delete" or "delete-container"
    raw_path: str  # as the client encoded it, so the existence check asks about the very same resource
    query: dict[str, str]


def _classify(method: str, target: str, headers: Any) -> _Target | None:
    raw_path, _, query_string = target.partition("?")
    parts = unquote(raw_path).split("/", 3)  # "", account, container[, blob]
    if len(parts) < 3 or parts[0] or parts[1] != ACCOUNT or not parts[2]:
        return None
    container, blob = parts[2], parts[3] if len(parts) > 3 else ""
    query = {name.lower(): value for name, value in parse_qsl(query_string, keep_blank_values=True)}
    comp = query.get("comp") or None
    if not blob:
        if method == "DELETE" and query.get("restype") == "container" and comp is None:
            return _Target(container, blob, "delete-container", raw_path, query)
        return None
    if method == "DELETE" and comp is None:
        operation = "delete"
    elif method == "PUT" and comp in _PUT_REFUSED:
        if comp is not None:
            operation = comp
        elif headers.get("x-ms-copy-source") is None:
            operation = "put"
        elif headers.get("x-ms-requires-sync") is None and headers.get("x-ms-blob-type") is None:
            operation = "copy"
        else:  # Copy Blob From URL, Put Blob From URL
            operation = "copy-from-url"
    else:
        return None
    return _Target(container, blob, operation, raw_path, query)


def _condition_fails(operation: str, headers: Any, etag: str) -> bool:
    """Whether Azurite is sure to refuse this write on a blob with ``etag`` for its conditions alone.

    Only "sure" counts: a wrong yes would forward a write that then happens. So If-Match compares as
    loosely as it can (quotes, W/, case ignored) and If-None-Match only counts ``*``.
    """
    def opaque(value: str) -> str:
        return value.strip().removeprefix("W/").strip('"').lower()

    if_match = headers.get("If-Match")
    if if_match is not None and operation in _AZURITE_CHECKS_IF_MATCH:
        values = {opaque(value) for value in if_match.split(",")}
        if "*" not in values and opaque(etag) not in values:
            return True
    if_none_match = headers.get("If-None-Match")
    return (if_none_match is not None and operation in _AZURITE_CHECKS_IF_NONE_MATCH
            and if_none_match.strip() == "*")


def _head_upstream(port: int, raw_path: str, params: Mapping[str, str], version: str) -> str | None:
    """ETag of the resource at ``raw_path`` in Azurite (None if it does not exist), by a HEAD the proxy
    signs itself with the account key (Shared Key, the way azure-storage-blob signs for Azurite)."""
    date = formatdate(usegmt=True)
    ms_headers = {"x-ms-date": date, "x-ms-version": version}
    resource = f"/{ACCOUNT}{raw_path}" + "".join(f"\n{name}:{value}" for name, value in sorted(params.items()))
    to_sign = "HEAD" + "\n" * 12 + "".join(f"{name}:{value}\n" for name, value in sorted(ms_headers.items()))
    signature = base64.b64encode(hmac.new(base64.b64decode(ACCOUNT_KEY), (to_sign + resource).encode(),
                                          hashlib.sha256).digest()).decode()
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        connection.request("HEAD", raw_path + (f"?{query}" if query else ""),
                           headers={**ms_headers, "Authorization": f"SharedKey {ACCOUNT}:{signature}"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status == 404:
        return None
    if response.status != 200 or response.getheader("ETag") is None:
        raise RuntimeError(f"blob proxy: HEAD {raw_path} in Azurite answered {response.status} "
                           f"{response.getheader('x-ms-error-code')}; cannot tell whether it is protected")
    return response.getheader("ETag")


@dataclass
class _State:
    upstream_port: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    rules: list[BlobFault] = field(default_factory=list)
    requests: list[tuple[int, str, str, object]] = field(default_factory=list)
    protected: set[str] = field(default_factory=set)
    # One lock per protected blob name, held from the existence check to Azurite's answer, so two
    # creates of one new name through the proxy cannot both see "absent" and both write.
    blob_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    def is_protected(self, container: str) -> bool:
        with self.lock:
            return container in self.protected

    def blob_lock(self, container: str, blob: str) -> threading.Lock:
        with self.lock:
            return self.blob_locks.setdefault((container, blob), threading.Lock())

    def take(self, method: str, target: str) -> tuple[int, BlobFault | None]:
        with self.lock:
            number = len(self.requests) + 1
            rule = next((r for r in self.rules if r.matches(number, method, target)), None)
            if rule is not None:
                rule.fired += 1
            self.requests.append((number, method, target, None))
            return number, rule

    def record(self, number: int, outcome: object) -> None:
        with self.lock:
            n, method, target, _ = self.requests[number - 1]
            self.requests[number - 1] = (n, method, target, outcome)


class BlobFaultProxy:
    """``127.0.0.1:<port>`` in front of an :class:`Azurite`; use :attr:`connection_string`."""

    def __init__(self, azurite: Azurite, *, protected: Iterable[str] = ()) -> None:
        """``protected``: containers under a WORM policy from the start (see :meth:`protect_container`)."""
        if azurite.port is None or azurite.tls is not None:
            raise ValueError("start a plain-HTTP Azurite before its proxy")
        self._state = _State(azurite.port)
        for name in protected:
            self.protect_container(name)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return self._server.server_address[1]

    @property
    def blob_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")

    @property
    def requests(self) -> list[tuple[int, str, str, object]]:
        """(number, method, path?query, status or "reset") for every request that reached the proxy."""
        with self._state.lock:
            return list(self._state.requests)

    def add(self, action: str, **match: Any) -> BlobFault:
        if action not in ("reset", "hold", "lose-answer", *_ERRORS):
            raise ValueError(f"unknown blob fault action {action!r}")
        rule = BlobFault(action, **match)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop the fault rules (protected containers stay protected)."""
        with self._state.lock:
            self._state.rules.clear()

    def protect_container(self, name: str) -> None:
        """Put container ``name`` (exact, decoded name) under a locked time-based retention policy, as Azure
        enforces one: its existing blobs can be read and leased but not overwritten, changed or deleted,
        new blobs can still be created, and the container cannot be deleted through the Blob API."""
        if not name or "/" in name:
            raise ValueError(f"not a container name: {name!r}")
        with self._state.lock:
            self._state.protected.add(name)

    def unprotect_container(self, name: str) -> None:
        """Lift the policy again (what removing an unlocked policy through the control plane does)."""
        with self._state.lock:
            self._state.protected.discard(name)

    @property
    def protected_containers(self) -> frozenset[str]:
        with self._state.lock:
            return frozenset(self._state.protected)

    def start(self) -> "BlobFaultProxy":
        state = self._state
        handler = type("BoundHandler", (_ProxyHandler,), {"state": state})
        self._server = _ProxyServer((LOOPBACK, 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="blob-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "BlobFaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        number, rule = self.state.take(self.command, self.path)
        if rule is not None and rule.action == "hold":
            rule.held.set()
            rule.released.wait(60)
        if rule is not None and rule.action == "lose-answer":
            self._forward(number, body, answer=False)
            self._reset(number)
            return
        if rule is not None and rule.action in ("reset", "hold"):
            self._reset(number)
            return
        if rule is not None:
            status, code, message = _ERRORS[rule.action]
            self._answer_error(number, status, code, message)
            return
        target = _classify(self.command, self.path, self.headers)
        if target is None or not self.state.is_protected(target.container):
            self._forward(number, body)
        elif target.operation == "delete-container":
            if self._upstream_etag(target.raw_path, {"restype": "container"}) is None:
                self._forward(number, body)  # no such container: Azurite's 404 ContainerNotFound
            else:
                self._answer_azure_error(number, *CONTAINER_LOCKED)
        else:
            with self.state.blob_lock(target.container, target.blob):
                params = {name: target.query[name] for name in ("snapshot", "versionid") if name in target.query}
                etag = self._upstream_etag(target.raw_path, params)
                if etag is None or _condition_fails(target.operation, self.headers, etag):
                    self._forward(number, body)  # a new blob, or Azurite's own 409/412 for the condition
                else:
                    self._answer_azure_error(number, *BLOB_IMMUTABLE)

    def _reset(self, number: int) -> None:
        self.state.record(number, "reset")
        # SO_LINGER 0: close with RST, the way a dropped load balancer connection looks.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _upstream_etag(self, raw_path: str, params: Mapping[str, str]) -> str | None:
        return _head_upstream(self.state.upstream_port, raw_path, params,
                              self.headers.get("x-ms-version") or "2021-12-02")

    def _answer_error(self, number: int, status: int, code: str, message: str,
                      reason: str | None = None, extra: Mapping[str, str] | None = None) -> None:
        payload = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                   f"<Message>{message}</Message></Error>").encode()
        self.state.record(number, status)
        self.send_response(status, reason)
        for name, value in (("Content-Type", "application/xml"), ("x-ms-error-code", code),
                            *(extra or {}).items(), ("Content-Length", str(len(payload)))):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _answer_azure_error(self, number: int, status: int, code: str, message: str) -> None:
        """An error as Azure Storage words it: the message as reason phrase, request id and time in the body."""
        request_id = str(uuid.uuid4())
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        extra = {"x-ms-request-id": request_id}
        for echoed in ("x-ms-client-request-id", "x-ms-version"):
            if self.headers.get(echoed) is not None:
                extra[echoed] = self.headers[echoed]
        self._answer_error(number, status, code, f"{message}\nRequestId:{request_id}\nTime:{now}", message, extra)

    def _forward(self, number: int, body: bytes, answer: bool = True) -> None:
        upstream = http.client.HTTPConnection(LOOPBACK, self.state.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
            headers["Host"] = f"{LOOPBACK}:{self.state.upstream_port}"
            upstream.request(self.command, self.path, body=body if body else None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.state.record(number, response.status)
            if not answer:
                return
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            elif response.getheader("Content-Length") is not None:
                self.send_header("Content-Length", response.getheader("Content-Length"))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle
