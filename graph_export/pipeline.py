"""Two small bounded stages that let fetching, encoding and compressing/uploading overlap.

Graph pages must be fetched one after another (each nextLink comes from the previous page), so the
speed limit is the fetch; everything else should happen while the next page is on the wire. Both
stages hold at most a fixed number of items (back-pressure, never an unbounded queue), so memory
stays flat however many users the tenant has. Errors in a background thread are re-raised in the
caller's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, Iterator, TypeVar

from . import threads

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterates ``source`` in a background thread, staying at most ``depth`` items ahead."""

    def __init__(self, source: Iterator[T], depth: int = 2, name: str = "prefetch") -> None:
        self._source = source
        self._items: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threads.start(self._run, name=name)

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        item = self._items.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        value: T = item
        return value

    def close(self) -> None:
        """Stop early (the consumer failed): let the producer finish its current item and exit.

        Items never handed out are closed if they can be (e.g. responses holding a connection).
        """
        self._stop.set()
        while self._thread.is_alive():
            try:
                _close(self._items.get(timeout=0.1))  # unblock a producer waiting for room
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)
        while not self._items.empty():
            _close(self._items.get_nowait())

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    _close(item)
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _close(item: Any) -> None:
    close = getattr(item, "close", None)
    if callable(close):
        close()


class SerialWorker:
    """Runs submitted calls one at a time, in order, on one background thread.

    At most ``depth`` calls wait; :meth:`submit` blocks beyond that. :meth:`wait` returns once all
    submitted calls have run and re-raises the first error any of them raised.
    """

    def __init__(self, depth: int = 2, name: str = "worker") -> None:
        self._calls: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threads.start(self._run, name=name)

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        self._raise_if_failed()
        self._calls.put((call, args))

    def wait(self) -> None:
        self._calls.join()
        self._raise_if_failed()

    def close(self) -> None:
        self._calls.put(_END)
        self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            task = self._calls.get()
            try:
                if task is _END:
                    return
                if self._error is None:  # after a failure, drain without running
                    call, args = task
                    call(*args)
            except BaseException as error:
                self._error = error
            finally:
                self._calls.task_done()
