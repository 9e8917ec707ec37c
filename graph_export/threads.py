"""Every thread the export starts: in a copy of its starter's context, with the starter's start hooks run first.

Under Azure Functions a log record reaches the invocation's log only if the worker can tell which
invocation it belongs to, and the worker knows that only for the thread it called the function on:
the Python 3.13+ worker reads a context variable it sets there, the worker of Python 3.12 and
earlier a thread-local (``context.thread_local_storage.invocation_id``). A record from any other
thread (the lease renewer's warning, a storage call on the writer thread, the page prefetcher's
retry line) carries no invocation id, and the host does not show it with the invocation.

So every thread the package starts comes from :func:`start`, which runs the target in a copy of the
starting thread's ``contextvars`` context (that carries the first kind) and, before the target, the
hooks the starter registered with :func:`on_start` (the function app registers one that sets the
second). The CLI registers none: its threads only inherit a context nothing reads.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Any, Callable, Iterator

#: What a new thread runs before its target; set by :func:`on_start`, inherited by threads of threads.
_START_HOOKS: contextvars.ContextVar[tuple[Callable[[], None], ...]] = contextvars.ContextVar(
    "graph_export_start_hooks", default=())


def start(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """Start a daemon thread running ``target(*args)`` in a copy of this thread's context; the thread."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(_run, target, args), name=name, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def on_start(hook: Callable[[], None]) -> Iterator[None]:
    """Inside the block, every thread :func:`start` starts (and the threads those start) runs ``hook`` first."""
    token = _START_HOOKS.set((*_START_HOOKS.get(), hook))
    try:
        yield
    finally:  # the worker reuses its threads for later invocations: leave nothing of this one behind
        _START_HOOKS.reset(token)


def _run(target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    for hook in _START_HOOKS.get():
        hook()
    target(*args)
