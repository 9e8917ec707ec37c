"""checkov's Bicep checks: 0 failed. A check that does not fit may be skipped only inline, inside the
resource, with `// checkov:skip=CKV_AZURE_xx: reason`; the skips are printed with every run.

Both network settings are checked. checkov reads each module on its own and does not evaluate what
main.bicep passes in (and for parameters it evaluates inconsistently), so besides infra/ as written it runs
on two copies in which the storage and Key Vault modules have the values main.bicep passes written in:
vnetEnabled=false ('Enabled', 'Allow') and vnetEnabled=true ('Disabled', 'Deny'), both without the network
skips. Without private networking exactly those four checks fail (which is why they are skipped, with a
reason); with it everything passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .bicep_helpers import INFRA, REPO, iac_tool

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::(?P<reason>.*))?$")
# Public network access and the firewall's default action, on storage and on Key Vault.
NETWORK_CHECKS = {
    ("CKV_AZURE_59", "Microsoft.Storage/storageAccounts.account"),
    ("CKV_AZURE_35", "Microsoft.Storage/storageAccounts.account"),
    ("CKV_AZURE_189", "Microsoft.KeyVault/vaults.vault"),
    ("CKV_AZURE_109", "Microsoft.KeyVault/vaults.vault"),
}
# What main.bicep passes the storage and Key Vault modules (publicNetworkAccess, networkDefaultAction).
MODES = {"vnetEnabled=false": ("Enabled", "Allow"), "vnetEnabled=true": ("Disabled", "Deny")}


def specialise(target: Path, public_access: str, default_action: str) -> Path:
    """A copy of infra/ whose storage and vault modules have the network values written in, and no network skips."""
    shutil.copytree(INFRA, target)
    network_ids = {check for check, _ in NETWORK_CHECKS}
    for name in ("storage.bicep", "keyvault.bicep"):
        path = target / "modules" / name
        text = path.read_text()
        for prop, value in (("publicNetworkAccess", public_access), ("defaultAction", default_action)):
            pattern = rf"^(\s*{prop}): (publicNetworkAccess|networkDefaultAction)$"
            text, count = re.subn(pattern, rf"\1: '{value}'", text, flags=re.M)
            assert count == 1, f"{name}: expected one `{prop}: <parameter>` line"
        lines = [line for line in text.splitlines(keepends=True)
                 if not ((match := SKIP_COMMENT.search(line.strip())) and match["id"] in network_ids)]
        path.write_text("".join(lines))
    return target


def start_checkov(directory: Path) -> tuple[subprocess.Popen[str], float]:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # no network: no policy metadata download
    process = subprocess.Popen(
        [str(iac_tool("checkov")), "--framework", "bicep", "--skip-download", "-d", str(directory), "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    return process, time.monotonic()


def finish_checkov(process: subprocess.Popen[str], started: float) -> tuple[dict, float]:
    stdout, stderr = process.communicate(timeout=600)
    elapsed = time.monotonic() - started
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}",
                    pytrace=False)
    if isinstance(report, list):  # one report per framework; only bicep was asked for
        report = next(r for r in report if r.get("check_type") == "bicep")
    return report, elapsed


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory):
    """{"as written" | mode: (report, seconds)}; the three runs go at once."""
    root = tmp_path_factory.mktemp("checkov")
    directories = {"as written": INFRA}
    for mode, (public_access, default_action) in MODES.items():
        directories[mode] = specialise(root / mode.replace("=", "-"), public_access, default_action)
    running = {mode: start_checkov(directory) for mode, directory in directories.items()}
    return {mode: finish_checkov(*started) for mode, started in running.items()}


@pytest.fixture(scope="module")
def checkov_report(checkov_reports):
    return checkov_reports["as written"]


def _inline_skips(root: Path = INFRA) -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(root.rglob("*.bicep")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line.strip())
            if match:
                found.append((str(path.relative_to(root)), number, match["id"], (match["reason"] or "").strip()))
    return found


def _results(report: dict, kind: str) -> set[tuple[str, str]]:
    return {(c["check_id"], c["resource"]) for c in report["results"].get(kind, [])}


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
    for rtype in ("Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", "Microsoft.Web/sites",
                  "Microsoft.Network/virtualNetworks"):
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
    network = [reason for _, _, cid, reason in skips if cid in {c for c, _ in NETWORK_CHECKS}]
    assert len(network) == 4 and all("vnetEnabled" in reason for reason in network), \
        "the network skips say that they apply without private networking only"


@pytest.mark.parametrize("mode", MODES)
def test_both_network_settings(checkov_reports, mode):
    report, _ = checkov_reports[mode]
    assert report["summary"]["parsing_errors"] == 0
    failed = _results(report, "failed_checks")
    passed = _results(report, "passed_checks")
    skipped_ids = {check for check, _ in _results(report, "skipped_checks")}
    assert not skipped_ids & {check for check, _ in NETWORK_CHECKS}, "the copies carry no network skip"
    if mode == "vnetEnabled=true":
        assert not failed, f"with private networking checkov finds: {sorted(failed)}"
        assert NETWORK_CHECKS <= passed
    else:
        assert failed == NETWORK_CHECKS, "without private networking only the four (skipped) network checks fail"


def test_no_skips_outside_the_bicep():
    """No config file or CLI default may skip checks wholesale."""
    for name in (".checkov.yaml", ".checkov.yml"):
        for where in (REPO, INFRA):
            assert not (where / name).exists(), f"{where / name}: skip checks inline in the resource instead"
