"""The deployment package: exactly what the function app runs (function_app.py, host.json, requirements.txt
and the graph_export package), nothing else the repository holds. It is what `infra/deploy.sh --package`
writes and publishes (git's reading of .funcignore), what Azure Functions Core Tools would publish (its own
reading of the same file), and what infra/README.md's by-hand zip command packs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"function_app.py", "host.json", "requirements.txt"}


def app_files() -> set[str]:
    """graph_export's files as a checkout has them (compiled bytecode aside) plus the top-level three."""
    found = set(TOP_LEVEL)
    for path in (REPO / "graph_export").rglob("*"):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and "__pycache__" not in relative and not relative.endswith(".pyc"):
            found.add(relative)
    return found


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> set[str]:
    if not shutil.which("git"):
        pytest.fail("git is needed: infra/deploy.sh packages what git sees", pytrace=False)
    target = tmp_path_factory.mktemp("package") / "app.zip"
    proc = subprocess.run(["bash", str(REPO / "infra" / "deploy.sh"), "--package", str(target)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={k: v for k, v in os.environ.items() if k != "FAKE_AZ_SOCKET"})
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(target) as archive:
        return set(archive.namelist())


def test_the_package_holds_the_app_and_nothing_else(package):
    assert package == app_files()
    for name in ("function_app.py", "host.json", "requirements.txt", "graph_export/__init__.py",
                 "graph_export/settings.py"):
        assert name in package
    for name in ("requirements-bench.txt", "requirements-dev.txt", "pyproject.toml", "Makefile", "README.md",
                 ".funcignore", ".gitignore", "local.settings.json.example", "package.json", "package-lock.json"):
        assert name not in package, name
    assert not [n for n in package if n.split("/")[0] in {"infra", "tests", "sandbox", "bench", "schemas", ".ci"}]


def core_tools_accepts(funcignore: str):
    """Azure Functions Core Tools' reading of .funcignore (src/Azure.Functions.Cli/Common/GitIgnoreParser.cs,
    a port of codemix/gitignore-parser): a leading '/' is dropped, each pattern is a regex anchored at the
    start of the path only, and a negated pattern that matches wins over every other."""
    def regex(pattern: str) -> str:
        escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
        return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")

    positive, negative = [], []
    for line in funcignore.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        target = negative if line.startswith("!") else positive
        line = line.lstrip("!")
        target.append(regex(line[1:] if line.startswith("/") else line))

    def compiled(patterns: list[str]) -> re.Pattern[str]:
        return re.compile("^((" + ")|(".join(sorted(patterns)) + "))") if patterns else re.compile("$^")

    denied, allowed = compiled(positive), compiled(negative)
    return lambda path: bool(allowed.match(path)) or not denied.match(path)


def test_core_tools_would_publish_the_same_files():
    accepts = core_tools_accepts((REPO / ".funcignore").read_text())
    published = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in {".git", ".vscode"}]  # Core Tools never packs these
        for name in files:
            relative = (Path(root) / name).relative_to(REPO).as_posix()
            if name not in {".funcignore", ".gitignore", "local.settings.json"} and accepts(relative):
                published.add(relative)
    # Core Tools cannot leave out compiled bytecode inside an allowed directory; the remote build ignores it.
    assert {n for n in published if "__pycache__" not in n} == app_files()


def test_the_by_hand_zip_command_packs_the_same_files(package, tmp_path):
    """infra/README.md step 5 zips by name; it must pack what deploy.sh publishes."""
    readme = (REPO / "infra" / "README.md").read_text()
    [command] = re.findall(r"^zip -r app\.zip .*$", readme, re.M)
    target = tmp_path / "app.zip"
    subprocess.run(command.replace("app.zip", str(target), 1), shell=True, cwd=REPO, check=True,
                   capture_output=True)
    with zipfile.ZipFile(target) as archive:
        zipped = {n for n in archive.namelist() if not n.endswith("/")}
    assert zipped == package
