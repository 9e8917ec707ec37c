"""Export storage that cannot be reached (nothing listens, the name does not resolve, a certificate this
machine does not trust): one actionable line each, within seconds.
"""

from __future__ import annotations

import socket
import time

import pytest

from graph_export.errors import StorageError
from graph_export.settings import StorageTarget
from graph_export.storage import open_container

# --- storage that cannot be reached: why, and at once when retrying cannot help ---------------------


def test_unreachable_storage_is_one_actionable_line():
    target = StorageTarget(connection_string=(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"), source="EXPORT_STORAGE")
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 0.01)
    assert "unreachable" in str(info.value) and "EXPORT_STORAGE" in str(info.value)
    assert "a2V5" not in str(info.value)


def key_string(endpoint: str, key: str = "a2V5") -> str:
    scheme = endpoint.split(":", 1)[0]
    return f"DefaultEndpointsProtocol={scheme};AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint, why", [
    (f"http://127.0.0.1:{free_port()}/devstoreaccount1", "the connection was refused"),
    ("http://export-storage.invalid/devstoreaccount1", "its name does not resolve"),
], ids=["refused", "unresolved"])  # ids without the port: the same on every xdist worker
def test_storage_nothing_listens_on_fails_within_seconds_with_the_production_backoff(endpoint, why):
    target = StorageTarget(connection_string=key_string(endpoint), source="EXPORT_STORAGE")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 1.0)  # 1 s: the default RETRY_BACKOFF_BASE_SECONDS
    assert time.monotonic() - started < 10  # it took 43 s of backoff before
    message = str(info.value)
    origin = endpoint.rsplit("/", 1)[0]
    assert f"Export storage at {origin} is unreachable ({why}) while opening container 'graph-exports'" in message
    assert "EXPORT_STORAGE" in message and "a2V5" not in message and "\n" not in message


def test_a_storage_certificate_this_machine_does_not_trust_is_named_as_such_and_not_retried(untrusted):
    target = StorageTarget(connection_string=key_string(f"{untrusted.url}/devstoreaccount1"), source="EXPORT_STORAGE")
    with pytest.raises(StorageError) as info:
        open_container(target, "graph-exports", None, 1.0)
    message = str(info.value)
    assert message.startswith(f"Export storage at {untrusted.url} failed TLS certificate verification "
                              "(unable to get local issuer certificate)")
    assert "check EXPORT_STORAGE" in message and "REQUESTS_CA_BUNDLE" in message and "TLS-inspecting proxy" in message
    assert "unreachable" not in message and "a2V5" not in message and "\n" not in message
    assert untrusted.connections == 1
