"""A mutable directory: the computed base tenant (``make_user(i)``) plus an overlay of recorded changes.

Base users are never stored: user ``i`` (``0 <= i < base_users``) is ``make_user(i)`` until something
changes it. Every mutation (add, update, soft delete, restore, hard delete) is recorded with an
increasing sequence number, per user and in one global log, so that

- ``/users`` can serve the current state (``users()``, ``live_slice()``), in a stable order: base
  users in index order with deleted ones skipped, then added users in the order they were added (a
  restored user is back where it was, because its place is its index);
- ``/users/delta`` can serve what changed between two sequence numbers (``change_page()``) and a
  consistent snapshot as of one (``initial_page()``), by replaying a user's few events over its base
  record: the cost is in the number of changes, never in the size of the tenant.

A user's manager is its record's ``manager`` (the manager's id): set with :meth:`Directory.update`
(``manager=<id>`` or None), and cleared on every report when the manager is deleted (soft or hard; a
restore does not bring those links back). users/delta shows it as ``manager@delta`` (:func:`manager_delta`).

"Ever set" (what delta returns for a user) is tracked per user: a property counts as set if it was
non-null (a non-empty list; ``[]`` counts as null) in the user's first record or was ever given such a
value by a mutation, even if it was cleared since.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import secrets
import threading
from array import array
from collections import OrderedDict
from typing import Any, Iterator, NamedTuple, Sequence

from .tenant import (
    _ID_NAMESPACE_BYTES,
    DEFAULT_PROPERTIES,
    HIRE_COHORT,
    MANAGER,
    MULTI_VALUED_EXTENSIONS,
    OTHER_PROPERTIES,
    TENANT_DOMAIN,
    UNMODELLED_PROPERTIES,
    USER_EXTENSIONS,
    USER_PROPERTIES,
    canonical_properties,
    default_value,
    make_user,
    manager_reference,
    select,
    user_id,
)

#: User status.
LIVE, SOFT_DELETED, DELETED, ABSENT = "live", "soft_deleted", "deleted", "absent"
#: Event kinds.
ADD, UPDATE, SOFT_DELETE, RESTORE, HARD_DELETE = "add", "update", "soft_delete", "restore", "hard_delete"

#: Every property a user may have, in a fixed order (delta tokens encode a selection as indices into it).
ALL_PROPERTIES: tuple[str, ...] = (*USER_PROPERTIES, *OTHER_PROPERTIES, *UNMODELLED_PROPERTIES, *USER_EXTENSIONS,
                                   MANAGER)
_KNOWN = frozenset(ALL_PROPERTIES)
#: Collection-valued properties: cleared to ``[]``, never to null (Graph never returns null for them).
LIST_PROPERTIES = frozenset(p for p, v in (*OTHER_PROPERTIES.items(), *UNMODELLED_PROPERTIES.items())
                            if isinstance(v, list)) | {"businessPhones"}
_BOOL_PROPERTIES = ("accountEnabled", "onPremisesSyncEnabled", "showInAddressList")
_DATE_PROPERTIES = ("createdDateTime", "employeeHireDate", "lastPasswordChangeDateTime", "onPremisesLastSyncDateTime")
#: What random_changes() edits: the modelled properties but the id and the complex signInActivity, and the
#: directory extensions.
_RANDOM_PROPERTIES = tuple(p for p in (*USER_PROPERTIES, *OTHER_PROPERTIES, *USER_EXTENSIONS)
                           if p not in ("id", "signInActivity"))
_NEVER_SET_CANDIDATES = tuple(p for p in OTHER_PROPERTIES if p != "signInActivity")


class UserState(NamedTuple):
    """A user as of some sequence number: status, full record (None if it never existed), ever-set names."""

    status: str
    record: dict[str, Any] | None
    ever: frozenset[str]


class Event(NamedTuple):
    seq: int
    kind: str
    changes: dict[str, Any] | None   # UPDATE: the changed properties; ADD: the new user's full record


_ABSENT = UserState(ABSENT, None, frozenset())


def is_set(value: Any) -> bool:
    """Whether a property value counts as set: not null and not an empty collection."""
    return value is not None and value != []


def _ever_of(record: dict[str, Any]) -> frozenset[str]:
    return frozenset(p for p, v in record.items() if v is not None and v != [])


def _value(record: dict[str, Any], prop: str) -> Any:
    if prop in record:
        return record[prop]
    return default_value(prop)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _apply(state: UserState, event: Event) -> UserState:
    kind, changes = event.kind, event.changes
    if kind == ADD:
        assert changes is not None
        return UserState(LIVE, changes, _ever_of(changes))
    if kind == UPDATE:
        assert changes is not None and state.record is not None
        ever = state.ever | {p for p, v in changes.items() if is_set(v)}
        return UserState(state.status, {**state.record, **changes}, ever)
    status = {SOFT_DELETE: SOFT_DELETED, RESTORE: LIVE, HARD_DELETE: DELETED}[kind]
    return UserState(status, state.record, state.ever)


class _IndexSet:
    """A set of ints with O(1) add, discard and random choice (random_changes must stay O(count))."""

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def add(self, item: int) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def choice(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)


class Directory:
    """The sandbox tenant's users: ``users`` computed base users plus recorded, replayable changes."""

    def __init__(self, users: int, tenant_domain: str = TENANT_DOMAIN, namespace: bytes = _ID_NAMESPACE_BYTES) -> None:
        self.tenant_domain = tenant_domain
        #: The id namespace of this tenant's users (sandbox.tenant.user_id): a customer tenant has its own.
        self.namespace = namespace
        self._lock = threading.RLock()
        self.epoch = secrets.randbits(32)
        self._reset(users)

    # --- state ----------------------------------------------------------------------------------

    def reset(self, users: int) -> None:
        """A fresh tenant of ``users`` base users with no changes (delta tokens issued before expire)."""
        with self._lock:
            self.epoch = (self.epoch + 1) & 0xFFFFFFFF
            self._reset(users)

    def _reset(self, users: int) -> None:
        users = int(users)
        if users < 0:
            raise ValueError(f"users must be >= 0, not {users}")
        self.base_users = users
        self._seq = 0
        self._next = users
        self._live = users
        self._log: list[int] = []                      # _log[seq - 1] = index of the user changed at seq
        self._touched: list[frozenset[str] | None] = []  # what the update at seq changed (None: not an update)
        self._events: dict[int, list[Event]] = {}      # index -> its events, in order
        self._current: dict[int, UserState] = {}       # index -> current state, for every changed user
        self._added_ids: dict[str, int] = {}
        self._id_index: tuple[array[int], array[int]] | None = None   # sorted id digests, their indices
        self._soft = _IndexSet()
        self._recent: list[int] = []                   # indices random_changes() touched lately
        self._gone: tuple[int, list[int]] = (0, [])    # (seq, sorted indices of soft/hard-deleted users)
        self._change_lists: OrderedDict[tuple[Any, ...], list[tuple[int, int]]] = OrderedDict()
        self._assigned: dict[str, set[int]] = {}       # manager id -> indices a change made its reports

    @property
    def version(self) -> int:
        """Sequence number of the latest mutation (0: the tenant is exactly the computed base)."""
        return self._seq

    @property
    def next_index(self) -> int:
        """The index the next added user gets."""
        return self._next

    def position(self) -> tuple[int, int]:
        """(version, next_index) read together: where a delta round that starts now stands."""
        with self._lock:
            return self._seq, self._next

    def __len__(self) -> int:
        return self._live

    def id_of(self, i: int) -> str:
        """The object id of user number ``i`` (base users 0..n-1, added users n, n+1, ...)."""
        return user_id(i, self.namespace)

    def index_of(self, uid: str) -> int:
        """The index of the user with object id ``uid`` (KeyError if there never was one)."""
        with self._lock:
            return self._index(uid)

    def status(self, uid: str) -> str:
        """``live``, ``soft_deleted`` or ``deleted`` (KeyError for an id that never existed)."""
        with self._lock:
            return self._state(self._index(uid)).status

    def get(self, uid: str) -> dict[str, Any]:
        """The full current record of a live or soft-deleted user (KeyError otherwise)."""
        with self._lock:
            state = self._state(self._index(uid))
            if state.status not in (LIVE, SOFT_DELETED) or state.record is None:
                raise KeyError(uid)
            return dict(state.record)

    def record(self, i: int) -> dict[str, Any]:
        """User number ``i``'s full record as it is now (its last one if deleted; ``make_user(i)`` if unchanged)."""
        with self._lock:
            state = self._current.get(i)
        if state is not None and state.record is not None:
            return dict(state.record)
        return make_user(i, self.tenant_domain, self.namespace)

    # --- mutations ------------------------------------------------------------------------------

    def add(self, **props: Any) -> str:
        """A new user: ``make_user(next_index)`` with ``props`` overriding; returns its id."""
        changes = self._checked(props)
        with self._lock:
            i = self._next
            record = self._with_live_manager(make_user(i, self.tenant_domain, self.namespace))
            record.update(changes)
            self._check_manager(record["id"], record.get(MANAGER))
            self._next += 1
            self._added_ids[record["id"]] = i
            self._record(i, ADD, record)
            return str(record["id"])

    def update(self, user_id: str, **props: Any) -> None:
        """Set properties of a live user; None clears one (``[]`` for collections). A no-op records nothing."""
        changes = self._checked(props)
        with self._lock:
            i = self._index(user_id)
            state = self._state(i)
            if state.status != LIVE or state.record is None:
                raise KeyError(f"{user_id} is {state.status}, not live")
            self._check_manager(user_id, changes.get(MANAGER))
            diff = {p: v for p, v in changes.items() if not _same(_value(state.record, p), v)}
            if diff:
                self._record(i, UPDATE, diff)

    def soft_delete(self, user_id: str) -> None:
        """Move a live user to the deleted items (restorable)."""
        with self._lock:
            i = self._index(user_id)
            self._require(i, user_id, LIVE)
            self._record(i, SOFT_DELETE, None)

    def restore(self, user_id: str) -> None:
        """Bring a soft-deleted user back, at its old place in the /users order."""
        with self._lock:
            i = self._index(user_id)
            self._require(i, user_id, SOFT_DELETED)
            self._record(i, RESTORE, None)

    def hard_delete(self, user_id: str) -> None:
        """Delete a live or soft-deleted user permanently."""
        with self._lock:
            i = self._index(user_id)
            self._require(i, user_id, LIVE, SOFT_DELETED)
            self._record(i, HARD_DELETE, None)

    def random_changes(self, rng: random.Random, count: int) -> None:
        """``count`` random mutations of every kind, some users changed more than once; O(count).

        Updates set one to four properties: new values, clearing set ones, and now and then one that
        was never set. Adds, soft deletes, restores (of soft-deleted users) and hard deletes are mixed in.
        """
        kinds = (UPDATE, UPDATE, UPDATE, UPDATE, "again", "again", ADD, SOFT_DELETE, SOFT_DELETE, RESTORE,
                 HARD_DELETE)
        with self._lock:
            for _ in range(count):
                kind = rng.choice(kinds)
                i: int | None = None
                if kind == RESTORE and len(self._soft):
                    self._record(self._soft.choice(rng), RESTORE, None)
                    continue
                if kind == HARD_DELETE and len(self._soft) and rng.random() < 0.3:
                    i = self._soft.choice(rng)
                    self._record(i, HARD_DELETE, None)
                    continue
                if kind == "again" and self._recent:
                    candidate = self._recent[rng.randrange(len(self._recent))]
                    if self._state(candidate).status == LIVE:
                        i = candidate
                if i is None and kind != ADD:
                    i = self._random_live(rng)
                if i is None or kind == ADD:
                    i = self._next
                    record = self._with_live_manager(make_user(i, self.tenant_domain, self.namespace))
                    record.update(self._random_props(rng, record, 2))
                    self._next += 1
                    self._added_ids[record["id"]] = i
                    self._record(i, ADD, record)
                elif kind in (SOFT_DELETE, HARD_DELETE):
                    self._record(i, kind, None)
                else:
                    state = self._state(i)
                    assert state.record is not None
                    changes = self._random_props(rng, state.record, rng.randint(1, 4))
                    diff = {p: v for p, v in changes.items() if not _same(_value(state.record, p), v)}
                    if rng.random() < 0.2:  # a new manager, or none
                        manager = self._random_live(rng)
                        diff[MANAGER] = None if manager in (None, i) or rng.random() < 0.3 else user_id(manager, self.namespace)
                        if _same(_value(state.record, MANAGER), diff[MANAGER]):
                            del diff[MANAGER]
                    if not diff:
                        diff = {"displayName": f"Renamed {rng.getrandbits(40):010x}"}
                    self._record(i, UPDATE, diff)
                self._recent.append(i)
                if len(self._recent) > 64:
                    del self._recent[: len(self._recent) - 64]

    # --- the current state ----------------------------------------------------------------------

    def users(self, properties: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every live user, ``$select``-shaped like :func:`sandbox.tenant.select`, in ``/users`` order; with
        ``manager`` among ``properties``, each with its manager as ``$expand=manager`` gives it (if it has one)."""
        expand = properties is not None and MANAGER in properties
        props = self._properties([p for p in properties if p != MANAGER] if properties is not None else None)
        for record in self._live_records():
            user = select(record, props)
            if expand and record.get(MANAGER) is not None:
                user[MANAGER] = manager_reference(record[MANAGER])
            yield user

    def _live_records(self) -> Iterator[dict[str, Any]]:
        domain = self.tenant_domain
        with self._lock:
            changed = dict(self._current)
            end, base = self._next, self.base_users
        if not changed:
            for i in range(base):
                yield make_user(i, domain, self.namespace)
            return
        for i in range(end):
            state = changed.get(i)
            if state is None:
                yield make_user(i, domain, self.namespace)
            elif state.status == LIVE:
                assert state.record is not None
                yield state.record

    def live_slice(self, start: int, end: int) -> tuple[int, list[tuple[int, dict[str, Any] | None]]]:
        """Live users at positions [start, end) of the /users order, as (index, record or None for a base
        user), and the version they are from."""
        with self._lock:
            version = self._seq
            gone = self._gone_indices()
            out: list[tuple[int, dict[str, Any] | None]] = []
            if start >= end:
                return version, out
            i = self._index_at(gone, start)
            k = bisect.bisect_left(gone, i)
            current = self._current
            while len(out) < end - start and i < self._next:
                if k < len(gone) and gone[k] == i:
                    k += 1
                else:
                    state = current.get(i)
                    out.append((i, state.record if state is not None else None))
                i += 1
            return version, out

    # --- delta ----------------------------------------------------------------------------------

    def initial_page(self, props: Sequence[str], seq: int, limit: int, cursor: int,
                     size: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``size`` users live as of ``seq`` from index ``cursor`` on (below ``limit``), shaped as a
        delta round's first items; and the index to continue from, or None when none is left."""
        items: list[dict[str, Any]] = []
        domain = self.tenant_domain
        with self._lock:
            events = self._events
            i = cursor
            while i < limit and len(items) < size:
                if i not in events:
                    items.append(manager_delta(_full_item(make_user(i, domain, self.namespace), None, props), None))
                else:
                    state = self._state_at(i, seq)
                    if state.status == LIVE:
                        assert state.record is not None
                        items.append(manager_delta(_full_item(state.record, state.ever, props), None))
                i += 1
            while i < limit and i in events and self._state_at(i, seq).status != LIVE:
                i += 1
        return items, (i if i < limit else None)

    def change_count(self, since: int, until: int, repeats: bool = False,
                     tracked: Sequence[str] | None = None) -> int:
        """How many delta items the changes in (since, until] make (to properties ``tracked``: see change_page)."""
        with self._lock:
            return len(self._changes(since, until, repeats, tracked))

    def change_page(self, props: Sequence[str], since: int, until: int, offset: int, size: int, *,
                    repeats: bool = False, minimal: bool = False,
                    tracked: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Delta items [offset, offset + size) for the changes in (since, until], and the next offset or None.

        ``tracked``: the ``$select``ed properties, when the round has a ``$select``: an update that changed
        none of them does not make its user appear ("If a change occurs to a property that is not
        selected, the resource for which that property changed does not appear", the delta query
        overview); None (no ``$select``) tracks every property.

        Each changed user once, in order of its last change (``repeats``: once per change, at each
        change's place, showing the user as of that change). A live user that was live at ``since`` and
        not restored since carries every selected property ever set (``minimal``: only those a change
        touched since), a new or restored one every selected property ever set, a deleted one
        ``@removed``.
        """
        with self._lock:
            changes = self._changes(since, until, repeats, tracked)
            chunk = changes[offset:offset + size]
            items = [self._delta_item(i, seq, since, props, minimal) for i, seq in chunk]
        end = offset + len(chunk)
        return items, (end if end < len(changes) else None)

    def user_item(self, i: int, props: Sequence[str]) -> dict[str, Any]:
        """User ``i`` as a delta round's first items show it (current state; base record if not live)."""
        with self._lock:
            state = self._state(i)
        if state.record is None:
            return manager_delta(_full_item(make_user(i, self.tenant_domain, self.namespace), None, props), None)
        return manager_delta(_full_item(state.record, state.ever, props), None)

    # --- internals ------------------------------------------------------------------------------

    def _properties(self, properties: Sequence[str] | None) -> list[str]:
        if properties is None:
            return list(DEFAULT_PROPERTIES)
        known, unknown = canonical_properties(properties)
        if unknown:
            raise ValueError(f"unknown user properties: {', '.join(unknown)}")
        return known

    def _checked(self, props: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(p for p in props if p not in _KNOWN)
        if unknown:
            raise ValueError(f"unknown user properties: {', '.join(unknown)} (names are case-sensitive, "
                             "as in graph_export.properties.PROPERTIES)")
        if "id" in props:
            raise ValueError("a user's id is assigned by the directory and cannot be set or changed")
        out = {p: ([] if v is None and p in LIST_PROPERTIES else v) for p, v in props.items()}
        try:
            json.dumps(out)
        except (TypeError, ValueError) as e:
            raise ValueError(f"property values must be JSON values: {e}") from None
        return out

    def _index(self, uid: str) -> int:
        i = self._added_ids.get(uid)
        if i is not None:
            return i
        if not isinstance(uid, str) or len(uid) != 36:
            raise KeyError(uid)
        try:
            key = int(uid[:8] + uid[9:13] + uid[14:18], 16)
        except ValueError:
            raise KeyError(uid) from None
        if self._id_index is None:
            self._id_index = self._build_id_index()
        keys, order = self._id_index
        pos = bisect.bisect_left(keys, key)
        while pos < len(keys) and keys[pos] == key:
            if user_id(order[pos], self.namespace) == uid:
                return order[pos]
            pos += 1
        raise KeyError(uid)

    def _build_id_index(self) -> tuple[array[int], array[int]]:
        """Sorted 64-bit id prefixes of the base users (12 bytes a user, built once, on the first id lookup
        that is not of an added user: about 1.5 s at 1,000,000 users)."""
        # The first 8 bytes of user_id(i) (sha1 with the version nibble set), without formatting each id.
        sha1, from_bytes, namespace = hashlib.sha1, int.from_bytes, self.namespace
        keys = array("Q", ((from_bytes(sha1(namespace + str(i).encode("ascii")).digest()[:8], "big") & ~0xF000)
                           | 0x5000 for i in range(self.base_users)))
        order = sorted(range(self.base_users), key=keys.__getitem__)
        return array("Q", (keys[j] for j in order)), array("L", order)

    def _state(self, i: int) -> UserState:
        """The current state of user ``i``."""
        state = self._current.get(i)
        if state is not None:
            return state
        return self._base_state(i)

    def _base_state(self, i: int) -> UserState:
        if 0 <= i < self.base_users:
            record = make_user(i, self.tenant_domain, self.namespace)
            return UserState(LIVE, record, _ever_of(record))
        return _ABSENT

    def _state_at(self, i: int, seq: int) -> UserState:
        """User ``i`` as of sequence number ``seq``: its current state, or its base record with its events
        up to ``seq`` replayed."""
        events = self._events.get(i)
        if not events:
            return self._base_state(i)
        if events[-1].seq <= seq:
            return self._current[i]
        state = self._base_state(i)
        for event in events:
            if event.seq > seq:
                break
            state = _apply(state, event)
        return state

    def _require(self, i: int, uid: str, *statuses: str) -> None:
        status = self._state(i).status
        if status not in statuses:
            raise KeyError(f"{uid} is {status}, not {' or '.join(statuses)}")

    def _record(self, i: int, kind: str, changes: dict[str, Any] | None) -> None:
        before = self._state(i)
        event = Event(self._seq + 1, kind, changes)
        after = _apply(before, event)
        self._log.append(i)
        self._touched.append(frozenset(changes) if kind == UPDATE and changes is not None else None)
        self._events.setdefault(i, []).append(event)
        self._current[i] = after
        self._seq = event.seq   # last: a version read without the lock never runs ahead of the log
        if before.status == LIVE and after.status != LIVE:
            self._live -= 1
        elif before.status != LIVE and after.status == LIVE:
            self._live += 1
        if after.status == SOFT_DELETED:
            self._soft.add(i)
        else:
            self._soft.discard(i)
        if changes is not None and changes.get(MANAGER) is not None:
            self._assigned.setdefault(changes[MANAGER], set()).add(i)
        if before.status == LIVE and after.status != LIVE:
            self._clear_reports(i)

    def _clear_reports(self, i: int) -> None:
        """A deleted manager is nobody's manager any more: each live report's link is removed (recorded)."""
        manager = user_id(i, self.namespace)
        candidates = set(range(8 * i, min(8 * i + 8, self.base_users))) | self._assigned.pop(manager, set())
        for report in sorted(candidates):
            state = self._state(report)
            if state.status == LIVE and state.record is not None and state.record.get(MANAGER) == manager:
                self._record(report, UPDATE, {MANAGER: None})

    def _with_live_manager(self, record: dict[str, Any]) -> dict[str, Any]:
        """A new user's computed record, without its computed manager if that user is not live."""
        manager = record.get(MANAGER)
        if manager is not None and self._state(self._index(manager)).status != LIVE:
            del record[MANAGER]
        return record

    def _check_manager(self, uid: str, manager: Any) -> None:
        if manager is None:
            return
        if not isinstance(manager, str) or manager == uid or self._state(self._index(manager)).status != LIVE:
            raise ValueError(f"a manager must be another live user's id, not {manager!r}")

    def _gone_indices(self) -> list[int]:
        """Sorted indices of soft- and hard-deleted users, rebuilt at most once per version."""
        seq, gone = self._gone
        if seq != self._seq:
            gone = sorted(i for i, s in self._current.items() if s.status != LIVE)
            self._gone = (self._seq, gone)
        return gone

    @staticmethod
    def _index_at(gone: list[int], position: int) -> int:
        """The index of the live user at ``position``: the least i with position + 1 live users in [0, i]."""
        lo, hi = position, position + len(gone)
        while lo < hi:
            mid = (lo + hi) // 2
            if mid + 1 - bisect.bisect_right(gone, mid) >= position + 1:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _changes(self, since: int, until: int, repeats: bool,
                 tracked: Sequence[str] | None = None) -> list[tuple[int, int]]:
        """(index, seq) of the delta items for the changes in (since, until] (those ``tracked`` sees); a few cached."""
        selected = None if tracked is None else frozenset(tracked)
        key = (since, until, repeats, selected)
        cached = self._change_lists.get(key)
        if cached is not None:
            self._change_lists.move_to_end(key)
            return cached
        window = self._log[since:until]
        touched = self._touched[since:until]
        seen_at = [selected is None or t is None or not t.isdisjoint(selected) for t in touched]
        if repeats:
            out = [(i, since + 1 + k) for k, i in enumerate(window) if seen_at[k]]
        else:
            seen: set[int] = set()
            out = []
            for k in range(len(window) - 1, -1, -1):
                i = window[k]
                if i not in seen and seen_at[k]:
                    seen.add(i)
                    out.append((i, since + 1 + k))
            out.reverse()
        self._change_lists[key] = out
        while len(self._change_lists) > 8:
            self._change_lists.popitem(last=False)
        return out

    def _delta_item(self, i: int, seq: int, since: int, props: Sequence[str], minimal: bool) -> dict[str, Any]:
        now = self._state_at(i, seq)
        if now.status != LIVE or now.record is None:
            reason = "deleted" if now.status in (DELETED, ABSENT) else "changed"
            return {"id": user_id(i, self.namespace), "@removed": {"reason": reason}}
        window = [e for e in self._events[i] if since < e.seq <= seq]
        then = self._state_at(i, since)
        before = then.record.get(MANAGER) if then.status == LIVE and then.record is not None else None
        if then.status != LIVE or any(e.kind in (ADD, RESTORE) for e in window) or not minimal:
            return manager_delta(_full_item(now.record, now.ever, props), before)
        touched = {p for e in window if e.kind == UPDATE and e.changes for p in e.changes}
        item = {} if "id" in props else {"id": now.record["id"]}
        for p in props:
            if p == "id" or p in touched:
                item[p] = _value(now.record, p)
        return manager_delta(item, before)

    def _random_live(self, rng: random.Random) -> int | None:
        if self._live <= 0:
            return None
        for _ in range(32):
            i = rng.randrange(self._next)
            if self._state_status(i) == LIVE:
                return i
        return None

    def _state_status(self, i: int) -> str:
        state = self._current.get(i)
        if state is not None:
            return state.status
        return LIVE if i < self.base_users else ABSENT

    def _random_props(self, rng: random.Random, record: dict[str, Any], count: int) -> dict[str, Any]:
        """``count`` property changes: mostly new values, some clears of set ones, sometimes a never-set one."""
        out: dict[str, Any] = {}
        for _ in range(count):
            roll = rng.random()
            if roll < 0.2:
                prop = rng.choice(_NEVER_SET_CANDIDATES)
            else:
                prop = rng.choice(_RANDOM_PROPERTIES)
            if roll > 0.8 and is_set(_value(record, prop)):
                out[prop] = [] if prop in LIST_PROPERTIES else None
            else:
                out[prop] = _random_value(rng, prop)
        return out


def _random_value(rng: random.Random, prop: str) -> Any:
    tag = f"{rng.getrandbits(32):08x}"
    if prop in _BOOL_PROPERTIES:
        return rng.random() < 0.5
    if prop == HIRE_COHORT:
        return rng.randint(2000, 2030)
    if prop in LIST_PROPERTIES or prop in MULTI_VALUED_EXTENSIONS:
        return [f"{prop}-{tag}-{k}" for k in range(rng.randint(1, 2))]
    if prop in _DATE_PROPERTIES:
        return f"20{rng.randint(19, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    return f"{prop} {tag} ✓"


def manager_delta(item: dict[str, Any], before: str | None) -> dict[str, Any]:
    """A delta item with its ``manager`` (an id, or None) as users/delta shows the relationship:
    ``manager@delta``, a list of references: the manager it had at the round's start marked ``@removed``
    when that changed, then the one it has now; no annotation when there is nothing to say."""
    if MANAGER not in item:
        return item
    now = item.pop(MANAGER)
    entries = []
    if before is not None and before != now:
        entries.append({**manager_reference(before), "@removed": {"reason": "deleted"}})
    if now is not None:
        entries.append(manager_reference(now))
    if entries:
        item[f"{MANAGER}@delta"] = entries
    return item


def _full_item(record: dict[str, Any], ever: frozenset[str] | None, props: Sequence[str]) -> dict[str, Any]:
    """A delta item with every selected property ever set (``ever`` None: the record's non-null ones)."""
    item: dict[str, Any] = {} if "id" in props else {"id": record["id"]}
    if ever is None:
        for p in props:
            value = record.get(p)
            if p == "id" or (value is not None and value != []):
                item[p] = value
    else:
        for p in props:
            if p == "id" or p in ever:
                item[p] = _value(record, p)
    return item
