"""``--debug`` keeps what a one-line error (raised ``from None``) leaves out: the underlying exception, at DEBUG.

Each test makes a real function fail and looks at the log twice: at DEBUG a record of ours carries the
original exception (its type named), at INFO nothing is added. Here the failures come from Azurite (the
unit layer's tests/unit/test_debug_keeps_cause.py has those from fake servers behind the SDKs' transports).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Callable

import pytest
from azure.core.exceptions import HttpResponseError

from graph_export import delta, naming
from graph_export.errors import SlotBusyError
from graph_export.lease import SlotLease
from graph_export.settings import load_settings
from graph_export.slotrun import SlotStore

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


def logged(caplog: pytest.LogCaptureFixture, level: int, fail: Callable[[], object]) -> list[logging.LogRecord]:
    """Our records while ``fail()`` runs with the graph_export log at ``level``."""
    caplog.clear()
    with caplog.at_level(level, logger="graph_export"):
        fail()
    return [r for r in caplog.records if r.name.startswith("graph_export")]


def assert_cause_kept(caplog: pytest.LogCaptureFixture, fail: Callable[[], object], logger: str,
                      cause: type[BaseException]) -> tuple[logging.LogRecord, str]:
    """At DEBUG one record of ``logger`` holds a ``cause`` (named in the text printed, returned too); at INFO no
    record is added."""
    debug = logged(caplog, logging.DEBUG, fail)
    kept = [r for r in debug if r.name == logger and r.levelno == logging.DEBUG and r.exc_info]
    assert len(kept) == 1, [(r.name, r.getMessage()) for r in debug]
    record = kept[0]
    assert record.exc_info is not None and isinstance(record.exc_info[1], cause)
    printed = caplog.text
    assert type(record.exc_info[1]).__name__ in printed  # the traceback is in what is printed
    info = logged(caplog, logging.INFO, fail)
    assert [r.getMessage() for r in info] == [r.getMessage() for r in debug if r.levelno >= logging.INFO]
    assert not any(r.exc_info for r in info)
    return record, printed


# --- Azurite: a delta state that is not JSON, a lease another run holds ------------------------------


def test_a_delta_state_that_is_not_json_falls_back_keeping_where_the_decoder_stopped(caplog, blob_container):
    blob_container.upload_blob(naming.DELTA_STATE_BLOB, b'{"deltaLink": "https://graph', overwrite=True)
    store = SlotStore(blob_container, blob_container, SLOT, blob_container.container_name)
    settings = load_settings({"TENANT_ID": "contoso.onmicrosoft.com", "CLIENT_ID": str(uuid.uuid4()),
                              "KEY_VAULT_URL": "https://kv-export.vault.azure.net/",
                              "EXPORT_STORAGE__blobServiceUri": "https://stexport.blob.core.windows.net/"})

    def fail() -> None:
        with pytest.raises(delta.FallBack, match=r"the delta state is not valid \(state/delta.json is not JSON\)"):
            delta.load_base(store, settings, SLOT)

    record, printed = assert_cause_kept(caplog, fail, "graph_export.storage", json.JSONDecodeError)
    assert record.getMessage() == "state/delta.json is not JSON"
    assert "line 1 column" in printed


def test_a_lease_another_run_holds_keeps_storages_answer_at_debug(caplog, blob_container):
    with SlotLease(blob_container, SLOT):
        def fail() -> None:
            with pytest.raises(SlotBusyError, match="Another run is exporting slot 2026-03-07T02:00:00Z"):
                SlotLease(blob_container, SLOT).__enter__()

        record, printed = assert_cause_kept(caplog, fail, "graph_export.lease", HttpResponseError)
    assert record.getMessage() == "The lease of slot 2026-03-07T02:00:00Z is held"
    assert "LeaseAlreadyPresent" in printed
