"""How far a run has got: users, pages, users/s, retries and throttled waits, said every so often.

A long export is otherwise silent for minutes. :class:`RunProgress` counts pages as they are handed
on and calls its ``report`` at most once every ``every_s`` seconds, and once at the end. By default
the report is one log line (the Functions host and a redirected CLI get that); the CLI on a terminal
reports to a live display instead (``cli.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator, Protocol, TypeVar

log = logging.getLogger(__name__)


class _Counted(Protocol):
    @property
    def users(self) -> list[Any]: ...


_Page = TypeVar("_Page", bound=_Counted)


class RetryCounts(Protocol):
    """What the transport counts for the run (``transport.RetryBudget``)."""

    used: int
    throttled_s: float


@dataclass(frozen=True)
class Snapshot:
    users: int
    pages: int
    elapsed_s: float
    retries: int
    throttled_s: float
    final: bool = False

    @property
    def users_per_s(self) -> float:
        return self.users / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        what = "Exported" if self.final else "Progress:"
        return (f"{what} {self.users:,} users in {self.pages:,} pages, {self.elapsed_s:.0f} s, "
                f"{self.users_per_s:,.0f} users/s; {self.retries} retries, {self.throttled_s:.1f} s waiting on "
                "throttling")


def log_line(snapshot: Snapshot) -> None:
    log.info("%s", snapshot.line())


class RunProgress:
    """Counts the pages of one run and reports at most every ``every_s`` seconds, and at the end."""

    def __init__(self, counts: RetryCounts, every_s: float = 30.0,
                 report: Callable[[Snapshot], None] = log_line, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = counts
        self._every = every_s
        self._report = report
        self._clock = clock
        self._started = self._last = clock()
        self.users = self.pages = 0

    def watch(self, pages: Iterator[_Page]) -> Generator[_Page, None, None]:
        """``pages`` as they are, counted on the way (closing this closes them)."""
        try:
            for page in pages:
                self.add(len(page.users))
                yield page
        finally:
            close = getattr(pages, "close", None)
            if callable(close):
                close()

    def add(self, users: int, pages: int = 1) -> None:
        self.users += users
        self.pages += pages
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._report(self._snapshot(now, final=False))

    def finish(self) -> Snapshot:
        snapshot = self._snapshot(self._clock(), final=True)
        self._report(snapshot)
        return snapshot

    def _snapshot(self, now: float, *, final: bool) -> Snapshot:
        return Snapshot(self.users, self.pages, now - self._started, self._counts.used,
                        self._counts.throttled_s, final)
