"""The by-hand az commands in infra/README.md ("The same steps, one command at a time") and in the top-level
README's "Choosing a credential" run, as written, against the fake `az` (fake_az.py: the real CLI's options,
query language, output rules and response shapes), for each credential kind, and leave what deploy.sh would:
a client secret whose vault expiry is its end date, a registered certificate, or a federated credential
trusting the function's identity with no secret anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import zipfile

import pytest

from .bicep_helpers import INFRA, REPO
from .fake_azure import (
    CERT_NAME,
    FAKE_SECRET,
    IDENTITY_PRINCIPAL,
    NAMES,
    NEW_APP,
    SECRET_NAME,
    TENANT,
    FakeAzure,
    opt,
)

KINDS = ["secret", "certificate", "federated"]
WALKTHROUGH = "## The same steps, one command at a time"
CHOOSING = "## Choosing a credential"


def section(text: str, heading: str) -> str:
    assert heading in text, f"no '{heading}' section"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(the prose or heading just before it, code) for each ```bash / ```sh block."""
    found = []
    for match in re.finditer(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        before = text[:match.start()].rstrip().rsplit("\n\n", 1)[-1]
        found.append((before, match.group(1)))
    return found


def kind_of(before: str, code: str) -> str | None:
    for kind, marker in (("certificate", "keyvault certificate create"), ("federated", "federated-credential"),
                         ("secret", "keyvault secret set")):
        if marker in code:
            return kind
    return None


def walkthrough() -> tuple[str, dict[str, str]]:
    """infra/README.md: the steps 1-3 block and the step-4 block of each kind."""
    blocks = code_blocks(section((INFRA / "README.md").read_text(), WALKTHROUGH))
    setup = blocks[0][1]
    assert "az deployment group create" in setup and re.search(r"^CREDENTIAL=secret\b", setup, re.M)
    by_kind = {kind: code for before, code in blocks[1:] if (kind := kind_of(before, code))}
    assert set(by_kind) == set(KINDS), f"infra/README.md step 4 should have one block per kind: {sorted(by_kind)}"
    return setup, by_kind


def run_by_hand(tmp_path, kind: str, step4: str) -> FakeAzure:
    setup, _ = walkthrough()
    fake = FakeAzure(tmp_path)
    script = re.sub(r"^CREDENTIAL=secret\b", f"CREDENTIAL={kind}", setup, flags=re.M) + "\n" + step4
    proc = fake.run_script(script, cwd=REPO)
    assert proc.returncode == 0, f"{kind}: {proc.stderr}"
    assert FAKE_SECRET not in proc.stdout + proc.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == kind
    return fake


def check_outcome(fake: FakeAzure, kind: str) -> None:
    """What the commands of `kind` must have left behind (the same as deploy.sh)."""
    the_app = fake.the_app(NEW_APP)
    if kind == "secret":
        stored = fake.call("keyvault secret set")
        assert stored["stdin"] == FAKE_SECRET and opt(stored, "--file") == "/dev/stdin"
        assert opt(stored, "--expires") == opt(fake.call("ad app credential reset"), "--end-date")
        [password] = the_app["passwordCredentials"]
        expires = fake.state["vaults"][NAMES["keyVault"]]["secrets"][SECRET_NAME]["expires"]
        assert dt.datetime.fromisoformat(expires) == dt.datetime.fromisoformat(password["endDateTime"])
    elif kind == "certificate":
        assert opt(fake.call("keyvault certificate create"), "--policy") == "@infra/certificate-policy.json"
        version = fake.state["vaults"][NAMES["keyVault"]]["certificates"][CERT_NAME]["versions"][-1]
        [key] = the_app["keyCredentials"]
        assert key["customKeyIdentifier"] == version["thumbprint"]
        assert key["displayName"] == f"graph-export {version['thumbprint']}"
        assert not the_app["passwordCredentials"]
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
        assert fake.state["vaults"] == {}


@pytest.mark.parametrize("kind", KINDS)
def test_infra_readme_walkthrough_runs_for_each_credential(tmp_path, kind):
    _, by_kind = walkthrough()
    fake = run_by_hand(tmp_path, kind, by_kind[kind])
    check_outcome(fake, kind)


def test_infra_readme_code_step_publishes_with_a_command_az_accepts(tmp_path):
    """Step 5's az line (not its zip, which would package this work tree), on a stand-in package."""
    blocks = code_blocks(section((INFRA / "README.md").read_text(), WALKTHROUGH))
    [code] = [c for _, c in blocks if "config-zip" in c]
    command = re.search(r"^az functionapp deployment source config-zip(?:.*\\\n)*.*$", code, re.M).group(0)
    work = tmp_path / "work"
    work.mkdir()
    with zipfile.ZipFile(work / "app.zip", "w") as package:
        package.writestr("function_app.py", "")
    fake = FakeAzure(tmp_path / "fake", group="westeurope")
    proc = fake.run_script(f"RG=rg-graph-export\nAPP={NAMES['functionApp']}\n{command}", cwd=work)
    assert proc.returncode == 0, proc.stderr
    call = fake.call("functionapp deployment source config-zip")
    assert opt(call, "--name") == NAMES["functionApp"] and opt(call, "--build-remote") == "true"


def choosing_section() -> str:
    readme = (REPO / "README.md").read_text()
    if CHOOSING not in readme:
        pytest.skip(f"README.md has no '{CHOOSING}' section yet")
    return section(readme, CHOOSING)


def test_choosing_a_credential_commands_run_for_each_credential(tmp_path):
    blocks = [(kind_of(before, code), code) for before, code in code_blocks(choosing_section())]
    by_kind = {kind: code for kind, code in blocks if kind}
    assert set(by_kind) == set(KINDS), f"'{CHOOSING}' should show the commands of each kind: {sorted(by_kind)}"
    for kind in KINDS:
        fake = run_by_hand(tmp_path / kind, kind, by_kind[kind])
        check_outcome(fake, kind)


def test_choosing_a_credential_uses_only_real_deploy_options():
    text = choosing_section()
    usage = subprocess.run(["bash", str(INFRA / "deploy.sh"), "--help"], capture_output=True, text=True,
                           check=True).stdout
    for code in [c for _, c in code_blocks(text)] + re.findall(r"`(infra/deploy\.sh[^`]*)`", text):
        for line in code.replace("\\\n", " ").splitlines():
            if line.strip().startswith("infra/deploy.sh"):
                for option in re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", line):
                    assert re.search(rf"(^|[\s,]){re.escape(option)}\b", usage), f"deploy.sh has no {option}: {line}"
    for kind in KINDS:
        assert f"`{kind}`" in text or f"**{kind}**" in text


def test_the_walkthrough_and_the_choosing_section_show_the_same_commands():
    """One set of by-hand commands, shown in two places: they must not drift apart."""
    _, infra = walkthrough()
    ours = {kind: code for before, code in code_blocks(choosing_section()) if (kind := kind_of(before, code))}
    strip = lambda code: [line for line in code.strip().splitlines() if not line.lstrip().startswith("#")]  # noqa: E731
    for kind in KINDS:
        assert strip(ours[kind]) == strip(infra[kind]), kind


def test_fake_refuses_what_the_real_az_refuses(tmp_path):
    """The fake must be able to fail: an option az lacks, a missing value, an --expires az cannot parse."""
    fake = FakeAzure(tmp_path, group="westeurope")
    for script, expected in (
        ("az keyvault secret set --vault-name kv --name n --file /dev/stdin --expiry 2030-01-01 </dev/null",
         "unrecognized arguments: --expiry"),
        ("az ad app federated-credential create --id x", "the following arguments are required: --parameters"),
        ("az ad app credential reset --id x --cert", "argument --cert: expected one argument"),
    ):
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                            env=fake.env(), check=False)
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
