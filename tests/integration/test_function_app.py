"""The Functions door on the local Python (3.11): invoking the user function directly runs a real export.

Its metadata (the binding, the retry options) is tested through the engine Azure runs, in
tests/engine/test_metadata.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone

from azure.functions.timer import TimerRequest

import function_app
from graph_export.naming import LATEST_BLOB

from .helpers import REPO, blob_names, invocation_context, published_manifest, read_json

# Indexing is what the Functions host does at start; the app allows it once per process.
INDEXED = function_app.app.get_functions()


def the_function():
    """The timer's function (the queue trigger's, export_tenant, is tests/engine/test_queue_invocations.py's)."""
    assert sorted(f.get_function_name() for f in INDEXED) == ["export_tenant", "export_users"]
    return next(f for f in INDEXED if f.get_function_name() == "export_users")


def test_a_past_due_invocation_exports_its_scheduled_slot(export_env, caplog):
    caplog.set_level(logging.INFO)
    timer = TimerRequest(past_due=True, schedule_status={
        "Last": "2026-03-06T02:00:00+00:00", "Next": "2026-03-07T02:00:00+00:00",
        "LastUpdated": "2026-03-06T02:00:01+00:00"})
    the_function().get_user_function()(timer, invocation_context())
    blob = published_manifest(export_env, datetime(2026, 3, 7, 2, tzinfo=timezone.utc))["blob"]
    assert blob in blob_names(export_env)
    assert read_json(export_env, LATEST_BLOB)["users"] == 2_500 and read_json(export_env, LATEST_BLOB)["blob"] == blob
    assert "past due" in caplog.text
    summaries = [r for r in caplog.records if "Export succeeded" in r.getMessage()]
    assert len(summaries) == 1 and "2500 users" in summaries[0].getMessage()  # one summary line per run


def test_a_failed_invocation_logs_one_actionable_line_and_fails(export_env, sandbox, caplog, monkeypatch):
    monkeypatch.setenv("CLIENT_SECRET_NAME", "no-such-secret")
    try:
        the_function().get_user_function()(TimerRequest(), invocation_context())
    except Exception as exc:  # the runtime must see the failure to mark the run failed
        assert "no-such-secret" in str(exc)
    else:
        raise AssertionError("the invocation did not fail")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no-such-secret" in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()


def test_a_failure_no_error_class_maps_still_logs_one_line_before_failing(export_env, caplog, monkeypatch):
    def broken_settings():  # stands in for any bug below the door
        raise KeyError("surprise")

    monkeypatch.setattr(function_app, "load_settings", broken_settings)
    try:
        the_function().get_user_function()(TimerRequest(), invocation_context())
    except KeyError:
        pass
    else:
        raise AssertionError("the invocation did not fail")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("Export failed: unexpected KeyError")


# --- each run's fields reach Application Insights (through a local ingestion endpoint) -----------------

_RUN_WITH_TELEMETRY = r"""
import json, os
from azure.functions.timer import TimerRequest

from tests.integration.ingestion import serve
from tests.integration.helpers import invocation_context

received = serve()
import function_app
from opentelemetry._logs import get_logger_provider
function = function_app.app.get_functions()[0].get_user_function()
function(TimerRequest(schedule_status={"Next": "2026-03-07T02:00:00+00:00"}), invocation_context())
os.environ["CLIENT_SECRET_NAME"] = "no-such-secret"
try:
    function(TimerRequest(schedule_status={"Next": "2026-03-08T02:00:00+00:00"}), invocation_context())
except Exception:
    pass
get_logger_provider().force_flush()
print(json.dumps([e["data"]["baseData"] for e in received if e.get("data", {}).get("baseType") == "MessageData"]))
"""


def test_each_runs_fields_reach_application_insights_as_custom_dimensions(export_env):
    env = {**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _RUN_WITH_TELEMETRY], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    succeeded = next(m for m in messages if m["properties"].get("export_status") == "succeeded")
    failed = next(m for m in messages if m["properties"].get("export_status") == "failed")
    fields = succeeded["properties"]
    assert fields["export_users"] == "2500" and fields["export_mode"] == "full" and "export_duration_s" in fields
    assert fields["export_slot"] == "2026-03-07T02:00:00Z" and fields["export_retries"] == "0"
    assert failed["properties"]["export_error"] == "AuthError" and failed["properties"]["export_exit_code"] == "3"
    assert failed["message"].startswith("Export failed: ") and "no-such-secret" in failed["message"]
    assert len(messages) == 2  # only the runs' records: nothing else is exported this way
