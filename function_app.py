"""Azure Functions door: a timer that runs one export per schedule slot.

Binding and logging only; the work is in ``graph_export.export.run_export``. Settings are read at
invocation time, not import time, so a misconfigured app still indexes and each failed run says
exactly which setting to fix. Each run's outcome is one record on the ``graph_export.runs`` logger,
whose fields reach Application Insights as ``customDimensions`` (``graph_export.telemetry``).

The worker's root logger is at INFO, so the libraries' INFO and WARNING lines reach the host too
(urllib3's "Retrying …" warnings name the URL, with a ``$deltatoken`` in delta mode): every record is
redacted (``graph_export.redact``) by a filter on the worker's handlers and on the runs logger, and
the text of an exception handed back to the host is redacted the same way.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import azure.functions as func

from graph_export import ExportError, load_settings, redact, run_export, telemetry
from graph_export.naming import slot_from_schedule_status
from graph_export.records import iso

app = func.FunctionApp()
runs = logging.getLogger(telemetry.RUNS_LOGGER)
runs.setLevel(logging.INFO)  # a succeeded run's record is information, whatever the root logger lets through
redact.install(logging.getLogger(), runs)  # the worker's handler is on the root logger before the app loads


# A failed or timed-out invocation is retried with the same trigger data, so the same slot, which
# resumes from its checkpoint; the timer itself would only try again at the next occurrence.
@app.timer_trigger(schedule="%EXPORT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@app.retry(strategy="exponential_backoff", max_retry_count="3",
           minimum_interval="00:01:00", maximum_interval="00:15:00")
def export_users(timer: func.TimerRequest) -> None:
    """Export every user for the slot this invocation was scheduled for."""
    telemetry.configure()
    redact.install(logging.getLogger(), runs)  # any handler added since import (the worker's, telemetry's)
    now = datetime.now(timezone.utc)
    slot = slot_from_schedule_status(timer.schedule_status, now)
    if timer.past_due:
        logging.warning("Timer is past due: running the missed slot %s now (%s).", slot.isoformat(), now.isoformat())
    try:
        summary = run_export(load_settings(), slot)
    except ExportError as exc:
        # One actionable line for the log and the failure alert; re-raised so the run counts as failed.
        runs.error("Export failed: %s", exc, extra=telemetry.failure_fields(exc, iso(slot)))
        redact.scrub_exception(exc)  # the host shows its text and traceback
        raise
    except Exception as exc:  # a bug or an unmapped failure: still one line, then the host's traceback
        runs.error("Export failed: unexpected %s; nothing was published. Report it with this "
                   "invocation's traceback.", type(exc).__name__, extra=telemetry.failure_fields(exc, iso(slot)))
        redact.scrub_exception(exc)  # the host shows its text and traceback (a URL's query, say): redacted
        raise
    runs.info(summary.line(), extra=summary.fields())
