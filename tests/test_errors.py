"""The shared helpers of errors.py: service text cut at a word boundary, and why a connection failed."""

from __future__ import annotations

import pytest

from graph_export.errors import first_line


def test_first_line_keeps_short_text_and_only_its_first_line():
    assert first_line("AADSTS90002: Tenant 'x' not found.\r\nTrace ID: 1") == "AADSTS90002: Tenant 'x' not found."
    assert first_line("  ") == first_line(None) == "no detail"


@pytest.mark.parametrize("text, limit, expected", [
    ("The resource principal named https://graph.microsoft.us was not found", 40,
     "The resource principal named\u2026"),
    ("one two three", 12, "one two\u2026"),
    ("one two, three", 12, "one two\u2026"),          # no dangling comma before the ellipsis
    ("one two three", 8, "one two\u2026"),            # the cut falls exactly on a space
    ("averyveryverylongword and more", 10, "averyvery\u2026"),  # one long word: cut, still bounded
])
def test_first_line_cuts_long_text_at_a_word_boundary_with_an_ellipsis(text, limit, expected):
    assert first_line(text, limit) == expected and len(expected) <= limit
