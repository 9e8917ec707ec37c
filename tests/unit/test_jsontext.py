"""jsontext: orjson first; lone surrogate escapes (valid JSON, RFC 8259 8.2) parsed and written back exactly."""

from __future__ import annotations

import json

import orjson
import pytest

from graph_export import jsontext

#: Ordinary values that could come out differently from two encoders or parsers.
ORDINARY = [
    0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 0.1, 1e16, 1e15, 1e-7, 1e-4, 5e-324, 1.7976931348623157e308,
    123456789012345680000.0, True, False, None, "", "plain", "Zoë Müller 李 😀", "\x00\x01\x1f\x7f\x80\x9f",
    "\b\f\n\r\t", '"\\/', "\u2028\u2029", "\ufeff\ufffd", [], {}, [1, "a", None, [2.5]], {"k": {"n": [True]}},
]
#: JSON texts (no surrogates) the fallback parser must read exactly as orjson does, or refuse as it does.
TEXTS = [b"0", b"-0", b"-0.0", b"1e2", b"1E-400", b"18446744073709551615", b"18446744073709551616",
         b"-9223372036854775809", b"1" * 30, b"0.1", b"1e-7", b'{"a":1,"a":2}', b'"\\u00e9\\u2028\\/"',
         b'"\\ud83d\\ude00"', b"[]", b' {"x" : [ true , null ] } ']
REFUSED = [b"<html>", b"", b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b"1" * 400, b"[1,]", b"{'a':1}",
           b'"\x01"', b"\xef\xbb\xbf{}", b'"\xff"', b"[" * 2000 + b"]" * 2000]


def fallback_loads(text: bytes):
    """What jsontext.loads gives when orjson refuses: the page below also holds a lone surrogate escape."""
    page = jsontext.loads(b'[' + text + b',"\\ud83d"]')
    assert page[1] == "\ud83d"
    return page[0]


@pytest.mark.parametrize("text", TEXTS, ids=repr)
def test_the_fallback_parser_reads_ordinary_json_exactly_as_orjson(text):
    expected, got = orjson.loads(text), fallback_loads(text)
    assert got == expected and type(got) is type(expected) and repr(got) == repr(expected)


@pytest.mark.parametrize("text", REFUSED, ids=lambda t: repr(t[:12]))
def test_what_is_not_json_is_refused_on_both_paths_with_a_value_error(text):
    with pytest.raises(ValueError):
        jsontext.loads(text)
    with pytest.raises(ValueError):  # the fallback (a lone surrogate escape is also present) refuses too
        jsontext.loads(b'["\\ud83d",' + text + b"]")
    with pytest.raises(jsontext.JSONDecodeError):
        jsontext.loads(text)


@pytest.mark.parametrize("escape, value", [("\\ud83d", "\ud83d"), ("\\uD83D", "\ud83d"), ("\\udc00", "\udc00"),
                                           ("\\ude00\\ud83d", "\ude00\ud83d"), ("x\\ud800y", "x\ud800y")])
def test_lone_surrogate_escapes_are_parsed_and_written_back_as_the_same_escape(escape, value):
    line = f'{{"id":"1","displayName":"{escape}","n":1e-7}}'.encode()
    user = jsontext.loads(line)
    assert user == {"id": "1", "displayName": value, "n": 1e-7}
    assert jsontext.loads(line.decode()) == user  # str in works the same
    assert jsontext.dumps_line(user) == line.replace(escape.encode(), escape.lower().encode())
    assert json.loads(jsontext.dumps_line(user)) == user  # what any JSON reader gets back


def test_a_str_holding_a_surrogate_code_point_parses_like_its_escape():
    assert jsontext.loads('{"a":"\ud83d"}') == {"a": "\ud83d"}


def test_bytes_that_are_not_utf8_stay_refused_even_with_a_surrogate_escape():
    with pytest.raises(ValueError):
        jsontext.loads(b'["\\ud83d","\xed\xa0\xbd"]')  # a surrogate encoded as UTF-8 bytes is not UTF-8


@pytest.mark.parametrize("value", ORDINARY, ids=repr)
def test_a_line_with_a_surrogate_is_orjsons_line_byte_for_byte_around_the_escape(value):
    with_surrogate = {"id": "1", "value": value, "list": [value, "a\ud83d\n"], "obj": {"k": value}}
    placeholder = {"id": "1", "value": value, "list": [value, "a\ue000\n"], "obj": {"k": value}}
    expected = orjson.dumps(placeholder).replace("\ue000".encode(), b"\\ud83d")
    assert jsontext.dumps_line(with_surrogate) == expected
    assert jsontext.dumps_line(placeholder) == orjson.dumps(placeholder)  # the fast path is orjson itself


def test_a_surrogate_in_a_key_is_written_as_its_escape_too():
    assert jsontext.dumps_line({"\ud83d": ["\udc00", 1e-7], "b": None}) == b'{"\\ud83d":["\\udc00",1e-7],"b":null}'


def test_what_orjson_refuses_for_another_reason_is_still_refused():
    with pytest.raises(TypeError):
        jsontext.dumps_line({1: "\ud83d"})
    with pytest.raises(TypeError):
        jsontext.dumps_line({"a": object()})


def test_json_dumps_is_not_orjson_for_small_floats_which_is_why_the_fallback_is_orjson_too():
    # Documented in jsontext: the stdlib writes 1e-07, orjson 1e-7; everything else in ORDINARY agrees.
    stdlib = [json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode() for v in ORDINARY]
    differ = [v for v, s in zip(ORDINARY, stdlib, strict=True) if s != orjson.dumps(v)]
    assert differ == [1e-7]
