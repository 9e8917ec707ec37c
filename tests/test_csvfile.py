"""The CSV copy: what Python's csv module reads back is exactly what was exported, formulas defused."""

from __future__ import annotations

import csv
import io
import json

import pytest

from graph_export.csvfile import CsvEncoder, cell

PROPS = ("id", "displayName", "businessPhones", "accountEnabled", "mail", "onPremisesExtensionAttributes")
USERS = [
    {"id": "1", "displayName": "Zoë Müller 李", "businessPhones": ["+1 425 555 0100"], "accountEnabled": True,
     "mail": None, "onPremisesExtensionAttributes": {"extensionAttribute1": "a,b"}},
    {"id": "2", "displayName": 'Say "hi",\tthen\r\nleave', "businessPhones": [], "accountEnabled": False,
     "mail": "o'brien@contoso.com", "onPremisesExtensionAttributes": None},
    {"id": "3", "displayName": "=HYPERLINK(\"http://evil.example\",\"click\")", "businessPhones": [],
     "accountEnabled": None, "mail": "@everyone", "onPremisesExtensionAttributes": None},
    {"id": "4", "displayName": "+SUM(A1:A9)", "businessPhones": [], "accountEnabled": True, "mail": "-2+3",
     "onPremisesExtensionAttributes": None},
    {"id": "5", "displayName": "\tTAB first", "businessPhones": [], "accountEnabled": True, "mail": "\rCR first",
     "onPremisesExtensionAttributes": None},
]


def read_back(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    assert "\r\n" in text  # RFC 4180 line ends
    return list(csv.reader(io.StringIO(text, newline="")))


def test_values_read_back_exactly_with_a_header_in_property_order():
    encoder = CsvEncoder(PROPS)
    rows = read_back(encoder.header() + encoder.rows(USERS))
    assert rows[0] == list(PROPS)
    first, second = rows[1], rows[2]
    assert first == ["1", "Zoë Müller 李", '["+1 425 555 0100"]', "true", "", '{"extensionAttribute1":"a,b"}']
    assert json.loads(first[2]) == USERS[0]["businessPhones"] and json.loads(first[5]) == {"extensionAttribute1": "a,b"}
    assert second == ["2", 'Say "hi",\tthen\r\nleave', "[]", "false", "o'brien@contoso.com", ""]


@pytest.mark.parametrize("index, column", [(3, 1), (3, 4), (4, 1), (4, 4), (5, 1), (5, 4)])
def test_formula_looking_text_is_shown_as_text(index, column):
    encoder = CsvEncoder(PROPS)
    rows = read_back(encoder.header() + encoder.rows(USERS))
    value = rows[index][column]
    original = USERS[index - 1][PROPS[column]]
    assert value == "'" + original  # a leading apostrophe: spreadsheets show the text, never run it
    assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_the_byte_order_mark_only_for_excel():
    assert CsvEncoder(PROPS, excel=True).header().startswith("\ufeff".encode())
    assert not CsvEncoder(PROPS).header().startswith("\ufeff".encode())


def test_cells():
    assert [cell(None), cell(True), cell(False), cell(0), cell(3.5), cell("plain")] == ["", "true", "false", "0", "3.5",
                                                                                       "plain"]
    assert cell(-1) == "-1"  # numbers are numbers, not formulas
