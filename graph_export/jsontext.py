"""JSON text in and out, orjson first, for every value JSON text can hold, lone surrogates included.

RFC 8259 (section 8.2) allows a string escape that is an unpaired UTF-16 surrogate, e.g.
``"\\ud83d"`` with no low half after it: the text is valid JSON, but the string it names is not valid
Unicode. Graph sends what was stored, so one user with such a ``displayName`` must not stop an export.
orjson refuses such strings both ways, so each function here tries orjson first (the fast path, taken
by every page and line that has none) and falls back only when orjson refuses:

- :func:`loads` falls back to the standard library's parser, set up to agree with orjson on every other
  value (same numbers, same refusals), so a user's value never depends on which path parsed its page.
  The lone surrogate becomes a lone surrogate code point in the ``str``. Text that is not JSON raises
  ``orjson.JSONDecodeError`` (a ``ValueError``), orjson's own error, whichever path was tried last.
- :func:`dumps_line` gives orjson's compact UTF-8 bytes with each lone surrogate written back as its
  escape (lowercase hex, as orjson and ``json`` write escapes: ``"\\uD83D"`` from Graph comes back as
  ``"\\ud83d"``, the same value). Everything else on the line is orjson's own output, byte for byte:
  the strings without surrogates go back through orjson (``orjson.Fragment``), so floats, integers,
  non-ASCII, control characters and ``\\u2028`` are written exactly as on the fast path.

The values are those JSON parsing gives: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
``float``, ``bool``, ``None``. Known differences of the fallback, none of which a Graph user reaches:

- nesting deeper than the interpreter's recursion limit (about 1,000 levels; orjson allows 1,024)
  fails in the fallback parser: a page that is that deep *and* holds a lone surrogate is refused;
- ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`` is *not* what the fallback uses, as it
  differs from orjson: ``1e-07`` where orjson writes ``1e-7`` (floats below 1e-4 in exponent form).
  Both agree on ints, other floats, non-ASCII (raw UTF-8), control characters (``\\n``-style short
  escapes and ``\\u00XX`` lowercase, DEL and C1 controls raw), ``\\u2028``/``\\u2029`` (raw) and ``/``.

Both libraries take integers outside [-2**63, 2**64) as floats on the way in (orjson's behaviour,
kept by the fallback), and neither accepts ``NaN``/``Infinity`` or a number too large for a double.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

#: An escape that names a UTF-16 surrogate (paired or not), in JSON text as bytes or str, or a
#: surrogate code point itself in a str: only text with one of these can need the fallback parser.
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_OR_CODE_POINT = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")
#: One surrogate code point, captured, to split a str around it.
_SURROGATE = re.compile("([\ud800-\udfff])")

_INT_MIN, _INT_END = -(2**63), 2**64  # what orjson parses as an int; other integers become floats


def loads(data: bytes | bytearray | str) -> Any:
    """The value of one JSON text, lone surrogate escapes included; ``JSONDecodeError`` if it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as refused:
        if isinstance(data, str):
            if _SURROGATE_ESCAPE_OR_CODE_POINT.search(data) is None:
                raise
            text = data
        else:
            if _SURROGATE_ESCAPE_BYTES.search(data) is None:
                raise
            try:
                text = data.decode("utf-8")  # strict: bytes that are not UTF-8 stay refused
            except UnicodeDecodeError:
                raise refused from None
        try:
            return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
        except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
            raise refused from None


def dumps_line(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON (orjson's bytes), a lone surrogate written as its ``\\udXXX`` escape."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        # Only a str with a surrogate is rebuilt; any other refusal (an unsupported type, a non-str
        # key) comes back from orjson again, unchanged.
        return orjson.dumps(_escaped(obj))


def _escaped(value: Any) -> Any:
    """``value`` with each str that holds a surrogate replaced by its JSON text (an orjson.Fragment)."""
    if isinstance(value, str):
        return orjson.Fragment(_string(value)) if _SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, dict):
        if any(isinstance(key, str) and _SURROGATE.search(key) for key in value):
            # A key cannot be a Fragment: this object is written here, its values by orjson.
            members = (_key(key) + b":" + orjson.dumps(_escaped(item)) for key, item in value.items())
            return orjson.Fragment(b"{" + b",".join(members) + b"}")
        return {key: _escaped(item) for key, item in value.items()}
    return value


def _key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise orjson.JSONEncodeError("Dict key must be str")  # what orjson says of such a key
    return _string(key)


def _string(text: str) -> bytes:
    """A str as JSON string text: orjson's escaping, each surrogate code point as a ``\\udXXX`` escape."""
    parts = _SURROGATE.split(text)  # odd positions: one surrogate each
    return b'"' + b"".join(
        b"\\u%04x" % ord(part) if i % 2 else orjson.dumps(part)[1:-1] for i, part in enumerate(parts)
    ) + b'"'


def _int(text: str) -> int | float:
    number = int(text)
    return number if _INT_MIN <= number < _INT_END else _float(text)


def _float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError("number is infinity when parsed as double")
    return number


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
