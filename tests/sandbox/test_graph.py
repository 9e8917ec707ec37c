"""A Graph endpoint whose certificate this machine does not trust, over a real TLS listener
(tests/sandbox/tls_listener.py). Paging and error reporting over a canned adapter: tests/unit/test_graph.py.
"""

import pytest

from graph_export import graph, transport
from graph_export.errors import GraphError
from tests.fixed_tokens import FixedTokens
from tests.sandbox.tls_listener import UntrustedTls

ENDPOINT = "https://graph.example"
PROPS = ("id", "displayName")




def users_of(session, tokens=None, endpoint=ENDPOINT):
    return graph.GraphUsers(session, endpoint, tokens or FixedTokens(), 30.0)


def test_a_graph_certificate_this_machine_does_not_trust_is_named_as_such_and_not_retried(tmp_path, monkeypatch):
    untrusted = UntrustedTls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(untrusted.other_ca))
    session = transport.make_session(transport.budgeted_retry(0.5, 5, transport.RetryBudget(50)))
    try:
        with pytest.raises(GraphError) as raised:
            list(users_of(session, endpoint=untrusted.url).pages(graph.first_page_url(untrusted.url, PROPS, 999)))
    finally:
        untrusted.close()
    message = str(raised.value)
    assert message.startswith(f"Graph at {untrusted.url} failed TLS certificate verification "
                              "(unable to get local issuer certificate)")
    assert "GRAPH_ENDPOINT" in message and "REQUESTS_CA_BUNDLE" in message and "TLS-inspecting proxy" in message
    assert "could not be reached" not in message and "\n" not in message and "t1" not in message
    assert untrusted.connections == 1  # the five retries a page may have were not spent on it
