"""Every Bicep file parses with pycep-parser (the parser checkov uses), and the parameter file fits main.bicep.

No Bicep compiler exists on these machines, so this is the syntax check: keep infra/ to syntax that
pycep-parser 0.5.x accepts (no @export(), no user-defined types).
"""

from __future__ import annotations

import re

import pytest

from .bicep_helpers import INFRA, bicep_files

FILES = [str(p.relative_to(INFRA)) for p in bicep_files()]


def test_the_expected_files_exist():
    assert "main.bicep" in FILES
    assert (INFRA / "main.bicepparam").is_file()
    assert any(f.startswith("modules/") for f in FILES), "main.bicep is split into modules under infra/modules/"


@pytest.mark.parametrize("path", FILES)
def test_parses(parsed_bicep, path):
    result = parsed_bicep[path]
    assert result["ok"], f"{path}: {result.get('error')}"


def test_every_module_reference_resolves(bicep):
    for path, doc in bicep.items():
        for name, module in doc.get("modules", {}).items():
            assert module["type"] == "local", f"{path}: module {name} must be a local file (checkov skips registry modules)"
            target = (INFRA / path).parent / module["detail"]["path"]
            assert target.is_file(), f"{path}: module {name} points at missing {target}"
            assert str(target.resolve().relative_to(INFRA.resolve())) in bicep, f"{target} was not parsed"


def _bicepparam() -> tuple[str, dict[str, str]]:
    text = (INFRA / "main.bicepparam").read_text()
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    using = re.search(r"^\s*using\s+'([^']+)'", code, re.M)
    params = dict(re.findall(r"^\s*param\s+(\w+)\s*=\s*(.+?)\s*$", code, re.M))
    return (using.group(1) if using else ""), params


def test_bicepparam_uses_main_and_only_declared_params(bicep):
    using, params = _bicepparam()
    assert using == "./main.bicep"
    declared = bicep["main.bicep"]["parameters"]
    unknown = set(params) - set(declared)
    assert not unknown, f"main.bicepparam sets parameters main.bicep does not declare: {sorted(unknown)}"
    required = {name for name, p in declared.items() if "default" not in p}
    missing = required - set(params)
    assert not missing, f"main.bicepparam must give every parameter without a default: {sorted(missing)}"


def test_bicepparam_takes_the_client_id_from_the_environment():
    _, params = _bicepparam()
    assert params["clientId"].startswith("readEnvironmentVariable('GRAPH_EXPORT_CLIENT_ID'")
