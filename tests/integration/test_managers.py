"""Managers: ``manager`` in USER_PROPERTIES exports each user's manager as ``{"id": …}`` (null without one).

Full mode reads it with ``$expand=manager($select=id)``, 100 users a page (Graph's limit with ``$expand``);
delta mode follows ``manager@delta``, so that every delta snapshot equals a full export of the same moment
whatever happened to the managers: assigned, changed, cleared, or deleted (which removes it from each report).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from graph_export import load_settings, run_export
from graph_export.clients import app_clients

from .helpers import published, read_export

SANDBOX_USERS = 2_000
FIRST = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)
SELECTED = ("id", "displayName", "manager")


@pytest.fixture
def manager_env(export_env, monkeypatch):
    monkeypatch.setenv("USER_PROPERTIES", ",".join(SELECTED))
    return export_env


def tenant_now(sandbox) -> dict[str, dict]:
    """What the export must hold now: each user's manager as its id, null without one."""
    return {u["id"]: {"id": u["id"], "displayName": u["displayName"],
                      "manager": {"id": u["manager"]["id"]} if "manager" in u else None}
            for u in sandbox.expected_users(SELECTED)}


def export(n: int):
    app_clients.cache_clear()
    return run_export(load_settings(), FIRST + n * timedelta(days=1))


def test_a_full_export_has_each_users_manager_read_100_users_a_page(manager_env, sandbox):
    summary = export(0)
    users, _ = read_export(manager_env, summary.blob)
    assert {u["id"]: u for u in users} == tenant_now(sandbox)
    managed = [u for u in users if u["manager"] is not None]
    assert len(managed) > len(users) / 2 and any(u["manager"] is None for u in users)
    assert all(set(u["manager"]) == {"id"} for u in managed)  # Graph's @odata.type is not kept
    pages = [r for r in sandbox.requests.entries("graph") if r.path == "/v1.0/users"]
    assert summary.pages == len(pages) == SANDBOX_USERS // 100  # $expand: 100 users a page


@pytest.fixture
def delta_manager_env(manager_env, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    return manager_env


def test_delta_mode_follows_every_kind_of_manager_change(delta_manager_env, sandbox):
    d = sandbox.directory
    export(0)
    steps = [
        lambda: d.update(d.id_of(300), manager=d.id_of(7)),            # changed
        lambda: d.update(d.id_of(301), manager=None),                  # cleared
        lambda: d.update(d.id_of(9), manager=d.id_of(2)),              # assigned to a user who had none
        lambda: d.soft_delete(d.id_of(40)),                            # a manager deleted: its reports lose it
        lambda: d.restore(d.id_of(40)),                                # ... and do not get it back
        lambda: d.hard_delete(d.id_of(41)),
        lambda: d.update(d.id_of(302), manager=d.id_of(1)) or d.update(d.id_of(302), manager=d.id_of(3)),
    ]
    assert d.get(d.id_of(9)).get("manager") is None and d.get(d.id_of(320))["manager"] == d.id_of(40)
    for n, step in enumerate(steps, start=1):
        step()
        summary = export(n)
        assert summary.mode == "delta"
        _, users = published(delta_manager_env)
        assert {u["id"]: u for u in users} == tenant_now(sandbox), f"step {n}"
    _, users = published(delta_manager_env)
    by_id = {u["id"]: u for u in users}
    assert by_id[d.id_of(300)]["manager"] == {"id": d.id_of(7)} and by_id[d.id_of(301)]["manager"] is None
    assert by_id[d.id_of(320)]["manager"] is None and by_id[d.id_of(302)]["manager"] == {"id": d.id_of(3)}
