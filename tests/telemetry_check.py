"""Configuring telemetry afresh from one connection string (tests of every layer)."""

from __future__ import annotations

import logging

import pytest

from graph_export import telemetry


def configured_with(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, connection_string: str) -> bool:
    """What ``telemetry.configure()`` answers for ``connection_string`` (its warnings in ``caplog``), uncached
    before and after."""
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", connection_string)
    telemetry.configure.cache_clear()
    caplog.set_level(logging.WARNING)
    try:
        return telemetry.configure()
    finally:
        telemetry.configure.cache_clear()
