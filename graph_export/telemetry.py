"""Each run's outcome as structured fields in Application Insights, not only as a line of text.

The Functions host forwards a worker's log lines as text. For KQL and alerts to query a run's users,
duration, retries or error class, the run's one record (logger :data:`RUNS_LOGGER`) also goes to
Application Insights through OpenTelemetry (``azure-monitor-opentelemetry``), where its fields become
``customDimensions``: ``export_status``, ``export_users``, ``export_duration_s`` … Only that logger
is exported this way (no tracing, metrics or instrumentations), with the function's managed identity
when Application Insights requires Entra ID authentication (local auth off). Configured once per
process, and only where APPLICATIONINSIGHTS_CONNECTION_STRING is set (Azure, or a local run that
asks for it): importing the exporter costs ~0.2 s, so nothing else pays it.

An endpoint in the connection string with a user name or password (``https://admin:pw@host/``), a
query or a fragment is refused like the other URL settings: one warning naming the setting (never its
value), telemetry off, the export unaffected. At exit, records still on their way get
:data:`EXIT_FLUSH_S` seconds: an ingestion endpoint that accepts connections but never answers would
otherwise hold the process for a minute (the SDK's own exit flush waits up to 30 s per provider).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
from typing import Any, Iterator

from . import redact, threads
from .errors import ExportError

#: The logger whose records carry a run's fields; the function app logs each run's outcome there.
RUNS_LOGGER = "graph_export.runs"
#: The setting, named in messages (its value never is: it may carry a password).
SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
#: Seconds a process exit waits for run records not yet sent.
EXIT_FLUSH_S = 5.0

log = logging.getLogger(__name__)

# The distro reads these at configure time and turns tracing and metrics off only through them (its
# disable_tracing/disable_metrics arguments are overwritten from the environment); customer SDK stats
# are metrics about the exporter itself, sent to the same resource. Only the runs logger goes out.
_ONLY_LOGS = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
              "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true"}


@functools.lru_cache(maxsize=1)
def configure() -> bool:
    """Export :data:`RUNS_LOGGER`'s records to Application Insights if it is configured; whether it is."""
    connection_string = os.environ.get(SETTING)
    if not connection_string:
        return False
    if (problem := endpoint_problem(connection_string)) is not None:
        log.warning("Run fields are not sent to Application Insights: %s", problem)
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry._logs import get_logger_provider

        with _environment(_ONLY_LOGS):
            configure_azure_monitor(
                connection_string=connection_string,
                credential=_entra_credential(os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")),
                logger_name=RUNS_LOGGER,
                disable_tracing=True,
                disable_metrics=True,
                enable_live_metrics=False,
                enable_performance_counters=False,
                instrumentation_options={name: {"enabled": False} for name in (
                    "azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")},
            )
        # Registered after the SDK's own exit handler, so it runs first (atexit is last in, first out):
        # once this has shut the provider down, the SDK's handler finds it shut and returns at once.
        atexit.register(shut_down_within, get_logger_provider(), EXIT_FLUSH_S)
    except Exception as exc:  # telemetry must never stop an export: the host still logs every line as text
        log.warning("Run fields are not sent to Application Insights (%s: %s); check %s",
                    type(exc).__name__, redact.redact(str(exc))[:200], SETTING)
        return False
    return True


def endpoint_problem(connection_string: str) -> str | None:
    """Why an endpoint of the connection string is refused (user info, query, fragment), or None.

    The message names the setting and the key, never the value: a user name or password may hold any
    character, so nothing of it is shown.
    """
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if not key.strip().lower().endswith("endpoint"):
            continue
        where = f"{SETTING}'s {key.strip()}"
        if "@" in value:
            return (f"{where} contains a user name or password (text before '@', not shown): remove it; the "
                    "endpoint is the base URL only, e.g. https://<region>.in.applicationinsights.azure.com/")
        if "?" in value or "#" in value:
            return (f"{where} has a query string or fragment (not shown): remove it; the endpoint is the base "
                    "URL only, e.g. https://<region>.in.applicationinsights.azure.com/")
    return None


def shut_down_within(provider: Any, seconds: float) -> None:
    """Shut ``provider`` down (its last records sent), waiting at most ``seconds`` for it."""
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is None:  # the API's no-op provider: nothing was set up
        return
    worker = threads.start(shutdown, name="telemetry-exit-flush")
    worker.join(seconds)
    if worker.is_alive():
        log.warning("Application Insights did not take the last run records within %g s; they were not sent "
                    "(check the ingestion endpoint of %s and the network path)", seconds, SETTING)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment inside the block, the environment as it was after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _entra_credential(authentication: str) -> Any:
    """The managed identity named by ``ClientId=…;Authorization=AAD`` (the Functions convention), if any."""
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=parts.get("ClientId") or None)


def failure_fields(error: BaseException, slot: str) -> dict[str, Any]:
    """A failed run's fields: its error class (what the failure alert and KQL group by) and exit code."""
    code = error.exit_code if isinstance(error, ExportError) else 1
    return {"export_status": "failed", "export_error": type(error).__name__, "export_exit_code": code,
            "export_slot": slot}
