"""host.json: what the Functions host enforces around each invocation (graph_export/hostconfig.py reads its queue
options, so that `work` retries as the host does)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def host() -> dict:
    return json.loads((REPO / "host.json").read_text(encoding="utf-8"))


def test_no_timeout_cuts_a_large_export():
    # Flex Consumption's default is 30 minutes; a 1,000,000-user tenant at real Graph latency needs more.
    # "-1" is unbounded (Flex and Premium allow it); the staleness alert guards against a hung run instead.
    assert host()["functionTimeout"] == "-1"


def test_the_staleness_alert_not_the_timeout_is_the_guard_against_a_hung_run():
    alerts = (REPO / "infra" / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    hours = int(re.search(r"param staleAfterHours int = (\d+)", alerts).group(1))
    assert 24 < hours <= 48  # a daily schedule plus slack: a hung run is reported within two days
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`functionTimeout` to `-1`" in readme and "staleness alert" in readme
