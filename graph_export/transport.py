"""The HTTP transport for Graph and sign-in: keep-alive pools, retries, and a signal when a request is out.

Throttling and transient failures are retried by urllib3's ``Retry``, which honours ``Retry-After`` on
429/503 and otherwise backs off exponentially with jitter; every retry also draws on a budget shared
by the whole run. The connections announce when a request has been written (see
:func:`on_request_sent`), so the thread that sends Graph requests can keep ahead of the threads that
parse what came back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

#: Statuses Graph documents as transient; 429 and 503 usually carry Retry-After.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryBudget:
    """Retries left for the whole run, shared by every request of a session; and time spent throttled."""

    def __init__(self, limit: int) -> None:
        self.reset(limit)

    def reset(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        #: Seconds slept after 429 answers (Retry-After or backoff), for progress and the run summary.
        self.throttled_s = 0.0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def spend(self) -> bool:
        if self.exhausted:
            return False
        self.used += 1
        return True


class BudgetedRetry(Retry):
    """urllib3's Retry (Retry-After, exponential backoff with jitter) that also draws on a run budget."""

    def __init__(self, *args: Any, budget: RetryBudget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    def new(self, **kwargs: Any) -> "BudgetedRetry":
        retry = super().new(**kwargs)
        retry.budget = self.budget
        return retry

    def sleep(self, response: Any = None) -> None:
        started = time.monotonic()
        super().sleep(response)
        if self.budget is not None and response is not None and response.status == 429:
            self.budget.throttled_s += time.monotonic() - started

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> "BudgetedRetry":
        # urllib3 passes method and url positionally: name every parameter so the budget sees them.
        retry = super().increment(method, url, response=response, error=error, _pool=_pool, _stacktrace=_stacktrace)
        if self.budget is not None and not self.budget.spend():  # super() raised once this request's are spent
            raise MaxRetryError(_pool, url or "", RunBudgetExhausted())
        return retry


class RunBudgetExhausted(Exception):
    def __str__(self) -> str:
        return "the run's retry budget is spent"


def make_session(backoff_base_s: float, retries_per_request: int, budget: RetryBudget) -> requests.Session:
    """The HTTP transport for Graph and sign-in: keep-alive pools, retries for throttling and faults."""
    retry = BudgetedRetry(
        total=retries_per_request,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),  # POST: token requests, safe to repeat
        backoff_factor=backoff_base_s,
        backoff_jitter=backoff_base_s,
        backoff_max=60.0,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so its Graph error can be reported
        budget=budget,
    )
    session = requests.Session()
    adapter = _AnnouncingAdapter(max_retries=retry, pool_connections=4, pool_maxsize=4)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class _Pending(threading.local):
    callback: Callable[[], None] | None = None


_pending = _Pending()


@contextlib.contextmanager
def on_request_sent(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` once this thread's next request has been written, or at the latest on leaving.

    A thread that hands a response to another thread and then sends the next request wants that
    request out first: otherwise both threads want the GIL at the same moment, and the request waits
    behind the other thread's parsing, on every page.
    """
    _pending.callback = callback
    try:
        yield
    finally:
        _announce()  # not sent (failed before writing, or went through a proxy's own pool)


def _announce() -> None:
    callback, _pending.callback = _pending.callback, None
    if callback is not None:
        callback()


class _AnnouncingHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _announce()  # the request is written; from here on this thread waits on the socket
        return super().getresponse(*args, **kwargs)


class _AnnouncingHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _announce()
        return super().getresponse(*args, **kwargs)


class _AnnouncingHTTPPool(HTTPConnectionPool):
    ConnectionCls = _AnnouncingHTTPConnection


class _AnnouncingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _AnnouncingHTTPSConnection


class _AnnouncingAdapter(HTTPAdapter):
    """requests' adapter with connections that call :func:`on_request_sent` callbacks."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _AnnouncingHTTPPool, "https": _AnnouncingHTTPSPool}
