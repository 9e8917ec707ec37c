"""Paging and error reporting, over a canned transport adapter mounted on a real requests.Session."""

import io
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
        response.raw = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        response.headers.update({"Content-Type": "application/json", **headers})
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


class FixedTokens:
    """graph.Tokens that hands out t1, t2, ... and records refreshes."""

    def __init__(self):
        self.issued, self.refreshed = 0, []

    def get(self):
        self.issued += 1
        return f"t{self.issued}"

    def refresh(self, rejected):
        self.refreshed.append(rejected)
        return self.get()


def pages_of(session, tokens=None, url=None):
    return list(graph.iter_user_pages(session, url or first_url(), ENDPOINT, tokens or FixedTokens(), 30.0))


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
    pages = pages_of(session)
    assert [p.users for p in pages] == [[{"id": "1"}], [{"id": "2", "displayName": "Zoë"}]]
    assert [(p.number, p.next_link) for p in pages] == [(1, second), (2, None)]
    assert [c[0] for c in adapter.calls] == [first_url(), second]
    assert [c[1] for c in adapter.calls] == ["Bearer t1", "Bearer t2"]  # token asked per page
    assert all(c[2] == (graph.CONNECT_TIMEOUT, 30.0) for c in adapter.calls)


def test_next_link_is_found_wherever_graph_puts_it():
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    third = f"{ENDPOINT}/v1.0/users?$skiptoken=c"
    many = [{"id": str(i), "displayName": "x" * 100} for i in range(2000)]  # > HEAD_BYTES of users
    session, adapter = session_with({
        # Graph's order (link before the users), then the link after a long value, then no link.
        first_url(): (200, b'{"@odata.context":"ctx", "@odata.nextLink" : "' + second.encode() + b'","value":[]}', {}),
        second: (200, {"value": many, "@odata.nextLink": third}, {}),
        third: (200, {"value": [{"id": "last"}]}, {}),
    })
    pages = pages_of(session)
    assert [(p.number, p.next_link, len(p.users)) for p in pages] == [(1, second, 0), (2, third, 2000), (3, None, 1)]
    assert [c[0] for c in adapter.calls] == [first_url(), second, third]


def test_next_link_in_reads_only_the_page_level_annotation():
    # Decoded as JSON, like the parser will: escapes included.
    assert graph.next_link_in(b'{"@odata.nextLink":"https://g/v1.0/users?$skiptoken=a\\u002fb"}') == \
        "https://g/v1.0/users?$skiptoken=a/b"
    assert graph.next_link_in(b'{"@odata.nextLink":"https:\\/\\/g\\/x"}') == "https://g/x"
    assert graph.next_link_in(b'{"@odata.nextLink":""}') is None
    # A user whose name is the annotation's text: its quotes are escaped, so it cannot match.
    fake = json.dumps({"value": [{"displayName": '"@odata.nextLink":"https://evil/x"'}]}).encode()
    assert graph.next_link_in(fake) is None
    assert graph.next_link_in(b'{"members@odata.nextLink":"https://g/m","value":[]}') is None


def test_a_page_with_two_different_next_links_stops_instead_of_guessing():
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    other = f"{ENDPOINT}/v1.0/users?$skiptoken=other"
    body = f'{{"@odata.nextLink":"{second}","value":[{{"id":"1"}}],"@odata.nextLink":"{other}"}}'.encode()
    session, _ = session_with({first_url(): (200, body, {}), second: (200, {"value": []}, {})})
    with pytest.raises(GraphError, match="page 1 has an ambiguous @odata.nextLink"):
        pages_of(session)


def test_refuses_to_send_the_token_to_another_host():
    session, _ = session_with({
        first_url(): (200, {"value": [], "@odata.nextLink": "https://evil.example/v1.0/users?x=1"}, {}),
    })
    with pytest.raises(GraphError, match="refusing to follow"):
        pages_of(session)


def test_a_repeated_next_link_stops_instead_of_looping():
    again = f"{ENDPOINT}/v1.0/users?$skiptoken=same"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": again}, {}),
        again: (200, {"value": [{"id": "2"}], "@odata.nextLink": again}, {}),
    })
    with pytest.raises(GraphError, match="same nextLink twice"):
        pages_of(session)


def test_missing_consent_says_which_permission_to_grant():
    session, _ = session_with({first_url(): (403, {"error": {
        "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}},
        {"request-id": "rid-1"})})
    with pytest.raises(GraphError) as info:
        pages_of(session)
    message = str(info.value)
    assert "User.Read.All" in message and "admin consent" in message and "application" in message
    assert "rid-1" in message and "page 1" in message


def test_bad_property_points_at_user_properties():
    session, _ = session_with({first_url(): (400, {"error": {
        "code": "Request_BadRequest", "message": "Could not find a property named 'x' on type 'microsoft.graph.user'."}}, {})})
    with pytest.raises(GraphError, match="USER_PROPERTIES"):
        pages_of(session)


def test_page_without_value_is_an_error_not_an_empty_tenant():
    session, _ = session_with({first_url(): (200, {"unexpected": True}, {})})
    with pytest.raises(GraphError, match="without a 'value' list"):
        pages_of(session)


def test_a_rejected_token_is_refreshed_once_and_the_page_retried():
    responses = iter([(401, {"error": {"code": "InvalidAuthenticationToken"}}, {}),
                      (200, {"value": [{"id": "1"}]}, {})])

    class Flaky(CannedGraph):
        def send(self, request, **kwargs):
            self.pages = {request.url: next(responses)}
            return super().send(request, **kwargs)

    session = requests.Session()
    adapter = Flaky({})
    session.mount("https://", adapter)
    tokens = FixedTokens()
    assert [p.users for p in pages_of(session, tokens)] == [[{"id": "1"}]]
    assert tokens.refreshed == ["t1"] and [c[1] for c in adapter.calls] == ["Bearer t1", "Bearer t2"]


def test_a_token_rejected_twice_fails_with_advice():
    session, adapter = session_with({first_url(): (401, {"error": {"code": "InvalidAuthenticationToken",
                                                                   "message": "Access token has expired"}}, {})})
    with pytest.raises(GraphError, match="HTTP 401.*same cloud"):
        pages_of(session)
    assert len(adapter.calls) == 2


def test_a_rejected_next_link_is_reported_as_such():
    link = f"{ENDPOINT}/v1.0/users?$skiptoken=expired"
    session, _ = session_with({link: (400, {"error": {"code": "Request_BadRequest", "message": "bad skiptoken"}}, {})})
    with pytest.raises(graph.PageLinkRejected):
        pages_of(session, url=link)
