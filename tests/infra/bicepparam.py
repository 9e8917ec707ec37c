"""main.bicepparam's `param` lines, evaluated as Bicep does for the forms this project writes: a literal, or a
GRAPH_EXPORT_* variable read by readEnvironmentVariable with a fallback, taken as a string, as a bool
(`... == 'true'`) or as an int (`int(...)`).

Standard library only: the fake az (fake_az.py, run by .venv-iac's Python) and the tests both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

_LINE = re.compile(
    r"^param (?P<name>\w+) = (?:(?P<int>int\()?readEnvironmentVariable\('(?P<variable>\w+)', '(?P<fallback>[^']*)'\)\)?"
    r"(?P<bool> == 'true')?|'(?P<text>[^']*)'|(?P<number>-?\d+)|(?P<flag>true|false))\s*$")


@dataclass(frozen=True)
class Param:
    """One `param NAME = ...` line: the variable it reads (None for a literal) and how its text becomes a value."""

    name: str
    variable: str | None
    fallback: str  # the text used without the variable (a literal's own text)
    kind: str  # string | bool | int

    def value(self, env: Mapping[str, str]) -> str | bool | int:
        """The parameter's value with these variables set; ValueError where Bicep's int() would fail."""
        text = env.get(self.variable, self.fallback) if self.variable else self.fallback
        if self.kind == "int":
            if not re.fullmatch(r"-?[0-9]+", text.strip()):
                raise ValueError(f"The template function 'int' failed: could not convert '{text}' to an integer.")
            return int(text)
        return text == "true" if self.kind == "bool" else text


def params(text: str) -> dict[str, Param]:
    """The lines of a parameter file this module understands, by name; ValueError for a name assigned twice."""
    found: dict[str, Param] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        if match["name"] in found:
            raise ValueError(f"The parameter \"{match['name']}\" is assigned multiple times.")
        if match["variable"]:
            kind = "int" if match["int"] else "bool" if match["bool"] else "string"
            found[match["name"]] = Param(match["name"], match["variable"], match["fallback"], kind)
        elif match["text"] is not None:
            found[match["name"]] = Param(match["name"], None, match["text"], "string")
        else:
            kind = "int" if match["number"] else "bool"
            found[match["name"]] = Param(match["name"], None, match["number"] or match["flag"], kind)
    return found
