"""The storage layer's fixtures: a fresh container in Azurite (tests/conftest.py starts Azurite, once)."""

from __future__ import annotations

import uuid

import pytest

from graph_export.settings import StorageTarget
from graph_export.storage import open_container


@pytest.fixture
def blob_container(azurite):
    """A fresh, empty container in Azurite, opened the way the export opens its own."""
    target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
    return open_container(target, f"t-{uuid.uuid4().hex[:12]}", None, 0.01)


@pytest.fixture(scope="session")
def azurite_queues(tmp_path_factory):
    """Azurite's queue service on a free loopback port, for the fan-out queue, as its own child process group.

    tests/conftest.py's Azurite serves blobs only; the multi-tenant sandbox (another branch) adds queues to it,
    and this fixture gives way to that once merged.
    """
    import os
    import signal
    import socket
    import subprocess
    import time

    from sandbox.azurite import ACCOUNT, ACCOUNT_KEY
    from tests.conftest import REPO

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("azurite-queue")
    proc = subprocess.Popen(
        [str(REPO / "node_modules" / ".bin" / "azurite-queue"), "--queueHost", "127.0.0.1", "--queuePort", str(port),
         "--location", str(workdir), "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError("azurite-queue did not start") from None
            time.sleep(0.05)
    yield (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
           f"QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=5)
