"""Each run's outcome as structured fields in Application Insights, not only as a line of text.

The Functions host forwards a worker's log lines as text. For KQL and alerts to query a run's users,
duration, retries or error class, the run's one record (logger :data:`RUNS_LOGGER`) also goes to
Application Insights through OpenTelemetry (``azure-monitor-opentelemetry``), where its fields become
``customDimensions``: ``export_status``, ``export_users``, ``export_duration_s`` … Only that logger
is exported this way (no tracing, metrics or instrumentations), with the function's managed identity
when Application Insights requires Entra ID authentication (local auth off). Configured once per
process, and only where APPLICATIONINSIGHTS_CONNECTION_STRING is set (Azure, or a local run that
asks for it): importing the exporter costs ~0.2 s, so nothing else pays it.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from .errors import ExportError

#: The logger whose records carry a run's fields; the function app logs each run's outcome there.
RUNS_LOGGER = "graph_export.runs"


@functools.lru_cache(maxsize=1)
def configure() -> bool:
    """Export :data:`RUNS_LOGGER`'s records to Application Insights if it is configured; whether it is."""
    connection_string = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if not connection_string:
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=connection_string,
            credential=_entra_credential(os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")),
            logger_name=RUNS_LOGGER,
            disable_tracing=True,
            disable_metrics=True,
            enable_live_metrics=False,
            instrumentation_options={name: {"enabled": False} for name in (
                "azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")},
        )
    except Exception as exc:  # telemetry must never stop an export: the host still logs every line as text
        logging.getLogger(__name__).warning(
            "Run fields are not sent to Application Insights (%s: %s); check APPLICATIONINSIGHTS_CONNECTION_STRING",
            type(exc).__name__, str(exc)[:200])
        return False
    return True


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
