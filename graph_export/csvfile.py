"""The CSV copy of an export: one row per user, columns in USER_PROPERTIES order, RFC 4180.

For analysts who open the export in Excel or pandas. Values keep their meaning across the format
change: ``null`` is an empty cell, booleans are ``true``/``false``, arrays and objects
(``businessPhones``, ``onPremisesExtensionAttributes``) are their compact JSON text in one cell.

A cell a spreadsheet would run as a formula (text starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return) gets a leading apostrophe, as OWASP's CSV injection guidance says: spreadsheet
programs show it as the text it is (and hide the apostrophe), so a user named ``=HYPERLINK(…)``
never becomes a live link. Readers that want the exact text strip that one apostrophe.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

#: What makes a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Excel reads a UTF-8 file as UTF-8 only when it starts with this (CSV_EXCEL=true).
UTF8_BOM = "\ufeff"


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
        return text.getvalue().encode("utf-8")


def cell(value: Any) -> str:
    """One value as the text of its cell."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode("utf-8")
    if not isinstance(value, str):
        return str(value)  # a number: never a formula, whatever its sign
    return "'" + value if value.startswith(FORMULA_STARTS) else value
