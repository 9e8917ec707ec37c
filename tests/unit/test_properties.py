"""Graph's spelling of user properties, and pages made to hold exactly the selected ones."""

from __future__ import annotations

import copy

import orjson
import pytest

from graph_export import properties
from graph_export.errors import GraphError
from graph_export.properties import COLLECTION_PROPERTIES, PROPERTIES, check_spelling, conform, graph_spelling
from graph_export.settings import DEFAULT_USER_PROPERTIES

APP = "0123456789abcdef0123456789ABCDEF"          # an appId without dashes, mixed case as people paste it
EXT = f"extension_{APP.lower()}_costCenter"        # Graph's spelling of that directory extension


# --- the table -------------------------------------------------------------------------------------

def test_table_is_graphs_documented_spelling_once_each():
    assert len(PROPERTIES) == len({p.lower() for p in PROPERTIES})
    assert list(PROPERTIES) == sorted(PROPERTIES, key=str.lower)  # the documentation's order
    # Spellings a guess from the words would get wrong:
    for name in ("onPremisesSamAccountName", "mailNickname", "imAddresses", "userPrincipalName",
                 "externalUserStateChangeDateTime", "onPremisesExtensionAttributes", "signInActivity"):
        assert name in PROPERTIES
    assert set(DEFAULT_USER_PROPERTIES) <= set(PROPERTIES)
    assert not properties.RELATIONSHIPS & set(PROPERTIES)
    assert properties.SINGLE_USER_ONLY <= set(PROPERTIES)


def test_collections_are_documented_properties_and_exactly_the_collection_valued_ones():
    assert COLLECTION_PROPERTIES <= set(PROPERTIES)
    for name in ("businessPhones", "proxyAddresses", "otherMails", "identities", "assignedLicenses",
                 "licenseAssignmentStates", "serviceProvisioningErrors", "onPremisesProvisioningErrors"):
        assert name in COLLECTION_PROPERTIES
    for name in ("mail", "onPremisesExtensionAttributes", "employeeOrgData", "signInActivity", "id"):
        assert name not in COLLECTION_PROPERTIES
    assert properties.absent_value("businessPhones") == [] and properties.absent_value("department") is None
    assert properties.absent_value("businessPhones") is not properties.absent_value("businessPhones")
    assert properties.absent_value(EXT) is None  # whether an extension is multi-valued is not known here


# --- resolution ------------------------------------------------------------------------------------

@pytest.mark.parametrize("configured, spelled", [
    ("department", "department"), ("Department", "department"), ("JOBTITLE", "jobTitle"), ("ID", "id"),
    ("onpremisessamaccountname", "onPremisesSamAccountName"), ("SignInActivity", "signInActivity"),
])
def test_graph_spelling_is_case_insensitive(configured, spelled):
    assert graph_spelling(configured) == spelled


@pytest.mark.parametrize("configured", [
    f"extension_{APP}_costCenter", f"EXTENSION_{APP}_costCenter", f"Extension_{APP.lower()}_costCenter",
])
def test_directory_extension_prefix_and_app_id_are_lower_case_the_name_keeps_its_case(configured):
    assert graph_spelling(configured) == EXT
    assert graph_spelling(configured.replace("costCenter", "CostCenter")) == f"extension_{APP.lower()}_CostCenter"
    assert properties.is_extension(configured)


def test_schema_extensions_pass_as_given():
    assert graph_spelling("extkvbmkofy_courses") == "extkvbmkofy_courses"
    assert graph_spelling("contoso_mySchema") == "contoso_mySchema"
    assert properties.is_extension("contoso_mySchema") and not properties.is_extension("Department")


@pytest.mark.parametrize("name", [
    "shoeSize", "jobTitel", "directReports", "memberOf", "extension_123_costCenter",
    f"extension_{APP}", "extension_costCenter", "display Name", "", "_x",
])
def test_names_that_are_not_properties_resolve_to_none(name):
    assert graph_spelling(name) is None


@pytest.mark.parametrize("name", ["manager", "Manager", "MANAGER"])
def test_the_manager_is_the_one_relationship_that_resolves(name):
    assert graph_spelling(name) == "manager" and not properties.is_extension(name)


def test_relationships_and_suggestions():
    assert properties.relationship("Manager") == "manager" and properties.relationship("department") is None
    assert properties.closest("jobTitel") == "jobTitle"
    assert properties.closest("Departement") == "department"
    assert properties.closest("onPremisesSAMAccount") == "onPremisesSamAccountName"
    assert properties.closest("zzzzzz") is None


# --- conform: the fast path ------------------------------------------------------------------------

def page(n: int = 999, props: tuple[str, ...] = DEFAULT_USER_PROPERTIES) -> list[dict]:
    """A page as the export reads one: Graph's JSON parsed by orjson, every selected property present."""
    users = [{p: (f"{p}-{i}" if p not in COLLECTION_PROPERTIES else []) for p in props} for i in range(n)]
    return orjson.loads(orjson.dumps(users))


def test_a_page_with_exactly_the_selected_properties_is_returned_as_it_is():
    users = page()
    before = copy.deepcopy(users)
    assert conform(users, DEFAULT_USER_PROPERTIES) is users
    assert users == before
    assert conform([], DEFAULT_USER_PROPERTIES) == []


def test_graphs_order_of_keys_is_kept_whatever_the_configured_order():
    props = ("id", "displayName", "mail")
    users = [{"mail": "a@x", "id": "1", "displayName": "A"}, {"mail": "b@x", "id": "2", "displayName": "B"}]
    out = conform(users, props)
    assert out is users and [list(u) for u in out] == [["mail", "id", "displayName"]] * 2
    # A user in another order than the first is still exactly the selection: it stays as it is.
    mixed = [users[0], {"id": "3", "displayName": "C", "mail": "c@x"}]
    out = conform(mixed, props)
    assert out == mixed and out[1] is mixed[1] and list(out[1]) == ["id", "displayName", "mail"]


# --- conform: the slow path ------------------------------------------------------------------------

def test_keys_beyond_the_selection_are_dropped_and_absent_ones_follow_in_configured_order():
    props = ("id", "displayName", EXT, "businessPhones", "signInActivity")
    users = [
        {"id": "1", "displayName": "A", EXT: "CC1", "businessPhones": ["1"], "signInActivity": {"x": 1}},
        {"displayName": "B", "id": "2", "businessPhones": [], "mobilePhone": "+1", "@odata.type": "#x"},
        {"id": "3"},
    ]
    first = users[0]
    out = conform(users, props)
    assert out[0] is first  # exactly the selection: untouched
    assert out[1] == {"displayName": "B", "id": "2", "businessPhones": [], EXT: None, "signInActivity": None}
    assert list(out[1]) == ["displayName", "id", "businessPhones", EXT, "signInActivity"]
    assert out[2] == {"id": "3", "displayName": None, EXT: None, "businessPhones": [], "signInActivity": None}
    assert list(out[2]) == list(props)
    assert "mobilePhone" in users[1]  # the input page is not changed


def test_absent_collections_are_new_lists():
    out = conform([{"id": "1"}, {"id": "2"}], ("id", "otherMails"))
    assert out[0]["otherMails"] == [] and out[0]["otherMails"] is not out[1]["otherMails"]


def test_an_extension_graph_spells_in_another_case_stops_the_export():
    configured = f"extension_{APP.lower()}_CostCenter"
    users = [{"id": "1", EXT: "CC1"}]
    with pytest.raises(GraphError) as info:
        conform(users, ("id", configured))
    assert str(info.value) == (f"Graph spells USER_PROPERTIES' '{configured}' as '{EXT}': set USER_PROPERTIES to "
                               "Graph's spelling; nothing was published.")
    assert info.value.exit_code == 4


def test_the_case_mismatch_is_found_on_any_user_of_the_page():
    configured = f"extension_{APP.lower()}_CostCenter"
    users = [{"id": str(i)} for i in range(500)] + [{"id": "x", EXT: "CC"}]
    with pytest.raises(GraphError, match="set USER_PROPERTIES to Graph's spelling"):
        conform(users, ("id", configured))


# --- check_spelling (users/delta items) ------------------------------------------------------------

def test_check_spelling_lets_delta_items_through():
    props = ("id", "department", EXT)
    check_spelling([{"id": "1"}, {"id": "2", "@removed": {"reason": "changed"}}, {"id": "3", EXT: None},
                    {"id": "4", "manager@delta": [{"id": "m"}], "mobilePhone": "+1"}], props)


def test_check_spelling_refuses_a_key_in_another_case():
    with pytest.raises(GraphError, match="spells USER_PROPERTIES' 'Department' as 'department'"):
        check_spelling([{"id": "1"}, {"id": "2", "department": "Sales"}], ("id", "Department"))
