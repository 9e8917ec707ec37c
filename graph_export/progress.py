"""How far a run has got: users, pages, users/s, retries and throttled waits, said every so often.

A long export is otherwise silent for minutes. :class:`RunProgress` counts pages as they are handed
on and calls its ``report`` at most once every ``every_s`` seconds, and once at the end. By default
the report is one log line (the Functions host and a redirected CLI get that); the CLI on a terminal
reports to a live display instead (``cli.py``).

A wait before a retry (a Retry-After of a throttled answer, a backoff) is reported as it starts and then
every ``every_s`` while it lasts, with its reason and the seconds left, so the clock never seems to stop.
A delta slot counts the change records it reads; its last report also says how many users it published.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator, Literal, Protocol, TypeVar

from . import threads

log = logging.getLogger(__name__)

#: Waits shorter than this are not reported (a backoff of a few hundred milliseconds is over before it shows).
MIN_WAIT_REPORT_S = 1.0


class _Counted(Protocol):
    @property
    def users(self) -> list[Any]: ...


_Page = TypeVar("_Page", bound=_Counted)


class RetryCounts(Protocol):
    """What the transport counts for the run (``transport.RetryBudget``)."""

    used: int
    throttled_s: float


@dataclass(frozen=True)
class Wait:
    """A wait before a retry, as it stands: why, how long in all, how long still."""

    reason: str
    seconds: float
    left_s: float


@dataclass(frozen=True)
class Snapshot:
    #: Users read so far (change records, for a delta slot: ``changes``).
    users: int
    pages: int
    elapsed_s: float
    retries: int
    throttled_s: float
    final: bool = False
    #: The wait before a retry under way, if any.
    waiting: Wait | None = None
    #: A delta slot: ``users`` counts change records read from users/delta.
    changes: bool = False
    #: At the end: the users the slot published (for a delta slot, the snapshot made from the changes).
    published: int | None = None

    @property
    def users_per_s(self) -> float:
        return self.users / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        unit = "changes" if self.changes else "users"
        counts = (f"{self.pages:,} pages, {self.elapsed_s:.0f} s, {self.users_per_s:,.0f} {unit}/s; {self.retries} "
                  f"retries, {self.throttled_s:.1f} s waiting on throttling")
        read = f"{self.users:,} changes read" if self.changes else f"{self.users:,} users"
        if self.final:
            if self.changes and self.published is not None:
                return f"Exported {self.published:,} users from {read} in {counts}"
            return f"Exported {read} in {counts}"
        if self.waiting is not None:
            w = self.waiting
            return f"Waiting {w.seconds:.0f} s to retry ({w.reason}), {w.left_s:.0f} s left: {read} in {counts}"
        return f"Progress: {read} in {counts}"


def log_line(snapshot: Snapshot) -> None:
    log.info("%s", snapshot.line())


@dataclass(frozen=True)
class _Waiting:
    reason: str
    seconds: float
    started: float
    throttled: bool


class RunProgress:
    """Counts the pages of one run and reports at most every ``every_s`` seconds, and at the end; and each wait
    before a retry while it lasts (``waiting``, which the transport calls from the thread that waits)."""

    def __init__(self, counts: RetryCounts, every_s: float = 30.0,
                 report: Callable[[Snapshot], None] = log_line, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = counts
        self._every = every_s
        self._report = report
        self._clock = clock
        self._started = self._last = clock()
        self._lock = threading.Lock()  # one report at a time: pages on one thread, waits on another
        self._wait: _Waiting | None = None
        self._changes = False
        self.users = self.pages = 0

    def reading(self, what: Literal["users", "changes"]) -> None:
        """What the pages hold from now on: users (a full export) or change records (a delta slot). A switch
        (a delta slot falling back to a full export) starts the counts again; the clock runs on."""
        changes = what == "changes"
        if changes != self._changes:
            self._changes = changes
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
            with self._lock:
                self._report(self._snapshot(now, final=False))

    def finish(self, published: int | None = None) -> Snapshot:
        """The last report; ``published``: the users the slot published."""
        snapshot = self._snapshot(self._clock(), final=True, published=published)
        with self._lock:
            self._report(snapshot)
        return snapshot

    @contextlib.contextmanager
    def waiting(self, reason: str, seconds: float, throttled: bool = False) -> Iterator[None]:
        """Around a wait before a retry: reported at once, then every ``every_s`` until it is over."""
        if seconds < MIN_WAIT_REPORT_S:
            yield
            return
        wait = _Waiting(reason, seconds, self._clock(), throttled)
        with self._lock:
            self._wait = wait
            self._report(self._snapshot(self._clock(), final=False))
        over = threading.Event()
        ticker = threads.start(self._tick, wait, over, name="progress-wait")
        try:
            yield
        finally:
            over.set()
            ticker.join()
            with self._lock:
                if self._wait is wait:
                    self._wait = None

    def _tick(self, wait: _Waiting, over: threading.Event) -> None:
        while not over.wait(self._every):
            now = self._clock()
            if wait.seconds - (now - wait.started) < 0.5:
                return  # "0 s left" says nothing: the wait is over, and the next page or retry reports
            with self._lock:
                if self._wait is wait:
                    self._report(self._snapshot(now, final=False))

    def _snapshot(self, now: float, *, final: bool, published: int | None = None) -> Snapshot:
        wait, throttled_s = self._wait, self._counts.throttled_s
        waiting = None
        if wait is not None and not final:
            so_far = max(0.0, now - wait.started)
            waiting = Wait(wait.reason, wait.seconds, max(0.0, wait.seconds - so_far))
            if wait.throttled:  # the transport adds a throttled wait once it is over: count it as it goes
                throttled_s += min(so_far, wait.seconds)
        return Snapshot(self.users, self.pages, now - self._started, self._counts.used, throttled_s, final,
                        waiting=waiting, changes=self._changes, published=published)
