"""An Application Insights endpoint that is wrong never costs an export or leaks a password (issue 20, item 3).

Each test runs the timer function in a subprocess, as the Functions worker would (its root logger
at INFO), with telemetry pointed at a local endpoint: one whose URL carries a user name and password,
and one that accepts connections but never answers.

On b28d639 both fail: the first configures telemetry anyway and azure-core's INFO line prints
``Request URL: 'http://admin:pw@…'``; the second keeps the process alive ~60 s after a ~1 s export
(the SDK's exit flush waits 30 s for the log records, then 30 s for the metrics it sets up although
``disable_metrics=True`` was passed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .helpers import blob_names

REPO = Path(__file__).resolve().parents[2]
#: A bound, not a benchmark: the export takes about a second, the exit flush at most EXIT_FLUSH_S (5 s).
EXIT_WITHIN_S = 15

_INVOKE = r"""
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from azure.functions.timer import TimerRequest
import function_app
from tests.integration.helpers import invocation_context
from opentelemetry.metrics import get_meter_provider
from opentelemetry.trace import get_tracer_provider

function_app.app.get_functions()[0].get_user_function()(TimerRequest(schedule_status={"Next": sys.argv[1]}),
                                                   invocation_context())
print("providers:", type(get_tracer_provider()).__name__, type(get_meter_provider()).__name__)
print("invocation done", flush=True)
"""


@pytest.fixture
def silent_endpoint():
    """A TCP port that accepts connections and never answers (a black-holing proxy or firewall)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], held
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def invoke_function(connection_string: str, slot: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string,
           "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _INVOKE, slot], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    return done, time.monotonic() - started


def test_an_ingestion_endpoint_with_a_password_is_refused_and_the_export_runs(export_env, silent_endpoint):
    port, held = silent_endpoint
    done, _ = invoke_function("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                              f"IngestionEndpoint=http://admin:pw-0123456789@127.0.0.1:{port}/",
                              "2026-03-07T02:00:00+00:00")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "invocation done" in done.stdout and "Export succeeded" in done.stderr
    assert any(name.endswith(".jsonl.gz") for name in blob_names(export_env))
    warnings = [line for line in done.stderr.splitlines() if "APPLICATIONINSIGHTS_CONNECTION_STRING" in line]
    assert warnings == ["WARNING graph_export.telemetry: Run fields are not sent to Application Insights: "
                        "APPLICATIONINSIGHTS_CONNECTION_STRING's IngestionEndpoint contains a user name or password "
                        "(text before '@', not shown): remove it; the endpoint is the base URL only, e.g. "
                        "https://<region>.in.applicationinsights.azure.com/"]
    everything = done.stdout + done.stderr
    assert "pw-0123456789" not in everything and "admin" not in everything
    assert held == []  # telemetry off: nothing was even sent there


def test_an_ingestion_endpoint_that_never_answers_does_not_hold_the_process_at_exit(export_env, silent_endpoint):
    port, held = silent_endpoint
    done, took = invoke_function("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                 f"IngestionEndpoint=http://127.0.0.1:{port}/", "2026-03-07T02:00:00+00:00")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "invocation done" in done.stdout and "Export succeeded" in done.stderr
    assert held, "the run's record was never sent to the endpoint: the test would prove nothing"
    assert took < EXIT_WITHIN_S, f"the process took {took:.1f} s to exit"
    assert "did not take the last run records within 5 s" in done.stderr
    # Only the runs logger is exported: no tracer or meter provider is set up (each would flush at exit too).
    assert "providers: ProxyTracerProvider _ProxyMeterProvider" in done.stdout
