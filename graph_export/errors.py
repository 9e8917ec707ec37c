"""One small error hierarchy for everything a user can cause or fix.

Every message is a single line that says what is wrong and what to do about it. Messages never
contain the client secret or an access token: callers build them from names, URLs and service
error codes only.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Iterator
from urllib.parse import urlsplit


class ExportError(Exception):
    """Base class: the export could not complete; ``str(error)`` is the one line to show a human."""

    #: Process exit code used by the CLI for this kind of failure.
    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: log collectors and the CLI print exactly this.
        super().__init__(" ".join(message.split()))


class ConfigError(ExportError):
    """A setting is missing or malformed. Raised before anything outside the process is contacted."""

    exit_code = 2


class MessageRejected(ConfigError):
    """A queue message no attempt can ever process (not JSON, a tenant not in TENANT_IDS, a bad slot): it goes
    straight to the poison queue instead of being retried."""


class AuthError(ExportError):
    """Key Vault or Entra ID refused us: missing secret, no vault access, wrong or expired secret."""

    exit_code = 3


class CredentialRejectedError(AuthError):
    """Entra refused the secret or certificate itself (wrong, expired, not registered); a rotated one may fix it."""


class GraphError(ExportError):
    """Microsoft Graph refused or kept failing: missing permission/consent, throttling, outages."""

    exit_code = 4


class PageLinkRejected(GraphError):
    """Graph refused a nextLink (expired or unknown skiptoken): paging must start over."""


class PageCut(GraphError):
    """The connection broke off while a page's body was arriving; the caller only sees the second one."""

    def __init__(self, number: int, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"The connection to Graph broke off while page {number} was arriving ({reason}), twice: nothing was "
            "published; check the network path to GRAPH_ENDPOINT and run again (the export resumes from its "
            "last checkpoint)."
        )


class PageTooLarge(GraphError):
    """A page's body exceeds the most a page may hold (declared or actually sent): stopped before it is read."""

    def __init__(self, number: int, size: str, request_id: str | None, limit_bytes: int) -> None:
        where = f" (request-id {request_id})" if request_id else ""
        super().__init__(
            f"Graph page {number} is larger than the {limit_bytes // (1024 * 1024)} MiB a page of 999 users "
            f"can plausibly take ({size}): stopped before reading it into memory and nothing was published; "
            f"check GRAPH_ENDPOINT and any proxy in between, and report it to Microsoft if it persists{where}."
        )


class StorageError(ExportError):
    """The export storage account or container could not be reached or written."""

    exit_code = 5


class SlotBusyError(ExportError):
    """Another run holds the slot's lease: it is exporting the same slot right now."""

    exit_code = 6


class IncompleteExport(ExportError):
    """The snapshot holds fewer or more users than Graph counted around reading it: not published.

    Graph's ``/users/$count`` at the start and at the end of the run allow a range (with
    USER_COUNT_TOLERANCE for its eventual consistency); a snapshot outside it lost or gained users on the
    way (a page Graph or something in between dropped, a delta round that drifted).
    """

    exit_code = 8


class VerifyError(ExportError):
    """``verify``: what a consumer reads is not what was committed (a slot or ``latest.json`` FAILED)."""

    exit_code = 7


def first_line(text: str | None, limit: int = 300) -> str:
    """The first line of a service's error text, bounded, for embedding in one of our messages.

    A line longer than ``limit`` is cut at the last word boundary before it and ends in an ellipsis,
    so no word is ever shown cut in half.
    """
    lines = (text or "").strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not line:
        return "no detail"
    if len(line) <= limit:
        return line
    cut = line[: max(limit - 1, 1)]
    if line[len(cut)] != " ":  # the cut falls inside a word: drop that word
        boundary = cut.rfind(" ")
        cut = cut[:boundary] if boundary > 0 else cut
    return cut.rstrip(" ,;:-") + "\u2026"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` for a message: no user info, path, query or fragment."""
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # e.g. a bad port or IPv6 literal
        pass
    if not scheme or not host:
        return "an address that is not a URL"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme.lower()}://{host}{f':{port}' if port else ''}"[:200]


# --- why a connection failed, from anywhere in an exception chain ----------------------------------

def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it wraps, outermost first, a bounded number of levels deep.

    One step follows the first of: azure-core's ``inner_exception``, urllib3's ``reason``
    (MaxRetryError), ``__cause__``, ``__context__``, or an exception passed as the first argument
    (requests wraps urllib3's errors that way). So ``ServiceRequestError`` -> requests' ``SSLError`` ->
    urllib3's ``SSLError`` -> ``ssl.SSLCertVerificationError`` is one chain.
    """
    seen: set[int] = set()
    current: Any = exc
    while isinstance(current, BaseException) and id(current) not in seen and len(seen) < 12:
        seen.add(id(current))
        yield current
        following = [getattr(current, "inner_exception", None), getattr(current, "reason", None),
                     current.__cause__, current.__context__, current.args[0] if current.args else None]
        current = next((f for f in following if isinstance(f, BaseException) and id(f) not in seen), None)


def certificate_failure(exc: BaseException | None) -> str | None:
    """What certificate verification said (``unable to get local issuer certificate``, ``Hostname mismatch…``)
    when that is why ``exc`` happened; None otherwise. Such a failure does not heal by retrying."""
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            said = getattr(cause, "verify_message", None) or cause.reason or "certificate verify failed"
            return first_line(said, 120)
    return None


def refused_or_unresolved(exc: BaseException | None) -> str | None:
    """``the connection was refused`` or ``its name does not resolve`` when that is why ``exc`` happened.

    Either means nothing is listening at that address (a wrong setting, a service not started) rather
    than a service that is slow or busy."""
    for cause in causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return "its name does not resolve"
    return None


def request_origin(exc: BaseException | None) -> str | None:
    """The origin of the request ``exc`` failed, if it says: requests keeps the request on its exceptions,
    urllib3 the connection (``NewConnectionError.conn``) or pool (``MaxRetryError.pool``)."""
    for cause in causes(exc):
        url = getattr(getattr(cause, "request", None), "url", None)
        if isinstance(url, str) and url:
            return origin_of(url)
        # MaxRetryError keeps its pool as an attribute; NewConnectionError's ``pool`` is a deprecated alias of conn.
        for endpoint in (getattr(cause, "conn", None), vars(cause).get("pool")):
            host, port = getattr(endpoint, "host", None), getattr(endpoint, "port", None)
            if isinstance(host, str) and host:
                scheme = getattr(endpoint, "scheme", None) or (
                    "https" if type(endpoint).__name__.startswith("HTTPS") else "http")
                return origin_from(scheme, host, port)
    return None


def origin_from(scheme: str, host: str, port: object) -> str:
    """:func:`origin_of` a connection's parts, without the scheme's default port."""
    default = port == {"http": 80, "https": 443}.get(scheme)
    return origin_of(f"{scheme}://{host}{f':{port}' if isinstance(port, int) and not default else ''}")


def untrusted_certificate(service: str, origin: str, setting: str, reason: str, doing: str | None = None) -> str:
    """The sentence for a TLS certificate this machine does not trust; the caller adds what was published."""
    while_ = f" while {doing}" if doing else ""
    return (f"{service} at {origin} failed TLS certificate verification ({reason}){while_}: this machine does not "
            f"trust the certificate it presented, so it was not retried; check {setting}, and if a TLS-inspecting proxy "
            "or a private CA is in between, add its CA certificate to the PEM file REQUESTS_CA_BUNDLE names (or "
            "to the machine's trust store)")
