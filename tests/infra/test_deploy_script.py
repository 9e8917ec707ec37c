"""infra/deploy.sh: shellcheck-clean, --help works, and — against a fake `az` (fake_az.py) that records
every call and answers like the real CLI from a small simulated Azure and Entra ID — runs its steps in
order for each credential kind, reuses what exists, changes nothing on a second run (no new secret, no new
role assignment), and keeps secrets where they belong: the client secret is piped into Key Vault (never an
argument, an echo or a file), the certificate's private key is never read, and a federated deployment
creates no secret and no vault at all. The deployer ends with no Key Vault role on the client secret (a
re-run checks it through Resource Manager, never reading it) and with Certificates Officer on its one
certificate, never on the whole vault; a rotation signs in with the new secret, then revokes the earlier
ones. Sign-in kinds, consent, failures, private networking, --what-if, --destroy, publishing and using a
deployment (--reader, --run-now) are in test_deploy_operations.py and test_deploy_day2.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import zipfile

import pytest

from graph_export import settings

from .bicep_helpers import INFRA, require_shellcheck
from .fake_azure import (
    CERT_NAME,
    CERTIFICATES_OFFICER,
    FAKE_SECRET,
    IDENTITY_PRINCIPAL,
    ME,
    NAMES,
    NEW_APP,
    OLD_APP,
    SECRET_NAME,
    SECRETS_OFFICER,
    TENANT,
    TOKEN_SIGNATURE,
    USER_READ_ALL,
    FakeAzure,
    app,
    in_order,
    opt,
)

SCRIPT = INFRA / "deploy.sh"
DEFAULT_USER_PROPERTIES = ",".join(settings.DEFAULT_USER_PROPERTIES)
POLICY = INFRA / "certificate-policy.json"

CREATES = ["group create", "ad app create", "ad sp create", "ad app permission add",
           "ad app permission admin-consent", "ad app credential reset", "keyvault secret set",
           "keyvault certificate create", "ad app federated-credential create", "ad app federated-credential update",
           "role assignment create", "role assignment delete", "ad app credential delete"]
VAULT_COMMANDS = ("keyvault ",)
DATA_PLANE = ("keyvault secret", "keyvault certificate")  # Key Vault's data plane (roles, network path)


def first_run(fake: FakeAzure, *args: str) -> subprocess.CompletedProcess[str]:
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


# --- static ---------------------------------------------------------------------------------------------

def test_shellcheck_clean():
    shellcheck = require_shellcheck()
    proc = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(SCRIPT)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_mode_and_executable():
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -Eeuo pipefail\n" in text
    assert os.access(SCRIPT, os.X_OK), "infra/deploy.sh should be executable (git update-index --chmod=+x)"


def test_help_prints_usage_and_touches_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: infra/deploy.sh --resource-group NAME")
    for option in ("--location", "--app-name", "--prefix", "--alert-email", "--skip-publish", "--rotate-secret",
                   "--credential KIND", "secret", "certificate", "federated", "--rotate-certificate", "--vnet",
                   "--no-vnet", "--what-if", "--destroy", "--delete-app-registration", "--yes", "--package FILE",
                   "--publish-timeout"):
        assert option in proc.stdout
    # What the caller needs, for each kind of sign-in.
    for need in ("az login --identity", "Application Administrator", "Application.ReadWrite.OwnedBy",
                 "Privileged Role Administrator", "AppRoleAssignment.ReadWrite.All", "User Access Administrator"):
        assert need in proc.stdout
    assert fake.calls == []


def test_bad_arguments_fail_clearly(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run()
    assert proc.returncode != 0 and "--resource-group is required" in proc.stderr
    proc = fake.run("-g", "rg", "--bogus")
    assert proc.returncode != 0 and "unknown argument: --bogus" in proc.stderr
    proc = fake.run("-g", "rg", "--prefix", "Bad-Prefix")
    assert proc.returncode != 0 and "--prefix" in proc.stderr
    proc = fake.run("-g", "rg", "--credential", "password")
    assert proc.returncode != 0 and "--credential must be one of: secret certificate federated" in proc.stderr
    proc = fake.run("-g", "rg", "--credential", "federated", "--rotate-secret")
    assert proc.returncode != 0 and "--rotate-secret applies to --credential secret" in proc.stderr
    proc = fake.run("-g", "rg", "-c", "secret", "--rotate-certificate")
    assert proc.returncode != 0 and "--rotate-certificate applies to --credential certificate" in proc.stderr
    proc = fake.run("-g", "rg", "--what-if", "--destroy")
    assert proc.returncode != 0 and "--destroy cannot be combined with --what-if" in proc.stderr
    proc = fake.run("-g", "rg", "--yes")
    assert proc.returncode != 0 and "apply to --destroy only" in proc.stderr
    proc = fake.run("-g", "rg", "--publish-timeout", "5")
    assert proc.returncode != 0 and "--publish-timeout must be a number of seconds, at least 60" in proc.stderr
    assert fake.calls == []


def test_new_group_needs_a_location(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode != 0
    assert "pass --location" in proc.stderr
    assert not set(CREATES) & set(fake.commands())


# --- secret (the default): a first run from nothing, then a second run -------------------------------------

def test_first_run_creates_everything_in_order(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = first_run(fake, "-e", "ops@example.com")
    assert in_order(fake.commands(), [
        "account show", "cloud show", "ad signed-in-user show", "group show",
        "functionapp list-flexconsumption-locations", "keyvault list-deleted", "group create",
        "ad app list", "ad app create", "ad sp list", "ad sp create",
        "ad app permission list", "ad app permission add", "ad sp show", "rest", "rest",
        "deployment group create", "deployment group show", "resource show",
        "keyvault secret show", "role assignment create", "keyvault secret show",
        "ad app credential reset", "keyvault secret set", "keyvault secret show", "rest",
        "role assignment delete",
    ]), fake.commands()
    assert "Credential: secret (default)" in proc.stderr
    assert "Network: public endpoints, Entra ID + RBAC (default)" in proc.stderr
    # The region is checked before anything is created.
    assert fake.commands().index("functionapp list-flexconsumption-locations") < fake.commands().index("group create")

    add = fake.call("ad app permission add")["argv"]
    assert add[add.index("--api") + 1] == "00000003-0000-0000-c000-000000000000"
    assert add[add.index("--api-permissions") + 1] == f"{USER_READ_ALL}=Role"

    deploy = fake.call("deployment group create")
    argv = deploy["argv"]
    assert argv[argv.index("--resource-group") + 1] == "rg-export"
    assert argv[argv.index("--parameters") + 1] == str(INFRA / "main.bicepparam")
    assert deploy["env"] == {
        "GRAPH_EXPORT_CLIENT_ID": NEW_APP, "GRAPH_EXPORT_CLIENT_CREDENTIAL": "secret",
        "GRAPH_EXPORT_NAME_PREFIX": "graphexp", "GRAPH_EXPORT_ALERT_EMAIL": "ops@example.com",
        "GRAPH_EXPORT_VNET_ENABLED": "false", "GRAPH_EXPORT_GRAPH_ENDPOINT": "https://graph.microsoft.com",
        "GRAPH_EXPORT_IMMUTABILITY_DAYS": "0", "GRAPH_EXPORT_IMMUTABILITY_LOCKED": "false",
        # The export settings, main.bicepparam's defaults (test_deploy_export_settings.py).
        "GRAPH_EXPORT_SCHEDULE": "0 0 2 * * *", "GRAPH_EXPORT_MODE": "full", "GRAPH_EXPORT_FORMATS": "jsonl",
        "GRAPH_EXPORT_CSV_EXCEL": "false", "GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS": "6",
        "GRAPH_EXPORT_USER_PROPERTIES": DEFAULT_USER_PROPERTIES,
        "GRAPH_EXPORT_TENANT_IDS": "",  # one tenant (test_deploy_tenants.py)
    }
    assert "ad app permission admin-consent" not in fake.commands(), "consent goes through Graph (az rest)"
    assert fake.state["consented"]
    assert not any(c.startswith(("keyvault certificate", "ad app federated-credential")) for c in fake.commands())
    assert "config-zip" not in " ".join(fake.commands())
    assert "Skipping code publishing" in proc.stderr
    assert NAMES["functionApp"] in proc.stderr and NAMES["keyVault"] in proc.stderr


def test_client_secret_is_piped_never_an_argument_echo_or_file(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = first_run(fake)

    reset = fake.call("ad app credential reset")["argv"]
    assert "--append" in reset, "other credentials of the app must survive"
    assert reset[reset.index("--query") + 1] == "password"
    stored = fake.call("keyvault secret set")
    assert stored["argv"][stored["argv"].index("--file") + 1] == "/dev/stdin"
    assert "--value" not in stored["argv"]
    assert stored["stdin"] == FAKE_SECRET, "the secret arrives on stdin, without the trailing newline"

    for call in fake.calls:
        assert not any(FAKE_SECRET in arg for arg in call["argv"]), f"secret passed as an argument: {call['argv'][:4]}"
    assert FAKE_SECRET not in proc.stdout and FAKE_SECRET not in proc.stderr
    for path in fake.tmpdir.rglob("*"):
        assert not path.is_file() or FAKE_SECRET not in path.read_text(errors="replace"), f"secret written to {path}"
    assert "FAKE_SECRET" not in SCRIPT.read_text()


def test_the_deployer_keeps_no_role_on_the_secret(tmp_path):
    """Issue 21 item 5: Key Vault Secrets Officer includes reading the secret, so the deployer holds it only for
    the run that creates the secret (on the whole vault: the secret does not exist yet), and nowhere afterwards.
    Fails on f5489b6, which left Secrets Officer on the secret for good."""
    fake = FakeAzure(tmp_path)
    proc = first_run(fake)
    assert fake.roles_of(ME) == set()
    [created] = fake.all("role assignment create")
    assert opt(created, "--scope").rsplit("/", 1)[-1] == NAMES["keyVault"]
    assert opt(created, "--assignee-object-id") == ME and opt(created, "--assignee-principal-type") == "User"
    assert opt(created, "--role") == SECRETS_OFFICER
    assert "you keep no access to the secret" in proc.stderr


def legacy_officer(scope: str, name: str) -> dict:
    vault = f"/subscriptions/sub-1/resourceGroups/rg-export/providers/Microsoft.KeyVault/vaults/{NAMES['keyVault']}"
    return {"id": f"{vault}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}", "principalId": ME,
            "principalType": "User", "scope": vault + scope,
            "roleDefinitionId": f"/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_OFFICER}"}


def test_an_older_deployments_lasting_roles_go_and_a_rerun_never_reads_the_secret(tmp_path):
    """Deployments made before this change left Secrets Officer on the vault (older Bicep) or on the secret
    (deploy.sh): both are removed. A re-run with a usable secret checks it through Resource Manager only: no
    Key Vault data-plane call, no role. Fails on f5489b6 (it kept the role on the secret and read the secret)."""
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], sp=True, permission=True, consented=True,
                     secret=True, role_assignments=[legacy_officer("", "legacy-vault"),
                                                    legacy_officer(f"/secrets/{SECRET_NAME}", "legacy-secret")])
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert "already set; keeping it" in proc.stderr
    assert fake.roles_of(ME) == set()
    assert not [c for c in fake.commands() if c.startswith(DATA_PLANE)], fake.commands()
    show = fake.call("resource show")
    assert opt(show, "--ids").endswith(f"/vaults/{NAMES['keyVault']}/secrets/{SECRET_NAME}")
    assert "value" not in opt(show, "--query")


def test_a_secret_resource_manager_cannot_show_stops_with_one_line(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], sp=True, permission=True, consented=True,
                     secret=True, fail={"resource show": "(AuthorizationFailed) The client does not have "
                                                         "authorization to perform action "
                                                         "'Microsoft.KeyVault/vaults/secrets/read'."})
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 1
    assert (f"ERROR: could not read secret {SECRET_NAME} of Key Vault {NAMES['keyVault']} (az resource show): "
            "ERROR: (AuthorizationFailed)") in proc.stderr
    assert "stopped at" not in proc.stderr, "one line, not the unexpected-failure trace"
    assert "ad app credential reset" not in fake.commands()


def test_the_secret_expires_in_key_vault_when_the_credential_does(tmp_path):
    """The app's expiry warning reads Key Vault's `expires`: it must be the credential's own end date,
    in the form `az keyvault secret set --expires` takes (Y-m-d'T'H:M:S'Z'; the fake refuses others)."""
    fake = FakeAzure(tmp_path)
    first_run(fake, "--secret-years", "2")
    end_date = opt(fake.call("ad app credential reset"), "--end-date")
    expires = opt(fake.call("keyvault secret set"), "--expires")
    assert expires == end_date
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires)
    when = dt.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert 729 <= (when - dt.datetime.now(dt.timezone.utc)).days <= 731
    # What Entra ID and Key Vault now hold agree.
    [password] = fake.the_app()["passwordCredentials"]
    vault_secret = fake.state["vaults"][NAMES["keyVault"]]["secrets"][SECRET_NAME]
    assert password["endDateTime"] == expires
    assert dt.datetime.fromisoformat(vault_secret["expires"]) == when


def test_second_run_changes_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake)
    before = fake.state

    second = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert second.returncode == 0, second.stderr
    created = set(CREATES) & set(fake.commands())
    assert not created, f"a second run must not create anything, but ran: {sorted(created)}"
    after = fake.state
    ignore = ("deployments", "deployment")
    assert {k: v for k, v in after.items() if k not in ignore} == {k: v for k, v in before.items() if k not in ignore}
    # The Bicep deployment is re-applied (ARM incremental mode: unchanged resources stay as they are).
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_ID"] == NEW_APP
    assert "already set; keeping it" in second.stderr
    assert "admin consent already granted" in second.stderr
    assert "Credential: secret (the last deployment)" in second.stderr
    assert "Network: public endpoints, Entra ID + RBAC (the last deployment)" in second.stderr
    # No role assignment is made or removed, none is left, and the secret is not read.
    assert after["role_assignments"] == before["role_assignments"] == []
    assert not [c for c in fake.commands() if c.startswith(DATA_PLANE)], fake.commands()


def test_reuses_an_existing_app_registration(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], app_name="my-export-app")
    proc = fake.run("-g", "rg-export", "-n", "my-export-app", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert "ad app create" not in fake.commands()
    listed = fake.call("ad app list")["argv"]
    assert opt(fake.call("ad app list"), "--filter") == "displayName eq 'my-export-app'"
    assert "--display-name" not in listed, "--display-name matches every name that starts with it"
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_ID"] == OLD_APP
    assert "reusing existing registration" in proc.stderr
    assert "group create" not in fake.commands()


def test_an_app_whose_name_only_starts_with_the_name_is_not_reused(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[app(OLD_APP, "graph-user-export-test")])
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert "ad app create" in fake.commands()
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_ID"] == NEW_APP


def test_ambiguous_app_name_stops_before_changing_anything(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP, NEW_APP])
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode != 0
    assert "2 app registrations are named 'graph-user-export'" in proc.stderr
    assert not set(CREATES) & set(fake.commands())
    assert "deployment group create" not in fake.commands()


# --- rotation: the new secret signs in, then the earlier ones of this deployment are revoked ---------------

OTHERS = [{"displayName": "graph-export kv-other-123", "keyId": "pwd-other", "endDateTime": "2030-01-01T00:00:00Z"},
          {"displayName": "ci pipeline", "keyId": "pwd-ci", "endDateTime": "2030-01-01T00:00:00Z"}]


def rotated(tmp_path, *args: str, **state) -> tuple[FakeAzure, subprocess.CompletedProcess[str]]:
    """--rotate-secret on a deployment whose vault holds a secret (pwd-0 on the app), next to another
    deployment's secret and one of another tool on the same app registration."""
    fake = FakeAzure(tmp_path, group="westeurope", apps=[app(OLD_APP, passwordCredentials=[dict(c) for c in OTHERS])],
                     sp=True, permission=True, consented=True, secret=True, **state)
    return fake, fake.run("-g", "rg-export", "--skip-publish", "--rotate-secret", *args)


def key_ids(fake: FakeAzure) -> list[str]:
    return sorted(c["keyId"] for c in fake.the_app(OLD_APP)["passwordCredentials"])


def test_rotate_secret_revokes_the_previous_secret_once_the_new_one_signs_in(tmp_path):
    """Issue 21 item 6: after a rotation the leaked secret must stop working. The new one is stored, a
    client-credentials sign-in with it (as Key Vault holds it) succeeds, then this deployment's earlier secret
    (by key id, named after the vault) is deleted; other deployments' and tools' secrets stay. Fails on f5489b6,
    which left every earlier secret valid."""
    fake, proc = rotated(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--append" in fake.call("ad app credential reset")["argv"]
    [new] = [k for k in key_ids(fake) if k not in ("pwd-other", "pwd-ci", "pwd-0")]
    assert key_ids(fake) == sorted(["pwd-other", "pwd-ci", new]), "pwd-0, the previous secret, is revoked"
    assert opt(fake.call("ad app credential delete"), "--key-id") == "pwd-0"
    assert fake.state["signins"] == 1
    commands = fake.commands()
    assert in_order(commands, ["keyvault secret set", "keyvault secret show", "rest", "ad app credential delete"])
    # The sign-in: the stored secret, piped into the body of a token request that carries no az token.
    [signin] = [c for c in fake.all("rest") if "oauth2" in opt(c, "--uri")]
    assert opt(signin, "--uri") == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert "--skip-authorization-header" in signin["argv"] and opt(signin, "--body") == "@-"
    assert f"client_id={OLD_APP}" in signin["stdin"] and "client_secret=" + FAKE_SECRET in signin["stdin"]
    stored = fake.call("keyvault secret set")["stdin"]
    assert stored.startswith(FAKE_SECRET) and stored != FAKE_SECRET, "a new value"
    for call in fake.calls:
        assert not any(FAKE_SECRET in arg for arg in call["argv"]), call["argv"][:4]
    assert FAKE_SECRET not in proc.stderr + proc.stdout and TOKEN_SIGNATURE not in proc.stderr + proc.stdout
    assert "revoked 1 earlier client secret(s)" in proc.stderr
    assert fake.roles_of(ME) == set(), "the role the rotation needed is gone again"
    [grant] = fake.all("role assignment create")
    assert opt(grant, "--scope").endswith(f"/secrets/{SECRET_NAME}"), "a new version needs the secret, not the vault"


def test_keep_previous_secret_keeps_them(tmp_path):
    fake, proc = rotated(tmp_path, "--keep-previous-secret")
    assert proc.returncode == 0, proc.stderr
    assert "ad app credential delete" not in fake.commands()
    assert len(key_ids(fake)) == 4 and "pwd-0" in key_ids(fake)
    assert "--keep-previous-secret" in proc.stderr and fake.state["signins"] == 1


def test_a_new_secret_accepted_after_a_moment_is_waited_for(tmp_path):
    fake, proc = rotated(tmp_path, signin_refusals=2)  # AADSTS7000215 twice, as a new secret propagates
    assert proc.returncode == 0, proc.stderr
    assert "signing in with the new client secret: not yet" in proc.stderr
    assert "pwd-0" not in key_ids(fake)


def test_a_new_secret_entra_refuses_revokes_nothing_and_says_so(tmp_path):
    fake, proc = rotated(tmp_path, signin_refusals=99)
    assert proc.returncode == 1
    assert "Entra ID refused the new client secret" in proc.stderr and "AADSTS7000215" in proc.stderr
    assert "The earlier client secrets were left valid" in proc.stderr
    assert "ad app credential delete" not in fake.commands() and "pwd-0" in key_ids(fake)
    assert FAKE_SECRET not in proc.stderr + proc.stdout
    assert fake.roles_of(ME) == set(), "the temporary role goes on failure too"


def test_waits_for_a_new_vault_role_to_apply(tmp_path):
    fake = FakeAzure(tmp_path, rbac_delay=2)
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    # no role, 2 refused while it applies, then missing; then the new secret is read back for the sign-in
    assert fake.commands().count("keyvault secret show") == 5
    assert "waiting for the role to apply" in proc.stderr
    assert fake.call("keyvault secret set")["stdin"] == FAKE_SECRET


# --- certificate ---------------------------------------------------------------------------------------------

def test_certificate_first_run_creates_the_certificate_and_registers_its_public_key(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = first_run(fake, "--credential", "certificate")
    assert "Credential: certificate (--credential)" in proc.stderr
    assert in_order(fake.commands(), [
        "deployment group create", "deployment group show", "keyvault certificate show", "role assignment create",
        "keyvault certificate show", "keyvault certificate create", "keyvault certificate show",
        "ad app credential list", "ad app credential reset", "role assignment create", "role assignment delete",
    ]), fake.commands()
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == "certificate"

    create = fake.call("keyvault certificate create")
    assert opt(create, "--vault-name") == NAMES["keyVault"] and opt(create, "--name") == CERT_NAME
    assert opt(create, "--policy") == f"@{POLICY}"
    [policy] = fake.state["certificate_policies"]
    assert policy["lifetime_actions"][0]["action"]["action_type"] == "AutoRenew"

    cert = fake.state["vaults"][NAMES["keyVault"]]["certificates"][CERT_NAME]["versions"][-1]
    reset = fake.call("ad app credential reset")
    assert "--append" in reset["argv"], "earlier certificates and secrets stay valid"
    assert opt(reset, "--cert") == CERT_NAME and opt(reset, "--keyvault") == NAMES["keyVault"]
    assert opt(reset, "--end-date") == cert["expires"], "the key credential ends when the certificate does"
    assert opt(reset, "--display-name") == f"graph-export {NAMES['keyVault']} {cert['thumbprint']}"
    assert "--query" not in reset["argv"] and "--create-cert" not in reset["argv"]
    assert fake.roles_of(ME) == {(CERTIFICATES_OFFICER, f"certificates/{CERT_NAME}")}, "never vault-wide"
    [key] = fake.the_app()["keyCredentials"]
    assert key["customKeyIdentifier"] == cert["thumbprint"]
    assert key["endDateTime"] == dt.datetime.fromisoformat(cert["expires"]).strftime("%Y-%m-%dT%H:%M:%SZ")

    # No client secret anywhere, and nothing reads a secret (the private key stays in the vault).
    assert not fake.the_app()["passwordCredentials"]
    assert not any(c.startswith(("keyvault secret", "ad app federated-credential")) for c in fake.commands())
    assert cert["thumbprint"] in proc.stderr


def test_certificate_second_run_changes_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake, "--credential", "certificate")
    before = fake.state
    second = fake.run("-g", "rg-export", "--skip-publish")
    assert second.returncode == 0, second.stderr
    assert "Credential: certificate (the last deployment)" in second.stderr
    assert not set(CREATES) & set(fake.commands()), fake.commands()
    assert fake.state["vaults"] == before["vaults"] and fake.state["apps"] == before["apps"]
    assert fake.role_assignments == before["role_assignments"]
    assert "public key already registered" in second.stderr


def test_a_renewed_certificate_is_registered_on_the_next_run(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake, "--credential", "certificate")
    thumbprint = fake.renew_certificate()  # Key Vault's AutoRenew: a new key the app registration does not know
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert "keyvault certificate create" not in fake.commands()
    reset = fake.call("ad app credential reset")
    assert "--append" in reset["argv"] and opt(reset, "--display-name") == f"graph-export {NAMES['keyVault']} {thumbprint}"
    assert [k["customKeyIdentifier"] for k in fake.the_app()["keyCredentials"]][-1] == thumbprint
    assert len(fake.the_app()["keyCredentials"]) == 2, "the previous certificate stays valid until it expires"


def test_rotate_certificate_creates_and_registers_a_new_version(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake, "--credential", "certificate")
    proc = fake.run("-g", "rg-export", "--skip-publish", "--rotate-certificate")
    assert proc.returncode == 0, proc.stderr
    assert fake.commands().count("keyvault certificate create") == 1
    assert fake.commands().count("ad app credential reset") == 1
    versions = fake.state["vaults"][NAMES["keyVault"]]["certificates"][CERT_NAME]["versions"]
    assert len(versions) == 2
    assert (opt(fake.call("ad app credential reset"), "--display-name")
            == f"graph-export {NAMES['keyVault']} {versions[-1]['thumbprint']}")


def test_switching_from_secret_to_certificate_says_how_to_remove_the_old_secret(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake)
    proc = fake.run("-g", "rg-export", "--skip-publish", "--credential", "certificate")
    assert proc.returncode == 0, proc.stderr
    assert "Credential: certificate (--credential)" in proc.stderr
    assert "still has 1 client secret(s)" in proc.stderr
    assert f"az ad app credential delete --id {NEW_APP} --key-id <keyId>" in proc.stderr
    assert "ad app credential delete" not in fake.commands(), "deleting is left to the operator"


# --- federated -----------------------------------------------------------------------------------------------

def _federated_parameters(fake: FakeAzure) -> dict:
    return json.loads(opt(fake.call("ad app federated-credential create"), "--parameters"))


def test_federated_first_run_trusts_the_identity_and_creates_no_secret(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = first_run(fake, "--credential", "federated")
    assert in_order(fake.commands(), [
        "deployment group create", "deployment group show", "ad app federated-credential list",
        "ad app federated-credential create",
    ]), fake.commands()
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == "federated"
    assert _federated_parameters(fake) | {"description": None} == {
        "name": f"graph-export-{NAMES['identity']}",
        "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "subject": IDENTITY_PRINCIPAL,
        "audiences": ["api://AzureADTokenExchange"],
        "description": None,
    }
    # No secret anywhere: no credential made, no vault touched.
    assert "ad app credential reset" not in fake.commands()
    assert not [c for c in fake.commands() if c.startswith(VAULT_COMMANDS)], fake.commands()
    assert not fake.the_app()["passwordCredentials"] and not fake.the_app()["keyCredentials"]
    assert fake.state["vaults"] == {}
    assert fake.role_assignments == [], "no vault, no role for anybody"
    assert "AADSTS70021" in proc.stderr, "says that a new federated credential takes minutes to apply"
    assert "no secret, no key vault" in proc.stderr


def test_federated_second_run_changes_nothing(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake, "--credential", "federated")
    before = fake.the_app()
    second = fake.run("-g", "rg-export", "--skip-publish")
    assert second.returncode == 0, second.stderr
    assert "Credential: federated (the last deployment)" in second.stderr
    assert not set(CREATES) & set(fake.commands()), fake.commands()
    assert fake.the_app() == before
    assert "already trusts this identity" in second.stderr


def test_a_plain_rerun_never_turns_a_federated_deployment_back_into_a_secret(tmp_path):
    fake = FakeAzure(tmp_path, deployment_credential="federated", apps=[OLD_APP], sp=True, permission=True,
                     consented=True)
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == "federated"
    assert "ad app credential reset" not in fake.commands()
    assert not [c for c in fake.commands() if c.startswith(VAULT_COMMANDS)]


def test_a_recreated_identity_is_trusted_in_place_of_the_old_one(tmp_path):
    fake = FakeAzure(tmp_path)
    first_run(fake, "--credential", "federated")
    fake.recreate_identity("88888888-8888-8888-8888-888888888888")
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    update = fake.call("ad app federated-credential update")
    assert opt(update, "--federated-credential-id") == f"graph-export-{NAMES['identity']}"
    assert json.loads(opt(update, "--parameters"))["subject"] == "88888888-8888-8888-8888-888888888888"
    [fic] = fake.the_app()["federatedIdentityCredentials"]
    assert fic["subject"] == "88888888-8888-8888-8888-888888888888"


@pytest.mark.parametrize(("cloud", "issuer_host", "audience"), [
    ("AzureUSGovernment", "https://login.microsoftonline.us", "api://AzureADTokenExchangeUSGov"),
    ("AzureChinaCloud", "https://login.chinacloudapi.cn", "api://AzureADTokenExchangeChina"),
])
def test_federated_issuer_and_audience_follow_the_cloud(tmp_path, cloud, issuer_host, audience):
    fake = FakeAzure(tmp_path, cloud=cloud)
    first_run(fake, "--credential", "federated")
    parameters = _federated_parameters(fake)
    assert parameters["issuer"] == f"{issuer_host}/{TENANT}/v2.0"
    assert parameters["audiences"] == [audience]


# --- publishing -------------------------------------------------------------------------------------------

def test_publish_uploads_a_funcignore_filtered_package_with_remote_build(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope", apps=[OLD_APP], sp=True, permission=True, consented=True,
                     secret=True)
    proc = fake.run("-g", "rg-export")
    assert proc.returncode == 0, proc.stderr
    argv = fake.call("functionapp deployment source config-zip")["argv"]
    assert argv[argv.index("--name") + 1] == NAMES["functionApp"]
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
