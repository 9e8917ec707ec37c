"""The CSV copy of an export: one row per user, columns in USER_PROPERTIES order, RFC 4180.

For analysts who open the export in Excel or pandas. Values keep their meaning across the format
change: ``null`` is an empty cell, booleans are ``true``/``false``, numbers are their digits, arrays and
objects (``businessPhones``, ``onPremisesExtensionAttributes``) are their compact JSON text in one cell.

**The apostrophe rule** (stated the same way in the README, "The CSV copy"). A text value is written
with one extra apostrophe (``'``) in front when it starts with an apostrophe, when it starts with a
control character (tab, CR, LF, NUL or any other of Unicode category Cc), or when its first character
after any leading whitespace, control and format characters (``str.isspace()``, Unicode categories Cc
and Cf) is ``=``, ``+``, ``-`` or ``@``. Every other cell is written as it is, and no other cell starts
with an apostrophe (numbers, booleans, JSON text and empty cells never do), so a reader gets the exact
text back by removing exactly one leading apostrophe from any cell that starts with one
(:func:`read_cell`): ``=1+1`` is written ``'=1+1``, ``'=1+1`` is written ``''=1+1``, ``'`` is ``''``.
Spreadsheets read a cell that starts with an apostrophe as text, so no user-controlled value is ever
run as a formula (``=HYPERLINK(…)``, ``@SUM(…)``, ``-2+3``), however it is padded. Numbers are not text
cells: ``-1`` (a JSON number) stays ``-1``, while the text ``"-1"`` becomes ``'-1``.

This covers OWASP's CSV injection page (https://owasp.org/www-community/attacks/CSV_Injection, as of
August 2025: no cell may begin with ``=``, ``+``, ``-``, ``@``, tab, carriage return or line feed, and
a value must not be able to start a new cell through the field separator or quotes) and OWASP ASVS
5.0 requirement 1.2.10 (RFC 4180 quoting; a single quote before ``=``, ``+``, ``-``, ``@``, tab and
NUL). The field separator and quotes are handled by RFC 4180 quoting: a value holding ``,``, ``"``,
CR or LF is quoted (inner quotes doubled), so it can never begin a cell or row of its own for a reader
that splits on the comma. Not covered: a reader that splits on another character (Excel in a locale
whose list separator is ``;`` opening this comma-separated file) can see a cell begin in the middle of
a value; and full-width look-alikes (``＝`` U+FF1D, ``＋``, ``－``, ``＠``), which neither page lists,
are written as they are.

**Lone surrogates.** A string can hold an unpaired UTF-16 surrogate (valid JSON text, see
``jsontext``), which UTF-8 cannot encode: in a text cell each one is written as U+FFFD REPLACEMENT
CHARACTER (``�``), what a CSV reader can hold; inside an array or object cell the JSON text keeps its
exact ``\\udXXX`` escape. The JSON Lines file always holds the exact value.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from typing import Any

from . import jsontext

#: After optional leading whitespace, control and format characters, these make a formula.
FORMULA_STARTS = frozenset("=+-@")
#: The one character in front of a defused cell; a cell that starts with it has exactly one too many.
PREFIX = "'"
#: What a lone surrogate becomes in a text cell (UTF-8 cannot encode it).
REPLACEMENT = "\ufffd"
#: Excel reads a UTF-8 file as UTF-8 only when it starts with this (CSV_EXCEL=true).
UTF8_BOM = "\ufeff"

_SURROGATE = re.compile("[\ud800-\udfff]")
_SKIPPED = frozenset(("Cc", "Cf"))  # with str.isspace(): what may stand before a formula's first character


class CsvEncoder:
    """Users → CSV bytes (UTF-8, CRLF, quoted where RFC 4180 needs it), in the given column order."""

    def __init__(self, properties: tuple[str, ...], *, excel: bool = False) -> None:
        self.properties = properties
        self._excel = excel

    def header(self) -> bytes:
        return (UTF8_BOM if self._excel else "").encode("utf-8") + self._encode([list(self.properties)])

    def rows(self, users: list[dict[str, Any]]) -> bytes:
        properties = self.properties
        return self._encode([[cell(user.get(p)) for p in properties] for user in users])

    @staticmethod
    def _encode(rows: list[list[str]]) -> bytes:
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(rows)
        try:
            return text.getvalue().encode("utf-8")
        except UnicodeEncodeError:  # only a surrogate cannot be UTF-8: rare, so looked for only then
            return _SURROGATE.sub(REPLACEMENT, text.getvalue()).encode("utf-8")


def cell(value: Any) -> str:
    """One value as the text of its cell (a text value under the apostrophe rule; see the module)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return jsontext.dumps_line(value).decode("utf-8")
    if not isinstance(value, str):
        return str(value)  # a number: never a formula, whatever its sign
    return PREFIX + value if value and needs_prefix(value) else value


def needs_prefix(text: str) -> bool:
    """Whether a non-empty text value gets the apostrophe (the module's rule)."""
    first = text[0]
    if first.isalnum():  # most values: a letter or digit can never begin a formula
        return False
    if first == PREFIX or unicodedata.category(first) == "Cc":
        return True
    for char in text:
        if char in FORMULA_STARTS:
            return True
        if not (char.isspace() or unicodedata.category(char) in _SKIPPED):
            return False
    return False


def read_cell(text: str) -> str:
    """The text a cell was written from: one leading apostrophe removed, if it has one (the inverse of
    the rule for text values; a lone surrogate stays the U+FFFD it was written as)."""
    return text[1:] if text.startswith(PREFIX) else text
