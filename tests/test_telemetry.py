"""Telemetry is optional and never in the way of an export."""

from __future__ import annotations

import logging

from graph_export import telemetry
from graph_export.errors import AuthError


def test_nothing_is_configured_without_a_connection_string(monkeypatch):
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    telemetry.configure.cache_clear()
    assert telemetry.configure() is False


def test_a_broken_connection_string_is_one_warning_not_a_failed_run(monkeypatch, caplog):
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "not a connection string")
    telemetry.configure.cache_clear()
    caplog.set_level(logging.WARNING)
    try:
        assert telemetry.configure() is False
    finally:
        telemetry.configure.cache_clear()
    assert "not sent to Application Insights" in caplog.text


def test_failure_fields_name_the_error_class_and_exit_code():
    assert telemetry.failure_fields(AuthError("x"), "2026-03-07T02:00:00Z") == {
        "export_status": "failed", "export_error": "AuthError", "export_exit_code": 3,
        "export_slot": "2026-03-07T02:00:00Z"}
    assert telemetry.failure_fields(KeyError("bug"), "s")["export_exit_code"] == 1


def test_entra_authentication_only_when_application_insights_asks_for_it():
    assert telemetry._entra_credential("") is None
    assert telemetry._entra_credential("ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD") is not None
