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


def normalize_slot(slot: datetime) -> datetime:
    """The slot in UTC, to the second (naive datetimes are taken as UTC, as the Functions host uses)."""
    if slot.tzinfo is None:
        slot = slot.replace(tzinfo=timezone.utc)
    return slot.astimezone(timezone.utc).replace(microsecond=0)


def slot_stamp(slot: datetime) -> str:
    return normalize_slot(slot).strftime("%Y%m%dT%H%M%SZ")


def export_blob_name(slot: datetime) -> str:
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.jsonl.gz"


def manifest_blob_name(slot: datetime) -> str:
    slot = normalize_slot(slot)
    return f"users/{slot:%Y/%m/%d}/users-{slot_stamp(slot)}.manifest.json"


def parse_slot(text: str) -> datetime:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC) into a normalized slot."""
    return normalize_slot(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def slot_from_schedule_status(status: Mapping[str, Any] | None, now: datetime) -> datetime:
    """The scheduled time of the current timer invocation, or ``now`` when the runtime gives none.

    With ``use_monitor`` the runtime passes the schedule status as it stood before this invocation,
    so ``Next`` is the occurrence being run now (also for a ``past_due`` catch-up run).
    """
    now = normalize_slot(now)
    raw = (status or {}).get("Next")
    if not raw:
        return now
    try:
        scheduled = parse_slot(str(raw))
    except ValueError:
        return now
    if scheduled > now + _FUTURE_TOLERANCE or scheduled.year < 2000:
        return now
    return scheduled


def checkpoint_blob_name(slot: datetime) -> str:
    """Progress of an unfinished export, outside ``users/`` so nobody mistakes it for data."""
    return f"state/users-{slot_stamp(slot)}.checkpoint.json"


def check_slot(slot: datetime, now: datetime) -> datetime:
    """The normalized slot if it can be a real schedule occurrence; ValueError (with why) if not.

    A slot from the far future would name exports that sort after every real one and freeze
    ``latest.json``; one before 2000 is a typo.
    """
    slot = normalize_slot(slot)
    if slot.year < 2000 or slot > normalize_slot(now) + _FUTURE_TOLERANCE:
        raise ValueError(f"slot {slot.isoformat()} is not between 2000-01-01 and now (+{_FUTURE_TOLERANCE})")
    return slot
