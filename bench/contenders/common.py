"""What the hand-written contenders share: the first page URL, the token, the blob container."""

from __future__ import annotations

import os


def first_url() -> str:
    """Built by the orchestrator with graph_export's own function, so every contender asks the same."""
    return os.environ["BENCH_FIRST_URL"]


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['BENCH_GRAPH_TOKEN']}"}


def container():  # imported lazily: the floor never needs the storage SDK
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(os.environ["EXPORT_STORAGE"], os.environ["EXPORT_CONTAINER"])
    if not client.exists():
        client.create_container()
    return client
