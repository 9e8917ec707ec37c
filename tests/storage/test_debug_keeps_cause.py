"""``--debug`` keeps what a one-line error (raised ``from None``) leaves out: the underlying exception, at DEBUG.

Each test makes a real function fail and looks at the log twice: at DEBUG a record of ours carries the
original exception (its type named), at INFO nothing is added. Here the failures come from Azurite (the
unit layer's tests/unit/test_debug_keeps_cause.py has those from fake servers behind the SDKs' transports).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from azure.core.exceptions import HttpResponseError

from graph_export import delta, naming
from graph_export.errors import SlotBusyError
from graph_export.lease import SlotLease
from graph_export.settings import load_settings
from graph_export.slotrun import SlotStore
from tests.logcheck import assert_cause_kept

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


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
