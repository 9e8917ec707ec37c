"""The HTTP transport for Graph and sign-in: keep-alive pools, retries, and a signal when a request is out.

Throttling and transient failures are retried by urllib3's ``Retry``, which honours ``Retry-After`` on
429/503 and otherwise backs off exponentially with jitter; every retry also draws on the run's budget,
and every wait before a retry is announced to the run's listener (its progress) while it lasts, with
the reason and the seconds. The connections can announce when a request has been written (see
:class:`RequestSignal`), so the thread that sends Graph requests can keep ahead of the threads that
parse what came back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, ContextManager, Iterator, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .errors import certificate_failure, origin_from
from .retrying import announce_wait, describe_failure

#: Statuses Graph documents as transient; 429 and 503 usually carry Retry-After.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class WaitListener(Protocol):
    """Who hears of a wait before a retry while it lasts (``progress.RunProgress.waiting``)."""

    def waiting(self, reason: str, seconds: float, throttled: bool) -> ContextManager[None]: ...


class RetryBudget:
    """One run's retries (every request of its Graph client draws on them) and its time spent throttled.

    Made per run and handed to that run's session (``clients.WarmClients.graph_users``): two runs in
    one process never share or reset each other's budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        #: Seconds slept after 429 answers (Retry-After or backoff), for progress and the run summary.
        self.throttled_s = 0.0
        #: The run's progress, told of each wait as it happens (set once the progress exists: it reads this budget).
        self.listener: WaitListener | None = None

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def spend(self) -> bool:
        if self.exhausted:
            return False
        self.used += 1
        return True


class BudgetedRetry(Retry):
    """urllib3's Retry (Retry-After, exponential backoff with jitter) that also draws on a run budget.

    A TLS certificate this machine does not trust is never retried (it does not heal). Once one
    request's waits add up to more than a few seconds, each further wait is announced with a warning
    as it starts (``service`` names who is waited for; see ``retrying.announce_wait``).
    """

    def __init__(self, *args: Any, budget: RetryBudget | None = None, service: str = "Graph", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.service = service
        #: Seconds this request has waited before its retries so far.
        self.waited_s = 0.0
        self._backoff_s: float | None = None

    def get_backoff_time(self) -> float:
        """urllib3's backoff (with its jitter), drawn once: the wait announced is the wait slept."""
        if self._backoff_s is None:
            self._backoff_s = super().get_backoff_time()
        return self._backoff_s

    def _announce(self, response: Any, error: Exception | None, pool: Any) -> None:
        """Before the wait this retry is about to sleep: a progress warning once the waits add up."""
        retry_after = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        wait = retry_after or self.get_backoff_time()
        origin = origin_from(pool.scheme, pool.host, pool.port) if pool is not None else "its endpoint"
        announce_wait(self.service, origin, describe_failure(getattr(response, "status", None), error),
                      len(self.history), self.waited_s, wait)
        self.waited_s += max(wait, 0.0)

    def new(self, **kwargs: Any) -> "BudgetedRetry":
        retry = super().new(**kwargs)
        retry.budget = self.budget
        retry.service, retry.waited_s = self.service, self.waited_s
        return retry

    def sleep(self, response: Any = None) -> None:
        """urllib3's wait (Retry-After when the answer has one, else the backoff), told to the run's listener."""
        retry_after = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        seconds = retry_after or self.get_backoff_time()  # computed once: the backoff has jitter
        if seconds <= 0:
            return
        throttled = response is not None and response.status == 429
        listener = self.budget.listener if self.budget is not None else None
        started = time.monotonic()
        with listener.waiting(wait_reason(response, retry_after), seconds, throttled) if listener \
                else contextlib.nullcontext():
            time.sleep(seconds)
        if self.budget is not None and throttled:
            self.budget.throttled_s += time.monotonic() - started

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> "BudgetedRetry":
        if error is not None and certificate_failure(error) is not None:
            raise MaxRetryError(_pool, url or "", error) from error  # an untrusted certificate does not heal
        # urllib3 passes method and url positionally: name every parameter so the budget sees them.
        retry = super().increment(method, url, response=response, error=error, _pool=_pool, _stacktrace=_stacktrace)
        if self.budget is not None and not self.budget.spend():  # super() raised once this request's are spent
            raise MaxRetryError(_pool, url or "", RunBudgetExhausted())
        retry._announce(response, error, _pool)
        return retry


def wait_reason(response: Any, retry_after: float | None) -> str:
    """Why a retry waits, for progress: the status (429: throttled), and Retry-After or a backoff."""
    if response is None:
        return "a connection error, backing off"
    return f"HTTP {response.status}, " + (f"Retry-After {retry_after:g} s" if retry_after else "backing off")


class RunBudgetExhausted(Exception):
    def __str__(self) -> str:
        return "the run's retry budget is spent"


def budgeted_retry(backoff_base_s: float, retries_per_request: int, budget: RetryBudget) -> BudgetedRetry:
    """Graph's retry policy: ``retries_per_request`` for throttling and faults, each drawn on the run's budget."""
    return BudgetedRetry(
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


def make_session(retry: Retry, *, announce: Callable[[], None] | None = None, pool_size: int = 4) -> requests.Session:
    """A requests session with keep-alive pools of ``pool_size`` that retries as ``retry`` says.

    With ``announce``, every connection calls it once a request has been written (a
    :class:`RequestSignal` passes that on to whoever armed it for the request).
    """
    adapter = (HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size) if announce is None
               else _AnnouncingAdapter(announce, max_retries=retry, pool_connections=pool_size,
                                       pool_maxsize=pool_size))
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class RequestSignal:
    """Tells the thread sending a request when it has been written: armed around the request, called by
    the connection (``make_session(announce=signal)``).

    A thread that hands a response to another thread and then sends the next request wants that
    request out first: otherwise both threads want the GIL at the same moment, and the request waits
    behind the other thread's parsing, on every page. Armed per thread: a session serves several.
    """

    def __init__(self) -> None:
        self._armed = threading.local()

    @contextlib.contextmanager
    def armed(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback`` once this thread's next request has been written, or at the latest on leaving."""
        self._armed.callback = callback
        try:
            yield
        finally:
            self()  # not sent (failed before writing, or went through a proxy's own pool)

    def __call__(self) -> None:
        callback: Callable[[], None] | None = getattr(self._armed, "callback", None)
        self._armed.callback = None
        if callback is not None:
            callback()


def _announcing_pools(announce: Callable[[], None]) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections call ``announce`` once a request is written.

    Relies on ``PoolManager.pool_classes_by_scheme``, ``ConnectionCls`` and ``getresponse`` being
    called right after the request is sent: urllib3 2.x (requirements.txt pins the range; a test
    checks the signal against the installed version).
    """

    class Connection(HTTPConnection):
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            announce()  # the request is written; from here on this thread waits on the socket
            return super().getresponse(*args, **kwargs)

    class TlsConnection(HTTPSConnection):
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            announce()
            return super().getresponse(*args, **kwargs)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConnection

    return {"http": Pool, "https": TlsPool}


class _AnnouncingAdapter(HTTPAdapter):
    """requests' adapter whose connections call ``announce`` once each request is written."""

    def __init__(self, announce: Callable[[], None], **kwargs: Any) -> None:
        self._pools = _announcing_pools(announce)  # before super(): it builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools
