"""NCRONTAB schedules as the Functions host reads them: why one would be refused, or never fire.

EXPORT_SCHEDULE is the timer trigger's ``schedule="%EXPORT_SCHEDULE%"``; :mod:`graph_export.settings`
asks :func:`problem` about it with the other settings. Pure text rules, no clock: nothing here knows
when the next run is.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: What a schedule looks like, for the message that refuses one.
FORM = "expected 6-field NCRONTAB 'second minute hour day month day-of-week' (UTC), e.g. '0 0 2 * * *'"


class _Field(NamedTuple):
    """One NCRONTAB field as NCrontab (which the Functions host uses) reads it."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # value names, lowercase, for low, low + 1, ...
    hint: str = ""


# The host's order: six fields, seconds first (NCrontab's IncludingSeconds). NCrontab takes day of
# week 0-6 only, so 7 (Sunday in some crons) is an error there and here.
_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, ("january", "february", "march", "april", "may", "june", "july",
                            "august", "september", "october", "november", "december")),
    _Field("day-of-week", 0, 6, ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday",
                                 "saturday"), " (Sunday is 0)"),
)
# An item of a comma list: *, N or N-M (numbers or names), with an optional /step.
_ITEM = re.compile(r"^(?:(\*)|([0-9]+|[A-Za-z]+)(?:-([0-9]+|[A-Za-z]+))?)(?:/([0-9]+))?$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29 February does come round


def problem(schedule: str) -> str | None:
    """Why the Functions host would refuse ``schedule`` or never fire it; None if it is usable.

    The host parses the schedule itself (NCrontab, with seconds) only when the app starts, and a
    schedule that never fires is not an error there at all: checking here turns both into the usual
    one-line ConfigError. Stricter than NCrontab only where a value is almost surely a typo: a step
    of 0 (NCrontab reads it as 1), a range whose start is after its end (NCrontab swaps them), and
    names shorter than 3 letters (NCrontab takes any prefix, so ``J`` is January and ``Ju`` June).
    """
    fields = [f for f in schedule.split(" ") if f]  # NCrontab splits on spaces only
    if len(fields) != 6:
        return f"it has {len(fields)} fields, not 6"
    selected: list[set[int]] = []
    for text, field in zip(fields, _FIELDS, strict=True):
        try:
            selected.append(_values(text, field))
        except ValueError as why:
            return f"its {field.name} field '{text}' {why}"
    days, months = selected[3], selected[4]
    if not any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months):
        return "it never fires: none of its months has any of its days"
    return None


def _values(text: str, field: _Field) -> set[int]:
    """The values one NCRONTAB field selects: a comma list of ``*``, ``N`` or ``N-M``, each with an
    optional ``/step`` (``N/step`` runs from N to the field's maximum, as in NCrontab)."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"has '{item}', which is not *, N or N-M with an optional /step" if item
                             else "has an empty item between commas")
        star, first, last, step_text = match.groups()
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise ValueError(f"has the step /{step_text}: a step must be 1 or more")
        if star:
            start, end = field.low, field.high
        else:
            start = _value(first, field)
            end = _value(last, field) if last is not None else (field.high if step_text else start)
            if start > end:
                raise ValueError(f"has the range {first}-{last}, whose start is after its end")
        values.update(range(start, end + 1, step))
    return values


def _value(token: str, field: _Field) -> int:
    """One number or name of an NCRONTAB field, checked against the field's range."""
    if token.isdigit():
        value = int(token)
        if not field.low <= value <= field.high:
            raise ValueError(f"has {token}, outside {field.low}-{field.high}{field.hint}")
        return value
    word = token.lower()
    for offset, name in enumerate(field.names):
        if len(word) >= 3 and name.startswith(word):
            return field.low + offset
    names = f" or a name such as {field.names[0][:3].title()}" if field.names else ""
    raise ValueError(f"has '{token}', which is not a number from {field.low} to {field.high}{names}")
