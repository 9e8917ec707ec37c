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
def azurite_queues(azurite):
    """The session's Azurite (tests/conftest.py), which serves Queue storage beside Blob: its connection string."""
    return azurite.connection_string
