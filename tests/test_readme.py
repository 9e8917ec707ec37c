"""The README's settings table and commands are part of the contract: keep them true."""

from __future__ import annotations

import re
from pathlib import Path

from graph_export.settings import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def settings_table() -> dict[str, tuple[str, str]]:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Za-z0-9_]+)` \| ([^|]+) \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2).strip(), match.group(3).strip())
    return rows


def test_readme_documents_every_setting_with_its_default():
    table = settings_table()
    assert set(table) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        required, default = table[setting.name]
        assert required.startswith("yes") == setting.required, setting.name
        assert default == (f"`{setting.default}`" if setting.default else "—"), setting.name


def test_readme_describes_every_setting_as_settings_py_does():
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for setting in SETTINGS:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{setting.name}` |"))
        assert row.split(" | ", 3)[3].removesuffix(" |") == setting.description, setting.name
    user_properties = next(s for s in SETTINGS if s.name == "USER_PROPERTIES")
    assert "resolved to Graph's spelling" in user_properties.description


def test_readme_set_up_is_the_two_make_commands():
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", setup, flags=re.M)
    assert commands == ["make demo", "make test"]
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
