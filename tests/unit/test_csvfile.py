"""The CSV copy: what Python's csv module reads back is exactly what was exported, formulas defused."""

from __future__ import annotations

import csv
import io
import json
import unicodedata

import pytest

from graph_export.csvfile import REPLACEMENT, CsvEncoder, cell, read_cell

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


FORMULA = ("=", "+", "-", "@")
#: What may stand before a formula's first character: whitespace, controls (OWASP's tab/CR/LF, ASVS's NUL),
#: Unicode spaces and invisible format characters.
LEADS = ["", " ", "  ", "\t", "\r", "\n", "\r\n", "\x00", " \t", "\x0b", "\x0c", "\x1f", "\x7f", "\x85", "\xa0",
         "\u2028", "\u3000", "\u200b", "\ufeff", "\u200e"]
HOSTILE = [
    *(lead + start + "1+1" for lead in LEADS for start in FORMULA),
    '=HYPERLINK("http://evil.example","click")', "=cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3", "+1", "-", "=",
    "'", "''", "'''", "'=1+1", "''=1", "'plain", " '=1+1", "\t'x", "'\t=1",
    "", " ", "\t", "\r", "\n", "\x00", "\r\n", "\t TAB first", "\rCR first", "\nLF first", "\x00NUL first",
    'say "hi"', '"=1+1"', '"', '""', "a,b", ",=1+1", "a;=1+1", "line1\r\nline2", "line1\n=2", "x\r@SUM(1)",
    "Zoë Müller 李", "😀", "＝1+1", "\u2028", "1", "-1", "0.5", "true", "[1]", "{}", "plain text",
]
#: Lone surrogates: each becomes U+FFFD in a text cell (the documented replacement).
SURROGATES = ["\ud83d", "x\udc00y", "=\ud83d", "\ud83d=1+1", "'\ude00", "\ude00\ud83d", " \ud83d"]
PLAIN = ["plain", "Zoë", "a,b", 'say "hi"', "1", "", " leading space", "(555) 0100", "#tag", "%20", "/path",
         "O'Brien", "it's", "a=b", "a-b", "a@b.c", "a+b", "＝1+1"]


def skip_lead(text: str) -> str:
    """The text after any leading whitespace, control and format characters (what a formula may hide behind)."""
    i = 0
    while i < len(text) and (text[i].isspace() or unicodedata.category(text[i]) in ("Cc", "Cf")):
        i += 1
    return text[i:]


def test_hostile_values_read_back_exactly_and_none_is_ever_a_formula():
    values = HOSTILE + SURROGATES
    users = [{"id": str(i), "displayName": v, "mail": v} for i, v in enumerate(values)]
    encoder = CsvEncoder(("id", "displayName", "mail"))
    rows = read_back(encoder.header() + encoder.rows(users))
    assert rows[0] == ["id", "displayName", "mail"] and len(rows) == len(values) + 1
    for i, (value, (uid, display_name, mail)) in enumerate(zip(values, rows[1:], strict=True)):
        assert uid == str(i)  # one row per user: no value broke out of its cell or row
        expected = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)  # the documented one
        assert read_cell(display_name) == read_cell(mail) == expected, value
        for written in (display_name, mail):
            assert not skip_lead(written).startswith(FORMULA), (value, written)  # never runs as a formula
            assert not written.startswith(("\t", "\r", "\n", "\x00")), (value, written)  # OWASP's and ASVS's
            assert written.startswith("'") == (written != expected), (value, written)  # prefixed: one more


def test_ordinary_text_is_written_as_it_is():
    assert [cell(v) for v in PLAIN] == PLAIN


@pytest.mark.parametrize("value, written", [
    ("=1+1", "'=1+1"), ("'=1+1", "''=1+1"), ("'", "''"), ("''=1", "'''=1"), (" =1+1", "' =1+1"),
    ("\t=cmd", "'\t=cmd"), ("\r@SUM(1)", "'\r@SUM(1)"), ("\tplain", "'\tplain"), ("\nx", "'\nx"),
    ("\x00x", "'\x00x"), (" plain", " plain"), ("\u200b-1", "'\u200b-1"), ("\xa0@x", "'\xa0@x"),
], ids=repr)
def test_the_apostrophe_rule(value, written):
    assert cell(value) == written and read_cell(written) == value


def test_numbers_are_not_text_cells():
    assert [cell(-1), cell(-0.5), cell(1e-7), cell(-(2**63))] == ["-1", "-0.5", "1e-07", str(-(2**63))]
    assert cell("-1") == "'-1"  # the text "-1" is text, though


def test_a_lone_surrogate_never_stops_the_csv_and_arrays_keep_its_exact_escape():
    encoder = CsvEncoder(("id", "displayName", "businessPhones", "onPremisesExtensionAttributes"))
    data = encoder.rows([{"id": "1", "displayName": "Ann \ud83d", "businessPhones": ["\ud83d", "=1"],
                          "onPremisesExtensionAttributes": {"extensionAttribute1": "x\udc00"}}])
    [row] = read_back(data)
    assert row[1] == "Ann \ufffd"
    assert row[2] == '["\\ud83d","=1"]' and json.loads(row[2]) == ["\ud83d", "=1"]  # JSON text: the exact value
    assert json.loads(row[3]) == {"extensionAttribute1": "x\udc00"}
