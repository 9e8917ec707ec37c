"""The sandbox's Azurite serves Queue storage beside Blob storage: what a queue fan-out of tenants needs.

azure-storage-queue sends base64 text (TextBase64EncodePolicy), which is what the Functions queue trigger
expects by default ("Azure Queue storage trigger for Azure Functions", host.json ``messageEncoding``
base64); over plain HTTP with the account key, and over HTTPS with a managed identity token
(``--oauth basic``), as blobs are.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from sandbox import Sandbox
from sandbox.azurite import Azurite
from tests.sandbox.sandbox_env import FOREIGN_ENV

REPO = Path(__file__).resolve().parents[2]


class StaticToken:
    """A credential that hands out one given token (to show what Azurite refuses)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3000)


def round_trip(queue: QueueClient) -> None:
    """Create, send one base64 message, peek it raw, receive and delete it: the queue is empty after."""
    queue.create_queue()
    body = json.dumps({"tenant": str(uuid.uuid4()), "slot": "2026-12-03T02:00:00Z"})
    queue.send_message(body)
    received = list(queue.receive_messages(visibility_timeout=30))
    assert [m.content for m in received] == [body] and received[0].dequeue_count == 1
    queue.delete_message(received[0])
    assert list(queue.receive_messages()) == [] and queue.get_queue_properties().approximate_message_count == 0


def test_the_connection_string_carries_a_queue_endpoint_and_a_base64_message_goes_round(azurite):
    assert f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/devstoreaccount1;" in azurite.connection_string
    assert azurite.queue_port not in (None, azurite.port)
    name = f"tenants-{uuid.uuid4().hex[:8]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, name,
                                               message_encode_policy=TextBase64EncodePolicy(),
                                               message_decode_policy=TextBase64DecodePolicy())
    round_trip(queue)
    # On the wire the message is base64 text: a reader without the decode policy sees it encoded.
    queue.send_message("héllo")
    plain = QueueClient.from_connection_string(azurite.connection_string, name)
    assert [m.content for m in plain.peek_messages()] == [base64.b64encode("héllo".encode()).decode()]
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    assert name in [q.name for q in service.list_queues()]
    queue.delete_queue()


def test_queues_over_https_with_a_managed_identity_token(tmp_path, monkeypatch):
    with Sandbox(users=1, workdir=tmp_path / "sandbox") as sb, \
            Azurite(tmp_path / "azurite", REPO, tls=sb.tls) as server:
        for name in FOREIGN_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in sb.settings.items():
            monkeypatch.setenv(name, value)
        assert server.queue_endpoint.startswith("https://127.0.0.1:")
        queue = QueueClient(server.queue_endpoint, "fanout", credential=ManagedIdentityCredential(),
                            message_encode_policy=TextBase64EncodePolicy(),
                            message_decode_policy=TextBase64DecodePolicy())
        round_trip(queue)
        assert ("system", "https://storage.azure.com") in sb.identity.issued_to

        # A token for another audience (Graph's) is refused by Azurite's OAuth check, as for blobs.
        with pytest.raises(ClientAuthenticationError, match="audience|Audience|AuthenticationFailed"):
            QueueClient(server.queue_endpoint, "fanout", credential=StaticToken(sb.issue_token("graph"))) \
                .send_message("x")
