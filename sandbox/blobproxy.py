"""A fault-injecting HTTP proxy in front of Azurite, for testing what Blob faults do to an export.

It forwards every request to Azurite unchanged (Shared Key signatures cover the account and path,
not the port, so they stay valid) and, when a rule matches, answers 503/500 in Azure Storage's own
error shape or resets the connection instead of forwarding.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from .server import LOOPBACK

_ERRORS = {
    "503": (503, "ServerBusy", "The server is busy."),
    "500": (500, "InternalError", "The server encountered an internal error. Please retry the request."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class BlobFault:
    """Answer matching requests with ``action`` ("reset", "503" or "500"), ``count`` times (None: always)."""

    action: str
    method: str | None = None
    query_contains: str | None = None
    path_contains: str | None = None
    request: int | None = None
    count: int | None = 1
    fired: int = 0

    def matches(self, number: int, method: str, target: str) -> bool:
        path, _, query = target.partition("?")
        return ((self.count is None or self.fired < self.count)
                and (self.request is None or self.request == number)
                and (self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path)
                and (self.query_contains is None or self.query_contains in query))


@dataclass
class _State:
    upstream_port: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    rules: list[BlobFault] = field(default_factory=list)
    requests: list[tuple[int, str, str, object]] = field(default_factory=list)

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

    def __init__(self, azurite: Azurite) -> None:
        if azurite.port is None or azurite.tls is not None:
            raise ValueError("start a plain-HTTP Azurite before its proxy")
        self._state = _State(azurite.port)
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
        if action not in ("reset", *_ERRORS):
            raise ValueError(f"unknown blob fault action {action!r}")
        rule = BlobFault(action, **match)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._state.lock:
            self._state.rules.clear()

    def start(self) -> "BlobFaultProxy":
        state = self._state
        handler = type("BoundHandler", (_ProxyHandler,), {"state": state})
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._server.daemon_threads = True
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
        if rule is not None and rule.action == "reset":
            self.state.record(number, "reset")
            # SO_LINGER 0: close with RST, the way a dropped load balancer connection looks.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if rule is not None:
            status, code, message = _ERRORS[rule.action]
            payload = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                       f"<Message>{message}</Message></Error>").encode()
            self.state.record(number, status)
            self.send_response(status)
            for name, value in (("Content-Type", "application/xml"), ("x-ms-error-code", code),
                                ("Content-Length", str(len(payload)))):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(LOOPBACK, self.state.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
            headers["Host"] = f"{LOOPBACK}:{self.state.upstream_port}"
            upstream.request(self.command, self.path, body=body if body else None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.state.record(number, response.status)
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
