"""The manager as the export keeps it, from /users' $expand and from users/delta's manager@delta."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from graph_export import GraphError
from graph_export.graph import first_page_url
from graph_export.properties import conform, manager_from_delta, manager_reference

BOSS = {"@odata.type": "#microsoft.graph.user", "id": "b0b0b0b0-0000-4000-8000-000000000001"}
OTHER = {"@odata.type": "#microsoft.graph.user", "id": "b0b0b0b0-0000-4000-8000-000000000002"}
GONE = {**BOSS, "@removed": {"reason": "deleted"}}


def test_the_first_page_expands_the_manager_as_its_id_and_selects_the_rest():
    query = parse_qs(urlsplit(first_page_url("https://graph.microsoft.com", ("id", "manager", "mail"), 100)).query)
    assert query == {"$select": ["id,mail"], "$expand": ["manager($select=id)"], "$top": ["100"]}
    assert "$expand" not in parse_qs(urlsplit(first_page_url("https://g", ("id", "mail"), 999)).query)


def test_an_expanded_manager_keeps_its_id_only_and_a_user_without_one_gets_null():
    page = [{"id": "1", "manager": BOSS}, {"id": "2"}]
    assert conform(page, ("id", "manager")) == [{"id": "1", "manager": {"id": BOSS["id"]}}, {"id": "2", "manager": None}]
    assert page[0]["manager"] is BOSS  # Graph's page is not changed in place


@pytest.mark.parametrize("value", ["b0b0", {"@odata.type": "#microsoft.graph.user"}, {"id": ""}, [BOSS]])
def test_a_manager_that_is_not_an_object_with_an_id_is_refused(value):
    with pytest.raises(GraphError, match="manager"):
        manager_reference(value)


@pytest.mark.parametrize("entries, now", [
    ([BOSS], {"id": BOSS["id"]}),                     # assigned
    ([GONE, OTHER], {"id": OTHER["id"]}),             # changed: the old one removed, the new one
    ([OTHER, GONE], {"id": OTHER["id"]}),             # the same, in the other order
    ([GONE], None),                                   # cleared, or the manager deleted
    ([], None),
])
def test_manager_delta_is_the_last_reference_not_removed(entries, now):
    assert manager_from_delta(entries) == now


def test_a_manager_delta_that_is_not_a_list_is_refused():
    with pytest.raises(GraphError, match="manager@delta"):
        manager_from_delta(BOSS)
