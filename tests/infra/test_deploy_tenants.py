"""infra/deploy.sh for many tenants from one deployment (issue 24), against the fake `az` (fake_az.py):
--tenant-ids reaches the deployment (GRAPH_EXPORT_TENANT_IDS, which main.bicepparam reads into TENANT_IDS) and a plain
re-run keeps it, --no-tenant-ids goes back to one tenant; the app registration is created, or made, multi-tenant
(signInAudience AzureADMultipleOrgs: `az ad app create/update --sign-in-audience`); after the deployment the script
prints each other tenant's admin-consent URL on this cloud's sign-in host (learn.microsoft.com/entra/identity/
enterprise-apps/grant-admin-consent); a value that is not a tenant id is refused in one line before any az call.
"""

from __future__ import annotations

import pytest

from .fake_azure import NEW_APP, OLD_APP, TENANT, FakeAzure, app, deploy, deployed, opt

CUSTOMER_A = "aaaaaaaa-0000-4000-8000-00000000000a"
CUSTOMER_B = "bbbbbbbb-0000-4000-8000-00000000000b"
MULTI = "AzureADMultipleOrgs"


def passed(fake: FakeAzure) -> str:
    return fake.call("deployment group create")["env"]["GRAPH_EXPORT_TENANT_IDS"]


def recorded(fake: FakeAzure) -> str:
    """TENANT_IDS as the last deployment recorded it: its parameter (main.bicepparam) and its output."""
    deployment = fake.state["deployment"]
    assert deployment["parameters"]["tenantIds"]["value"] == deployment["outputs"]["tenantIds"]["value"]
    return deployment["parameters"]["tenantIds"]["value"]


def consent_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if "adminconsent" in line]


def test_tenant_ids_reach_the_deployment_and_a_plain_rerun_keeps_them(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--tenant-ids", f"{CUSTOMER_A},{CUSTOMER_B}")
    assert passed(fake) == recorded(fake) == f"{CUSTOMER_A},{CUSTOMER_B}"
    assert "Tenants: 2 from one deployment, each through the queue (--tenant-ids)" in proc.stderr
    again = deployed(fake)
    assert passed(fake) == f"{CUSTOMER_A},{CUSTOMER_B}", "a re-run without the flag must not drop the tenants"
    assert "(the last deployment)" in again.stderr.split("Tenants:")[1].splitlines()[0]


def test_tenant_ids_are_normalised_as_the_app_reads_them(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "--tenant-ids", f" {CUSTOMER_A.upper()} ,{CUSTOMER_B},,{CUSTOMER_A}")
    assert passed(fake) == f"{CUSTOMER_A},{CUSTOMER_B}", "lower case, no blanks, each once, in the order given"


def test_no_tenant_ids_goes_back_to_one_tenant_and_leaves_the_registration_multi_tenant(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "--tenant-ids", CUSTOMER_A)
    proc = deployed(fake, "--no-tenant-ids")
    assert passed(fake) == recorded(fake) == ""
    assert f"Tenants: one, this one ({TENANT}) (--no-tenant-ids)" in proc.stderr
    assert fake.the_app()["signInAudience"] == MULTI, "single-tenant again would cut off every consented tenant"
    assert "ad app update" not in fake.commands()
    assert f"az ad app update --id {NEW_APP} --sign-in-audience AzureADMyOrg" in proc.stderr
    assert consent_lines(proc.stderr) == []
    assert passed(fake) == "" and deployed(fake) and passed(fake) == "", "and stays one tenant on a re-run"


def test_a_new_registration_is_created_multi_tenant(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "--tenant-ids", CUSTOMER_A)
    assert opt(fake.call("ad app create"), "--sign-in-audience") == MULTI
    assert fake.the_app()["signInAudience"] == MULTI
    assert "ad app update" not in fake.commands(), "created right: nothing to change"


def test_without_tenant_ids_a_new_registration_stays_single_tenant(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake)
    assert opt(fake.call("ad app create"), "--sign-in-audience") == "AzureADMyOrg"
    assert fake.the_app()["signInAudience"] == "AzureADMyOrg"
    assert consent_lines(proc.stderr) == [] and "Tenants: one, this one" in proc.stderr
    assert passed(fake) == ""


def test_an_existing_single_tenant_registration_is_made_multi_tenant_once(tmp_path):
    fake = FakeAzure(tmp_path, apps=[OLD_APP])
    proc = deployed(fake, "--tenant-ids", CUSTOMER_A)
    update = fake.call("ad app update")
    assert (opt(update, "--id"), opt(update, "--sign-in-audience")) == (OLD_APP, MULTI)
    assert fake.the_app(OLD_APP)["signInAudience"] == MULTI
    assert "made multi-tenant (signInAudience AzureADMultipleOrgs)" in proc.stderr
    deployed(fake)
    assert "ad app update" not in fake.commands(), "already multi-tenant: a re-run changes nothing"
    assert "ad app show" in fake.commands()


def test_a_registration_that_also_takes_personal_accounts_is_left_as_it_is(tmp_path):
    fake = FakeAzure(tmp_path, apps=[app(OLD_APP, signInAudience="AzureADandPersonalMicrosoftAccount")])
    deployed(fake, "--tenant-ids", CUSTOMER_A)
    assert "ad app update" not in fake.commands()
    assert fake.the_app(OLD_APP)["signInAudience"] == "AzureADandPersonalMicrosoftAccount"


def test_the_admin_consent_url_is_printed_for_each_other_tenant(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--tenant-ids", f"{CUSTOMER_A},{TENANT},{CUSTOMER_B}")
    assert consent_lines(proc.stderr) == [
        f"{CUSTOMER_A}: https://login.microsoftonline.com/{CUSTOMER_A}/adminconsent?client_id={NEW_APP}",
        f"{CUSTOMER_B}: https://login.microsoftonline.com/{CUSTOMER_B}/adminconsent?client_id={NEW_APP}",
    ]
    assert f"{TENANT} (this tenant): consent granted by this script" in proc.stderr
    assert fake.state["consented"], "this tenant's consent is granted as with one tenant"
    summary = proc.stderr.split("==> Done")[1]
    assert "tenants:" in summary and CUSTOMER_A in summary, "in the summary, after the deployment"
    assert ("one message per tenant and slot on queue graph-export-tenants in stgraphexpexabc; failed ones end on "
            "graph-export-tenants-poison") in summary, "the deployment's outputs name the queues"


def test_this_tenants_pending_consent_is_said_beside_the_others(tmp_path):
    fake = FakeAzure(tmp_path, consent_fails=True)
    proc = deployed(fake, "--tenant-ids", f"{TENANT},{CUSTOMER_A}")
    assert f"{TENANT} (this tenant): consent still missing, see below" in proc.stderr
    assert len(consent_lines(proc.stderr)) == 1


@pytest.mark.parametrize(("cloud", "host"), [("AzureUSGovernment", "https://login.microsoftonline.us"),
                                             ("AzureChinaCloud", "https://login.chinacloudapi.cn")])
def test_a_sovereign_cloud_gets_its_own_sign_in_host(tmp_path, cloud, host):
    fake = FakeAzure(tmp_path, cloud=cloud, flex_regions=["usgovvirginia"])
    proc = fake.run("-g", "rg-export", "-l", "usgovvirginia", "--skip-publish", "--tenant-ids", CUSTOMER_A)
    assert proc.returncode == 0, proc.stderr
    assert consent_lines(proc.stderr) == [f"{CUSTOMER_A}: {host}/{CUSTOMER_A}/adminconsent?client_id={NEW_APP}"]


def test_this_tenant_gets_no_consent_when_it_is_not_exported(tmp_path):
    """Least privilege: User.Read.All is granted where users are read, and this tenant is not one of them."""
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--tenant-ids", CUSTOMER_A)
    assert not fake.state["consented"]
    assert not [c for c in fake.all("rest") if "appRoleAssignedTo" in opt(c, "--uri")], "no consent POST"
    assert f"no consent in this tenant ({TENANT}): TENANT_IDS does not export it" in proc.stderr
    assert len(consent_lines(proc.stderr)) == 1


@pytest.mark.parametrize("value", ["contoso.onmicrosoft.com", f"{CUSTOMER_A},contoso.com", "1111-2222",
                                   f"{CUSTOMER_A}x", f"{{{CUSTOMER_A}}}"])
def test_a_bad_tenant_id_is_refused_in_one_line_before_any_az_call(tmp_path, value):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, "--tenant-ids", value)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("ERROR: --tenant-ids takes comma-separated directory (tenant) ids, GUIDs such as")
    assert "is not one" in errors[0] and "az account show --query tenantId" in errors[0]
    assert fake.calls == []


@pytest.mark.parametrize(("args", "message"), [
    (("--tenant-ids", ",, ,"), "--tenant-ids names no tenant id (got ',, ,'): pass at least one, or --no-tenant-ids"),
    (("--tenant-ids",), "--tenant-ids needs a value"),
    (("--tenant-ids", ""), "--tenant-ids needs a value"),
])
def test_an_empty_tenant_list_is_refused(tmp_path, args, message):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert fake.calls == []


def test_a_bad_tenant_id_kept_from_the_last_deployment_is_refused_with_its_origin(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "--tenant-ids", CUSTOMER_A)
    state = fake.state
    state["deployment"]["outputs"]["tenantIds"]["value"] = "contoso.com"
    fake.save_state(state)
    proc = deploy(fake)
    assert proc.returncode == 1
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert "'contoso.com' is not one (from the last deployment)" in error
    assert "deployment group create" not in fake.commands()


def test_a_refused_audience_change_stops_with_what_is_needed(tmp_path):
    fake = FakeAzure(tmp_path, apps=[OLD_APP], audience_update_fails=True)
    proc = deploy(fake, "--tenant-ids", CUSTOMER_A)
    assert proc.returncode == 1
    # az's own error line (Graph's refusal), then the script's one line saying what is needed.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[0] == "ERROR: Insufficient privileges to complete the operation.", errors
    [error] = errors[1:]
    assert f"could not make app registration {OLD_APP} multi-tenant (signInAudience AzureADMultipleOrgs)" in error
    assert "Application Administrator" in error
    assert "deployment group create" not in fake.commands()


def test_what_if_says_what_would_change(tmp_path):
    fake = FakeAzure(tmp_path, apps=[OLD_APP], group="westeurope")
    proc = fake.run("-g", "rg-export", "--what-if", "--tenant-ids", CUSTOMER_A)
    assert proc.returncode == 0, proc.stderr
    assert f"would make the registration multi-tenant (AzureADMultipleOrgs) and export {CUSTOMER_A}" in proc.stderr
    assert fake.call("deployment group what-if")["env"]["GRAPH_EXPORT_TENANT_IDS"] == CUSTOMER_A
    assert "ad app update" not in fake.commands() and fake.the_app(OLD_APP)["signInAudience"] == "AzureADMyOrg"


def test_help_lists_the_flags(tmp_path):
    proc = FakeAzure(tmp_path).run("--help")
    assert proc.returncode == 0
    assert "--tenant-ids LIST" in proc.stdout and "--no-tenant-ids" in proc.stdout
    assert "admin-consent URL" in proc.stdout


def test_the_fake_refuses_an_audience_az_does_not_know(tmp_path):
    """az's --sign-in-audience is an enum (azure-cli role _params.py): anything else is a usage error, exit 2."""
    import subprocess

    fake = FakeAzure(tmp_path, apps=[OLD_APP])
    for argv in (["ad", "app", "update", "--id", OLD_APP, "--sign-in-audience", "MultiTenant"],
                 ["ad", "app", "create", "--display-name", "x", "--sign-in-audience", "AzureADMultipleOrg"]):
        proc = subprocess.run(["az", *argv], capture_output=True, text=True, check=False, env=fake.env())
        assert proc.returncode == 2 and "argument --sign-in-audience: invalid choice" in proc.stderr, proc.stderr
    assert fake.the_app(OLD_APP)["signInAudience"] == "AzureADMyOrg"
