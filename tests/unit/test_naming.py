from datetime import datetime, timedelta, timezone

import pytest

from graph_export.naming import (
    LATEST_BLOB,
    check_slot,
    parse_slot,
    run_names,
    slot_from_schedule_status,
    slot_pointer_name,
    slot_prefix,
)

UTC = timezone.utc
SLOT = datetime(2026, 3, 7, 2, 0, 0, tzinfo=UTC)


RUN = "0123456789ab"


def test_blob_names_follow_the_documented_layout():
    names = run_names(SLOT, RUN)
    assert names.jsonl == "users/2026/03/07/users-20260307T020000Z-0123456789ab.jsonl.gz"
    assert names.csv == "users/2026/03/07/users-20260307T020000Z-0123456789ab.csv.gz"
    assert names.changes == "users/2026/03/07/users-20260307T020000Z-0123456789ab.changes.jsonl.gz"
    assert names.manifest == "users/2026/03/07/users-20260307T020000Z-0123456789ab.manifest.json"
    assert slot_pointer_name(SLOT) == "state/users-20260307T020000Z.current.json"
    assert LATEST_BLOB == "users/latest.json"


def test_every_name_of_a_run_starts_with_its_slot_prefix_and_no_other_slot_shares_it():
    names = run_names(SLOT, RUN)
    for name in (names.jsonl, names.csv, names.changes, names.manifest):
        assert name.startswith(slot_prefix(SLOT))
        assert not name.startswith(slot_prefix(SLOT + timedelta(seconds=1)))
    # the names of exports before run-unique names (users-<slot>.jsonl.gz) are not under the prefix
    assert not "users/2026/03/07/users-20260307T020000Z.jsonl.gz".startswith(slot_prefix(SLOT))


@pytest.mark.parametrize("run", ["", "0123456789a", "0123456789abc", "0123456789AB", "../../etc/xx", "g" * 12])
def test_a_run_id_that_is_not_12_lowercase_hex_digits_names_nothing(run):
    with pytest.raises(ValueError):
        run_names(SLOT, run)


def test_names_use_utc_whatever_the_offset_and_drop_microseconds():
    local = datetime(2026, 3, 7, 3, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert run_names(local, RUN) == run_names(SLOT, RUN)


def test_naive_times_are_utc():
    assert run_names(datetime(2026, 3, 7, 2), RUN) == run_names(SLOT, RUN)
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


NOW = datetime(2026, 3, 7, 2, 0, 3, tzinfo=UTC)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_without_a_utc_form_is_a_value_error_naming_the_bounds(text):
    with pytest.raises(ValueError, match="slots must be between 2000-01-01T00:00:00Z and 5 minutes past now"):
        parse_slot(text)
    with pytest.raises(ValueError, match="out of range"):
        check_slot(datetime.fromisoformat(text), NOW)


def test_slots_are_bounded_by_2000_and_five_minutes_past_now():
    assert check_slot(datetime(2000, 1, 1, tzinfo=UTC), NOW) == datetime(2000, 1, 1, tzinfo=UTC)
    latest = NOW + timedelta(minutes=5)
    assert check_slot(latest.replace(microsecond=999_999), NOW) == latest
    for outside in (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), latest + timedelta(seconds=1),
                    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)):
        with pytest.raises(ValueError) as info:
            check_slot(outside, NOW)
        assert str(info.value) == (f"{outside.isoformat().replace('+00:00', 'Z')} is out of range (slots must be "
                                   "between 2000-01-01T00:00:00Z and 5 minutes past now, 2026-03-07T02:00:03Z)")


def test_unparseable_slot_text_says_what_is_expected():
    with pytest.raises(ValueError, match="'garbage' is not an ISO 8601 time such as 2026-01-31T02:00:00Z"):
        parse_slot("garbage")


def test_schedule_status_keeps_what_check_slot_keeps_and_otherwise_falls_back_to_now():
    cases = {
        "0001-01-01T00:00:00+05:00": NOW,  # no UTC form: was an OverflowError out of the function
        "9999-12-31T23:59:59-05:00": NOW,
        "1999-12-31T23:59:59Z": NOW,
        "2000-01-01T00:00:00Z": datetime(2000, 1, 1, tzinfo=UTC),
        "2026-03-07T02:05:03Z": datetime(2026, 3, 7, 2, 5, 3, tzinfo=UTC),  # exactly the tolerance ahead
        "2026-03-07T02:05:04Z": NOW,
    }
    for raw, expected in cases.items():
        assert slot_from_schedule_status({"Next": raw}, NOW) == expected, raw
