"""Reading back what an export published, with the plain storage SDK (no code of ours)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from azure.storage.blob import ContainerClient

REPO = Path(__file__).resolve().parents[2]


def container(env: dict) -> ContainerClient:
    return ContainerClient.from_connection_string(env["EXPORT_STORAGE"], env["EXPORT_CONTAINER"])


def blob_names(env: dict) -> list[str]:
    client = container(env)
    if not client.exists():
        return []
    return sorted(b.name for b in client.list_blobs())


def read_bytes(env: dict, name: str) -> bytes:
    return container(env).download_blob(name).readall()


def read_json(env: dict, name: str) -> dict:
    return json.loads(read_bytes(env, name))


def read_export(env: dict, name: str) -> tuple[list[dict], str]:
    """The users in an export blob, and the sha256 of the blob bytes as downloaded."""
    data = read_bytes(env, name)
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return [json.loads(line) for line in lines], hashlib.sha256(data).hexdigest()
