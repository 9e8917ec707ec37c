"""graph_export.threads: a started thread sees its starter's context and runs the starter's hooks first."""

from __future__ import annotations

import contextvars
import re
import threading
from pathlib import Path

from graph_export import threads

REQUEST = contextvars.ContextVar("request", default=None)  # stands in for the worker's invocation id variable


def seen_on_a_thread(work=lambda: None):
    """What a thread started now sees of REQUEST and of a thread-local the hooks set, and in its own thread."""
    seen = {}
    local = threading.local()

    def target():
        seen["request"], seen["local"] = REQUEST.get(), getattr(local, "id", None)
        inner = threads.start(lambda: seen.update(inner=(REQUEST.get(), getattr(local, "id", None))), name="inner")
        inner.join()
        work()

    with threads.on_start(lambda: setattr(local, "id", REQUEST.get())):
        thread = threads.start(target, name="outer")
    thread.join()
    return seen


def test_a_thread_and_its_threads_see_the_starters_context_and_run_its_hooks():
    token = REQUEST.set("invocation-1")
    try:
        seen = seen_on_a_thread()
    finally:
        REQUEST.reset(token)
    assert seen == {"request": "invocation-1", "local": "invocation-1", "inner": ("invocation-1", "invocation-1")}


def test_hooks_end_with_their_block_and_threads_are_daemons():
    hooked = []
    with threads.on_start(lambda: hooked.append(threading.current_thread().name)):
        threads.start(lambda: None, name="during").join()
    thread = threads.start(lambda: None, name="after")  # a reused worker thread keeps nothing of the last invocation
    thread.join()
    assert hooked == ["during"] and thread.daemon


def test_every_thread_the_package_starts_comes_from_threads_start():
    # A thread started any other way carries no invocation id, and the host drops what it logs.
    package = Path(__file__).resolve().parents[2] / "graph_export"
    offenders = [path.name for path in package.rglob("*.py") if path.name != "threads.py"
                 and re.search(r"\bThread\(|ThreadPoolExecutor|_thread\.start_new", path.read_text(encoding="utf-8"))]
    assert offenders == []
