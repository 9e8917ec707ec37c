"""infra/deploy.sh on day 2 in Azure (issue 21 items 7, 8 and 10), against the recording fake `az` (fake_az.py):
a redeploy after --destroy meets the purge-protected vault's reserved name (the fake fails as ARM does) and is
told to recover it or pick another prefix, before anything is created; a Functions host that comes up after az's
own health check gave up is waited for, a bounded time; and a deployment can be used: --reader grants read access
to the exports, --run-now starts one export and says where its log and result are.
"""

from __future__ import annotations

import subprocess

from .fake_azure import (
    FAKE_SECRET,
    MASTER_KEY,
    NAMES,
    READER,
    READER_APP,
    FakeAzure,
    opt,
)

RG = "rg-export"
VAULT = NAMES["keyVault"]
READER_ROLE = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # Storage Blob Data Reader
CONTAINERS = f"/subscriptions/sub-1/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/" \
             f"{NAMES['exportStorage']}/blobServices/default/containers/"
CHANGES = ["group create", "ad app create", "ad sp create", "ad app permission add", "ad app credential reset",
           "keyvault secret set", "deployment group create", "role assignment delete", "ad app credential delete",
           "functionapp deployment source config-zip"]


def deployed(fake: FakeAzure, *args: str) -> subprocess.CompletedProcess[str]:
    proc = fake.run("-g", RG, "-l", "westeurope", "--skip-publish", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def az(fake: FakeAzure, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["az", *args], capture_output=True, text=True, env=fake.env(), check=False)


def destroyed(tmp_path, *args: str) -> FakeAzure:
    """A deployment (a client secret in its purge-protected vault), then --destroy."""
    fake = FakeAzure(tmp_path)
    deployed(fake, *args)
    proc = fake.run("-g", RG, "--destroy", "--yes")
    assert proc.returncode == 0, proc.stderr
    return fake


# --- item 7: a redeploy after --destroy ---------------------------------------------------------------------

def test_the_fake_refuses_a_vault_name_a_soft_deleted_vault_holds(tmp_path):
    """What ARM answers (Key Vault's 409 ConflictError): the fake's deployment fails the same way."""
    fake = destroyed(tmp_path)
    assert az(fake, "group", "create", "-n", RG, "-l", "westeurope").returncode == 0
    proc = subprocess.run(["az", "deployment", "group", "create", "-g", RG, "-n", "graph-export"], capture_output=True,
                          text=True, check=False, env=fake.env(GRAPH_EXPORT_CLIENT_ID="2" * 36))
    assert proc.returncode == 1
    assert "A vault with the same name already exists in deleted state" in proc.stderr
    [deleted] = [v for v in fake.state["deleted_vaults"] if v["name"] == VAULT]
    assert deleted["vaultId"].endswith(f"/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}")


def test_a_redeploy_after_destroy_says_how_to_recover_before_creating_anything(tmp_path):
    """Fails on f5489b6: it created the group and the app registration, then the deployment failed with ARM's
    message and nothing more."""
    fake = destroyed(tmp_path)
    proc = fake.run("-g", RG, "-l", "westeurope", "--skip-publish")
    assert proc.returncode == 1
    for what in (f"Key Vault {VAULT}", "soft-deleted with purge protection until 20",
                 f"az group create --name {RG} --location westeurope, then az keyvault recover --name {VAULT} "
                 f"--resource-group {RG}", "another --prefix"):
        assert what in proc.stderr, what
    assert not set(CHANGES) & set(fake.commands()), fake.commands()
    assert opt(fake.call("keyvault list-deleted"), "--resource-type") == "vault"


def test_recovering_the_vault_then_deploying_works_and_replaces_its_dead_secret(tmp_path):
    """The recovered vault holds the old secret, whose credential --destroy deleted from the app registration:
    it is replaced (a re-run must not keep a secret that cannot sign in)."""
    fake = destroyed(tmp_path)
    assert az(fake, "group", "create", "-n", RG, "-l", "westeurope").returncode == 0
    recover = az(fake, "keyvault", "recover", "--name", VAULT, "--resource-group", RG)
    assert recover.returncode == 0, recover.stderr
    proc = deployed(fake)
    assert "has no client secret named" in proc.stderr and "replacing it" in proc.stderr
    assert "signed in to Entra ID with the new client secret" in proc.stderr
    assert [c["displayName"] for c in fake.the_app()["passwordCredentials"]] == [f"graph-export {VAULT}"]


def test_a_caller_who_cannot_list_deleted_vaults_is_warned_and_goes_on(tmp_path):
    fake = FakeAzure(tmp_path, list_deleted_denied=True)
    proc = deployed(fake)
    assert "could not list the soft-deleted Key Vaults" in proc.stderr


def test_federated_makes_no_vault_and_skips_the_check(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "-c", "federated")
    assert "keyvault list-deleted" not in fake.commands()


# --- item 8: a host slower than az's health check -------------------------------------------------------------

def host_polls(fake: FakeAzure) -> list[dict]:
    return [c for c in fake.all("rest") if "/host/default/properties/status" in opt(c, "--uri")]


def test_a_host_that_comes_up_after_az_stopped_waiting_is_published(tmp_path):
    """az's Flex publish checks the host for ~90 s; a cold Python start after a remote build can take longer.
    Fails on f5489b6, which failed the run on az's 'appears to be unhealthy'."""
    fake = FakeAzure(tmp_path, secret=True, group="westeurope", apps=["33333333-3333-3333-3333-333333333333"],
                     sp=True, permission=True, consented=True, zip_outcome="slow", host_starts_after=2)
    proc = fake.run("-g", RG)
    assert proc.returncode == 0, proc.stderr
    assert "published: the host reports Running" in proc.stderr
    assert fake.commands().count("functionapp deployment source config-zip") == 1, "uploaded once"
    polls = host_polls(fake)
    assert len(polls) == 2
    assert opt(polls[0], "--uri") == (f"/subscriptions/sub-1/resourceGroups/{RG}/providers/Microsoft.Web/sites/"
                                      f"{NAMES['functionApp']}/host/default/properties/status?api-version=2022-03-01")
    assert "--headers" not in polls[0]["argv"], "through Resource Manager: no function key"


def test_a_host_that_stays_down_is_polled_a_bounded_time_and_explained(tmp_path):
    fake = FakeAzure(tmp_path, secret=True, group="westeurope", apps=["33333333-3333-3333-3333-333333333333"],
                     sp=True, permission=True, consented=True, zip_outcome="unhealthy")
    proc = fake.run("-g", RG)
    assert proc.returncode == 1
    assert len(host_polls(fake)) == 3, "DEPLOY_RETRY_COUNT polls, then it gives up"
    assert "did not report healthy (last state: Error; host errors: Microsoft.Azure.WebJobs.Host" in proc.stderr
    assert "Unable to access AzureWebJobsStorage" in proc.stderr and "Storage Blob Data Owner" in proc.stderr


# --- item 10: using a deployment -------------------------------------------------------------------------------

def test_reader_gets_blob_data_reader_on_the_export_container_only(tmp_path):
    """Fails on f5489b6: no --reader."""
    fake = FakeAzure(tmp_path)
    deployed(fake, "-c", "federated")
    proc = fake.run("-g", RG, "--reader", READER_APP)
    assert proc.returncode == 0, proc.stderr
    [grant] = fake.all("role assignment create")
    assert opt(grant, "--assignee") == READER_APP and opt(grant, "--role") == READER_ROLE
    assert opt(grant, "--scope") == CONTAINERS + "graph-exports"
    [assignment] = [a for a in fake.role_assignments if a["principalId"] == READER]
    assert assignment["principalType"] == "ServicePrincipal" and assignment["scope"] == CONTAINERS + "graph-exports"
    assert not set(CHANGES) & set(fake.commands()), "nothing else is deployed"
    assert (f"az storage blob download --auth-mode login --account-name {NAMES['exportStorage']} "
            "--container-name graph-exports --name users/latest.json") in proc.stderr
    again = fake.run("-g", RG, "--reader", READER_APP)  # idempotent: az returns the existing assignment
    assert again.returncode == 0 and len([a for a in fake.role_assignments if a["principalId"] == READER]) == 1


def test_reader_with_immutable_exports_also_reads_the_state_container(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "-c", "federated", "--immutability-days", "30")
    proc = fake.run("-g", RG, "--reader", "me@example.com", "--reader", READER)
    assert proc.returncode == 0, proc.stderr
    scopes = sorted((opt(c, "--assignee"), opt(c, "--scope")) for c in fake.all("role assignment create"))
    assert scopes == sorted((who, CONTAINERS + c) for who in ("me@example.com", READER)
                            for c in ("graph-exports", "graph-exports-state"))
    assert "--container-name graph-exports-state --name users/latest.json" in proc.stderr


def test_a_reader_az_cannot_resolve_is_explained(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "-c", "federated")
    proc = fake.run("-g", RG, "--reader", "nobody@example.com")
    assert proc.returncode == 1
    assert "Cannot find user or service principal in graph database" in proc.stderr
    assert "pass a user's UPN or object id, a service principal's app id" in proc.stderr


def test_reader_and_run_now_need_a_deployment_and_nothing_else(tmp_path):
    fake = FakeAzure(tmp_path, group="westeurope")
    proc = fake.run("-g", RG, "--run-now")
    assert proc.returncode == 1 and "no deployment 'graph-export' in resource group rg-export" in proc.stderr
    proc = fake.run("-g", RG, "--destroy", "--reader", READER)
    assert proc.returncode == 1 and "--reader and --run-now cannot be combined with --destroy" in proc.stderr


def test_run_now_starts_one_export_and_says_where_its_log_and_result_are(tmp_path):
    """Fails on f5489b6: no --run-now (the README sent operators to the portal)."""
    fake = FakeAzure(tmp_path)
    deployed(fake)
    proc = fake.run("-g", RG, "--run-now")
    assert proc.returncode == 0, proc.stderr
    assert fake.state["invocations"] == 1
    [invoke] = [c for c in fake.all("rest") if "/admin/functions/" in opt(c, "--uri")]
    assert opt(invoke, "--uri") == f"https://{NAMES['functionApp']}.azurewebsites.net/admin/functions/export_users"
    assert opt(invoke, "--headers") == "@-" and "--skip-authorization-header" in invoke["argv"]
    for what in ("az monitor app-insights query --app graphexp-appi-abc --resource-group rg-export",
                 'operation_Name == "export_users"', "Export succeeded: <users> users", "Export failed:",
                 "--container-name graph-exports --name users/latest.json", "--reader <you>", "Invocations"):
        assert what in proc.stderr, what
    # The master key goes through a pipe only: never an argument, the output, or a file.
    for call in fake.calls:
        assert not any(MASTER_KEY in arg for arg in call["argv"]), call["argv"][:4]
    assert MASTER_KEY not in proc.stdout + proc.stderr and FAKE_SECRET not in proc.stdout + proc.stderr
    for path in fake.tmpdir.rglob("*"):
        assert not path.is_file() or MASTER_KEY not in path.read_text(errors="replace"), path
    assert not set(CHANGES) & set(fake.commands()), "nothing else is deployed"


def test_run_now_when_the_host_refuses_says_what_to_check(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "-c", "federated")
    state = fake.state
    state["fail"] = {"functionapp keys list": "(Forbidden) The client does not have authorization to perform "
                                              "action 'Microsoft.Web/sites/host/listkeys/action'."}
    fake.save_state(state)
    proc = fake.run("-g", RG, "--run-now")
    assert proc.returncode == 1
    assert "did not take the request" in proc.stderr and "master key" in proc.stderr
    assert fake.state.get("invocations", 0) == 0
