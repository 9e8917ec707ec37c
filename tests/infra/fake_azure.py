"""The test harness around fake_az.py: a temporary PATH whose `az` is the fake, its simulated Azure state,
and the calls it recorded. Used by the deploy.sh tests and by the tests that run the READMEs' commands.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .bicep_helpers import HERE, INFRA, iac_tool

_SERVER: dict[str, Any] = {}


def fake_az_server() -> str:
    """The socket of the fake az server (fake_az.py --serve), started once per test session."""
    if not _SERVER:
        directory = Path(tempfile.mkdtemp(prefix="fake-az-"))  # short: a Unix socket path has at most 107 bytes
        path = directory / "az.sock"
        server = subprocess.Popen([str(iac_tool("python")), str(HERE / "fake_az.py"), "--serve", str(path)],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "fake az server did not start"

        def stop() -> None:
            server.terminate()
            server.wait(timeout=10)
            shutil.rmtree(directory, ignore_errors=True)

        atexit.register(stop)
        _SERVER.update(process=server, socket=str(path))
    return str(_SERVER["socket"])

FAKE_SECRET = "Fake-Secret-Value-0123456789-must-never-leak"
TENANT = "11111111-1111-1111-1111-111111111111"
NEW_APP = "22222222-2222-2222-2222-222222222222"
OLD_APP = "33333333-3333-3333-3333-333333333333"
SP = "44444444-4444-4444-4444-444444444444"
ME = "55555555-5555-5555-5555-555555555555"
IDENTITY_PRINCIPAL = "66666666-6666-6666-6666-666666666666"
IDENTITY_CLIENT = "77777777-7777-7777-7777-777777777777"
DEPLOYER_SP = "99999999-9999-9999-9999-999999999999"     # object id of a service principal or managed identity
DEPLOYER_APP = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"    # app id of that service principal (az account show)
GRAPH_SP = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"        # Microsoft Graph's service principal in the tenant
TOKEN_SIGNATURE = "FAKE-TOKEN-SIGNATURE-must-never-leak"
MASTER_KEY = "FAKE-FUNCTIONS-MASTER-KEY-must-never-leak"
READER = "dddddddd-dddd-dddd-dddd-dddddddddddd"       # object id of a reader's service principal (a pipeline)
READER_APP = "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"   # its app id
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
CERTIFICATES_OFFICER = "a4417e6f-fecd-4de8-b567-7b0420556985"
RG = "rg-export"
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
    """A fake `az` on PATH. Keywords: group (location of an existing group), apps (app ids named app_name, or
    app dicts), secret (the vault already holds the client secret: True, or a dict of its attributes), cloud,
    login (user | sp | mi), rbac_delay (data-plane calls refused after each new role assignment, as RBAC
    propagates), deployment_credential (the clientCredential of an earlier deployment, deployment_vnet its
    vnetEnabled), and any state key of fake_az.py: sp, permission, consented, consent_fails, reset_fails,
    secret_set_fails, app_create_fails, zip_outcome (ok | unhealthy | slow | timeout | conflict; slow: the host
    is up from the host_starts_after-th status poll), inside_vnet, app_provider_registered, provider_register_fails,
    rbac_pending, vault_open, missing_outputs, missing_parameters (outputs and parameters an older deployment does
    not have), signin_refusals, list_deleted_denied, and fail ({command: message}: that command fails with that
    service error), ... With secret, each app of apps has the client secret the vault holds (named after the
    vault, as deploy.sh names it)."""

    def __init__(self, tmp_path: Path, *, app_name: str = APP_NAME, apps: list[Any] = (), secret: Any = False,
                 cloud: str = "AzureCloud", login: str = "user", rbac_delay: int = 0,
                 deployment_credential: str | None = None, deployment_vnet: bool = False, **state: Any):
        self.home = tmp_path / "az-home"
        self.bin = tmp_path / "bin"
        self.tmpdir = tmp_path / "tmp"
        for d in (self.home, self.bin, self.tmpdir):
            d.mkdir(parents=True)
        az = self.bin / "az"
        az.write_text(f"#!/bin/sh\nexec '{iac_tool('python')}' -I -S '{HERE / 'fake_az_client.py'}' \"$@\"\n")
        az.chmod(0o755)
        self.socket = fake_az_server()
        initial: dict[str, Any] = {
            "config": {"tenant": TENANT, "new_app": NEW_APP, "sp": SP, "me": ME, "user_read_all": USER_READ_ALL,
                       "secret": FAKE_SECRET, "identity_client": IDENTITY_CLIENT, "names": NAMES, "cloud": cloud,
                       "existing_vaults": [], "login": login, "deployer_sp": DEPLOYER_SP, "deployer_app": DEPLOYER_APP,
                       "graph_sp": GRAPH_SP, "subscription": "sub-1", "rbac_delay": rbac_delay,
                       "flex_regions": ["eastus", "northeurope", "westeurope", "usgovvirginia", "chinanorth3"],
                       "token_signature": TOKEN_SIGNATURE, "master_key": MASTER_KEY,
                       "directory": [  # what az role assignment create --assignee resolves through Graph
                           {"id": ME, "type": "User", "upn": "me@example.com"},
                           {"id": DEPLOYER_SP, "type": "ServicePrincipal", "appId": DEPLOYER_APP},
                           {"id": READER, "type": "ServicePrincipal", "appId": READER_APP}]},
            "group": "", "rg_name": RG, "apps": [a if isinstance(a, dict) else app(a, app_name) for a in apps],
            "sp": False, "permission": False, "consented": False, "consent_fails": False,
            "vaults": {}, "secret_values": {}, "certificate_policies": [], "rbac_pending": 0, "vault_open": False,
            "identity_principal": IDENTITY_PRINCIPAL, "deployments": 0, "deployment": None,
            "role_assignments": [], "role_assignment_counter": 0, "key_counter": 0,
            "reset_fails": False, "secret_set_fails": False, "app_create_fails": False, "zip_outcome": "ok",
            "inside_vnet": False, "app_provider_registered": True, "provider_register_fails": False,
            "what_ifs": 0, "publishes": 0, "deleted_vaults": [], "missing_outputs": [], "missing_parameters": [],
            "fail": {},
            "immutability_policy": None, "etag_counter": 0, "password_hashes": {},
        }
        if secret:
            attributes = {"expires": "2030-01-01T00:00:00+00:00", "contentType": None, "enabled": True,
                          "length": len(FAKE_SECRET), "versions": 1, "value": FAKE_SECRET}
            if isinstance(secret, dict):
                attributes.update(secret)
            initial["vaults"][NAMES["keyVault"]] = {"secrets": {SECRET_NAME: attributes}, "certificates": {}}
            for entry in initial["apps"]:
                entry["passwordCredentials"].append({
                    "displayName": f"graph-export {NAMES['keyVault']}", "keyId": "pwd-0", "hint": FAKE_SECRET[:3],
                    "endDateTime": "2030-01-01T00:00:00Z", "startDateTime": "2025-01-01T00:00:00Z", "secretText": None})
                initial["password_hashes"]["pwd-0"] = hashlib.sha256(FAKE_SECRET.encode()).hexdigest()
        initial.update(state)
        (self.home / "state.json").write_text(json.dumps(initial))
        if deployment_credential:
            self.set_previous_deployment(deployment_credential, vnet=deployment_vnet)

    # --- running ------------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPH_EXPORT_")}
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", FAKE_AZ_HOME=str(self.home), FAKE_AZ_SOCKET=self.socket,
                   TMPDIR=str(self.tmpdir), DEPLOY_RETRY_DELAY="0", DEPLOY_RETRY_COUNT="3", **extra)
        return env

    def run(self, *args: str, infra: Path = INFRA) -> subprocess.CompletedProcess[str]:
        """infra/deploy.sh (or the one in a copy of infra/, ``infra``) with these arguments. An az usage error
        (an option az does not have, a missing value or required option: exit 2) fails the test whatever the
        script made of it."""
        self.clear_calls()
        proc = subprocess.run(["bash", str(infra / "deploy.sh"), *args], capture_output=True, text=True,
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

    def set_previous_deployment(self, credential: str, *, vnet: bool = False, immutability_days: int = 0) -> None:
        """An earlier deployment of main.bicep, made with GRAPH_EXPORT_CLIENT_CREDENTIAL=credential."""
        state = self.state
        state["group"] = state["group"] or "westeurope"
        self.save_state(state)
        proc = subprocess.run([str(self.bin / "az"), "deployment", "group", "create", "-g", RG,
                               "-n", "graph-export"], capture_output=True, text=True, check=False,
                              env=self.env(GRAPH_EXPORT_CLIENT_CREDENTIAL=credential, GRAPH_EXPORT_CLIENT_ID=OLD_APP,
                                           GRAPH_EXPORT_VNET_ENABLED=str(vnet).lower(),
                                           GRAPH_EXPORT_IMMUTABILITY_DAYS=str(immutability_days)))
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

    def lock_policy(self) -> None:
        """Someone locked the export container's immutability policy (infra/README.md)."""
        state = self.state
        state["immutability_policy"]["state"] = "Locked"
        state["etag_counter"] += 1
        state["immutability_policy"]["etag"] = f'"8d{state["etag_counter"]:013x}"'
        self.save_state(state)

    def recreate_identity(self, principal: str) -> None:
        self.update(identity_principal=principal)

    def update(self, **changes: Any) -> None:
        """Change the simulated world between runs (any state key of fake_az.py)."""
        state = self.state
        state.update(changes)
        self.save_state(state)

    # --- role assignments -----------------------------------------------------------------------------

    @property
    def role_assignments(self) -> list[dict[str, Any]]:
        return self.state["role_assignments"]

    def roles_of(self, principal: str) -> set[tuple[str, str]]:
        """(role GUID, scope relative to the vault: '' for the vault itself, 'secrets/<name>', ...)."""
        state = self.state
        vault = (f"/subscriptions/sub-1/resourceGroups/{state['rg_name']}/providers/Microsoft.KeyVault/vaults/"
                 f"{NAMES['keyVault']}")
        found = set()
        for a in state["role_assignments"]:
            if a["principalId"] == principal:
                assert a["scope"].startswith(vault), a["scope"]
                found.add((a["roleDefinitionId"].rsplit("/", 1)[-1], a["scope"][len(vault):].lstrip("/")))
        return found


def deploy(fake: FakeAzure, *args: str, infra: Path = INFRA) -> subprocess.CompletedProcess[str]:
    """deploy.sh into the test group (created in westeurope when missing), without publishing the code."""
    return fake.run("-g", RG, "-l", "westeurope", "--skip-publish", *args, infra=infra)


def deployed(fake: FakeAzure, *args: str) -> subprocess.CompletedProcess[str]:
    """deploy(), which must succeed."""
    proc = deploy(fake, *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def opt(call: dict[str, Any], name: str) -> str:
    argv = call["argv"]
    assert name in argv, f"{name} missing from {argv}"
    return str(argv[argv.index(name) + 1])


def in_order(sequence: list[str], expected: list[str]) -> bool:
    it = iter(sequence)
    return all(any(item == wanted for item in it) for wanted in expected)
