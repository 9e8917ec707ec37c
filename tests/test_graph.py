"""Paging and error reporting, over a canned transport adapter mounted on a real requests.Session."""

import json

import pytest
import requests
from requests.adapters import BaseAdapter

from graph_export import graph
from graph_export.errors import GraphError

ENDPOINT = "https://graph.example"
PROPS = ("id", "displayName")


class CannedGraph(BaseAdapter):
    """Answers each URL from a dict of url -> (status, body, headers); records what was asked."""

    def __init__(self, pages):
        super().__init__()
        self.pages = pages
        self.calls = []

    def send(self, request, **kwargs):
        self.calls.append((request.url, request.headers.get("Authorization"), kwargs.get("timeout")))
        status, body, headers = self.pages[request.url]
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers.update({"Content-Type": "application/json", **headers})
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def session_with(pages):
    session = requests.Session()
    adapter = CannedGraph(pages)
    session.mount("https://", adapter)
    return session, adapter


def first_url():
    return graph.first_page_url(ENDPOINT, PROPS, 999)


def test_first_page_selects_properties_and_top():
    assert first_url() == "https://graph.example/v1.0/users?$select=id,displayName&$top=999"


def test_follows_next_links_whole_and_strips_annotations():
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=opaque%2Btoken&$select=id"
    session, adapter = session_with({
        first_url(): (200, {"@odata.context": "ctx", "value": [{"id": "1", "@odata.type": "#user"}],
                            "@odata.nextLink": second}, {}),
        second: (200, {"value": [{"id": "2", "displayName": "Zoë"}]}, {}),
    })
    tokens = iter(["t1", "t2"])
    pages = list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: next(tokens)))
    assert pages == [[{"id": "1"}], [{"id": "2", "displayName": "Zoë"}]]
    assert [c[0] for c in adapter.calls] == [first_url(), second]
    assert [c[1] for c in adapter.calls] == ["Bearer t1", "Bearer t2"]  # token asked per page
    assert all(c[2] == graph.TIMEOUT for c in adapter.calls)


def test_refuses_to_send_the_token_to_another_host():
    session, _ = session_with({
        first_url(): (200, {"value": [], "@odata.nextLink": "https://evil.example/v1.0/users?x=1"}, {}),
    })
    with pytest.raises(GraphError, match="refusing to follow"):
        list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: "t"))


def test_a_repeated_next_link_stops_instead_of_looping():
    again = f"{ENDPOINT}/v1.0/users?$skiptoken=same"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": again}, {}),
        again: (200, {"value": [{"id": "2"}], "@odata.nextLink": again}, {}),
    })
    with pytest.raises(GraphError, match="same nextLink twice"):
        list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: "t"))


def test_missing_consent_says_which_permission_to_grant():
    session, _ = session_with({first_url(): (403, {"error": {
        "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}},
        {"request-id": "rid-1"})})
    with pytest.raises(GraphError) as info:
        list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: "t"))
    message = str(info.value)
    assert "User.Read.All" in message and "admin consent" in message and "application" in message
    assert "rid-1" in message and "page 1" in message


def test_bad_property_points_at_user_properties():
    session, _ = session_with({first_url(): (400, {"error": {
        "code": "Request_BadRequest", "message": "Could not find a property named 'x' on type 'microsoft.graph.user'."}}, {})})
    with pytest.raises(GraphError, match="USER_PROPERTIES"):
        list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: "t"))


def test_page_without_value_is_an_error_not_an_empty_tenant():
    session, _ = session_with({first_url(): (200, {"unexpected": True}, {})})
    with pytest.raises(GraphError, match="without a 'value' list"):
        list(graph.iter_user_pages(session, ENDPOINT, PROPS, 999, lambda: "t"))


def test_retry_policy_covers_throttling_and_honours_retry_after():
    session = graph.make_session(0.5)
    retry = session.get_adapter("https://graph.example").max_retries
    assert {429, 503, 504}.issubset(retry.status_forcelist)
    assert retry.respect_retry_after_header and retry.backoff_factor == 0.5
    assert retry.raise_on_status is False
