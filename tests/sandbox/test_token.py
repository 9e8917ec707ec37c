"""Sign-in hosts over a socket: one that refuses the connection, one whose certificate this machine does not
trust. The rest of the token tests need no socket: tests/unit/test_token.py.
"""

import socket
import time

import pytest

from graph_export.credentials import Secret
from graph_export.errors import AuthError
from graph_export.token import GraphTokenProvider

CLIENT = "11111111-2222-3333-4444-555555555555"
TENANT = "9f4c2b1e-0000-4000-8000-000000000001"
SECRET = "s3cr3t~value.for-tests-only"


def test_a_refused_connection_is_not_retried():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(AuthError, match="AUTHORITY_HOST"):
        GraphTokenProvider(authority=f"https://127.0.0.1:{port}/{TENANT}", client_id=CLIENT, scope="x/.default",
                           credential=Secret(SECRET), backoff_base_s=1.0)
    assert time.monotonic() - started < 1.0  # no backoff: with one retry it would sleep >= 1 s


def test_a_sign_in_certificate_this_machine_does_not_trust_is_named_as_such_and_not_retried(untrusted):
    with pytest.raises(AuthError) as raised:
        GraphTokenProvider(authority=f"{untrusted.url}/{TENANT}", client_id=CLIENT, scope="x/.default",
                           credential=Secret(SECRET), backoff_base_s=1.0)
    message = str(raised.value)
    assert message.startswith(f"The sign-in service at {untrusted.url} failed TLS certificate verification "
                              "(unable to get local issuer certificate)")
    assert "AUTHORITY_HOST" in message and "REQUESTS_CA_BUNDLE" in message and "TLS-inspecting proxy" in message
    assert "Could not reach" not in message and "\n" not in message and SECRET not in message
    assert untrusted.connections == 1
