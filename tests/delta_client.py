"""A delta client in a few lines, to check what the sandbox's users/delta serves against its directory."""

from __future__ import annotations

from sandbox.directory import LIST_PROPERTIES, Directory


def default(prop: str):
    return [] if prop in LIST_PROPERTIES else None


def merge(state: dict[str, dict], items: list[dict]) -> None:
    """What a delta client does: @removed drops, anything else is an upsert of the properties it carries."""
    for item in items:
        if "@removed" in item:
            state.pop(item["id"], None)
        else:
            state[item["id"]] = {**state.get(item["id"], {}), **item}


def full(state: dict[str, dict], props: list[str]) -> dict[str, dict]:
    """Omitted (never set) properties are null / [] in the export."""
    return {uid: {p: record.get(p, default(p)) for p in props} for uid, record in state.items()}


def expected(directory: Directory, props: list[str]) -> dict[str, dict]:
    return {u["id"]: u for u in directory.users(props)}
