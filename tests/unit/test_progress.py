"""RunProgress: at most one report every so often, and one at the end, with the run's retry counts."""

from __future__ import annotations

import time
import types

from graph_export.progress import RunProgress, Snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_at_most_every_interval_and_once_at_the_end():
    clock, seen = Clock(), []
    counts = types.SimpleNamespace(used=0, throttled_s=0.0)
    progress = RunProgress(counts, every_s=30, report=seen.append, clock=clock)
    pages = [types.SimpleNamespace(users=[{}] * 999) for _ in range(10)]
    for page in progress.watch(iter(pages)):
        clock.now += 10  # a page every 10 s
        if page is pages[5]:
            counts.used, counts.throttled_s = 2, 4.5
    final = progress.finish()
    assert [s.pages for s in seen] == [4, 7, 10, 10]  # pages come at 0, 10, 20 … s: every 30 s, then the end
    assert final.final and final.users == 9_990 and final.elapsed_s == 100
    assert (final.retries, final.throttled_s) == (2, 4.5)
    assert seen[0].line() == ("Progress: 3,996 users in 4 pages, 30 s, 133 users/s; 0 retries, 0.0 s waiting on "
                              "throttling")
    assert final.line().startswith("Exported 9,990 users in 10 pages, 100 s, 100 users/s; 2 retries, 4.5 s")


def test_closing_the_watch_closes_the_pages():
    closed = []

    def pages():
        try:
            yield types.SimpleNamespace(users=[{}])
            yield types.SimpleNamespace(users=[{}])
        finally:
            closed.append(True)

    watched = RunProgress(types.SimpleNamespace(used=0, throttled_s=0.0)).watch(pages())
    next(watched)
    watched.close()
    assert closed == [True]


def test_a_snapshot_without_time_has_no_rate():
    assert Snapshot(5, 1, 0.0, 0, 0.0).users_per_s == 0.0


def test_a_wait_before_a_retry_is_reported_as_it_starts_and_while_it_lasts():
    seen: list[Snapshot] = []
    counts = types.SimpleNamespace(used=1, throttled_s=0.0)
    progress = RunProgress(counts, every_s=0.1, report=seen.append)
    progress.add(999)  # less than every_s in: no report
    with progress.waiting("HTTP 429, Retry-After 1 s", 1.0, throttled=True):
        time.sleep(0.45)
    waits = [s for s in seen if s.waiting is not None]
    assert seen[0] is waits[0] and len(waits) >= 3, seen  # at once, then every 0.1 s
    assert waits[0].line().startswith("Waiting 1 s to retry (HTTP 429, Retry-After 1 s), 1 s left: "
                                      "999 users in 1 pages, 0 s")
    lefts = [s.waiting.left_s for s in waits]
    assert lefts == sorted(lefts, reverse=True) and lefts[-1] < 0.7  # counting down
    assert waits[-1].throttled_s > 0.25 and waits[-1].elapsed_s > 0.25  # neither the clock nor the count stops
    progress.add(999)
    assert progress.finish().waiting is None


def test_a_wait_too_short_to_see_is_not_reported():
    seen: list[Snapshot] = []
    progress = RunProgress(types.SimpleNamespace(used=0, throttled_s=0.0), every_s=0.01, report=seen.append)
    with progress.waiting("HTTP 503, backing off", 0.3):
        time.sleep(0.05)
    assert seen == []


def test_a_delta_slot_counts_changes_read_and_ends_with_the_users_published():
    clock, seen = Clock(), []
    progress = RunProgress(types.SimpleNamespace(used=0, throttled_s=0.0), every_s=30, report=seen.append, clock=clock)
    progress.reading("changes")
    clock.now += 30
    progress.add(75)
    assert seen[-1].line() == "Progress: 75 changes read in 1 pages, 30 s, 2 changes/s; 0 retries, 0.0 s waiting on " \
                              "throttling"
    final = progress.finish(published=9_984)
    assert final.line() == ("Exported 9,984 users from 75 changes read in 1 pages, 30 s, 2 changes/s; 0 retries, "
                            "0.0 s waiting on throttling")


def test_a_delta_slot_that_falls_back_to_a_full_export_counts_users_again():
    progress = RunProgress(types.SimpleNamespace(used=0, throttled_s=0.0), every_s=30, report=lambda s: None,
                           clock=Clock())
    progress.reading("changes")
    progress.add(40)
    progress.reading("users")
    progress.add(999)
    final = progress.finish(published=999)
    assert (final.users, final.pages, final.changes) == (999, 1, False)
    assert final.line().startswith("Exported 999 users in 1 pages, ")


def test_a_wait_that_is_over_is_never_reported_as_zero_seconds_left():
    seen: list[Snapshot] = []
    progress = RunProgress(types.SimpleNamespace(used=1, throttled_s=0.0), every_s=0.05, report=seen.append)
    with progress.waiting("HTTP 429, Retry-After 1 s", 1.0, throttled=True):
        time.sleep(1.3)  # the wait outlasts what it announced, as a slow retry does
    lines = [s.line() for s in seen if s.waiting is not None]
    assert len(lines) >= 5 and not [line for line in lines if ", 0 s left:" in line], lines
