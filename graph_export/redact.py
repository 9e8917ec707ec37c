"""Credentials out of everything printed or logged: SAS signatures, Graph tokens, secrets, bearer tokens.

The libraries log what they send: urllib3's DEBUG line for each request (``"GET
/v1.0/users/delta?$deltatoken=… HTTP/1.1" 200``), its "Retrying …" warnings (with the URL), azure-core's
request lines (it redacts query values and headers outside its allow-list, but not a password in a
URL). :class:`RedactingFilter` rewrites each record before a handler prints it, whichever logger it
came from: the message (formatted first, so values passed as arguments are covered), the traceback
text and any stack text. :func:`install` puts it on the handlers that print (the CLI's stderr
handler, the Functions worker's root handler) and on the loggers that export records elsewhere.

What is redacted, as ``REDACTED`` (the word azure-core uses):

- query (or form) parameters ``sig``, ``$deltatoken``/``deltatoken``, ``$skiptoken``/``skiptoken``,
  ``code`` (right after ``?`` or ``&``), ``client_secret``, ``client_assertion``, ``assertion``, ``access_token``,
  ``refresh_token``, ``id_token``, also percent-encoded (``%24deltatoken%3D…``);
- ``SharedAccessSignature=``, ``AccountKey=`` and ``SharedAccessKey=`` values of connection strings;
- the value of an ``Authorization``/``Proxy-Authorization`` header, of ``x-ms-…`` headers that carry
  tokens or keys, and any ``Bearer …`` token;
- JSON or Python-repr fields ``"access_token": "…"`` (and the other token and secret names above);
- JWTs and anything else that starts as base64 of a JSON object (``eyJ…``: access tokens, client
  assertions), and PEM private-key blocks;
- user name and password in a URL (``https://admin:pw@host`` → ``https://REDACTED@host``).
"""

from __future__ import annotations

import logging
import re

REDACTED = "REDACTED"

#: Query and form parameters whose value is a credential or a token that continues a Graph read (and
#: ``code``, an authorization code, only right after ``?`` or ``&``).
SECRET_PARAMETERS = ("sig", "deltatoken", "skiptoken", "client_secret", "client_assertion", "assertion",
                     "access_token", "refresh_token", "id_token")
_NAMES = "|".join(re.escape(name) for name in sorted(SECRET_PARAMETERS, key=len, reverse=True))
_FIELDS = "access_token|refresh_token|id_token|client_secret|client_assertion|assertion"

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # A PEM private key, whole (RSA, EC, encrypted, PKCS#8).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     REDACTED),
    # Connection string keys: the value runs to the next ';' (a SAS holds '&' and '=').
    (re.compile(r"(?i)\b((?:SharedAccessSignature|AccountKey|SharedAccessKey)\s*=\s*)[^;\s'\"]+"),
     rf"\1{REDACTED}"),
    # name=value in a query string or form body, '?', '&', '$' and '=' possibly percent-encoded; not part of a
    # longer name.
    # ``code`` only right after ``?`` or ``&``: "error code=…" in a sentence is not an authorization code.
    (re.compile(rf"(?i)((?:(?:(?<![\w$%])|(?<=%3F)|(?<=%26))(?:\$|%24)?(?:{_NAMES})|(?<=[?&])code)(?:=|%3D))"
                rf"(?!{REDACTED}\b)"
                r"(?:(?!%26)[^&\s'\"<>;,)\]}])+"), rf"\1{REDACTED}"),
    # "access_token": "…" and 'client_secret': '…' (JSON, Python reprs).
    (re.compile(rf"(?i)([\"']?\b(?:{_FIELDS})\b[\"']?\s*:\s*)([\"'])(?!{REDACTED}\2).*?\2"), rf"\1\2{REDACTED}\2"),
    # Header values: Authorization, and x-ms-… headers that carry a token, key or signature.
    (re.compile(r"(?i)([\"']?\b(?:Proxy-)?Authorization[\"']?\s*:\s*)([\"']?)(?!REDACTED\b)[^\s\"'][^\"'\r\n]*\2"),
     rf"\1\2{REDACTED}\2"),
    (re.compile(r"(?i)([\"']?\bx-ms-[\w-]*(?:token|authorization|signature|secret|key)[\w-]*[\"']?\s*:\s*)([\"']?)"
                r"(?!REDACTED\b)[^\s\"'][^\"'\r\n]*\2"), rf"\1\2{REDACTED}\2"),
    # A bearer token (a token68 of 16 characters or more), not an auth-param (`Bearer authorization="…"`)
    # nor prose ("Bearer token authentication is not permitted …").
    (re.compile(r"(?i)\b(Bearer)\s+(?!REDACTED\b)[A-Za-z0-9\-._~+/]{16,}=*(?![A-Za-z0-9\-._~+/=\"])"),
     rf"\1 {REDACTED}"),
    # A JWT anywhere, or anything else that is base64 of a JSON object ({" → "eyJ"): tokens, assertions.
    (re.compile(r"\beyJ[A-Za-z0-9_\-.+/=]{8,}"), REDACTED),
    # User name and password in a URL: everything between :// and the last @ before the path.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]*@"), rf"\1{REDACTED}@"),
)


def redact(text: str) -> str:
    """``text`` with every credential and token described above replaced by ``REDACTED``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


#: What every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its message (formatted first), traceback text and stack text.

    The formatted message is stored back as ``msg`` with no ``args``, so every handler after this one
    prints the redacted text. The traceback is formatted once into ``exc_text``, which formatters use
    instead of formatting ``exc_info`` again.
    """
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the message: show the message alone, never the arguments
        message = f"{record.msg} (log arguments not shown: they do not fit the message)"
    record.msg, record.args = redact(message), ()
    for name, value in list(vars(record).items()):  # extra fields (telemetry's customDimensions)
        if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
            setattr(record, name, redact(value))
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Redacts each record that passes (see :func:`redact_record`); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FILTER = RedactingFilter()


def install(*loggers: logging.Logger) -> None:
    """Redact what each logger, and each of its handlers, passes on (idempotent: one filter each).

    A handler's filter sees every record that reaches that handler, from any logger below it; a
    logger's filter sees only records logged on that logger itself, before any of its handlers.
    """
    for logger in loggers:
        for owner in (logger, *logger.handlers):
            if not any(isinstance(f, RedactingFilter) for f in owner.filters):
                owner.addFilter(_FILTER)


def scrub_exception(error: BaseException) -> BaseException:
    """Redact the text of ``error`` and of the exceptions it chains to, in place; ``error`` itself.

    For an exception handed to code that prints it without our logging (the Functions worker sends
    ``str(error)`` and the formatted traceback to the host). Text lives in ``args`` (and azure-core's
    ``message``); an exception whose ``__str__`` ignores both is left as it is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
            if isinstance(message := getattr(current, "message", None), str):
                current.message = redact(message)  # type: ignore[attr-defined]  # azure-core keeps its text here too
        except (AttributeError, TypeError):  # a read-only or unusual exception type
            pass
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return error
