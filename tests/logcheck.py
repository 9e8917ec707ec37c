"""What ``--debug`` keeps: the log records of ours while a failure runs, at a level (tests of every layer)."""

from __future__ import annotations

import logging
from typing import Callable

import pytest


def logged(caplog: pytest.LogCaptureFixture, level: int, fail: Callable[[], object]) -> list[logging.LogRecord]:
    """Our records while ``fail()`` runs with the graph_export log at ``level``."""
    caplog.clear()
    with caplog.at_level(level, logger="graph_export"):
        fail()
    return [r for r in caplog.records if r.name.startswith("graph_export")]


def assert_cause_kept(caplog: pytest.LogCaptureFixture, fail: Callable[[], object], logger: str,
                      cause: type[BaseException]) -> tuple[logging.LogRecord, str]:
    """At DEBUG one record of ``logger`` holds a ``cause`` (named in the text printed, returned too); at INFO no
    record is added."""
    debug = logged(caplog, logging.DEBUG, fail)
    kept = [r for r in debug if r.name == logger and r.levelno == logging.DEBUG and r.exc_info]
    assert len(kept) == 1, [(r.name, r.getMessage()) for r in debug]
    record = kept[0]
    assert record.exc_info is not None and isinstance(record.exc_info[1], cause)
    printed = caplog.text
    assert type(record.exc_info[1]).__name__ in printed  # the traceback is in what is printed
    info = logged(caplog, logging.INFO, fail)
    assert [r.getMessage() for r in info] == [r.getMessage() for r in debug if r.levelno >= logging.INFO]
    assert not any(r.exc_info for r in info)
    return record, printed
