"""The sandbox Graph's directory extensions, as Microsoft Graph serves them: on ``/users`` only where set,
matched case-insensitively in ``$select``; and the two listings of their definitions, each with its own
permission (https://learn.microsoft.com/en-us/graph/api/application-list-extensionproperty,
https://learn.microsoft.com/en-us/graph/api/directoryobject-getavailableextensionproperties)."""

from __future__ import annotations

import pytest
import requests

from sandbox import Sandbox
from sandbox.tenant import BADGE_IDS, COST_CENTER, HR_APP_ID, SCHEMA_APP_ID, USER_EXTENSIONS, make_user


@pytest.fixture(scope="module")
def sbx(tmp_path_factory):
    with Sandbox(users=200, workdir=tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def call(sb: Sandbox, method: str, path: str, roles: list[str], **kwargs) -> requests.Response:
    token = sb.issue_token("graph", roles=roles)
    return requests.request(method, sb.url("graph") + path, headers={"Authorization": f"Bearer {token}"},
                            verify=str(sb.ca_file), timeout=10, **kwargs)


def test_users_carry_an_extension_only_where_it_is_set_in_the_registered_spelling(sbx):
    asked = COST_CENTER.upper().replace("EXTENSION_", "extension_")  # any case; Graph answers its own
    users = call(sbx, "GET", f"/v1.0/users?$select=id,{asked},{BADGE_IDS}&$top=200", ["User.Read.All"]).json()["value"]
    assert len(users) == 200
    assert [COST_CENTER in u for u in users] == [COST_CENTER in make_user(i) for i in range(200)]
    assert 0 < sum(COST_CENTER in u for u in users) < 200 and not any(asked in u for u in users)
    assert all(isinstance(u[BADGE_IDS], list) for u in users if BADGE_IDS in u)


def test_an_unregistered_extension_in_select_is_a_bad_request(sbx):
    answer = call(sbx, "GET", f"/v1.0/users?$select=id,extension_{HR_APP_ID.replace('-', '')}_shoeSize",
                  ["User.Read.All"])
    assert answer.status_code == 400 and "Could not find a property named" in answer.json()["error"]["message"]


def test_an_apps_extension_properties_need_application_read_all(sbx):
    path = f"/v1.0/applications(appId='{HR_APP_ID}')/extensionProperties"
    assert call(sbx, "GET", path, ["User.Read.All"]).status_code == 403
    listed = call(sbx, "GET", path, ["Application.Read.All"]).json()["value"]
    assert {e["name"] for e in listed} >= set(USER_EXTENSIONS[:3]) and all("@odata.type" not in e for e in listed)
    assert {e["name"] for e in call(sbx, "GET", path.replace(HR_APP_ID, SCHEMA_APP_ID),
                                    ["Directory.Read.All"]).json()["value"]} == {USER_EXTENSIONS[3]}
    missing = call(sbx, "GET", path.replace(HR_APP_ID, "11111111-2222-3333-4444-555555555555"),
                   ["Application.Read.All"])
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert call(sbx, "POST", path, ["Application.Read.All"], json={}).status_code == 405


def test_available_extension_properties_need_directory_read_all_and_filter_on_sync(sbx):
    path = "/v1.0/directoryObjects/getAvailableExtensionProperties"
    assert call(sbx, "POST", path, ["User.Read.All", "Application.Read.All"], json={}).status_code == 403
    every = call(sbx, "POST", path, ["Directory.Read.All"], json={}).json()["value"]
    assert {e["name"] for e in every} > set(USER_EXTENSIONS)  # the groups' extension too
    assert all(e["@odata.type"] == "#microsoft.graph.extensionProperty" for e in every)
    synced = call(sbx, "POST", path, ["Directory.Read.All"], json={"isSyncedFromOnPremises": True}).json()["value"]
    assert [e["name"] for e in synced] == [USER_EXTENSIONS[3]]
    assert call(sbx, "GET", path, ["Directory.Read.All"]).status_code == 405
