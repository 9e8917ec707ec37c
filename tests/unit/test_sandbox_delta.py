"""The sandbox's mutable directory in memory: mutations in order, random changes, live slices and delta rounds
that rebuild it. Its ``GET /v1.0/users/delta`` over real sockets: tests/sandbox/test_sandbox_delta.py.
"""

from __future__ import annotations

import random

import pytest

from sandbox.directory import Directory
from sandbox.tenant import DEFAULT_PROPERTIES, USER_PROPERTIES, make_user, select, user_id
from tests.delta_client import expected, full, merge

PROPS = ["id", "displayName", "mail", "jobTitle", "businessPhones", "faxNumber", "accountEnabled"]




def test_directory_mutations_order_and_restore_position():
    d = Directory(6, "contoso.onmicrosoft.com")
    ids = [d.id_of(i) for i in range(6)]
    assert ids == [user_id(i) for i in range(6)] and len(d) == 6 and d.version == 0
    assert list(d.users(PROPS)) == [select(make_user(i), PROPS) for i in range(6)]
    assert list(d.users(None)) == [select(make_user(i)) for i in range(6)]

    d.update(ids[1], jobTitle="CFO", mail=None, faxNumber="+1 555 0100", businessPhones=None)
    new = d.add(displayName="New Person", department="Legal")
    assert new == user_id(6) and len(d) == 7
    d.soft_delete(ids[2])
    d.hard_delete(ids[4])
    second = d.add()
    d.soft_delete(ids[0])
    d.restore(ids[0])                       # back at the front, where it was
    assert len(d) == 6 and d.version == 7

    users = list(d.users(PROPS))
    assert [u["id"] for u in users] == [ids[0], ids[1], ids[3], ids[5], new, second]
    assert users[1] == {**select(make_user(1), PROPS), "jobTitle": "CFO", "mail": None, "faxNumber": "+1 555 0100",
                        "businessPhones": []}
    assert list(d.users(["id", "department", "displayName"]))[4] == {
        "id": new, "department": "Legal", "displayName": "New Person"}
    assert users[5] == select(make_user(7), PROPS)
    assert (d.status(ids[2]), d.status(ids[4]), d.status(ids[0])) == ("soft_deleted", "deleted", "live")

    with pytest.raises(KeyError):
        d.update(ids[2], jobTitle="x")      # soft-deleted
    with pytest.raises(KeyError):
        d.update(ids[4], jobTitle="x")      # hard-deleted
    with pytest.raises(KeyError):
        d.update("00000000-0000-0000-0000-000000000000", jobTitle="x")
    with pytest.raises(KeyError):
        d.restore(ids[3])                   # live, not soft-deleted
    with pytest.raises(KeyError):
        d.soft_delete(ids[4])
    with pytest.raises(ValueError):
        d.update(ids[3], shoeSize=42)
    with pytest.raises(ValueError):
        d.update(ids[3], id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValueError):
        d.add(colour="red")
    d.hard_delete(ids[2])                   # a soft-deleted one may be deleted for good
    d.update(ids[3], displayName=make_user(3)["displayName"])   # no change: nothing recorded
    assert d.version == 8 and len(d) == 6

    d.reset(3)
    assert len(d) == 3 and d.version == 0 and list(d.users(PROPS)) == [select(make_user(i), PROPS) for i in range(3)]


def test_random_changes_mix_every_kind_at_a_million_users():
    d = Directory(1_000_000)  # changes and slices cost O(count), not O(users): about 0.2 s here
    d.random_changes(random.Random(7), 10_000)
    kinds = [e.kind for events in d._events.values() for e in events]
    assert {k: kinds.count(k) > 100 for k in ("add", "update", "soft_delete", "restore", "hard_delete")} == \
        dict.fromkeys(("add", "update", "soft_delete", "restore", "hard_delete"), True)
    # (a deleted manager's reports lose it: changes of their own, so more than 10,000)
    assert d.version >= 10_000 and sum(len(e) > 1 for e in d._events.values()) > 500   # users changed repeatedly
    updates = [e.changes for events in d._events.values() for e in events if e.kind == "update"]
    assert any(v is None or v == [] for c in updates for v in c.values())                 # clears
    assert any(p not in USER_PROPERTIES for c in updates for p in c)                      # never-set ones
    statuses = [s.status for s in d._current.values()]
    assert len(d) == 1_000_000 + kinds.count("add") - statuses.count("soft_deleted") - statuses.count("deleted")

    version, rows = d.live_slice(500_000, 500_999)
    assert version == d.version and len(rows) == 999


def test_live_slices_page_the_same_users_as_users():
    d = Directory(2_000)
    d.random_changes(random.Random(3), 600)
    users = list(d.users(PROPS))
    assert len(users) == len(d)
    paged = [select(make_user(i) if record is None else record, PROPS)
             for start in range(0, len(d), 97) for i, record in d.live_slice(start, min(start + 97, len(d)))[1]]
    assert paged == users


@pytest.mark.parametrize("seed", range(6))
def test_random_delta_rounds_rebuild_the_directory(seed):
    """Property test, in process: any change set, any page size, repeats or not, minimal or not."""
    rng = random.Random(seed)
    d = Directory(400)
    props = rng.choice([PROPS, list(DEFAULT_PROPERTIES), ["displayName", "mobilePhone", "otherMails", "id"]])
    size = rng.choice([1, 7, 200])

    def page_through(fetch):
        items, position = [], 0
        while position is not None:
            page, position = fetch(position)
            assert len(page) <= size
            items.extend(page)
        return items

    state: dict[str, dict] = {}
    seq = d.version
    merge(state, page_through(lambda pos: d.initial_page(props, seq, d.next_index, pos, size)))
    assert full(state, props) == expected(d, props)
    for _ in range(3):
        d.random_changes(rng, rng.choice([1, 30, 150]))
        repeats, minimal = rng.random() < 0.5, rng.random() < 0.5
        until = d.version
        merge(state, page_through(lambda pos, since=seq, until=until, repeats=repeats, minimal=minimal:
                                  d.change_page(props, since, until, pos, size, repeats=repeats, minimal=minimal)))
        seq = until
        assert full(state, props) == expected(d, props)
        assert list(state) != [] and all(set(v) <= {*props, "id"} for v in state.values())
