"""Reading back what an export published, with the plain storage SDK (names from ``naming``, no other code of ours)."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from azure.storage.blob import ContainerClient

from graph_export.naming import LATEST_BLOB, slot_pointer_name, slot_prefix

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


def state_container(env: dict) -> ContainerClient:
    """Where the mutable records live: EXPORT_STATE_CONTAINER, else the export container."""
    name = env.get("EXPORT_STATE_CONTAINER") or env["EXPORT_CONTAINER"]
    return ContainerClient.from_connection_string(env["EXPORT_STORAGE"], name)


def slot_pointer(env: dict, slot: datetime) -> dict | None:
    """The slot's pointer (the commit), as stored; None when the slot was never committed."""
    blob = state_container(env).get_blob_client(slot_pointer_name(slot))
    return json.loads(blob.download_blob().readall()) if blob.exists() else None


def published_manifest(env: dict, slot: datetime) -> dict:
    """The manifest the slot's pointer names: the slot's export."""
    pointer = slot_pointer(env, slot)
    assert pointer is not None, f"slot {slot} was never committed"
    return read_json(env, pointer["manifest"])


def slot_files(env: dict, slot: datetime, suffix: str = "") -> list[str]:
    """Committed blobs under the slot's prefix in the export container (every run's), ending in ``suffix``."""
    client = container(env)
    if not client.exists():
        return []
    return sorted(b.name for b in client.list_blobs(name_starts_with=slot_prefix(slot)) if b.name.endswith(suffix))


def latest(env: dict) -> dict:
    return json.loads(state_container(env).download_blob(LATEST_BLOB).readall())


def published(env: dict) -> tuple[dict, list[dict]]:
    """What a reader gets: latest.json -> manifest -> blob, with every count and digest agreeing."""
    pointer = latest(env)
    manifest = read_json(env, pointer["manifest"])
    users, sha = read_export(env, manifest["blob"])
    assert pointer["sha256"] == manifest["sha256"] == sha and pointer["users"] == manifest["users"] == len(users)
    return manifest, users


def invocation_context() -> SimpleNamespace:
    """What the worker passes a function as ``context`` (the parts the door reads), for calling it directly."""
    return SimpleNamespace(invocation_id=str(uuid.uuid4()), thread_local_storage=threading.local())
