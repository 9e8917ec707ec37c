"""Each tenant's last failure, kept in its own state (``state/failure.json`` below its root) for ``status``.

Written when a tenant's export fails with an ExportError (its one line, redacted again: it never holds a
secret); a later success does not remove it, ``status`` shows it only while it is newer than the latest
published slot. Writing it never hides the failure itself: if storage refuses, a warning says so and the
original error goes on.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone
from typing import Iterator

from azure.storage.blob import ContainerClient

from . import redact, storage
from .errors import ExportError, StorageError
from .naming import FAILURE_BLOB
from .records import FailureRecord, RecordError, iso

log = logging.getLogger(__name__)


def record(state: ContainerClient, slot: datetime, error: ExportError) -> None:
    """Keep ``error`` as the tenant's last failure (``state``: its state container, seen from its root)."""
    failure = FailureRecord(slot=slot, failed=datetime.now(timezone.utc), error=redact.redact(str(error)),
                            exit_code=error.exit_code)
    try:
        storage.write_json(state, FAILURE_BLOB, failure.to_document())
    except StorageError as why:
        log.warning("The failure of slot %s was not recorded for status (%s)", iso(slot), why)


@contextlib.contextmanager
def kept(state: ContainerClient, slot: datetime) -> Iterator[None]:
    """An ExportError inside is recorded (:func:`record`) for ``slot``, then raised on."""
    try:
        yield
    except ExportError as error:
        record(state, slot, error)
        raise


def last(state: ContainerClient) -> FailureRecord | None:
    """The tenant's last recorded failure, None if there is none (or it is unreadable: status goes on)."""
    try:
        document = storage.read_json(state, FAILURE_BLOB)
        return None if document is None else FailureRecord.parse(document)
    except RecordError as why:
        log.warning("%s is not a failure record (%s); ignored", FAILURE_BLOB, why)
        return None
