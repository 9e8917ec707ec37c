"""Where an export lives in the container, derived only from its schedule slot.

A slot is the UTC time the timer was due. Naming blobs by slot (not by when the run happened) makes
a retried invocation of the same slot overwrite its own export instead of adding a duplicate.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

LATEST_BLOB = "users/latest.json"

# A scheduled time further ahead than this is not the current occurrence (clock skew allowance).
_FUTURE_TOLERANCE = timedelta(minutes=5)
# No export predates this: an earlier slot is a typo (or a runtime's DateTime.MinValue).
_EARLIEST_SLOT = datetime(2000, 1, 1, tzinfo=timezone.utc)
_BOUNDS = (f"slots must be between {_EARLIEST_SLOT:%Y-%m-%dT%H:%M:%SZ} and "
           f"{_FUTURE_TOLERANCE.total_seconds() / 60:g} minutes past now")


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


def export_blob_name(slot: datetime) -> str:
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.jsonl.gz"


def manifest_blob_name(slot: datetime) -> str:
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.manifest.json"


def csv_blob_name(slot: datetime) -> str:
    """The CSV copy of a slot's export (EXPORT_FORMATS holds csv), beside it."""
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.csv.gz"


def changes_blob_name(slot: datetime) -> str:
    """A delta slot's change records, as Graph sent them, beside its snapshot."""
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.changes.jsonl.gz"


#: Where the next delta slot starts (``records.DeltaState``).
DELTA_STATE_BLOB = "state/delta.json"


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


def check_slot(slot: datetime, now: datetime) -> datetime:
    """The normalized slot if it can be a real schedule occurrence; ValueError (with why) if not.

    A slot from the far future would name exports that sort after every real one and freeze
    ``latest.json``; one before 2000 is a typo.
    """
    slot = normalize_slot(slot)  # ValueError too when it has no UTC form
    now = normalize_slot(now)
    if not _EARLIEST_SLOT <= slot <= now + _FUTURE_TOLERANCE:
        raise ValueError(f"{_utc_text(slot)} is out of range ({_BOUNDS}, {_utc_text(now)})")
    return slot


def _utc_text(moment: datetime) -> str:
    """A normalized slot as users write it (``Z``); isoformat, unlike strftime, keeps year 0001 4 digits."""
    return moment.isoformat().replace("+00:00", "Z")
