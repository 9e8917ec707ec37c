"""One small error hierarchy for everything a user can cause or fix.

Every message is a single line that says what is wrong and what to do about it. Messages never
contain the client secret or an access token: callers build them from names, URLs and service
error codes only.
"""

from __future__ import annotations

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


class AuthError(ExportError):
    """Key Vault or Entra ID refused us: missing secret, no vault access, wrong or expired secret."""

    exit_code = 3


class GraphError(ExportError):
    """Microsoft Graph refused or kept failing: missing permission/consent, throttling, outages."""

    exit_code = 4


class StorageError(ExportError):
    """The export storage account or container could not be reached or written."""

    exit_code = 5


class SlotBusyError(ExportError):
    """Another run holds the slot's lease: it is exporting the same slot right now."""

    exit_code = 6


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
