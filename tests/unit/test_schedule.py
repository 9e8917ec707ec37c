"""graph_export.schedule on its own: the NCRONTAB rules, without loading any other setting.

How the answer reaches the operator (``EXPORT_SCHEDULE is '…': …; expected …``) is
tests/unit/test_settings.py's.
"""

import pytest

from graph_export import schedule


@pytest.mark.parametrize("text", [
    "0 0 2 * * *", "*/10 * * * * *", "0 0 0 29 Feb *", "0 0 9 * * Mon-Fri", "0 0 0 1 1,7 0",
    "0  0 2 * * *",  # NCrontab splits on single spaces and drops the empty fields
])
def test_a_schedule_the_host_would_fire_has_no_problem(text):
    assert schedule.problem(text) is None


@pytest.mark.parametrize("text,why", [
    ("", "it has 0 fields, not 6"),
    ("0 0 2 * *", "it has 5 fields, not 6"),
    ("0 0 2\t* * *", "it has 5 fields, not 6"),  # a tab is no separator to NCrontab
    ("0 0 25 * * *", "its hour field '25' has 25, outside 0-23"),
    ("0 0 2 * Feb-Jan *", "its month field 'Feb-Jan' has the range Feb-Jan, whose start is after its end"),
    ("0 0 2 31 Feb,Apr *", "it never fires: none of its months has any of its days"),
])
def test_a_problem_says_which_field_and_what_is_wrong(text, why):
    assert schedule.problem(text) == why


def test_the_form_says_six_fields_seconds_first_in_utc():
    assert schedule.FORM.startswith("expected 6-field NCRONTAB 'second minute hour day month day-of-week' (UTC)")
    assert schedule.problem(schedule.FORM.rsplit("e.g. ", 1)[1].strip("'")) is None  # its example is usable
