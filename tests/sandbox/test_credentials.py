"""Key Vault over a socket: a certificate this machine does not trust, an address nothing listens on.

The rest of the credentials tests need no socket: tests/unit/test_credentials.py.
"""

import socket
import time

import pytest

from graph_export.credentials import make_secret_client, read_client_secret
from graph_export.errors import AuthError


class NoCredential:
    def get_token(self, *scopes, **kwargs):  # never called: no request is made in these tests
        raise AssertionError("unexpected token request")


def test_a_vault_certificate_this_machine_does_not_trust_is_named_as_such_and_not_retried(untrusted):
    client = make_secret_client(untrusted.url, NoCredential(), retry_total=4, retry_backoff_factor=1.0)
    with pytest.raises(AuthError) as raised:
        read_client_secret(client, "graph-client-secret")
    message = str(raised.value)
    assert message.startswith(f"Key Vault at {untrusted.url} failed TLS certificate verification "
                              "(unable to get local issuer certificate)")
    assert "REQUESTS_CA_BUNDLE" in message and "TLS-inspecting proxy" in message and "KEY_VAULT_URL" in message
    assert "unreachable" not in message and "\n" not in message
    assert untrusted.connections == 1  # not retried


def test_a_vault_address_nothing_listens_on_fails_at_once_saying_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_secret_client(f"https://127.0.0.1:{port}", NoCredential(), retry_total=4, retry_backoff_factor=1.0)
    started = time.monotonic()
    with pytest.raises(AuthError, match=r"is unreachable \(the connection was refused\): check KEY_VAULT_URL"):
        read_client_secret(client, "graph-client-secret")
    assert time.monotonic() - started < 1.5  # with retries it would back off 2 + 4 + 8 s
