"""Parse Bicep files with pycep-parser and print one JSON document: {path: {"ok", "json" | "error"}}.

Run with the infrastructure virtualenv's Python (.venv-iac), which has pycep-parser (the same version
checkov uses); the app's test virtualenv does not need it. Not a test module: tests/infra/conftest.py
runs it as a subprocess.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pycep import BicepParser


def main(paths: list[str]) -> int:
    parser = BicepParser()
    results = {}
    for path in paths:
        try:
            results[path] = {"ok": True, "json": parser.parse(file_path=Path(path))}
        except Exception as exc:  # noqa: BLE001 - every failure is reported per file
            results[path] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    json.dump(results, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
