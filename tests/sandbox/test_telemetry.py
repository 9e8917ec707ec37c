"""Telemetry is optional and never in the way of an export: a connection string that is not one, with the
exporter's own set-up (which opens a connection). The unit layer's telemetry tests: tests/unit/test_telemetry.py.
"""

from __future__ import annotations

from tests.telemetry_check import configured_with


def test_a_broken_connection_string_is_one_warning_not_a_failed_run(monkeypatch, caplog):
    assert configured_with(monkeypatch, caplog, "not a connection string") is False
    assert "not sent to Application Insights" in caplog.text
