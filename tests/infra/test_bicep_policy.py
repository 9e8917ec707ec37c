"""checkov's Bicep checks: 0 failed. A check that does not fit may be skipped only inline, inside the
resource, with `// checkov:skip=CKV_AZURE_xx: reason`; the skips are printed with every run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from .bicep_helpers import INFRA, REPO, iac_tool

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::(?P<reason>.*))?$")


@pytest.fixture(scope="module")
def checkov_report():
    checkov = iac_tool("checkov")
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # no network: no policy metadata download
    started = time.monotonic()
    proc = subprocess.run(
        [str(checkov), "--framework", "bicep", "--skip-download", "-d", str(INFRA), "-o", "json"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env, check=False,
    )
    elapsed = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}",
                    pytrace=False)
    if isinstance(report, list):  # one report per framework; only bicep was asked for
        report = next(r for r in report if r.get("check_type") == "bicep")
    return report, elapsed


def _inline_skips() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line.strip())
            if match:
                found.append((str(path.relative_to(INFRA)), number, match["id"], (match["reason"] or "").strip()))
    return found


def test_checkov_reports_no_failed_checks(checkov_report, capsys):
    report, elapsed = checkov_report
    summary = report["summary"]
    results = report["results"]
    skipped = results.get("skipped_checks", [])
    with capsys.disabled():
        print(f"\ncheckov {summary.get('checkov_version')} on infra/ in {elapsed:.1f}s: "
              f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped (inline)")
        for check in skipped:
            print(f"  skip {check['check_id']} {check['resource']} ({check['file_path'].lstrip('/')}):"
                  f"{check['check_result'].get('suppress_comment', '')}")
    assert summary["parsing_errors"] == 0, f"checkov could not parse: {results.get('parsing_errors')}"
    failed = [f"{c['check_id']} {c['check_name']} — {c['resource']} ({c['file_path']}:{c['file_line_range']})"
              for c in results.get("failed_checks", [])]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["passed"] > 0, "checkov evaluated nothing: is infra/ empty or unparseable?"


def test_checkov_evaluated_every_security_relevant_resource(checkov_report):
    report, _ = checkov_report
    checked = {c["resource"].rsplit(".", 1)[0] for kind in ("passed_checks", "skipped_checks")
               for c in report["results"].get(kind, [])}
    for rtype in ("Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", "Microsoft.Web/sites"):
        assert rtype in checked, f"checkov ran no check on {rtype}"


def test_every_skip_is_inline_with_a_reason_and_counted(checkov_report):
    report, _ = checkov_report
    skips = _inline_skips()
    short = [f"{p}:{n} {cid}" for p, n, cid, reason in skips if len(reason) < 20]
    assert not short, f"checkov skips need a real one-line reason: {short}"
    skipped = report["results"].get("skipped_checks", [])
    assert len(skipped) == report["summary"]["skipped"]
    # Each comment suppresses exactly one check on one resource: a comment outside a resource block
    # (which checkov ignores) or a blanket skip would make these numbers differ.
    assert sorted(c["check_id"] for c in skipped) == sorted(cid for _, _, cid, _ in skips)
    for check in skipped:
        assert check["check_result"].get("suppress_comment", "").strip(), f"{check['check_id']} skipped without a reason"


def test_no_skips_outside_the_bicep():
    """No config file or CLI default may skip checks wholesale."""
    for name in (".checkov.yaml", ".checkov.yml"):
        for where in (REPO, INFRA):
            assert not (where / name).exists(), f"{where / name}: skip checks inline in the resource instead"
