"""Paging and error reporting, over a canned transport adapter mounted on a real requests.Session."""

import io
import json

import pytest
import requests
from requests.adapters import BaseAdapter

from graph_export import graph, graph_stream, sink
from graph_export.errors import GraphError, PageLinkRejected, PageTooLarge
from tests.fixed_tokens import FixedTokens

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




def pages_of(session, tokens=None, url=None):
    return list(users_of(session, tokens).pages(url or first_url()))


def users_of(session, tokens=None, endpoint=ENDPOINT):
    return graph.GraphUsers(session, endpoint, tokens or FixedTokens(), 30.0)


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
    assert graph_stream.next_link_in(b'{"@odata.nextLink":"https://g/v1.0/users?$skiptoken=a\\u002fb"}') == \
        "https://g/v1.0/users?$skiptoken=a/b"
    assert graph_stream.next_link_in(b'{"@odata.nextLink":"https:\\/\\/g\\/x"}') == "https://g/x"
    assert graph_stream.next_link_in(b'{"@odata.nextLink":""}') is None
    # A user whose name is the annotation's text: its quotes are escaped, so it cannot match.
    fake = json.dumps({"value": [{"displayName": '"@odata.nextLink":"https://evil/x"'}]}).encode()
    assert graph_stream.next_link_in(fake) is None
    assert graph_stream.next_link_in(b'{"members@odata.nextLink":"https://g/m","value":[]}') is None


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


@pytest.mark.parametrize(("code", "message", "says"), [
    ("Authentication_MSGraphPermissionMissing", "Calling principal does not have required MSGraph permissions "
     "AuditLog.Read.All", "AuditLog.Read.All *application* permission"),
    ("Authentication_RequestFromNonPremiumTenantOrB2CTenant", "Neither tenant is B2C or tenant doesn't have premium "
     "license", "only in a tenant with an Entra ID P1 or P2 licence"),
])
def test_sign_in_activity_refusals_name_the_permission_the_licence_and_the_setting(code, message, says):
    session, _ = session_with({first_url(): (403, {"error": {"code": code, "message": message}}, {})})
    with pytest.raises(GraphError) as info:
        pages_of(session)
    line = str(info.value)
    assert code in line and says in line and "USER_PROPERTIES" in line and "P1 or P2" in line
    assert "User.Read.All *application*" not in line  # not the advice for a missing User.Read.All


def test_bad_property_points_at_user_properties():
    session, _ = session_with({first_url(): (400, {"error": {
        "code": "Request_BadRequest", "message": "Could not find a property named 'x' on type 'microsoft.graph.user'."}}, {})})
    with pytest.raises(GraphError, match="USER_PROPERTIES"):
        pages_of(session)


def test_page_without_value_is_an_error_not_an_empty_tenant():
    session, _ = session_with({first_url(): (200, {"unexpected": True}, {})})
    with pytest.raises(GraphError, match="without a 'value' list"):
        pages_of(session)


def test_a_lone_surrogate_escape_is_json_the_page_parses_and_the_line_keeps_the_escape():
    # RFC 8259 allows "\ud83d" with no low half: valid JSON text (orjson alone refuses it). One such user
    # on page 2, among ordinary ones, written the way Graph may write it (upper-case hex).
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    page2 = ('{"value":[{"id":"2","displayName":"Zo\u00eb"},{"id":"3","displayName":"Ann \\uD83D","n":1e-7},'
             '{"id":"4","displayName":"pair \\ud83d\\ude00"}]}').encode()
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": second}, {}),
        second: (200, page2, {}),
    })
    pages = pages_of(session)
    assert [u["displayName"] for u in pages[1].users] == ["Zoë", "Ann \ud83d", "pair 😀"]
    assert [sink.encode_user(u) for u in pages[1].users] == [
        '{"id":"2","displayName":"Zoë"}'.encode(),
        b'{"id":"3","displayName":"Ann \\ud83d","n":1e-7}',  # the same escape (hex case aside): the exact value
        '{"id":"4","displayName":"pair 😀"}'.encode(),  # a valid pair is one character, as ever
    ]


@pytest.mark.parametrize("body", [b"<html><body>Sign in</body></html>", b'{"value":[{"id":"1"}', b"",
                                  b'{"value":["\\ud83d",]}', b'{"value":[NaN]}', b'{"value":["\xed\xa0\xbd"]}'],
                         ids=repr)
def test_a_page_that_is_not_json_points_at_graph_endpoint(body):
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": second}, {}),
        second: (200, body, {}),
    })
    with pytest.raises(GraphError, match="^Graph returned page 2 as something other than JSON: check GRAPH_ENDPOINT."):
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
    with pytest.raises(PageLinkRejected):
        pages_of(session, url=link)


# --- what a page may hold: redirects, items, size, repeated ids (issue 10) -----------------------


class CountingRaw(io.BytesIO):
    """A response body that records how much of it was read."""

    def __init__(self, data, log):
        super().__init__(data)
        self.log = log

    def read(self, *args, **kwargs):
        chunk = super().read(*args)
        self.log.append(len(chunk))
        return chunk


class CountingGraph(CannedGraph):
    def __init__(self, pages):
        super().__init__(pages)
        self.reads = []

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        response.raw = CountingRaw(response.raw.getvalue(), self.reads)
        return response


EVIL = "https://evil.example:8443/v1.0/users?$skiptoken=stolen&sig=s3cr3t"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_only_its_origin_is_named(status):
    session = requests.Session()
    adapter = CountingGraph({
        first_url(): (status, b"x" * 1000, {"Location": EVIL, "request-id": "rid-r"}),
        EVIL: (200, {"value": [{"id": "from-elsewhere"}]}, {}),   # what following it would publish
    })
    session.mount("https://", adapter)
    with pytest.raises(GraphError) as info:
        pages_of(session)
    message = str(info.value)
    assert f"HTTP {status}" in message and "a redirect to https://evil.example:8443:" in message
    assert "GRAPH_ENDPOINT" in message and "proxy" in message and "rid-r" in message
    assert "stolen" not in message and "s3cr3t" not in message and "/v1.0" not in message
    assert [c[0] for c in adapter.calls] == [first_url()]
    assert sum(adapter.reads) == 0  # not even the redirect's own body is read


@pytest.mark.parametrize("location, named", [
    ("/v1.0/users?$skiptoken=x", "a redirect to https://graph.example:"),
    ("https://user:pw@[::1]:9/x", "a redirect to https://[::1]:9:"),
    ("https://[::1/x", "a redirect to an address that is not a URL:"),
    (None, "a redirect without a Location:"),
])
def test_a_redirect_message_never_carries_user_info_path_or_query(location, named):
    session, adapter = session_with({first_url(): (302, b"", {"Location": location} if location else {})})
    with pytest.raises(GraphError) as info:
        pages_of(session)
    assert named in str(info.value) and "pw" not in str(info.value)
    assert len(adapter.calls) == 1


BAD_ITEMS = [
    (7, "value[1] is a number, not a user object"),
    ("s3cr3t-looking-text", "value[1] is a string, not a user object"),
    (None, "value[1] is null, not a user object"),
    (True, "value[1] is a boolean, not a user object"),
    (["id", "x"], "value[1] is an array, not a user object"),
    ({"displayName": "Zoë"}, "value[1] is an object without an 'id'"),
    ({"id": 5}, "value[1] has an 'id' that is a number, not a string"),
    ({"id": None}, "value[1] has an 'id' that is null, not a string"),
    ({"id": {"x": 1}}, "value[1] has an 'id' that is an object, not a string"),
    ({"id": ""}, "value[1] has an empty 'id'"),
]


@pytest.mark.parametrize("item, wrong", BAD_ITEMS)
def test_an_item_that_is_not_a_user_fails_naming_page_position_and_kind(item, wrong):
    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": second}, {}),
        second: (200, {"value": [{"id": "2"}, item, {"id": "3"}]}, {"request-id": "rid-7"}),
    })
    with pytest.raises(GraphError) as info:
        pages_of(session)
    message = str(info.value)
    assert f"Graph page 2 holds something that is not a user: {wrong};" in message
    assert "rid-7" in message and "nothing was published" in message
    assert "s3cr3t" not in message and "Zoë" not in message  # what was wrong, never the item itself


def test_a_bad_item_among_annotated_users_is_a_graph_error_not_an_attribute_error():
    session, _ = session_with({first_url(): (200, {"value": [{"id": "1", "@odata.type": "#user"}, 7]}, {})})
    with pytest.raises(GraphError, match=r"value\[1\] is a number"):
        pages_of(session)


def test_a_page_declaring_more_than_the_cap_fails_before_its_body_is_read():
    session = requests.Session()
    adapter = CountingGraph({first_url(): (200, {"value": [{"id": "1"}]},
                                           {"Content-Length": str(graph_stream.MAX_PAGE_BYTES + 1), "request-id": "rid-big"})})
    session.mount("https://", adapter)
    with pytest.raises(PageTooLarge) as info:
        pages_of(session)
    message = str(info.value)
    assert "page 1 is larger than the 64 MiB" in message and f"Content-Length {graph_stream.MAX_PAGE_BYTES + 1}" in message
    assert "rid-big" in message and isinstance(info.value, GraphError)
    assert sum(adapter.reads) == 0


def test_a_page_that_sends_more_than_the_cap_fails_once_the_cap_is_passed(monkeypatch):
    monkeypatch.setattr(graph_stream, "MAX_PAGE_BYTES", 1024 * 1024)
    body = b'{"value":[{"id":"1"}]' + b" " * (3 * 1024 * 1024) + b"}"  # valid JSON, no Content-Length
    session = requests.Session()
    adapter = CountingGraph({first_url(): (200, body, {})})
    session.mount("https://", adapter)
    with pytest.raises(PageTooLarge, match="page 1 is larger than the 1 MiB .*more than 1048576 bytes arrived"):
        pages_of(session)
    assert sum(adapter.reads) <= 1024 * 1024 + graph_stream.REST_BYTES  # stopped at the cap, not at the end


class BreaksOff:
    """A raw body that sends some bytes and then breaks off, like a reset connection mid-page."""

    def __init__(self, data):
        self.data = data

    def stream(self, amt, decode_content=True):
        from urllib3.exceptions import ProtocolError
        yield self.data
        raise ProtocolError("Connection broken")

    def close(self):
        pass

    def release_conn(self):
        pass


def test_a_page_asked_for_again_is_held_to_the_cap_as_well(monkeypatch):
    monkeypatch.setattr(graph_stream, "MAX_PAGE_BYTES", 1024 * 1024)
    big = b'{"value":[{"id":"1"}]' + b" " * (3 * 1024 * 1024) + b"}"
    answers = iter([BreaksOff(b'{"value":[{"id'), io.BytesIO(big)])

    class Again(CannedGraph):
        def send(self, request, **kwargs):
            response = super().send(request, **kwargs)
            response.raw = next(answers)
            return response

    session = requests.Session()
    session.mount("https://", Again({first_url(): (200, b"", {})}))
    with pytest.raises(PageTooLarge, match="more than 1048576 bytes arrived"):
        pages_of(session)


def test_a_user_id_of_an_earlier_page_fails_before_the_last_page_is_handed_on():
    second, third = f"{ENDPOINT}/v1.0/users?$skiptoken=b", f"{ENDPOINT}/v1.0/users?$skiptoken=c"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "a"}, {"id": "b"}], "@odata.nextLink": second}, {}),
        second: (200, {"value": [{"id": "c"}, {"id": "a"}], "@odata.nextLink": third}, {"request-id": "rid-2"}),
        third: (200, {"value": [{"id": "d"}]}, {"request-id": "rid-3"}),
    })
    pages = users_of(session).pages(first_url())
    assert [next(pages).number, next(pages).number] == [1, 2]
    with pytest.raises(GraphError, match="same user twice in one listing, on page 1 and again on page 2: .*rid-2"):
        next(pages)


def test_pages_add_their_ids_to_the_given_user_ids_which_catch_a_repeat_across_a_resume():
    from graph_export.userids import UserIds

    second = f"{ENDPOINT}/v1.0/users?$skiptoken=b"
    session, _ = session_with({
        first_url(): (200, {"value": [{"id": "a"}, {"id": "b"}], "@odata.nextLink": second}, {}),
        second: (200, {"value": [{"id": "c"}]}, {}),
    })
    before = UserIds()
    assert [p.number for p in users_of(session).pages(first_url(), ids=before)] == [1, 2]
    assert len(before) == 3
    # A run resumed at page 2 with the ids saved after page 1: page 2 repeating "a" is caught.
    saved = UserIds()
    saved.add_ids(1, ["a", "b"])
    session, _ = session_with({second: (200, {"value": [{"id": "a"}]}, {})})
    with pytest.raises(GraphError, match="before the page this run resumed from and again on page 2"):
        list(users_of(session).pages(second, 2, ids=UserIds.from_bytes(saved.to_bytes())))


def test_changes_ask_for_delta_pages_allow_a_repeated_id_and_end_with_the_delta_link():
    link = f"{ENDPOINT}/v1.0/users/delta?$deltatoken=saved"
    second = f"{ENDPOINT}/v1.0/users/delta?$skiptoken=b"
    session, adapter = session_with({
        link: (200, {"value": [{"id": "a"}], "@odata.nextLink": second}, {}),
        second: (200, {"value": [{"id": "a", "@removed": {"reason": "changed"}}],
                       "@odata.deltaLink": f"{ENDPOINT}/v1.0/users/delta?$deltatoken=next"}, {}),
    })
    seen = []
    adapter.send = (lambda send: lambda request, **kw: (seen.append(request.headers.get("Prefer")),
                                                         send(request, **kw))[1])(adapter.send)
    pages = list(users_of(session).changes(link))
    assert [len(p.users) for p in pages] == [1, 1]  # "a" twice is a change feed, not a duplicate
    assert pages[-1].delta_link == f"{ENDPOINT}/v1.0/users/delta?$deltatoken=next"
    assert seen == [graph.DELTA_PREFER] * 2


def test_a_rejected_saved_delta_link_says_paging_must_start_over():
    link = f"{ENDPOINT}/v1.0/users/delta?$deltatoken=expired"
    session, _ = session_with({link: (400, {"error": {"code": "syncStateNotFound", "message": "gone"}}, {})})
    with pytest.raises(PageLinkRejected, match="HTTP 400 .syncStateNotFound"):
        list(users_of(session).changes(link))


def test_with_debug_logging_a_failed_page_keeps_its_underlying_cause_without_the_skiptoken(caplog):
    """What the user sees is one line (``from None``); ``--debug`` shows what went wrong underneath."""
    import logging

    from graph_export import redact

    second = f"{ENDPOINT}/v1.0/users?$skiptoken=continue-secret"

    class Refusing(CannedGraph):
        def send(self, request, **kwargs):
            if request.url == second:
                raise requests.ConnectionError(f"HTTPSConnectionPool: Max retries exceeded with url: {request.url} "
                                               "(Caused by NewConnectionError: [Errno 111] Connection refused)")
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", Refusing({first_url(): (200, {"value": [{"id": "1"}], "@odata.nextLink": second}, {})}))
    caplog.set_level(logging.DEBUG, logger="graph_export")
    with pytest.raises(GraphError, match="could not be reached for page 2") as info:
        pages_of(session)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the user's line stands alone
    record = next(r for r in caplog.records if r.levelno == logging.DEBUG and "page 2" in r.getMessage())
    redact.RedactingFilter().filter(record)
    shown = logging.Formatter().format(record)
    assert "Connection refused" in shown and "ConnectionError" in shown
    assert "continue-secret" not in shown
