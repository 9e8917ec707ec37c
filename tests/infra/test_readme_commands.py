"""Every shell block in infra/README.md and the top-level README.md that runs an az command (other than a
bare `az login`) or infra/deploy.sh runs, as written, against the fake `az` (fake_az.py: the real CLI's
options, query language, output rules and response shapes), and leaves what deploy.sh would:

- infra/README.md "Quick start" and README.md "Deploy to Azure": deploy.sh, publishing included;
- infra/README.md "The same steps, one command at a time": steps 1-3, step 4 of each credential kind and
  step 5, in a scratch copy of the app's files (step 5 zips and deletes app.zip in its working directory);
- README.md "Choosing a credential": its deploy.sh line, and its by-hand blocks after steps 1-3 (they must
  also equal infra/README.md's step 4);
- README.md "Point it at your tenant": its blocks in order, against a vault of the caller's own;
- infra/README.md "Immutable exports (WORM)": deploy.sh with --immutability-days, then locking the policy;
- infra/README.md "Using it": deploy.sh --reader and --run-now after a deployment;
- infra/README.md "Many tenants": deploy.sh --tenant-ids, then a plain re-run that keeps the tenants.

test_every_az_block_is_run fails when a block that calls az or deploy.sh is in neither list.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from .bicep_helpers import INFRA, REPO
from .fake_azure import (
    CERT_NAME,
    CERTIFICATES_OFFICER,
    DEPLOYER_SP,
    FAKE_SECRET,
    GRAPH_SP,
    IDENTITY_PRINCIPAL,
    ME,
    NAMES,
    NEW_APP,
    SECRET_NAME,
    SECRETS_OFFICER,
    SP,
    TENANT,
    USER_READ_ALL,
    FakeAzure,
    opt,
)

KINDS = ["secret", "certificate", "federated"]
INFRA_README = INFRA / "README.md"
README = REPO / "README.md"
QUICK_START = "## Quick start"
WALKTHROUGH = "## The same steps, one command at a time"
DEPLOY = "## Deploy to Azure (Bicep + az CLI)"
POINT = "## Point it at your tenant (az CLI)"
CHOOSING = "## Choosing a credential"
WORM = "## Immutable exports (WORM)"
EXPORT_SETTINGS = "## Export settings"
USING = "## Using it"
MANY_TENANTS = "## Many tenants"
APP_FILES = ("function_app.py", "host.json", "requirements.txt", "graph_export")


def section(path: Path, heading: str) -> str:
    text = path.read_text()
    assert f"\n{heading}\n" in text, f"{path.name} has no '{heading}' section"
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(the prose or heading just before it, code) for each ```bash / ```sh block, indented ones included."""
    found = []
    for match in re.finditer(r"^([ \t]*)```(?:bash|sh)\n(.*?)^[ \t]*```", text, re.S | re.M):
        indent = match.group(1)
        code = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in match.group(2).splitlines(keepends=True))
        before = text[:match.start()].rstrip().rsplit("\n\n", 1)[-1]
        found.append((before, code))
    return found


def blocks(path: Path, heading: str) -> list[str]:
    return [code for _, code in code_blocks(section(path, heading))]


def runs_az(code: str) -> bool:
    """Whether a block calls az (a bare `az login` aside) or deploy.sh."""
    lines = [line.split("#", 1)[0] for line in code.splitlines()]
    return any(re.search(r"(^|[\s|;&(]|\$\()az\s+(?!login\b)[a-z]", line) or "infra/deploy.sh" in line
               for line in lines)


def kind_of(code: str) -> str | None:
    for kind, marker in (("certificate", "keyvault certificate create"), ("federated", "federated-credential create"),
                         ("secret", "keyvault secret set")):
        if marker in code:
            return kind
    return None


def walkthrough() -> tuple[str, dict[str, str], str]:
    """infra/README.md: the steps 1-3 block, the step-4 block of each kind, the step-5 block."""
    found = blocks(INFRA_README, WALKTHROUGH)
    setup = found[0]
    assert "az deployment group create" in setup and re.search(r"^CREDENTIAL=secret\b", setup, re.M)
    by_kind = {kind: code for code in found[1:] if (kind := kind_of(code))}
    assert set(by_kind) == set(KINDS), f"infra/README.md step 4 should have one block per kind: {sorted(by_kind)}"
    [code_step] = [code for code in found if "config-zip" in code]
    return setup, by_kind, code_step


def with_kind(setup: str, kind: str) -> str:
    return re.sub(r"^CREDENTIAL=secret\b", f"CREDENTIAL={kind}", setup, flags=re.M)


def scratch_app(tmp_path: Path) -> Path:
    """A working directory with the app's files and infra/, as a clone would have them."""
    work = tmp_path / "work"
    work.mkdir()
    for name in APP_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, work / name)
    shutil.copytree(INFRA, work / "infra")
    return work


def run(fake: FakeAzure, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = fake.run_script(script, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert FAKE_SECRET not in proc.stdout + proc.stderr
    return proc


def check_outcome(fake: FakeAzure, kind: str, me: str = ME) -> None:
    """What the commands of `kind` must have left behind (the same as deploy.sh); `me`: who ran them."""
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == kind
    [consent] = [c for c in fake.all("rest") if opt(c, "--method") == "POST"]
    assert opt(consent, "--uri") == f"https://graph.microsoft.com/v1.0/servicePrincipals/{GRAPH_SP}/appRoleAssignedTo"
    assert json.loads(opt(consent, "--body")) == {"principalId": SP, "resourceId": GRAPH_SP,
                                                  "appRoleId": USER_READ_ALL}
    the_app = fake.the_app(NEW_APP)
    if kind == "secret":
        stored = fake.call("keyvault secret set")
        assert stored["stdin"] == FAKE_SECRET and opt(stored, "--file") == "/dev/stdin"
        assert opt(stored, "--expires") == opt(fake.call("ad app credential reset"), "--end-date")
        [password] = the_app["passwordCredentials"]
        expires = fake.state["vaults"][NAMES["keyVault"]]["secrets"][SECRET_NAME]["expires"]
        assert dt.datetime.fromisoformat(expires) == dt.datetime.fromisoformat(password["endDateTime"])
        assert fake.roles_of(me) == set(), "no Key Vault role is left on the secret (Secrets Officer reads it)"
    elif kind == "certificate":
        assert opt(fake.call("keyvault certificate create"), "--policy") == "@infra/certificate-policy.json"
        version = fake.state["vaults"][NAMES["keyVault"]]["certificates"][CERT_NAME]["versions"][-1]
        [key] = the_app["keyCredentials"]
        assert key["customKeyIdentifier"] == version["thumbprint"]
        assert key["displayName"] == f"graph-export {NAMES['keyVault']} {version['thumbprint']}"
        assert not the_app["passwordCredentials"]
        assert fake.roles_of(me) == {(CERTIFICATES_OFFICER, f"certificates/{CERT_NAME}")}
    else:
        [fic] = the_app["federatedIdentityCredentials"]
        assert {k: fic[k] for k in ("name", "issuer", "subject", "audiences")} == {
            "name": f"graph-export-{NAMES['identity']}",
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "subject": IDENTITY_PRINCIPAL,
            "audiences": ["api://AzureADTokenExchange"],
        }
        assert not the_app["passwordCredentials"] and not the_app["keyCredentials"]
        assert not [c for c in fake.commands() if c.startswith("keyvault ")]
        assert fake.state["vaults"] == {} and fake.role_assignments == []


# --- infra/README.md --------------------------------------------------------------------------------------

def test_infra_readme_quick_start_runs(tmp_path):
    [code] = [c for c in blocks(INFRA_README, QUICK_START) if runs_az(c)]
    fake = FakeAzure(tmp_path)
    proc = run(fake, code, REPO)
    assert "config-zip" in " ".join(fake.commands()) and "==> Done" in proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_infra_readme_walkthrough_runs_for_each_credential(tmp_path, kind):
    setup, by_kind, code_step = walkthrough()
    work = scratch_app(tmp_path)
    fake = FakeAzure(tmp_path / "fake")
    run(fake, "\n".join((with_kind(setup, kind), by_kind[kind], code_step)), work)
    check_outcome(fake, kind)
    publish = fake.call("functionapp deployment source config-zip")
    assert opt(publish, "--name") == NAMES["functionApp"] and opt(publish, "--build-remote") == "true"
    assert opt(publish, "--timeout") == "600", "a bounded wait"
    with zipfile.ZipFile(fake.home / "published.zip") as package:
        names = set(package.namelist())
    assert {"function_app.py", "host.json", "requirements.txt", "graph_export/settings.py"} <= names
    assert not {n for n in names if not n.startswith("graph_export/")} - {"function_app.py", "host.json",
                                                                          "requirements.txt"}
    assert not any("__pycache__" in n for n in names)
    assert not (work / "app.zip").exists(), "step 5 removes its zip"


def test_infra_readme_export_settings_commands_run(tmp_path):
    """The flags reach the deployment, and the plain re-run after them keeps every one."""
    [code] = [c for c in blocks(INFRA_README, EXPORT_SETTINGS) if runs_az(c)]
    fake = FakeAzure(tmp_path)
    proc = run(fake, code, REPO)
    deployments = [call["env"] for call in fake.all("deployment group create")]
    assert len(deployments) == 2, proc.stderr
    chosen = {"GRAPH_EXPORT_MODE": "delta", "GRAPH_EXPORT_FORMATS": "jsonl,csv", "GRAPH_EXPORT_CSV_EXCEL": "true",
              "GRAPH_EXPORT_SCHEDULE": "0 30 3 * * 1-5"}
    for env in deployments:
        assert {name: env[name] for name in chosen} == chosen


@pytest.mark.parametrize("kind", ["secret", "certificate"])
def test_infra_readme_walkthrough_runs_for_a_service_principal(tmp_path, kind):
    """Issue 21 item 10: signed in as a service principal there is no /me (`az ad signed-in-user show` fails)
    and a role for it has principal type ServicePrincipal. Fails on f5489b6 (steps 1-3 stopped at /me)."""
    setup, by_kind, _ = walkthrough()
    fake = FakeAzure(tmp_path, login="sp")
    run(fake, with_kind(setup, kind) + "\n" + by_kind[kind], REPO)
    check_outcome(fake, kind, me=DEPLOYER_SP)
    assert "ad signed-in-user show" not in fake.commands()
    assert {opt(c, "--assignee-principal-type") for c in fake.all("role assignment create")} == {"ServicePrincipal"}


def test_infra_readme_immutable_exports_commands_run(tmp_path):
    """Turn immutability on with deploy.sh, then lock the policy with the az commands shown."""
    code = [c for c in blocks(INFRA_README, WORM) if runs_az(c)]
    assert len(code) == 2, "turning it on, locking it"
    fake = FakeAzure(tmp_path)
    proc = run(fake, "\n".join(code), REPO)
    assert "==> Done" in proc.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_IMMUTABILITY_DAYS"] == "90"
    policy = fake.state["immutability_policy"]
    assert policy["state"] == "Locked" and policy["days"] == 90
    lock = fake.call("storage container immutability-policy lock")
    assert opt(lock, "--account-name") == NAMES["exportStorage"] and opt(lock, "--container-name") == "graph-exports"
    assert opt(lock, "--if-match").startswith('"'), "the etag as az prints it, quotes included"
    # The next plain deploy.sh run finds it locked and leaves it out of the deployment.
    rerun = fake.run("--resource-group", "rg-graph-export", "--skip-publish")
    assert rerun.returncode == 0, rerun.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_IMMUTABILITY_LOCKED"] == "true"


def test_infra_readme_using_it_commands_run(tmp_path):
    """Read access for a person, and one export now, after a deployment (issue 21 item 10)."""
    [code] = [c for c in blocks(INFRA_README, USING) if runs_az(c)]
    fake = FakeAzure(tmp_path)
    state = fake.state
    state["config"]["directory"].append({"id": "ffffffff-ffff-ffff-ffff-ffffffffffff", "type": "User",
                                         "upn": "analyst@contoso.com"})
    fake.save_state(state)
    first = fake.run("-g", "rg-graph-export", "-l", "westeurope", "--skip-publish", "-c", "federated")
    assert first.returncode == 0, first.stderr
    proc = run(fake, code, REPO)
    [grant] = fake.all("role assignment create")
    assert opt(grant, "--assignee") == "analyst@contoso.com"
    assert opt(grant, "--scope").endswith(f"/storageAccounts/{NAMES['exportStorage']}/blobServices/default/"
                                          "containers/graph-exports")
    assert fake.state["invocations"] == 1 and "az monitor app-insights query" in proc.stderr


def test_infra_readme_many_tenants_commands_run(tmp_path):
    """--tenant-ids reaches the deployment, the registration is multi-tenant, the consent URLs are printed, and the
    plain re-run after it keeps the tenants."""
    [code] = [c for c in blocks(INFRA_README, MANY_TENANTS) if runs_az(c)]
    fake = FakeAzure(tmp_path)
    proc = run(fake, code, REPO)
    tenants = "0f3e5a4c-1b2d-4c6e-8f90-a1b2c3d4e5f6,7c8d9e0f-1a2b-4c3d-9e5f-a6b7c8d9e0f1"
    deployments = [call["env"]["GRAPH_EXPORT_TENANT_IDS"] for call in fake.all("deployment group create")]
    assert deployments == [tenants, tenants], proc.stderr
    assert fake.the_app(NEW_APP)["signInAudience"] == "AzureADMultipleOrgs"
    for tenant in tenants.split(","):
        assert f"https://login.microsoftonline.com/{tenant}/adminconsent?client_id={NEW_APP}" in proc.stderr


def test_the_walkthrough_waits_for_a_new_role(tmp_path):
    """The until loop of step 4 waits while the role propagates (the fake refuses a few calls)."""
    setup, by_kind, _ = walkthrough()
    fake = FakeAzure(tmp_path, rbac_delay=1)
    script = (with_kind(setup, "secret") + "\n" + by_kind["secret"]).replace("sleep 20", "sleep 0")
    run(fake, script, REPO)
    assert fake.commands().count("keyvault secret list") == 2
    check_outcome(fake, "secret")


# --- README.md ---------------------------------------------------------------------------------------------

def test_deploy_to_azure_commands_run(tmp_path):
    [code] = [c for c in blocks(README, DEPLOY) if runs_az(c)]
    fake = FakeAzure(tmp_path)
    proc = run(fake, code, REPO)
    assert "==> Done" in proc.stderr and fake.state["consented"]


def test_point_it_at_your_tenant_commands_run(tmp_path):
    vault = "kv-graph-export"
    vault_id = f"/subscriptions/sub-1/resourceGroups/rg-export/providers/Microsoft.KeyVault/vaults/{vault}"
    officer = {"id": f"{vault_id}/providers/Microsoft.Authorization/roleAssignments/mine", "principalId": ME,
               "principalType": "User", "scope": vault_id,
               "roleDefinitionId": f"/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_OFFICER}"}
    fake = FakeAzure(tmp_path, role_assignments=[officer],
                     vaults={vault: {"secrets": {}, "certificates": {}}})
    state = fake.state
    state["config"]["existing_vaults"] = [vault]
    fake.save_state(state)
    code = [c for c in blocks(README, POINT) if runs_az(c)]
    assert len(code) == 4, "app registration and consent, the secret, read access, many tenants"
    proc = run(fake, "\n".join(code), REPO)
    assert fake.the_app(NEW_APP)["signInAudience"] == "AzureADMultipleOrgs"
    urls = [line for line in proc.stdout.splitlines() if "adminconsent" in line]
    assert urls == [f"{t}: https://login.microsoftonline.com/{t}/adminconsent?client_id={NEW_APP}"
                    for t in ("0f3e5a4c-1b2d-4c6e-8f90-a1b2c3d4e5f6", "7c8d9e0f-1a2b-4c3d-9e5f-a6b7c8d9e0f1")]
    assert fake.state["consented"] and "ad app permission admin-consent" not in fake.commands()
    assert opt(fake.call("ad app list"), "--filter") == "displayName eq 'graph-users-export'"
    stored = fake.call("keyvault secret set")
    assert stored["stdin"] == FAKE_SECRET and opt(stored, "--vault-name") == vault
    reader = fake.call("role assignment create")
    assert opt(reader, "--role") == "Key Vault Secrets User" and opt(reader, "--assignee-object-id") == ME
    assert opt(reader, "--scope") == f"{vault_id}/secrets/graph-client-secret", "the one secret, not the vault"


def test_choosing_a_credential_deploy_line_runs(tmp_path):
    [code] = [c for c in blocks(README, CHOOSING) if "infra/deploy.sh" in c]
    fake = FakeAzure(tmp_path)
    run(fake, code, REPO)
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == "federated"


def choosing_by_hand() -> dict[str, str]:
    found = {kind: code for code in blocks(README, CHOOSING) if (kind := kind_of(code))}
    assert set(found) == set(KINDS), f"'{CHOOSING}' should show the commands of each kind: {sorted(found)}"
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_choosing_a_credential_commands_run_for_each_credential(tmp_path, kind):
    setup, _, _ = walkthrough()
    fake = FakeAzure(tmp_path)
    run(fake, with_kind(setup, kind) + "\n" + choosing_by_hand()[kind], REPO)
    check_outcome(fake, kind)


def test_the_walkthrough_and_the_choosing_section_show_the_same_commands():
    """One set of by-hand commands, shown in two places: they must not drift apart."""
    _, infra, _ = walkthrough()
    ours = choosing_by_hand()
    strip = lambda code: [line for line in code.strip().splitlines() if not line.lstrip().startswith("#")]  # noqa: E731
    for kind in KINDS:
        assert strip(ours[kind]) == strip(infra[kind]), kind


def test_choosing_a_credential_uses_only_real_deploy_options():
    text = (section(README, CHOOSING) + section(README, DEPLOY) + section(INFRA_README, QUICK_START)
            + section(INFRA_README, WORM) + section(INFRA_README, USING) + section(INFRA_README, MANY_TENANTS))
    usage = subprocess.run(["bash", str(INFRA / "deploy.sh"), "--help"], capture_output=True, text=True,
                           check=True).stdout
    for code in [c for _, c in code_blocks(text)] + re.findall(r"`(infra/deploy\.sh[^`]*)`", text):
        for line in code.replace("\\\n", " ").splitlines():
            if line.strip().startswith("infra/deploy.sh"):
                for option in re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", line.split("#", 1)[0]):
                    assert re.search(rf"(^|[\s,]){re.escape(option)}\b", usage), f"deploy.sh has no {option}: {line}"
    for kind in KINDS:
        assert f"`{kind}`" in text or f"**{kind}**" in text


# --- every block is covered ---------------------------------------------------------------------------------

def executed_blocks() -> list[str]:
    """The blocks the tests above run."""
    setup, by_kind, code_step = walkthrough()
    run_here = [setup, *by_kind.values(), code_step]
    run_here += [c for c in blocks(INFRA_README, QUICK_START) if runs_az(c)]
    run_here += [c for c in blocks(README, DEPLOY) if runs_az(c)]
    run_here += [c for c in blocks(README, POINT) if runs_az(c)]
    run_here += [c for c in blocks(README, CHOOSING) if runs_az(c)]
    run_here += [c for c in blocks(INFRA_README, WORM) if runs_az(c)]
    run_here += [c for c in blocks(INFRA_README, EXPORT_SETTINGS) if runs_az(c)]
    run_here += [c for c in blocks(INFRA_README, USING) if runs_az(c)]
    run_here += [c for c in blocks(INFRA_README, MANY_TENANTS) if runs_az(c)]
    return run_here


def test_every_az_block_is_run():
    executed = executed_blocks()
    missing = []
    for path in (INFRA_README, README):
        for before, code in code_blocks(path.read_text()):
            if runs_az(code) and code not in executed:
                missing.append(f"{path.name}: block after '{before[:60]}': {code[:80]}")
    assert not missing, "blocks that call az or deploy.sh but no test runs:\n" + "\n".join(missing)


def test_the_block_finder_sees_what_it_should():
    assert runs_az('X=$(az account show --query id -o tsv)') and runs_az("infra/deploy.sh -g rg")
    assert runs_az("foo |\n  az keyvault secret set --vault-name v")
    assert not runs_az("az login") and not runs_az("make test") and not runs_az("# az group create")
    text = "x\n\n1. step:\n\n   ```bash\n   az group show -n g\n   ```\n"
    assert code_blocks(text) == [("1. step:", "az group show -n g\n")]


def test_fake_refuses_what_the_real_az_refuses(tmp_path):
    """The fake must be able to fail: an option az lacks, a missing value, an --expires az cannot parse."""
    fake = FakeAzure(tmp_path, group="westeurope")
    for script, expected in (
        ("az keyvault secret set --vault-name kv --name n --file /dev/stdin --expiry 2030-01-01 </dev/null",
         "unrecognized arguments: --expiry"),
        ("az ad app federated-credential create --id x", "the following arguments are required: --parameters"),
        ("az ad app credential reset --id x --cert", "argument --cert: expected one argument"),
    ):
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=fake.env(), check=False)
        assert proc.returncode == 2 and expected in proc.stderr, (script, proc.stderr)
    proc = subprocess.run(
        ["bash", "-c", f"echo x | az keyvault secret set --vault-name {NAMES['keyVault']} --name n --file /dev/stdin "
                       "--expires 2030-01-01T00:00:00+00:00"],
        capture_output=True, text=True, env=fake.env(), check=False)
    assert proc.returncode == 2 and "invalid datetime_type value" in proc.stderr
    proc = subprocess.run(["bash", "-c", "az cloud show --query '[name, missing]' -o tsv"],
                          capture_output=True, text=True, env=fake.env(), check=False)
    assert proc.stdout == "AzureCloud\nNone\n", "a null inside a list prints None, one item per line"
    assert json.loads(subprocess.run(["az", "account", "show"], capture_output=True, text=True,
                                     env=fake.env(), check=True).stdout)["tenantId"] == TENANT
    # The old walkthrough's `read -r A B < <(... -o tsv)` filled only A: tsv prints a list one item per line.
    proc = subprocess.run(["bash", "-c", "read -r A B < <(az cloud show --query '[name, isActive]' -o tsv); "
                                         "echo \"[$A][$B]\""], capture_output=True, text=True, env=fake.env(),
                          check=True)
    assert proc.stdout == "[AzureCloud][]\n"
    # admin-consent: an internal portal API, refused in other clouds and for service principals.
    for changes in ({"login": "sp"}, {"cloud": "AzureUSGovernment"}):
        other = FakeAzure(tmp_path / "-".join(changes.values()), apps=[NEW_APP], sp=True)
        state = other.state
        state["config"].update(changes)
        other.save_state(state)
        proc = subprocess.run(["az", "ad", "app", "permission", "admin-consent", "--id", NEW_APP],
                              capture_output=True, text=True, env=other.env(), check=False)
        assert proc.returncode == 1, changes
