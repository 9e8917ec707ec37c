from datetime import datetime, timedelta, timezone

from graph_export.naming import (
    LATEST_BLOB,
    export_blob_name,
    manifest_blob_name,
    parse_slot,
    slot_from_schedule_status,
)

UTC = timezone.utc
SLOT = datetime(2026, 3, 7, 2, 0, 0, tzinfo=UTC)


def test_blob_names_follow_the_documented_layout():
    assert export_blob_name(SLOT) == "users/2026/03/07/users-20260307T020000Z.jsonl.gz"
    assert manifest_blob_name(SLOT) == "users/2026/03/07/users-20260307T020000Z.manifest.json"
    assert LATEST_BLOB == "users/latest.json"


def test_names_use_utc_whatever_the_offset_and_drop_microseconds():
    local = datetime(2026, 3, 7, 3, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert export_blob_name(local) == export_blob_name(SLOT)


def test_naive_times_are_utc():
    assert export_blob_name(datetime(2026, 3, 7, 2)) == export_blob_name(SLOT)
    assert parse_slot("2026-03-07T02:00:00") == SLOT
    assert parse_slot("2026-03-07T02:00:00Z") == SLOT


def test_scheduled_time_is_the_slot_for_a_normal_and_a_past_due_run():
    now = datetime(2026, 3, 7, 2, 0, 3, tzinfo=UTC)
    status = {"Last": "2026-03-06T02:00:00+00:00", "Next": "2026-03-07T02:00:00+00:00",
              "LastUpdated": "2026-03-06T02:00:01+00:00"}
    assert slot_from_schedule_status(status, now) == SLOT
    hours_late = datetime(2026, 3, 7, 9, 30, tzinfo=UTC)
    assert slot_from_schedule_status(status, hours_late) == SLOT


def test_without_a_usable_schedule_status_the_slot_is_now():
    now = datetime(2026, 3, 7, 2, 0, 3, 999, tzinfo=UTC)
    expected = now.replace(microsecond=0)
    assert slot_from_schedule_status(None, now) == expected
    assert slot_from_schedule_status({"Next": "garbage"}, now) == expected
    assert slot_from_schedule_status({"Next": "0001-01-01T00:00:00"}, now) == expected
    assert slot_from_schedule_status({"Next": "2026-03-08T02:00:00Z"}, now) == expected
