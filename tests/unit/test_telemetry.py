"""Telemetry is optional and never in the way of an export."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from pathlib import Path

import pytest

from graph_export import ExportSummary, telemetry
from graph_export.errors import AuthError
from tests.telemetry_check import configured_with


def test_nothing_is_configured_without_a_connection_string(monkeypatch):
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    telemetry.configure.cache_clear()
    assert telemetry.configure() is False


def test_failure_fields_name_the_error_class_and_exit_code():
    assert telemetry.failure_fields(AuthError("x"), "2026-03-07T02:00:00Z") == {
        "export_status": "failed", "export_error": "AuthError", "export_exit_code": 3,
        "export_slot": "2026-03-07T02:00:00Z"}
    assert telemetry.failure_fields(KeyError("bug"), "s")["export_exit_code"] == 1


def test_entra_authentication_only_when_application_insights_asks_for_it():
    assert telemetry._entra_credential("") is None
    assert telemetry._entra_credential("ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD") is not None


# --- issue 20, item 3: an endpoint with a password is refused; the exit flush is bounded ----------------


IKEY = "InstrumentationKey=00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize("connection_string, key, what", [
    (f"{IKEY};IngestionEndpoint=https://admin:pw-0123@westeurope-5.in.applicationinsights.azure.com/",
     "IngestionEndpoint", "contains a user name or password (text before '@', not shown)"),
    (f"{IKEY};ingestionendpoint=https://user@host.example/", "ingestionendpoint",
     "contains a user name or password (text before '@', not shown)"),
    (f"{IKEY};IngestionEndpoint=https://host.example/;LiveEndpoint=https://live.example/?code=pw-0123",
     "LiveEndpoint", "has a query string or fragment (not shown)"),
])
def test_an_endpoint_with_a_password_or_query_is_one_warning_and_telemetry_off(monkeypatch, caplog,
                                                                                connection_string, key, what):
    # On b28d639 the first is configured as given (and azure-core's INFO lines print the URL, password included).
    assert configured_with(monkeypatch, caplog, connection_string) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"Run fields are not sent to Application Insights: APPLICATIONINSIGHTS_CONNECTION_STRING's "
                        f"{key} {what}: remove it; the endpoint is the base URL only, e.g. "
                        "https://<region>.in.applicationinsights.azure.com/"]
    assert "pw-0123" not in caplog.text and "admin" not in caplog.text and "user@" not in caplog.text


def test_a_plain_endpoint_is_no_problem():
    assert telemetry.endpoint_problem(f"{IKEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
                                      "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/;"
                                      "ApplicationId=11111111-2222-3333-4444-555555555555") is None


class _StuckProvider:
    """A provider whose shutdown waits on an ingestion endpoint that never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def shutdown(self) -> None:
        self.release.wait(60)


def test_the_exit_flush_waits_at_most_the_bound_and_says_what_was_not_sent(caplog):
    provider = _StuckProvider()
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    try:
        telemetry.shut_down_within(provider, 0.2)
    finally:
        provider.release.set()
    assert time.monotonic() - started < 5
    assert "did not take the last run records within 0.2 s" in caplog.text


def test_the_exit_flush_of_a_provider_that_finishes_is_silent(caplog):
    provider = _StuckProvider()
    provider.release.set()
    caplog.set_level(logging.WARNING)
    telemetry.shut_down_within(provider, 5)
    telemetry.shut_down_within(object(), 5)  # the API's no-op provider (nothing configured) has no shutdown
    assert caplog.records == []


# --- the README's lists of summary and telemetry fields are the whole lists ----------------------------


README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_field_of_the_summary():
    paragraph = README.split("The CLI prints the run's summary as one JSON object on stdout:", 1)[1]
    paragraph = re.sub(r"\([^)]*\)", "", paragraph.split("The timer", 1)[0])  # status values, notes
    listed = set(re.findall(r"`([a-z_0-9]+)`", paragraph))
    assert listed == {f.name for f in dataclasses.fields(ExportSummary)}


def test_readme_lists_every_field_sent_to_application_insights():
    # On b28d639 the README left out export_container, export_manifest, export_url, export_started,
    # export_finished and export_repaired, which every succeeded run sends.
    bullet = README.split("**Each run's fields in Application Insights.**", 1)[1].split("Importing the exporter", 1)[0]
    listed = set(re.findall(r"`(export_[a-z_0-9]+)`", bullet))
    sent = {f"export_{f.name}" for f in dataclasses.fields(ExportSummary)} | set(
        telemetry.failure_fields(AuthError("x"), "s"))
    assert listed == sent
    for status in ("succeeded", "skipped", "repaired", "failed"):
        assert f"`{status}`" in bullet
