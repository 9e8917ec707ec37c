"""Shared HTTP(S) plumbing: one threaded HTTP/1.1 server per sandbox service, on 127.0.0.1 only.

Each service (Entra, managed identity, Key Vault, Graph) is a plain object with ``handle(request) ->
Response``; this module owns sockets, TLS, keep-alive, fault injection and the request log so the
services stay small and testable. Each service gets its own port, like the real services have their
own hosts, so paths never collide and settings can point at each one separately.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Protocol
from urllib.parse import parse_qs, urlsplit

from .faults import PAGE_ACTIONS, PARTIAL_BYTES, FaultPlan, FaultRule
from .requestlog import RequestLog, RequestRecord

LOOPBACK = "127.0.0.1"
_log = logging.getLogger("sandbox")

#: Most of the real services answer JSON with this content type.
JSON = "application/json; charset=utf-8"


@dataclass
class Request:
    """What a service needs from an HTTP request: already split and parsed, body fully read."""

    method: str
    path: str                       # percent-encoded path, without the query string
    query: dict[str, list[str]]     # parsed query, keys and values decoded
    headers: Message
    body: bytes = b""
    arrived: float = field(default_factory=time.monotonic)  # when its head had been read

    def arg(self, name: str) -> str | None:
        """First value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    """A complete response; the body is already encoded so it is written with one ``sendall``.

    Or, when ``stream`` is set, a body written piece by piece as the iterable yields it (``body`` is
    then unused): with Content-Length ``length``, or chunked when ``length`` is None.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None
    length: int | None = None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None,
                  content_type: str = JSON) -> Response:
    """Encode ``payload`` compactly (non-ASCII kept as UTF-8, as the real services do)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, {"Content-Type": content_type, **(headers or {})})


class Service(Protocol):
    """What every sandbox service implements."""

    name: str

    def handle(self, request: Request) -> Response: ...

    def fault_response(self, request: Request, status: int) -> Response:
        """A real-shaped error response for ``status``, used by fault rules."""
        ...

    def page_of(self, request: Request) -> int | None:
        """Graph's page number (1 for the first) for fault rules; None for other services."""
        ...

    def tenant_of(self, request: Request) -> str | None:
        """The tenant id a request is for (Entra: its path's tenant; Graph: its token's ``tid``), for fault rules
        and the request log; None where the service has no tenants or cannot tell."""
        ...

    # Graph only: ``fault_page(request, response, rule) -> Response`` applies a page action
    # (value / repeat_user / pad / chunked / skip_next, see faults.PAGE_ACTIONS) to a normal page.


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) for the generated certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into :class:`Request`, applies faults, writes :class:`Response`."""

    protocol_version = "HTTP/1.1"   # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs
    timeout = 120                   # idle keep-alive connections are closed after this
    server: "_Server"

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib's per-request stderr line; the request log has the facts."""

    def _dispatch(self) -> None:
        arrived = time.monotonic()
        started = time.perf_counter()
        at = time.time()
        srv = self.server
        service = srv.service
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                          self.headers, body, arrived)
        number = srv.request_log.next_number(service.name)
        try:
            page = service.page_of(request)
        except Exception:  # a malformed request is the service's business, not the fault plan's
            page = None
        tenant = service.tenant_of(request)
        rule = srv.faults.take(service.name, number, split.path, page, tenant)

        response: Response | None = None
        if rule is None or rule.action != "drop":
            if rule is not None and rule.action == "delay":
                time.sleep(rule.delay_s or 0.0)
            response = self._fault(rule, request) if rule is not None and rule.action == "status" \
                else self._serve(request)
            if rule is not None and rule.action in PAGE_ACTIONS and response.status == 200:
                response = service.fault_page(request, response, rule)  # type: ignore[attr-defined]
        # Record before answering, so a client that has its response always finds it in the log.
        srv.request_log.append(RequestRecord(
            service=service.name, number=number, method=self.command, path=split.path,
            status=response.status if response is not None else None,
            fault=rule.describe() if rule is not None else None, page=page, tenant=tenant, at=at,
            duration_ms=(time.perf_counter() - started) * 1000.0))
        if response is None:
            self._drop()
        elif response.stream is not None:
            self._stream(response, rule)
        elif rule is not None and rule.action in ("stall", "cut"):
            self._send(response, partial=rule)
        else:
            self._send(response)

    def _serve(self, request: Request) -> Response:
        try:
            return self.server.service.handle(request)
        except Exception:
            # A sandbox bug: answer 500 like a broken service would, and say why on the server side.
            _log.exception("sandbox %s failed on %s %s", self.server.service.name, request.method, request.path)
            return json_response(500, {"error": {"code": "SandboxInternalError", "message": "sandbox bug"}})

    def _fault(self, rule: FaultRule, request: Request) -> Response:
        assert rule.status is not None
        response = self.server.service.fault_response(request, rule.status)
        if rule.body is not None:
            if isinstance(rule.body, (bytes, str)):
                response.body = rule.body.encode("utf-8") if isinstance(rule.body, str) else rule.body
            else:
                response.body = json.dumps(rule.body, ensure_ascii=False).encode("utf-8")
        response.headers.update(rule.headers)
        return response

    def _drop(self) -> None:
        """Close the connection without a response, like a reset load balancer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _head(self, response: Response, framing: str) -> bytes:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {formatdate(usegmt=True)}"]
        lines += [f"{k}: {v}" for k, v in response.headers.items()
                  if k.lower() not in ("content-length", "transfer-encoding")]
        lines.append(framing)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _stream(self, response: Response, rule: FaultRule | None) -> None:
        """Write a streamed body as it is produced; stop quietly when the client hangs up."""
        assert response.stream is not None
        chunked = response.length is None
        self.wfile.write(self._head(response, "Transfer-Encoding: chunked" if chunked
                                    else f"Content-Length: {response.length}"))
        if self.command == "HEAD":
            return
        sent = 0
        try:
            for piece in response.stream:
                if not piece:
                    continue
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(piece))
                    self.wfile.write(piece)
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(piece)
                sent += len(piece)
                if rule is not None:
                    rule.sent_bytes = sent
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading (reset, broken pipe, TLS shutdown, timeout)
            self.close_connection = True

    def _send(self, response: Response, partial: FaultRule | None = None) -> None:
        body = b"" if self.command == "HEAD" else response.body
        head = self._head(response, f"Content-Length: {len(response.body)}")
        if partial is None:
            self.wfile.write(head + body)
            return
        self.wfile.write(head + body[:PARTIAL_BYTES])
        if partial.action == "cut":
            self._drop()
            return
        time.sleep(partial.stall_s or 0.0)
        self.wfile.write(body[PARTIAL_BYTES:])


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with per-connection TLS handshakes and tracked connections for stop()."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, service: Service, request_log: RequestLog, faults: FaultPlan,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.service = service
        self.request_log = request_log
        self.faults = faults
        self.ssl_context = ssl_context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.connections_accepted = 0   # TCP connections that completed set-up (keep-alive checks)
        super().__init__((LOOPBACK, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread, so a slow TLS handshake never blocks accept()."""
        conn = request
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # e.g. a client that does not trust the CA: nothing to answer
        with self._conns_lock:
            self._conns.add(conn)
            self.connections_accepted += 1
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client resets and timeouts are normal here; keep stderr quiet."""
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServiceServer:
    """One service on its own loopback port, served from a background thread."""

    def __init__(self, service: Service, *, request_log: RequestLog, faults: FaultPlan,
                 ssl_context: ssl.SSLContext | None) -> None:
        self._server = _Server(service, request_log, faults, ssl_context)
        self._thread: threading.Thread | None = None
        self.scheme = "https" if ssl_context is not None else "http"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def connections_accepted(self) -> int:
        """How many client connections were accepted so far (1 per keep-alive session)."""
        return self._server.connections_accepted

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def start(self) -> "ServiceServer":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self._server.service.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket, and cut idle keep-alive connections."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()
