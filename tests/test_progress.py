"""RunProgress: at most one report every so often, and one at the end, with the run's retry counts."""

from __future__ import annotations

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
