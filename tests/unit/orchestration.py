"""What the orchestrator's unit tests share: settings for memory clients, slots, and reading what was stored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from graph_export.settings import Settings, load_settings
from tests.unit.memory_clients import MemoryClients
from tests.unit.memory_graph import MemoryDirectory, make_users

PROPERTIES = ("id", "displayName", "mail", "department")
ENV = {
    "TENANT_ID": "contoso.onmicrosoft.com",
    "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "KEY_VAULT_URL": "https://kv-export.vault.azure.net/",
    # Storage and Graph are the memory clients' whatever these say; .invalid names nothing that resolves.
    "EXPORT_STORAGE__blobServiceUri": "https://memoryaccount.blob.memory.invalid/",
    "GRAPH_ENDPOINT": "https://graph.memory.invalid",
    "USER_PROPERTIES": ",".join(PROPERTIES),
    "RETRY_BACKOFF_BASE_SECONDS": "0",
    "CHECKPOINT_EVERY_PAGES": "1",
}
#: A TENANT_IDS deployment on the memory clients: the same app and endpoints, storage with a queue service too.
MULTI_TENANT_ENV = {
    "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "KEY_VAULT_URL": "https://kv-export.vault.azure.net/",
    "EXPORT_STORAGE__blobServiceUri": "https://memoryaccount.blob.memory.invalid/",
    "EXPORT_STORAGE__queueServiceUri": "https://memoryaccount.queue.memory.invalid/",
    "GRAPH_ENDPOINT": "https://graph.memory.invalid",
    "USER_PROPERTIES": "id,displayName",
    "RETRY_BACKOFF_BASE_SECONDS": "0",
}
USERS = 230  # five pages of at most 50


def settings(**overrides: str) -> Settings:
    return load_settings({**ENV, **overrides})


def slot(days_ago: int) -> datetime:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).replace(hour=2, minute=0, second=0, microsecond=0)


SLOT0, SLOT1, SLOT2 = slot(3), slot(2), slot(1)


def memory(s: Settings | None = None, users: int = USERS) -> MemoryClients:
    return MemoryClients(s or settings(), MemoryDirectory(make_users(users)))


def blob(clients: MemoryClients, name: str) -> bytes:
    return clients.storage.contents()[(clients.settings.container, name)]


def document(clients: MemoryClients, name: str) -> Any:
    return json.loads(blob(clients, name))
