"""infra/deploy.sh: shellcheck-clean, --help works, and — against a fake `az` that records every call
and answers from a small state file — runs its steps in order, reuses what exists, changes nothing on a
second run, and pipes the client secret into Key Vault without it ever being an argument, an echo or a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .bicep_helpers import INFRA, require_shellcheck

SCRIPT = INFRA / "deploy.sh"
FAKE_SECRET = "Fake-Secret-Value-0123456789-must-never-leak"
TENANT = "11111111-1111-1111-1111-111111111111"
NEW_APP = "22222222-2222-2222-2222-222222222222"
OLD_APP = "33333333-3333-3333-3333-333333333333"
SP = "44444444-4444-4444-4444-444444444444"
ME = "55555555-5555-5555-5555-555555555555"
USER_READ_ALL = "df021288-bdef-4463-88db-98f22de89214"
OUTPUTS = ["graphexp-func-abc", "kv-graphexp-abc", "graph-client-secret", "stgraphexpexabc", "graph-exports"]

# A stand-in for the az CLI: records argv, the GRAPH_EXPORT_* environment and (for `keyvault secret set
# --file /dev/stdin`) what arrived on stdin; answers from state.json and updates it as real Azure would.
FAKE_AZ = r'''
import json, os, shutil, sys
from pathlib import Path

home = Path(os.environ["FAKE_AZ_HOME"])
state_file = home / "state.json"
state = json.loads(state_file.read_text())
args = sys.argv[1:]
record = {"argv": args, "env": {k: v for k, v in os.environ.items() if k.startswith("GRAPH_EXPORT_")}}

def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default

def cmd(*words):
    return args[:len(words)] == list(words)

def out(text=""):
    if text:
        print(text)

def save():
    state_file.write_text(json.dumps(state))

code = 0
if cmd("account", "show"):
    query = opt("--query")
    out({"tenantId": TENANT, "id": "sub-1", "user.type": "user", "user.name": "me@example.com"}.get(query, ""))
elif cmd("group", "show"):
    if state["group"]:
        out(state["group"])
    else:
        sys.stderr.write("ResourceGroupNotFound\n"); code = 3
elif cmd("group", "create"):
    state["group"] = opt("--location"); save()
elif cmd("ad", "app", "list"):
    out("\n".join(state["apps"]))
elif cmd("ad", "app", "create"):
    state["apps"].append(NEW_APP); save(); out(NEW_APP)
elif cmd("ad", "sp", "list"):
    out(SP if state["sp"] else "")
elif cmd("ad", "sp", "create"):
    state["sp"] = True; save(); out(SP)
elif cmd("ad", "app", "permission", "list"):
    out(USER_READ_ALL if state["permission"] else "")
elif cmd("ad", "app", "permission", "add"):
    state["permission"] = True; save()
elif cmd("rest"):
    out("assignment-1" if state["consented"] else "")
elif cmd("ad", "app", "permission", "admin-consent"):
    if state["consent_fails"]:
        sys.stderr.write("Insufficient privileges to complete the operation.\n"); code = 1
    else:
        state["consented"] = True; save()
elif cmd("ad", "signed-in-user", "show"):
    out(ME)
elif cmd("deployment", "group", "create"):
    state["deployments"] += 1; save()
elif cmd("deployment", "group", "show"):
    out("\t".join(OUTPUTS))
elif cmd("keyvault", "secret", "list"):
    if opt("--query"):
        out("https://kv/secrets/graph-client-secret" if state["secret"] else "")
elif cmd("ad", "app", "credential", "reset"):
    out(FAKE_SECRET)
elif cmd("keyvault", "secret", "set"):
    if opt("--file") == "/dev/stdin":
        record["stdin"] = sys.stdin.read()
    state["secret"] = True; save()
elif cmd("functionapp", "deployment", "source", "config-zip"):
    shutil.copy(opt("--src"), home / "published.zip")
else:
    sys.stderr.write("fake az: unexpected command: %r\n" % (args,)); code = 2

with open(home / "calls.jsonl", "a") as log:
    log.write(json.dumps(record) + "\n")
sys.exit(code)
'''


class FakeAzure:
    def __init__(self, tmp_path: Path, **state):
        self.home = tmp_path / "az-home"
        self.bin = tmp_path / "bin"
        self.tmpdir = tmp_path / "tmp"
        for d in (self.home, self.bin, self.tmpdir):
            d.mkdir()
        consts = "".join(f"{name} = {value!r}\n" for name, value in {
            "TENANT": TENANT, "NEW_APP": NEW_APP, "SP": SP, "ME": ME, "USER_READ_ALL": USER_READ_ALL,
            "OUTPUTS": OUTPUTS, "FAKE_SECRET": FAKE_SECRET}.items())
        az = self.bin / "az"
        az.write_text(f"#!{sys.executable}\n{consts}{FAKE_AZ}")
        az.chmod(0o755)
        initial = {"group": "", "apps": [], "sp": False, "permission": False, "consented": False,
                   "consent_fails": False, "secret": False, "deployments": 0}
        initial.update(state)
        (self.home / "state.json").write_text(json.dumps(initial))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        (self.home / "calls.jsonl").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPH_EXPORT_")}
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", FAKE_AZ_HOME=str(self.home),
                   TMPDIR=str(self.tmpdir), DEPLOY_RETRY_DELAY="0", DEPLOY_RETRY_COUNT="3")
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    @property
    def calls(self) -> list[dict]:
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

    def call(self, command: str) -> dict:
        matches = [c for c, name in zip(self.calls, self.commands(), strict=True) if name == command]
        assert len(matches) == 1, f"expected one '{command}', got {len(matches)}: {self.commands()}"
        return matches[0]

    @property
    def state(self) -> dict:
        return json.loads((self.home / "state.json").read_text())


def in_order(sequence: list[str], expected: list[str]) -> bool:
    it = iter(sequence)
    return all(any(item == wanted for item in it) for wanted in expected)


CREATES = ["group create", "ad app create", "ad sp create", "ad app permission add",
           "ad app permission admin-consent", "ad app credential reset", "keyvault secret set"]


# --- static ---------------------------------------------------------------------------------------------

def test_shellcheck_clean():
    shellcheck = require_shellcheck()
    proc = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(SCRIPT)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_mode_and_executable():
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(SCRIPT, os.X_OK), "infra/deploy.sh should be executable (git update-index --chmod=+x)"


def test_help_prints_usage_and_touches_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: infra/deploy.sh --resource-group NAME")
    for option in ("--location", "--app-name", "--prefix", "--alert-email", "--skip-publish", "--rotate-secret"):
        assert option in proc.stdout
    assert fake.calls == []


def test_bad_arguments_fail_clearly(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run()
    assert proc.returncode != 0 and "--resource-group is required" in proc.stderr
    proc = fake.run("-g", "rg", "--bogus")
    assert proc.returncode != 0 and "unknown argument: --bogus" in proc.stderr
    proc = fake.run("-g", "rg", "--prefix", "Bad-Prefix")
    assert proc.returncode != 0 and "--prefix" in proc.stderr
    assert fake.calls == []


def test_new_group_needs_a_location(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode != 0
    assert "pass --location" in proc.stderr
    assert not set(CREATES) & set(fake.commands())


# --- a first run from nothing, then a second run -----------------------------------------------------

def test_first_run_creates_everything_in_order(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "-e", "ops@example.com", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert in_order(fake.commands(), [
        "account show", "group show", "group create",
        "ad app list", "ad app create", "ad sp list", "ad sp create",
        "ad app permission list", "ad app permission add", "rest", "ad app permission admin-consent",
        "ad signed-in-user show", "deployment group create", "deployment group show",
        "keyvault secret list", "ad app credential reset", "keyvault secret set",
    ]), fake.commands()

    add = fake.call("ad app permission add")["argv"]
    assert add[add.index("--api") + 1] == "00000003-0000-0000-c000-000000000000"
    assert add[add.index("--api-permissions") + 1] == f"{USER_READ_ALL}=Role"

    deploy = fake.call("deployment group create")
    argv = deploy["argv"]
    assert argv[argv.index("--resource-group") + 1] == "rg-export"
    assert argv[argv.index("--parameters") + 1] == str(INFRA / "main.bicepparam")
    assert deploy["env"] == {
        "GRAPH_EXPORT_CLIENT_ID": NEW_APP, "GRAPH_EXPORT_NAME_PREFIX": "graphexp",
        "GRAPH_EXPORT_ALERT_EMAIL": "ops@example.com", "GRAPH_EXPORT_DEPLOYER_ID": ME,
        "GRAPH_EXPORT_DEPLOYER_TYPE": "User",
    }
    assert "config-zip" not in " ".join(fake.commands())
    assert "Skipping code publishing" in proc.stderr
    assert OUTPUTS[0] in proc.stderr and OUTPUTS[1] in proc.stderr


def test_client_secret_is_piped_never_an_argument_echo_or_file(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert proc.returncode == 0, proc.stderr

    reset = fake.call("ad app credential reset")["argv"]
    assert "--append" in reset, "other credentials of the app must survive"
    assert reset[reset.index("--query") + 1] == "password"
    stored = fake.call("keyvault secret set")
    assert stored["argv"][stored["argv"].index("--file") + 1] == "/dev/stdin"
    assert "--value" not in stored["argv"]
    assert stored["stdin"] == FAKE_SECRET, "the secret arrives on stdin, without the trailing newline"
    assert "--expires" in stored["argv"]

    for call in fake.calls:
        assert not any(FAKE_SECRET in arg for arg in call["argv"]), f"secret passed as an argument: {call['argv'][:4]}"
    assert FAKE_SECRET not in proc.stdout and FAKE_SECRET not in proc.stderr
    for path in fake.tmpdir.rglob("*"):
        assert not path.is_file() or FAKE_SECRET not in path.read_text(errors="replace"), f"secret written to {path}"
    assert "FAKE_SECRET" not in SCRIPT.read_text()


def test_second_run_changes_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    first = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert first.returncode == 0, first.stderr
    before = fake.state

    second = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert second.returncode == 0, second.stderr
    created = set(CREATES) & set(fake.commands())
    assert not created, f"a second run must not create anything, but ran: {sorted(created)}"
    after = fake.state
    assert {k: v for k, v in after.items() if k != "deployments"} == {k: v for k, v in before.items() if k != "deployments"}
    # The Bicep deployment is re-applied (ARM incremental mode: unchanged resources stay as they are).
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_ID"] == NEW_APP
    assert "already set; keeping it" in second.stderr
    assert "admin consent already granted" in second.stderr


def test_reuses_an_existing_app_registration(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP])
    proc = fake.run("-g", "rg-export", "-n", "my-export-app", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert "ad app create" not in fake.commands()
    listed = fake.call("ad app list")["argv"]
    assert listed[listed.index("--display-name") + 1] == "my-export-app"
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_ID"] == OLD_APP
    assert "reusing existing registration" in proc.stderr
    assert "group create" not in fake.commands()


def test_ambiguous_app_name_stops_before_changing_anything(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP, NEW_APP])
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode != 0
    assert "2 app registrations are named 'graph-user-export'" in proc.stderr
    assert not set(CREATES) & set(fake.commands())
    assert "deployment group create" not in fake.commands()


def test_rotate_secret_adds_a_new_credential(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], sp=True, permission=True, consented=True,
                     secret=True)
    proc = fake.run("-g", "rg-export", "--skip-publish", "--rotate-secret")
    assert proc.returncode == 0, proc.stderr
    assert "--append" in fake.call("ad app credential reset")["argv"]
    assert fake.call("keyvault secret set")["stdin"] == FAKE_SECRET
    assert FAKE_SECRET not in proc.stderr + proc.stdout


def test_missing_admin_rights_warn_with_the_command_to_hand_over(tmp_path):
    fake = FakeAzure(tmp_path, consent_fails=True)
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert fake.commands().count("ad app permission admin-consent") == 3  # bounded retries
    assert f"az ad app permission admin-consent --id {NEW_APP}" in proc.stderr
    assert "deployment group create" in fake.commands()


# --- publishing -------------------------------------------------------------------------------------------

def test_publish_uploads_a_funcignore_filtered_package_with_remote_build(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], sp=True, permission=True, consented=True,
                     secret=True)
    proc = fake.run("-g", "rg-export")
    assert proc.returncode == 0, proc.stderr
    argv = fake.call("functionapp deployment source config-zip")["argv"]
    assert argv[argv.index("--name") + 1] == OUTPUTS[0]
    assert argv[argv.index("--build-remote") + 1] == "true"
    with zipfile.ZipFile(fake.home / "published.zip") as package:
        names = set(package.namelist())
    for required in ("function_app.py", "host.json", "requirements.txt", "graph_export/settings.py"):
        assert required in names, f"{required} missing from the package"
    for name in names:
        assert not name.startswith(("infra/", "tests/", "sandbox/", ".venv", ".git/", "node_modules/")), name
        assert not name.endswith((".md", ".pyc")) and "local.settings.json" not in name, name
        assert name != "requirements-dev.txt", name
    assert not list(fake.tmpdir.iterdir()), "the package's temporary directory is removed"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_works_without_az_installed(tmp_path, flag):
    env = dict(os.environ, PATH="/usr/bin:/bin")
    proc = subprocess.run(["bash", str(SCRIPT), flag], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0 and "Usage:" in proc.stdout
