"""infra/deploy.sh beyond the happy path of a user in the public cloud, against the recording fake `az`:
service-principal and managed-identity sign-ins, admin consent through each cloud's Microsoft Graph, an
app registration whose name is a prefix of another's, a failing credential reset and a failing vault
write (no empty secret, no orphaned credential), a stored secret that is empty, disabled or expired, a host
that never becomes healthy, the region check, private networking, --what-if and --destroy.
"""

from __future__ import annotations

import json
import time

import pytest

from .fake_azure import (
    CERT_NAME,
    DEPLOYER_APP,
    DEPLOYER_SP,
    FAKE_SECRET,
    GRAPH_SP,
    ME,
    NAMES,
    NEW_APP,
    OLD_APP,
    SECRET_NAME,
    SP,
    TOKEN_SIGNATURE,
    USER_READ_ALL,
    FakeAzure,
    app,
    opt,
)

CREATES = ["group create", "ad app create", "ad sp create", "ad app permission add", "ad app credential reset",
           "keyvault secret set", "keyvault certificate create", "ad app federated-credential create",
           "role assignment create", "deployment group create", "provider register"]


def deploy(fake: FakeAzure, *args: str, ok: bool = True):
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--skip-publish", *args)
    if ok:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, proc.stderr
    return proc


def posts(fake: FakeAzure) -> list[dict]:
    """The consent requests (POSTs to Microsoft Graph; a new client secret's sign-in is a POST too)."""
    return [c for c in fake.all("rest") if opt(c, "--method") == "POST" and "oauth2" not in opt(c, "--uri")]


def existing(**state):
    """A tenant where the app registration, its service principal, the permission and consent exist."""
    return {"group": "westeurope", "apps": [OLD_APP], "sp": True, "permission": True, "consented": True, **state}


# --- who runs it -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("login", "label"), [
    ("sp", f"service principal {DEPLOYER_APP}"),
    ("mi", "managed identity (systemAssignedIdentity)"),  # az login --identity names no object id
])
def test_service_principal_and_managed_identity_sign_ins(tmp_path, login, label):
    fake = FakeAzure(tmp_path, login=login)
    proc = deploy(fake)
    assert f"signed in as {label}, object id {DEPLOYER_SP}" in proc.stderr
    assert "ad signed-in-user show" not in fake.commands(), "only a user has a /me"
    assert "account get-access-token" in fake.commands()
    # Its Key Vault role is made for it, as a service principal, for the run that creates the secret only.
    assert fake.roles_of(DEPLOYER_SP) == set()
    assert {opt(c, "--assignee-principal-type") for c in fake.all("role assignment create")} == {"ServicePrincipal"}
    assert fake.call("keyvault secret set")["stdin"] == FAKE_SECRET
    assert fake.state["consented"] and "ad app permission admin-consent" not in fake.commands()
    # The access token's signature never shows up (only its claims are decoded, inside a pipe).
    assert TOKEN_SIGNATURE not in proc.stdout + proc.stderr
    for path in fake.tmpdir.rglob("*"):
        assert not path.is_file() or TOKEN_SIGNATURE not in path.read_text(errors="replace"), path


def test_a_service_principal_without_graph_permissions_is_told_what_it_needs(tmp_path):
    fake = FakeAzure(tmp_path, login="mi", app_create_fails=True)
    proc = deploy(fake, ok=False)
    assert "could not create the app registration" in proc.stderr
    assert "Application.ReadWrite.OwnedBy" in proc.stderr and "Application.ReadWrite.All" in proc.stderr
    assert "deployment group create" not in fake.commands()


def test_consent_a_service_principal_cannot_grant_is_handed_over(tmp_path):
    fake = FakeAzure(tmp_path, login="sp", consent_fails=True)
    proc = deploy(fake)
    assert len(posts(fake)) == 3, "bounded retries"
    assert "AppRoleAssignment.ReadWrite.All" in proc.stderr
    assert (f"az rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/{GRAPH_SP}/"
            "appRoleAssignedTo --body" in proc.stderr)
    assert "admin consent is still missing" in proc.stderr, "the summary repeats it"
    assert "deployment group create" in fake.commands()


def test_a_user_without_the_consent_role_is_told_which_one(tmp_path):
    fake = FakeAzure(tmp_path, consent_fails=True)
    proc = deploy(fake)
    assert "Privileged Role Administrator" in proc.stderr
    assert "Exports fail with 403 Authorization_RequestDenied until then" in proc.stderr


def test_an_unexpected_failure_never_stops_the_script_silently(tmp_path):
    fake = FakeAzure(tmp_path, fail={"ad app permission list": "(Unknown) Something went wrong."})
    proc = deploy(fake, ok=False)
    assert "ERROR: stopped at infra/deploy.sh line" in proc.stderr
    assert "az ad app permission list" in proc.stderr
    assert "deployment group create" not in fake.commands()


# --- admin consent through Graph, in every cloud ------------------------------------------------------------

@pytest.mark.parametrize(("cloud", "graph"), [
    ("AzureCloud", "https://graph.microsoft.com"),
    ("AzureUSGovernment", "https://graph.microsoft.us"),
    ("AzureChinaCloud", "https://microsoftgraph.chinacloudapi.cn"),
])
def test_consent_goes_to_the_active_clouds_graph(tmp_path, cloud, graph):
    fake = FakeAzure(tmp_path, cloud=cloud, group="westeurope")
    deploy(fake, "--credential", "federated")
    [get] = [c for c in fake.all("rest") if opt(c, "--method") == "GET"]
    assert opt(get, "--uri") == f"{graph}/v1.0/servicePrincipals/{SP}/appRoleAssignments"
    [post] = posts(fake)
    assert opt(post, "--uri") == f"{graph}/v1.0/servicePrincipals/{GRAPH_SP}/appRoleAssignedTo"
    assert json.loads(opt(post, "--body")) == {"principalId": SP, "resourceId": GRAPH_SP, "appRoleId": USER_READ_ALL}
    assert fake.state["consented"]
    assert "ad app permission admin-consent" not in fake.commands()
    # The app reads users from the same Graph.
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_GRAPH_ENDPOINT"] == graph


# --- the app registration ----------------------------------------------------------------------------------

def test_an_app_whose_name_is_a_prefix_of_another_is_reused(tmp_path):
    """graph-user-export and graph-user-export-dev: --display-name would match both and abort (or, with
    [0], take either); the exact filter finds the one."""
    other = "cccccccc-cccc-cccc-cccc-cccccccccccc"
    fake = FakeAzure(tmp_path, group="westeurope",
                     apps=[app(other, "graph-user-export-dev"), app(OLD_APP, "graph-user-export")])
    proc = deploy(fake)
    assert f"reusing existing registration, client id {OLD_APP}" in proc.stderr
    assert "ad app create" not in fake.commands()
    assert opt(fake.call("ad app permission add"), "--id") == OLD_APP
    assert opt(fake.call("ad app credential reset"), "--id") == OLD_APP
    assert not fake.the_app(other)["passwordCredentials"]


# --- the client secret: nothing empty, nothing orphaned ------------------------------------------------------

def test_a_failing_credential_reset_stores_no_empty_secret(tmp_path):
    fake = FakeAzure(tmp_path, reset_fails=True)
    proc = deploy(fake, ok=False)
    assert "keyvault secret set" not in fake.commands(), "az keyvault secret set would store the empty input"
    assert "refusing to write an empty secret" in proc.stderr
    assert "no client secret was created" in proc.stderr
    assert fake.state["vaults"][NAMES["keyVault"]]["secrets"] == {}
    assert fake.roles_of(ME) == set(), "the temporary vault-wide role is removed on failure too"


def test_a_failing_vault_write_deletes_the_new_credential(tmp_path):
    fake = FakeAzure(tmp_path, secret_set_fails=True)
    proc = deploy(fake, ok=False)
    created = [c for c in fake.the_app()["passwordCredentials"]]
    assert created == [], "the client secret the vault did not take is deleted from the app registration"
    [delete] = fake.all("ad app credential delete")
    assert opt(delete, "--id") == NEW_APP and opt(delete, "--key-id").startswith("pwd-")
    assert "could not be stored in Key Vault" in proc.stderr
    assert fake.roles_of(ME) == set()


@pytest.mark.parametrize(("attributes", "reason"), [
    ({"enabled": False}, "it is disabled"),
    ({"expires": "2020-01-01T00:00:00+00:00"}, "it expired on 2020-01-01T00:00:00Z"),
    ({"credential": False}, f"app registration {OLD_APP} has no client secret named 'graph-export {NAMES['keyVault']}' (deleted, e.g. by --destroy)"),
])
def test_a_stored_secret_that_cannot_work_is_replaced(tmp_path, attributes, reason):
    """Seen through Resource Manager (its attributes; the value is never read): disabled, expired, or its
    credential gone from the app registration (a vault recovered after --destroy, which deleted it)."""
    fake = FakeAzure(tmp_path, **existing(secret={k: v for k, v in attributes.items() if k != "credential"} or True))
    if "credential" in attributes:
        state = fake.state
        state["apps"][0]["passwordCredentials"] = []
        fake.save_state(state)
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert f"the vault holds secret '{SECRET_NAME}', but {reason}: replacing it" in proc.stderr
    assert fake.call("keyvault secret set")["stdin"].startswith(FAKE_SECRET)
    stored = fake.state["vaults"][NAMES["keyVault"]]["secrets"][SECRET_NAME]
    assert stored["enabled"] and stored["length"] > len(FAKE_SECRET)
    assert [c["displayName"] for c in fake.the_app(OLD_APP)["passwordCredentials"]] == [
        f"graph-export {NAMES['keyVault']}"], "the new one only"


# --- publishing --------------------------------------------------------------------------------------------

def test_a_host_that_never_becomes_healthy_fails_once_and_says_what_to_check(tmp_path):
    fake = FakeAzure(tmp_path, **existing(secret=True, zip_outcome="unhealthy"))
    started = time.monotonic()
    proc = fake.run("-g", "rg-export", "--publish-timeout", "300")
    assert proc.returncode != 0
    assert time.monotonic() - started < 30
    [publish] = fake.all("functionapp deployment source config-zip")
    assert opt(publish, "--timeout") == "300", "the wait is bounded"
    for what in ("did not report healthy", NAMES["hostStorage"], NAMES["identity"], "Storage Blob Data Owner",
                 "AzureWebJobsStorage__", "az functionapp log deployment show --resource-group rg-export",
                 "run infra/deploy.sh --resource-group rg-export again"):
        assert what in proc.stderr, what


@pytest.mark.parametrize(("outcome", "message"), [
    ("timeout", "did not finish within --publish-timeout 600s"),
    ("conflict", "another deployment to graphexp-func-abc is still running"),
])
def test_a_publish_that_does_not_finish_is_explained(tmp_path, outcome, message):
    fake = FakeAzure(tmp_path, **existing(secret=True, zip_outcome=outcome))
    proc = fake.run("-g", "rg-export")
    assert proc.returncode != 0 and message in proc.stderr
    assert fake.commands().count("functionapp deployment source config-zip") == 1


# --- the region --------------------------------------------------------------------------------------------

def test_a_region_without_flex_consumption_stops_before_anything_is_created(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "-l", "Brazil South", "--skip-publish")
    assert proc.returncode != 0
    assert "region 'brazilsouth' does not offer the Flex Consumption plan" in proc.stderr
    assert "westeurope" in proc.stderr, "lists the regions that do"
    assert not set(CREATES) & set(fake.commands())


def test_a_region_name_as_the_portal_writes_it_is_accepted(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy_args = ("-g", "rg-export", "-l", "West Europe", "--skip-publish", "-c", "federated")
    proc = fake.run(*deploy_args)
    assert proc.returncode == 0, proc.stderr
    assert opt(fake.call("group create"), "--location") == "westeurope"


# --- private networking ------------------------------------------------------------------------------------

def test_vnet_with_a_federated_credential_deploys_from_anywhere(tmp_path):
    fake = FakeAzure(tmp_path, app_provider_registered=False)
    proc = deploy(fake, "--vnet", "--credential", "federated")
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_VNET_ENABLED"] == "true"
    register = fake.call("provider register")
    assert opt(register, "--namespace") == "Microsoft.App" and "--wait" in register["argv"]
    assert fake.commands().index("provider register") < fake.commands().index("deployment group create")
    assert "Network: private endpoints, public network access disabled (--vnet)" in proc.stderr
    assert "VNet graphexp-vnet-abc" in proc.stderr
    assert not [c for c in fake.commands() if c.startswith("keyvault ")]

    again = fake.run("-g", "rg-export", "--skip-publish")  # the network mode sticks, the provider is registered
    assert again.returncode == 0, again.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_VNET_ENABLED"] == "true"
    assert "(the last deployment)" in again.stderr and "provider register" not in fake.commands()

    off = fake.run("-g", "rg-export", "--skip-publish", "--no-vnet")
    assert off.returncode == 0, off.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_VNET_ENABLED"] == "false"


def test_vnet_with_a_secret_from_outside_the_vnet_explains_and_creates_no_credential(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, "--vnet", ok=False)
    assert "refuses requests from this network" in proc.stderr
    assert "from a machine in that VNet" in proc.stderr and "--credential federated" in proc.stderr
    assert "ad app credential reset" not in fake.commands()
    assert "role assignment create" not in fake.commands()
    assert fake.commands().count("keyvault secret show") == 1, "no waiting for a role that cannot help"


def test_vnet_with_a_secret_from_inside_the_vnet(tmp_path):
    fake = FakeAzure(tmp_path, inside_vnet=True)
    deploy(fake, "--vnet")
    assert fake.call("keyvault secret set")["stdin"] == FAKE_SECRET
    assert fake.roles_of(ME) == set()


def test_a_provider_the_caller_cannot_register_is_explained(tmp_path):
    fake = FakeAzure(tmp_path, app_provider_registered=False, provider_register_fails=True)
    proc = deploy(fake, "--vnet", "-c", "federated", ok=False)
    assert "az provider register --namespace Microsoft.App" in proc.stderr
    assert "deployment group create" not in fake.commands()


# --- preview ----------------------------------------------------------------------------------------------------

def test_what_if_shows_the_changes_and_changes_nothing(tmp_path):
    fake = FakeAzure(tmp_path, **existing(deployment_credential="certificate"))
    before = fake.state
    proc = fake.run("-g", "rg-export", "--what-if")
    assert proc.returncode == 0, proc.stderr
    what_if = fake.call("deployment group what-if")
    assert opt(what_if, "--resource-group") == "rg-export" and opt(what_if, "--name") == "graph-export"
    assert what_if["env"]["GRAPH_EXPORT_CLIENT_ID"] == OLD_APP
    assert what_if["env"]["GRAPH_EXPORT_CLIENT_CREDENTIAL"] == "certificate", "the kind sticks in a preview too"
    assert "Resource changes: 1 to modify." in proc.stdout
    assert "functionapp list-flexconsumption-locations" in fake.commands()
    assert "nothing was changed" in proc.stderr
    assert not set(CREATES) & set(fake.commands()), fake.commands()
    assert not posts(fake)
    after = fake.state
    assert {k: v for k, v in after.items() if k != "what_ifs"} == {k: v for k, v in before.items() if k != "what_ifs"}


def test_what_if_before_the_first_deployment(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = fake.run("-g", "rg-export", "-l", "westeurope", "--what-if")
    assert proc.returncode == 0, proc.stderr
    assert "would create resource group rg-export in westeurope" in proc.stderr
    assert "would create app registration 'graph-user-export'" in proc.stderr
    assert "deployment group what-if" not in fake.commands(), "ARM what-if needs an existing group"
    assert not set(CREATES) & set(fake.commands())


# --- teardown ---------------------------------------------------------------------------------------------

def test_destroy_removes_the_group_and_this_deployments_credentials_only(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy(fake)
    # Another deployment (another vault) uses the same app registration.
    state = fake.state
    state["apps"][0]["passwordCredentials"].append({"displayName": "graph-export kv-other-123", "keyId": "pwd-other"})
    fake.save_state(state)

    proc = fake.run("-g", "rg-export", "--destroy", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert opt(fake.call("group delete"), "--name") == "rg-export" and "--yes" in fake.call("group delete")["argv"]
    assert [c["keyId"] for c in fake.the_app()["passwordCredentials"]] == ["pwd-other"]
    assert "ad app delete" not in fake.commands(), "the registration stays unless asked"
    assert not fake.state["group"]
    # The purge-protected vault keeps its name: say so, and what to do about it.
    assert f"Key Vault {NAMES['keyVault']} is now soft-deleted with purge protection" in proc.stderr
    assert f"az keyvault recover --name {NAMES['keyVault']}" in proc.stderr and "another --prefix" in proc.stderr
    assert "90 days" in proc.stderr


def test_destroy_removes_the_federated_credential(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy(fake, "-c", "federated")
    proc = fake.run("-g", "rg-export", "--destroy", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fake.the_app()["federatedIdentityCredentials"] == []
    assert opt(fake.call("ad app federated-credential delete"), "--federated-credential-id") == "fic-1"


def test_destroy_a_certificate_deployment_removes_its_key(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy(fake, "-c", "certificate")
    proc = fake.run("-g", "rg-export", "--destroy", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fake.the_app()["keyCredentials"] == []
    assert opt(fake.call("ad app credential delete"), "--key-id").startswith("key-")


def test_destroy_with_delete_app_registration(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy(fake, "-c", "federated")
    proc = fake.run("-g", "rg-export", "--destroy", "--yes", "--delete-app-registration")
    assert proc.returncode == 0, proc.stderr
    assert opt(fake.call("ad app delete"), "--id") == NEW_APP
    assert fake.state["apps"] == []
    assert "purge protection" not in proc.stderr, "federated: no vault"


def test_destroy_asks_first(tmp_path):
    fake = FakeAzure(tmp_path)
    deploy(fake, "-c", "federated")
    proc = fake.run("-g", "rg-export", "--destroy")  # stdin is not a terminal
    assert proc.returncode != 0 and "pass --yes" in proc.stderr
    assert "group delete" not in fake.commands() and fake.state["group"]


@pytest.mark.parametrize("kind", ["secret", "certificate"])
def test_second_run_makes_no_secret_no_certificate_and_no_role_assignment(tmp_path, kind):
    fake = FakeAzure(tmp_path)
    deploy(fake, "-c", kind)
    roles = fake.role_assignments
    proc = fake.run("-g", "rg-export", "--skip-publish")
    assert proc.returncode == 0, proc.stderr
    assert not {"ad app credential reset", "keyvault secret set", "keyvault certificate create",
                "role assignment create", "role assignment delete"} & set(fake.commands()), fake.commands()
    assert fake.role_assignments == roles
    assert len({(a["principalId"], a["roleDefinitionId"], a["scope"]) for a in roles}) == len(roles) == (
        kind == "certificate")
    if kind == "certificate":
        assert fake.roles_of(ME) == {("a4417e6f-fecd-4de8-b567-7b0420556985", f"certificates/{CERT_NAME}")}


# --- signInActivity: AuditLog.Read.All ------------------------------------------------------------------------

AUDIT_LOG_READ_ALL = "b0afded3-3588-46d8-8b3d-9842eff778da"  # Microsoft Graph permissions reference


SIGN_IN_ACTIVITY = ("--user-properties", "id,displayName,userPrincipalName,SignInActivity")


def test_sign_in_activity_gets_audit_log_read_all_requested_and_consented(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, *SIGN_IN_ACTIVITY)
    added = [opt(c, "--api-permissions") for c in fake.all("ad app permission add")]
    assert added == [f"{USER_READ_ALL}=Role", f"{AUDIT_LOG_READ_ALL}=Role"]
    assert [json.loads(opt(c, "--body"))["appRoleId"] for c in posts(fake)] == [USER_READ_ALL, AUDIT_LOG_READ_ALL]
    assert sorted(fake.state["consented"]) == sorted([USER_READ_ALL, AUDIT_LOG_READ_ALL])
    assert "USER_PROPERTIES selects signInActivity" in proc.stderr and "P1 or P2" in proc.stderr
    # A plain re-run keeps the last deployment's USER_PROPERTIES, and so the permission it needs.
    again = fake.run("-g", "rg-export", "--skip-publish")
    assert again.returncode == 0, again.stderr
    assert not fake.all("ad app permission add") and not posts(fake), "a second run changes nothing"
    assert "admin consent already granted (AuditLog.Read.All)" in again.stderr
    assert fake.call("deployment group create")["env"]["GRAPH_EXPORT_USER_PROPERTIES"] == SIGN_IN_ACTIVITY[1]


def test_an_earlier_deployment_without_sign_in_activity_gets_only_the_missing_role(tmp_path):
    fake = FakeAzure(tmp_path, **existing())
    proc = fake.run("-g", "rg-export", "--skip-publish", *SIGN_IN_ACTIVITY)
    assert proc.returncode == 0, proc.stderr
    assert [opt(c, "--api-permissions") for c in fake.all("ad app permission add")] == [f"{AUDIT_LOG_READ_ALL}=Role"]
    assert [json.loads(opt(c, "--body"))["appRoleId"] for c in posts(fake)] == [AUDIT_LOG_READ_ALL]


def test_audit_log_consent_nobody_could_grant_is_handed_over_with_its_error(tmp_path):
    fake = FakeAzure(tmp_path, **existing(consent_fails=True))
    proc = fake.run("-g", "rg-export", "--skip-publish", *SIGN_IN_ACTIVITY)
    assert proc.returncode == 0, proc.stderr
    assert f'"appRoleId": "{AUDIT_LOG_READ_ALL}"' in proc.stderr
    assert "403 Authentication_MSGraphPermissionMissing" in proc.stderr
    assert "admin consent is still missing" in proc.stderr


def test_without_sign_in_activity_only_user_read_all_is_requested(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake)
    assert [opt(c, "--api-permissions") for c in fake.all("ad app permission add")] == [f"{USER_READ_ALL}=Role"]
    assert AUDIT_LOG_READ_ALL not in json.dumps(fake.calls) and "AuditLog" not in proc.stderr
