"""infra/deploy.sh for many tenants from one deployment (issue 24), against the fake `az` (fake_az.py):
--tenant-ids reaches the deployment (GRAPH_EXPORT_TENANT_IDS, which main.bicepparam reads into TENANT_IDS) and a plain
re-run keeps it, --no-tenant-ids goes back to one tenant; the app registration is created, or made, multi-tenant
(signInAudience AzureADMultipleOrgs: `az ad app create/update --sign-in-audience`); after the deployment the script
prints each other tenant's admin-consent URL on this cloud's sign-in host (learn.microsoft.com/entra/identity/
enterprise-apps/grant-admin-consent) and, beside it, a second path that needs no reply URL (the registration has
none, and the page may end with AADSTS500113): `az ad sp create` there, then the Graph app role assignments (or the
Enterprise apps pane), and how to check they took; a value that is not a tenant id is refused in one line before
any az call.
"""

from __future__ import annotations

import pytest

from .fake_azure import NEW_APP, OLD_APP, TENANT, USER_READ_ALL, FakeAzure, app, deploy, deployed, opt

CUSTOMER_A = "aaaaaaaa-0000-4000-8000-00000000000a"
CUSTOMER_B = "bbbbbbbb-0000-4000-8000-00000000000b"
MULTI = "AzureADMultipleOrgs"
AUDIT_LOG_READ_ALL = "b0afded3-3588-46d8-8b3d-9842eff778da"
FALLBACK = "or, in that tenant: "


def passed(fake: FakeAzure) -> str:
    return fake.call("deployment group create")["env"]["GRAPH_EXPORT_TENANT_IDS"]


def recorded(fake: FakeAzure) -> str:
    """TENANT_IDS as the last deployment recorded it: its parameter (main.bicepparam) and its output."""
    deployment = fake.state["deployment"]
    assert deployment["parameters"]["tenantIds"]["value"] == deployment["outputs"]["tenantIds"]["value"]
    return deployment["parameters"]["tenantIds"]["value"]


def consent_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if "adminconsent" in line]


def fallback_lines(stderr: str) -> list[str]:
    """The per-tenant start of the second path: the sign-in there and `az ad sp create`."""
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith(FALLBACK)]


def second_path_commands(stderr: str) -> tuple[list[str], list[str]]:
    """The printed second path's commands, verbatim: (grant: sp=, graph=, each POST), and the check (the GET)."""
    lines = [line.strip() for line in stderr.splitlines()]
    grant = [line for line in lines if line.startswith(("sp=$(", "graph=$(", "az rest --method POST"))]
    check = [line for line in lines if line.startswith("az rest --method GET")]
    return grant, check


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


def test_each_other_tenant_gets_a_second_path_that_needs_no_reply_url_beside_its_url(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--tenant-ids", f"{CUSTOMER_A},{TENANT},{CUSTOMER_B}")
    lines = [line.strip() for line in proc.stderr.splitlines()]
    for customer in (CUSTOMER_A, CUSTOMER_B):
        url = lines.index(f"{customer}: https://login.microsoftonline.com/{customer}/adminconsent?client_id={NEW_APP}")
        assert lines[url + 1] == f"{FALLBACK}az login --tenant {customer} && az ad sp create --id {NEW_APP}", \
            "the fallback, filled in, right under that tenant's URL"
    assert fallback_lines(proc.stderr) == [f"{FALLBACK}az login --tenant {c} && az ad sp create --id {NEW_APP}"
                                           for c in (CUSTOMER_A, CUSTOMER_B)]
    assert f"--tenant {TENANT}" not in proc.stderr, "none of it for this tenant: its consent is this script's"
    summary = proc.stderr.split("==> Done")[1]
    # Said once, after the tenants' lines, not per tenant.
    assert summary.count("AADSTS500113") == 1 and summary.count("Grant admin") == 1
    assert "if a page ends with AADSTS500113 (no reply address), the consent may still have been recorded:" in summary
    assert "check it (below), else take the second path, which needs no reply URL." in summary
    assert ('Enterprise applications > graph-user-export > Permissions > "Grant admin consent for <tenant name>"'
            in " ".join(lines)), "the enterprise app's pane, by the app's name"
    assert "learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent" in summary
    assert "Microsoft Graph User.Read.All granted for the tenant" in " ".join(lines)
    assert "python -m graph_export status" in summary and "AADSTS7000229" in summary
    grant, check = second_path_commands(proc.stderr)
    assert len(grant) == 3 and len(check) == 1, "one sp=, one graph=, one POST (User.Read.All only), one check"
    assert f'"appRoleId\\": \\"{USER_READ_ALL}' in grant[2] and AUDIT_LOG_READ_ALL not in summary


def test_the_printed_second_path_grants_and_checks_the_consent_where_it_is_run(tmp_path):
    """Run verbatim (set -euo pipefail) against a fake standing for the customer tenant, where the app has no
    service principal yet: they make it, grant each Graph permission the app needs (the fake checks every body
    against the real ids), and the check lists them; before the grant the same check lists nothing."""
    fake = FakeAzure(tmp_path / "home")
    proc = deployed(fake, "--tenant-ids", CUSTOMER_A, "--user-properties", "id,displayName,signInActivity")
    [fallback] = fallback_lines(proc.stderr)
    grant, check = second_path_commands(proc.stderr)
    assert len(grant) == 4, grant  # sp=, graph=, User.Read.All, AuditLog.Read.All
    assert "AuditLog.Read.All" in proc.stderr.split("==> Done")[1]
    customer = FakeAzure(tmp_path / "customer", apps=[NEW_APP])
    assert not customer.state["sp"] and not customer.state["consented"]
    before = customer.run_script("\n".join([fallback[len(FALLBACK):], *grant[:2], *check]), tmp_path)
    assert before.returncode == 0, before.stderr
    assert customer.state["sp"], "az ad sp create made the app's service principal there"
    assert USER_READ_ALL not in before.stdout, "the check lists nothing before the grant"
    after = customer.run_script("\n".join([*grant, *check]), tmp_path)
    assert after.returncode == 0, after.stderr
    assert customer.state["consented"] == [USER_READ_ALL, AUDIT_LOG_READ_ALL]
    assert after.stdout.split()[-2:] == [USER_READ_ALL, AUDIT_LOG_READ_ALL], "the check lists both role ids"


def test_no_second_path_when_this_tenant_is_the_only_one(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--tenant-ids", TENANT)
    assert consent_lines(proc.stderr) == [] and fallback_lines(proc.stderr) == []
    assert "AADSTS500113" not in proc.stderr and second_path_commands(proc.stderr) == ([], [])


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
    assert fallback_lines(proc.stderr) == [
        f"{FALLBACK}az cloud set --name {cloud} && az login --tenant {CUSTOMER_A} && az ad sp create --id {NEW_APP}"]
    grant, check = second_path_commands(proc.stderr)
    graph = {"AzureUSGovernment": "https://graph.microsoft.us",
             "AzureChinaCloud": "https://microsoftgraph.chinacloudapi.cn"}[cloud]
    assert f'--uri "{graph}/v1.0/servicePrincipals/$graph/appRoleAssignedTo"' in grant[2]
    assert check[0].startswith(f'az rest --method GET --uri "{graph}/v1.0/servicePrincipals/$sp/')


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
