"""Where everything lives in storage: one function per blob name, derived from the slot and the run.

A slot is the UTC time the timer was due. Each run of a slot writes its files and its manifest under
names of its own (``users-<slot>-<run>.…``), so nothing a run wrote is ever overwritten; the slot
stays in every name, so listing by day still works. The one mutable name per slot is its pointer in
the state area, whose conditional write is the commit (``publish``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

LATEST_BLOB = "users/latest.json"
#: Where the next delta slot starts (``records.DeltaState``).
DELTA_STATE_BLOB = "state/delta.json"
#: The last failure of a tenant's export (``records.FailureRecord``), for ``status``.
FAILURE_BLOB = "state/failure.json"

#: A scheduled time further ahead than this is not the current occurrence (clock skew allowance).
FUTURE_TOLERANCE = timedelta(minutes=5)
# No export predates this: an earlier slot is a typo (or a runtime's DateTime.MinValue).
_EARLIEST_SLOT = datetime(2000, 1, 1, tzinfo=timezone.utc)
_BOUNDS = (f"slots must be between {_EARLIEST_SLOT:%Y-%m-%dT%H:%M:%SZ} and "
           f"{FUTURE_TOLERANCE.total_seconds() / 60:g} minutes past now")
#: A run id: 12 lowercase hex digits, random (two runs of one slot never share one).
RUN_ID = re.compile(r"^[0-9a-f]{12}$")


def new_run_id() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class RunNames:
    """The blobs one run of a slot publishes, in the export container; none is ever written twice."""

    slot: datetime
    run: str
    jsonl: str
    csv: str
    changes: str
    manifest: str


def run_names(slot: datetime, run: str) -> RunNames:
    if not RUN_ID.match(run):
        raise ValueError(f"'{run}' is not a run id")
    stem = f"{slot_prefix(slot)}{run}"
    return RunNames(slot=normalize_slot(slot), run=run, jsonl=f"{stem}.jsonl.gz", csv=f"{stem}.csv.gz",
                    changes=f"{stem}.changes.jsonl.gz", manifest=f"{stem}.manifest.json")


def slot_prefix(slot: datetime) -> str:
    """What every published name of the slot starts with (and no other slot's does)."""
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}-"


def slot_pointer_name(slot: datetime) -> str:
    """The slot's pointer (``records.SlotPointer``), in the state area: the one name a commit writes."""
    return f"state/users-{slot_stamp(slot)}.current.json"


def normalize_slot(slot: datetime) -> datetime:
    """The slot in UTC, to the second (naive datetimes are taken as UTC, as the Functions host uses).

    A time whose UTC form is outside datetime's years 1-9999 (``0001-01-01T00:00:00+05:00``) raises
    ValueError rather than OverflowError, so every caller's ``except ValueError`` covers it.
    """
    if slot.tzinfo is None:
        slot = slot.replace(tzinfo=timezone.utc)
    try:
        return slot.astimezone(timezone.utc).replace(microsecond=0)
    except OverflowError:
        raise ValueError(f"{slot.isoformat()} is out of range ({_BOUNDS})") from None


def slot_stamp(slot: datetime) -> str:
    return normalize_slot(slot).strftime("%Y%m%dT%H%M%SZ")


def parse_slot(text: str) -> datetime:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC) into a normalized slot.

    ValueError (with a message fit for a user) if it is not such a time or has no UTC form; it is
    not bounded here: :func:`check_slot` does that against a given now.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 time such as 2026-01-31T02:00:00Z") from None
    return normalize_slot(parsed)


def slot_from_schedule_status(status: Mapping[str, Any] | None, now: datetime) -> datetime:
    """The scheduled time of the current timer invocation, or ``now`` when the runtime gives none.

    With ``use_monitor`` the runtime passes the schedule status as it stood before this invocation,
    so ``Next`` is the occurrence being run now (also for a ``past_due`` catch-up run).
    """
    now = normalize_slot(now)
    raw = (status or {}).get("Next")
    if not raw:
        return now
    try:  # unparseable, without a UTC form, or outside check_slot's bounds: not this occurrence
        return check_slot(parse_slot(str(raw)), now)
    except ValueError:
        return now


def checkpoint_blob_name(slot: datetime) -> str:
    """Progress of an unfinished export, outside ``users/`` so nobody mistakes it for data."""
    return f"state/users-{slot_stamp(slot)}.checkpoint.json"


def ids_blob_name(slot: datetime) -> str:
    """Digests of the user ids an unfinished export has staged (``checkpoint.SavedIds``)."""
    return f"state/users-{slot_stamp(slot)}.ids"


def lock_blob_name(slot: datetime) -> str:
    """The empty blob whose lease makes a slot's run exclusive (``lease``)."""
    return f"state/users-{slot_stamp(slot)}.lock"


def check_slot(slot: datetime, now: datetime) -> datetime:
    """The normalized slot if it can be a real schedule occurrence; ValueError (with why) if not.

    A slot from the far future would name exports that sort after every real one and freeze
    ``latest.json``; one before 2000 is a typo.
    """
    slot = normalize_slot(slot)  # ValueError too when it has no UTC form
    now = normalize_slot(now)
    if not _EARLIEST_SLOT <= slot <= now + FUTURE_TOLERANCE:
        raise ValueError(f"{_utc_text(slot)} is out of range ({_BOUNDS}, {_utc_text(now)})")
    return slot


def _utc_text(moment: datetime) -> str:
    """A normalized slot as users write it (``Z``); isoformat, unlike strftime, keeps year 0001 4 digits."""
    return moment.isoformat().replace("+00:00", "Z")
