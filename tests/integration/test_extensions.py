"""Directory extension attributes (``extension_<appId>_<name>``) end to end, and ``python -m graph_export
properties``, which lists what USER_PROPERTIES can select in the tenant.

The sandbox tenant's HR app owns three user extensions (a String, an Integer, a multi-valued String) and
one for groups; Entra Connect's schema app one more, synced from on-premises; a quarter of the members
carry some of them (``sandbox.tenant.extensions_of``). Graph leaves an extension out of a user that does
not have it set: the export publishes it as null, so every user has every selected key.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from graph_export import GraphError, load_settings, run_export
from graph_export.cli import main
from graph_export.clients import app_clients
from sandbox.tenant import BADGE_IDS, COST_CENTER, EMPLOYEE_NUMBER, HIRE_COHORT, HR_APP_ID, USER_EXTENSIONS

from .helpers import blob_names, read_export

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
SELECTED = ("id", "displayName", *USER_EXTENSIONS)


@pytest.fixture
def extensions_env(export_env, monkeypatch):
    monkeypatch.setenv("USER_PROPERTIES", ",".join(SELECTED))
    return export_env


def test_a_full_export_has_every_extension_as_graph_returns_it_and_null_where_it_is_not_set(extensions_env,
                                                                                              sandbox):
    summary = run_export(load_settings(), SLOT)
    users, _ = read_export(extensions_env, summary.blob)
    expected = [{p: u.get(p) for p in SELECTED} for u in sandbox.expected_users(SELECTED)]
    assert users == expected
    assert all(u.keys() == set(SELECTED) for u in users)
    with_cost_centre = [u for u in users if u[COST_CENTER] is not None]
    assert 0 < len(with_cost_centre) < len(users) / 3  # some set, most null
    assert {type(u[HIRE_COHORT]) for u in users} == {int, type(None)}  # an Integer extension stays a number
    assert any(isinstance(u[BADGE_IDS], list) and len(u[BADGE_IDS]) == 2 for u in users)  # multi-valued
    assert any(u[EMPLOYEE_NUMBER] for u in users)


def test_an_extension_configured_in_another_case_than_graphs_stops_the_export(extensions_env, monkeypatch):
    # Graph matches $select case-insensitively and answers with the registered spelling, "costCenter".
    monkeypatch.setenv("USER_PROPERTIES", f"id,{COST_CENTER.replace('costCenter', 'CostCenter')}")
    with pytest.raises(GraphError, match="Graph spells USER_PROPERTIES' .*CostCenter.* as .*costCenter"):
        run_export(load_settings(), SLOT)
    assert not [n for n in blob_names(extensions_env) if n.endswith(".manifest.json")]


def test_an_extension_the_tenant_does_not_have_is_refused_by_graph_with_a_line_pointing_to_properties(
        extensions_env, monkeypatch):
    monkeypatch.setenv("USER_PROPERTIES", f"id,extension_{HR_APP_ID.replace('-', '')}_costCentre")
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "HTTP 400" in message and "costCentre" in message and "python -m graph_export properties" in message


# --- python -m graph_export properties ---------------------------------------------------------------------

def properties(capsys, *args: str) -> tuple[int, str, str]:
    app_clients.cache_clear()  # tokens issued after set_roles carry the new roles
    code = main(["properties", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_properties_lists_what_users_can_list_and_every_user_extension(export_env, sandbox, capsys):
    sandbox.entra.set_roles(["User.Read.All", "Directory.Read.All"])
    code, out, err = properties(capsys)
    assert code == 0, err
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert {"displayName", "department", "signInActivity", "employeeOrgData"} <= set(listed)
    assert "aboutMe" not in listed and "manager" not in listed  # single-user only; a relationship
    assert [name for name in listed if name.startswith("extension_")] == sorted(USER_EXTENSIONS, key=str.lower)
    assert "budgetOwner" not in out  # the HR app's extension for groups
    assert f"{BADGE_IDS}  String, multi-valued  (Contoso HR Sync)" in out
    assert f"{EMPLOYEE_NUMBER}  String  (Tenant Schema Extension App, synced from on-premises)" in out


def test_properties_without_directory_read_all_says_which_permission_or_app_to_name(export_env, sandbox, capsys):
    code, out, err = properties(capsys)  # User.Read.All only, as deploy.sh grants by default
    assert code != 0 and out == ""
    line = err.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert "Directory.Read.All" in line and "--app" in line and "Application.Read.All" in line


def test_properties_for_one_app_needs_only_application_read_all(export_env, sandbox, capsys):
    sandbox.entra.set_roles(["User.Read.All", "Application.Read.All"])
    code, out, err = properties(capsys, "--app", HR_APP_ID)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  extension_")] == \
        sorted((COST_CENTER, HIRE_COHORT, BADGE_IDS), key=str.lower)


@pytest.mark.parametrize("app, says", [("11111111-2222-3333-4444-555555555555", "No application with appId"),
                                       ("not-a-guid", "is not an application (client) ID")])
def test_properties_for_an_app_that_is_not_there_says_so(export_env, sandbox, capsys, app, says):
    sandbox.entra.set_roles(["User.Read.All", "Application.Read.All"])
    code, out, err = properties(capsys, "--app", app)
    assert code == 2 and says in err and "--app" in err


def test_properties_in_a_tenant_with_many_service_principals_explains_the_empty_answer(export_env, sandbox,
                                                                                       capsys):
    sandbox.entra.set_roles(["User.Read.All", "Directory.Read.All"])
    sandbox.graph.many_service_principals = True  # getAvailableExtensionProperties' known issue
    code, out, err = properties(capsys)
    assert code == 0, err
    assert "more than 1,000 service principals" in out and "--app <appId>" in out
