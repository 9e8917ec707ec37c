"""Telemetry is optional and never in the way of an export: a connection string that is not one, with the
exporter's own set-up (which opens a connection). The unit layer's telemetry tests: tests/unit/test_telemetry.py.
"""

from __future__ import annotations

import logging

from graph_export import telemetry


def test_a_broken_connection_string_is_one_warning_not_a_failed_run(monkeypatch, caplog):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "not a connection string")
    telemetry.configure.cache_clear()
    caplog.set_level(logging.WARNING)
    try:
        assert telemetry.configure() is False
    finally:
        telemetry.configure.cache_clear()
    assert "not sent to Application Insights" in caplog.text
