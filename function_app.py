"""Azure Functions door: a timer that runs one export per schedule slot; with TENANT_IDS, the timer fans the
slot out (one queue message per tenant on EXPORT_QUEUE) and a queue trigger exports each tenant's slot.

Binding and logging only; the work is in ``graph_export.export.run_export``. Settings are read at
invocation time, not import time, so a misconfigured app still indexes and each failed run says
exactly which setting to fix. Each run's outcome is one record on the ``graph_export.runs`` logger,
whose fields reach Application Insights as ``customDimensions`` (``graph_export.telemetry``).

The worker sets the root logger to INFO, and host.json's log levels are .NET categories that do not
reach Python loggers: azure-core alone would send ~36 INFO records (request and response headers) to
the invocation log of a small run. So the libraries log at LIBRARY_LOG_LEVEL (WARNING unless it asks
for more), our own ``graph_export`` lines at the worker's level. What does reach the host (urllib3's
"Retrying …" warnings name the URL, with a ``$deltatoken`` in delta mode) is redacted
(``graph_export.redact``) by a filter on the worker's handlers and on the runs logger, and the text of
an exception handed back to the host is redacted the same way.

The worker ties a record to the invocation only on the thread it calls the function on; every thread
the export starts (``graph_export.threads``) carries the invocation's id too, set first thing in it.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone
from typing import Iterator

import azure.functions as func

from graph_export import ExportError, load_settings, queues, redact, run_export, telemetry, threads, worker
from graph_export.errors import MessageRejected
from graph_export.naming import slot_from_schedule_status
from graph_export.records import iso
from graph_export.settings import DEFAULT_LIBRARY_LOG_LEVEL

#: The libraries' loggers (the Azure SDK, MSAL, requests/urllib3 under them, the telemetry exporter's).
LIBRARY_LOGGERS = ("azure", "msal", "urllib3", "requests", "opentelemetry")
#: The worker's own logger, under "azure": it keeps the level the worker gives the root logger.
WORKER_LOGGER = "azure.functions"


def library_logging(level: int) -> None:
    """The libraries log at ``level`` and up; the worker's own logger keeps the root's level, ours are left alone.

    Set per invocation, not at import: importing the app (the tests do, on 3.11) changes no logger.
    """
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.getLogger(WORKER_LOGGER).setLevel(logging.getLogger().level)


app = func.FunctionApp()
runs = logging.getLogger(telemetry.RUNS_LOGGER)
runs.setLevel(logging.INFO)  # a succeeded run's record is information, whatever the root logger lets through
redact.install(logging.getLogger(), runs)  # the worker's handler is on the root logger before the app loads


# A failed or timed-out invocation is retried with the same trigger data, so the same slot, which
# resumes from its checkpoint; the timer itself would only try again at the next occurrence.
@app.timer_trigger(schedule="%EXPORT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@app.retry(strategy="exponential_backoff", max_retry_count="3",
           minimum_interval="00:01:00", maximum_interval="00:15:00")
def export_users(timer: func.TimerRequest, context: func.Context) -> None:
    """Export every user for the slot this invocation was scheduled for."""
    def carry_invocation_id() -> None:  # what the Python developer reference asks of a function's threads
        context.thread_local_storage.invocation_id = context.invocation_id

    with threads.on_start(carry_invocation_id):
        _export(timer)


def _export(timer: func.TimerRequest) -> None:
    library_logging(DEFAULT_LIBRARY_LOG_LEVEL)  # until this invocation has read LIBRARY_LOG_LEVEL
    telemetry.configure()
    redact.install(logging.getLogger(), runs)  # any handler added since import (the worker's, telemetry's)
    now = datetime.now(timezone.utc)
    slot = slot_from_schedule_status(timer.schedule_status, now)
    if timer.past_due:
        logging.warning("Timer is past due: running the missed slot %s now (%s).", slot.isoformat(), now.isoformat())
    with _one_line_on_failure(iso(slot)):
        settings = load_settings()
        library_logging(settings.library_log_level)
        if settings.tenant_ids:  # many tenants: one message each; the queue trigger exports them
            queue, _ = worker.open_queues(settings)
            queues.fan_out(queue, settings.tenant_ids, slot)
            return
        summary = run_export(settings, slot)
    runs.info(summary.line(), extra=summary.fields())


# TENANT_IDS: one tenant's slot per message. The host retries a failed message (host.json extensions.queues:
# maxDequeueCount attempts, visibilityTimeout apart) and then moves it to <EXPORT_QUEUE>-poison; a message no
# attempt can process is moved there at once. Without TENANT_IDS the queue is never written, so this never runs.
@app.queue_trigger(arg_name="message", queue_name="%EXPORT_QUEUE%", connection="EXPORT_STORAGE")
def export_tenant(message: func.QueueMessage, context: func.Context) -> None:
    """Export the tenant and slot one fan-out message names."""
    def carry_invocation_id() -> None:
        context.thread_local_storage.invocation_id = context.invocation_id

    with threads.on_start(carry_invocation_id):
        _export_message(message.get_body().decode("utf-8", errors="replace"))


def _export_message(text: str) -> None:
    library_logging(DEFAULT_LIBRARY_LOG_LEVEL)
    telemetry.configure()
    redact.install(logging.getLogger(), runs)
    summary = None
    with _one_line_on_failure(""):
        settings = load_settings()
        library_logging(settings.library_log_level)
        try:
            summary = worker.process(settings, text)
        except MessageRejected:
            _, poison = worker.open_queues(settings)  # no attempt can process it: straight to poison, not retried
            queues.send_text(poison, text)
            raise
    if summary is not None:  # None: the message was rejected, logged and moved to the poison queue
        runs.info(summary.line(), extra=summary.fields())


@contextlib.contextmanager
def _one_line_on_failure(slot: str) -> Iterator[None]:
    """One ``Export failed:`` line for the log and the failure alert, then re-raised (redacted) so the host counts
    the invocation as failed and retries it; a rejected message is logged and swallowed (it is in poison now)."""
    try:
        yield
    except MessageRejected as exc:
        runs.error("Export failed: %s", exc, extra=telemetry.failure_fields(exc, slot))
    except ExportError as exc:
        runs.error("Export failed: %s", exc, extra=telemetry.failure_fields(exc, slot))
        redact.scrub_exception(exc)  # the host shows its text and traceback
        raise
    except Exception as exc:  # a bug or an unmapped failure: still one line, then the host's traceback
        runs.error("Export failed: unexpected %s; nothing was published. Report it with this "
                   "invocation's traceback.", type(exc).__name__, extra=telemetry.failure_fields(exc, slot))
        redact.scrub_exception(exc)  # the host shows its text and traceback (a URL's query, say): redacted
        raise
