"""The test harness around fake_az.py: a temporary PATH whose `az` is the fake, its simulated Azure state,
and the calls it recorded. Used by the deploy.sh tests and by the tests that run the READMEs' commands.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .bicep_helpers import HERE, INFRA, iac_tool

FAKE_SECRET = "Fake-Secret-Value-0123456789-must-never-leak"
TENANT = "11111111-1111-1111-1111-111111111111"
NEW_APP = "22222222-2222-2222-2222-222222222222"
OLD_APP = "33333333-3333-3333-3333-333333333333"
SP = "44444444-4444-4444-4444-444444444444"
ME = "55555555-5555-5555-5555-555555555555"
IDENTITY_PRINCIPAL = "66666666-6666-6666-6666-666666666666"
IDENTITY_CLIENT = "77777777-7777-7777-7777-777777777777"
USER_READ_ALL = "df021288-bdef-4463-88db-98f22de89214"
APP_NAME = "graph-user-export"
NAMES = {
    "functionApp": "graphexp-func-abc", "keyVault": "kv-graphexp-abc", "identity": "graphexp-id-abc",
    "hostStorage": "stgraphexpfnabc", "exportStorage": "stgraphexpexabc",
}
SECRET_NAME = "graph-client-secret"
CERT_NAME = "graph-client-certificate"


def app(app_id: str, name: str = APP_NAME, **extra: Any) -> dict[str, Any]:
    return {"appId": app_id, "id": "obj-" + app_id, "displayName": name, "signInAudience": "AzureADMyOrg",
            "passwordCredentials": [], "keyCredentials": [], "requiredResourceAccess": [],
            "federatedIdentityCredentials": [], **extra}


class FakeAzure:
    """A fake `az` on PATH. State keywords: group (location of an existing group), apps (app ids named
    app_name, or app dicts), sp, permission, consented, consent_fails, secret (the vault already holds the
    client secret), vault_denials (data-plane calls refused before RBAC "propagates"), cloud, and
    deployment_credential (the clientCredential of an earlier deployment)."""

    def __init__(self, tmp_path: Path, *, app_name: str = APP_NAME, apps: list[Any] = (), secret: bool = False,
                 cloud: str = "AzureCloud", deployment_credential: str | None = None, **state: Any):
        self.home = tmp_path / "az-home"
        self.bin = tmp_path / "bin"
        self.tmpdir = tmp_path / "tmp"
        for d in (self.home, self.bin, self.tmpdir):
            d.mkdir(parents=True)
        az = self.bin / "az"
        az.write_text(f"#!/bin/sh\nexec '{iac_tool('python')}' '{HERE / 'fake_az.py'}' \"$@\"\n")
        az.chmod(0o755)
        initial: dict[str, Any] = {
            "config": {"tenant": TENANT, "new_app": NEW_APP, "sp": SP, "me": ME, "user_read_all": USER_READ_ALL,
                       "secret": FAKE_SECRET, "identity_client": IDENTITY_CLIENT, "names": NAMES, "cloud": cloud,
                       "existing_vaults": []},
            "group": "", "apps": [a if isinstance(a, dict) else app(a, app_name) for a in apps],
            "sp": False, "permission": False, "consented": False, "consent_fails": False,
            "vaults": {}, "secret_values": {}, "certificate_policies": [], "vault_denials": 0,
            "identity_principal": IDENTITY_PRINCIPAL, "deployments": 0, "deployment": None,
        }
        if secret:
            initial["vaults"][NAMES["keyVault"]] = {
                "secrets": {SECRET_NAME: {"expires": "2030-01-01T00:00:00+00:00", "contentType": None}},
                "certificates": {}}
        initial.update(state)
        (self.home / "state.json").write_text(json.dumps(initial))
        if deployment_credential:
            self.set_previous_deployment(deployment_credential)

    # --- running ------------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPH_EXPORT_")}
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", FAKE_AZ_HOME=str(self.home),
                   TMPDIR=str(self.tmpdir), DEPLOY_RETRY_DELAY="0", DEPLOY_RETRY_COUNT="3", **extra)
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """infra/deploy.sh with these arguments. An az usage error (an option az does not have, a missing
        value or required option: exit 2) fails the test whatever the script made of it."""
        self.clear_calls()
        proc = subprocess.run(["bash", str(INFRA / "deploy.sh"), *args], capture_output=True, text=True,
                              env=self.env(), timeout=120, check=False)
        self.assert_no_usage_errors(proc)
        return proc

    def run_script(self, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """A bash script (README commands) with `set -euo pipefail`; az usage errors fail the test."""
        self.clear_calls()
        proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], capture_output=True, text=True,
                              env=self.env(), cwd=cwd, timeout=120, check=False)
        self.assert_no_usage_errors(proc)
        return proc

    def assert_no_usage_errors(self, proc: subprocess.CompletedProcess[str]) -> None:
        wrong = [" ".join(c["argv"]) for c in self.calls if c.get("rc") == 2]
        assert not wrong, "az would reject these command lines:\n" + "\n".join(wrong) + "\n" + proc.stderr

    def clear_calls(self) -> None:
        (self.home / "calls.jsonl").unlink(missing_ok=True)

    # --- what happened -----------------------------------------------------------------------------

    @property
    def calls(self) -> list[dict[str, Any]]:
        path = self.home / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commands(self) -> list[str]:
        """Each call as its leading words (up to the first option), e.g. 'ad app create'."""
        names = []
        for call in self.calls:
            words = []
            for word in call["argv"]:
                if word.startswith("-"):
                    break
                words.append(word)
            names.append(" ".join(words))
        return names

    def call(self, command: str) -> dict[str, Any]:
        matches = self.all(command)
        assert len(matches) == 1, f"expected one '{command}', got {len(matches)}: {self.commands()}"
        return matches[0]

    def all(self, command: str) -> list[dict[str, Any]]:
        return [c for c, name in zip(self.calls, self.commands(), strict=True) if name == command]

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())

    def save_state(self, state: dict[str, Any]) -> None:
        (self.home / "state.json").write_text(json.dumps(state))

    def the_app(self, app_id: str = NEW_APP) -> dict[str, Any]:
        return next(a for a in self.state["apps"] if a["appId"] == app_id)

    # --- changing the world between runs ------------------------------------------------------------

    def set_previous_deployment(self, credential: str) -> None:
        """An earlier deployment of main.bicep, made with GRAPH_EXPORT_CLIENT_CREDENTIAL=credential."""
        state = self.state
        state["group"] = state["group"] or "westeurope"
        self.save_state(state)
        proc = subprocess.run([str(self.bin / "az"), "deployment", "group", "create", "-g", "rg-export",
                               "-n", "graph-export"], capture_output=True, text=True, check=False,
                              env=self.env(GRAPH_EXPORT_CLIENT_CREDENTIAL=credential))
        assert proc.returncode == 0, proc.stderr
        self.clear_calls()

    def renew_certificate(self) -> str:
        """Key Vault's AutoRenew lifetime action: a new version (new key, new thumbprint). Returns it."""
        state = self.state
        cert = state["vaults"][NAMES["keyVault"]]["certificates"][CERT_NAME]
        number = len(cert["versions"]) + 1
        thumbprint = f"{number:040X}"
        cert["versions"].append({**cert["versions"][-1], "version": f"v{number}", "thumbprint": thumbprint,
                                 "expires": "2031-06-01T00:00:00+00:00"})
        self.save_state(state)
        return thumbprint

    def recreate_identity(self, principal: str) -> None:
        state = self.state
        state["identity_principal"] = principal
        self.save_state(state)


def opt(call: dict[str, Any], name: str) -> str:
    argv = call["argv"]
    assert name in argv, f"{name} missing from {argv}"
    return str(argv[argv.index(name) + 1])


def in_order(sequence: list[str], expected: list[str]) -> bool:
    it = iter(sequence)
    return all(any(item == wanted for item in it) for wanted in expected)
