"""One run per slot: a blob lease on the slot's lock blob, held and renewed while the run lives.

Two invocations of one slot happen in real life (the function's retry while a hung invocation still
runs, a ``past_due`` catch-up, an operator's CLI run beside the timer). Whoever holds the lease
exports the slot; the other stops at once with :class:`SlotBusyError`. The lease is the shortest
Blob Storage grants, so a killed run frees its slot within seconds, and it is renewed on a
background thread. Every publishing write first calls :meth:`SlotLease.ensure`, which only returns
while the lease is certainly still ours for a while longer; a run that stalled past its lease
learns so there and publishes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from . import naming, threads
from .errors import SlotBusyError, StorageError
from .records import iso
from .storage import storage_errors

log = logging.getLogger(__name__)

#: Seconds a lease lasts without renewal: the shortest Blob Storage grants (15-60).
LEASE_S = 15
#: How often the background thread renews it.
RENEW_EVERY_S = 5.0
#: A write is only made when the lease has at least this long left; otherwise it is renewed first.
SAFE_MARGIN_S = 8.0

_LOST_CODES = {"LeaseIdMismatchWithLeaseOperation", "LeaseNotPresentWithLeaseOperation", "LeaseLost",
               "LeaseAlreadyPresent"}


class SlotLease:
    """The lease on one slot's lock blob; use as a context manager around the slot's export."""

    def __init__(self, container: ContainerClient, slot: datetime) -> None:
        self._slot = iso(slot)
        self._blob = container.get_blob_client(naming.lock_blob_name(slot))
        self._lease = BlobLeaseClient(self._blob)
        self._mutex = threading.Lock()
        self._renewed_at = 0.0
        self._lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> "SlotLease":
        self._acquire()
        self._renewer = threads.start(self._keep_renewing, name="slot-lease")
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        lost = self._lost_meanwhile(exc)
        if not self._lost:
            try:  # let the next run in now rather than when the lease runs out, and leave no lock behind
                self._blob.delete_blob(lease=self._lease)
            except Exception as error:  # noqa: BLE001 - the lease runs out on its own within LEASE_S
                log.debug("removing the slot lock failed (%s); its lease runs out by itself", type(error).__name__)
        if lost is not None:
            raise lost from exc

    def _lost_meanwhile(self, failure: BaseException | None) -> SlotBusyError | None:
        """Whether ``failure`` came from a run that had lost the slot: a run that stalled past its lease and woke
        mid-write fails on what the run that took over changed (a blob it finished and removed, say); that loss,
        not the storage error, is what happened and what the operator must hear."""
        if not isinstance(failure, Exception) or isinstance(failure, SlotBusyError):
            return None
        try:
            self.ensure()
        except SlotBusyError as busy:
            return busy
        except StorageError:  # cannot tell now: the failure stands as it is
            pass
        return None

    def ensure(self) -> None:
        """Return only while this run certainly holds the slot for at least ``SAFE_MARGIN_S`` more."""
        with self._mutex:
            if self._lost:
                raise self._busy(taken_over=True)
            if time.monotonic() - self._renewed_at < LEASE_S - SAFE_MARGIN_S:
                return
            self._renew()

    # -- internals ---------------------------------------------------------------------------------

    def _acquire(self) -> None:
        with storage_errors(f"locking slot {self._slot}"):
            try:  # the lock blob is empty and never changes; only its lease matters
                self._blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            asked = time.monotonic()
            try:
                self._lease.acquire(lease_duration=LEASE_S)
            except HttpResponseError as error:
                code = getattr(error, "error_code", None)
                if error.status_code == 409 and code in ("LeaseAlreadyPresent", "LeaseIsBreakingAndCannotBeAcquired"):
                    log.debug("The lease of slot %s is held", self._slot, exc_info=True)
                    raise self._held() from None
                raise
        self._renewed_at = asked

    def _renew(self) -> None:
        """Renew now (caller holds the mutex); a lease another run has taken marks this run lost."""
        asked = time.monotonic()
        try:
            with storage_errors(f"renewing the lease of slot {self._slot}"):
                try:
                    self._lease.renew()
                except HttpResponseError as error:
                    lock_gone = error.status_code == 404  # the run that took over finished and removed it
                    if lock_gone or getattr(error, "error_code", None) in _LOST_CODES:
                        self._lost = True
                        log.debug("The lease of slot %s could not be renewed", self._slot, exc_info=True)
                        raise self._busy(taken_over=True) from None
                    raise
        except StorageError:
            if time.monotonic() - self._renewed_at >= LEASE_S:
                self._lost = True  # it may have run out meanwhile: never write on a maybe
            raise
        self._renewed_at = asked

    def _keep_renewing(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            with self._mutex:
                if self._lost:
                    return
                try:
                    self._renew()
                except SlotBusyError:
                    return  # taken over: the next ensure() says so, once
                except Exception as error:  # noqa: BLE001 - transient; ensure() fails closed if it lasts
                    log.warning("Could not renew the lease of slot %s (%s)", self._slot, type(error).__name__)

    def _held(self) -> SlotBusyError:
        """Why the lock blob's lease is not ours: another run's (15 s, fixed), or one no run of ours takes."""
        try:
            lease_now = self._blob.get_blob_properties().lease
            duration, state = lease_now.duration, lease_now.state
        except Exception as error:  # noqa: BLE001 - only the advice depends on it: say what is known
            log.debug("reading the lease of %s failed (%s)", self._blob.blob_name, type(error).__name__)
            duration = state = None
        if state == "breaking":
            return SlotBusyError(
                f"The lease on {self._blob.blob_name} (slot {self._slot}) is being broken: nothing was exported; "
                f"run again once its break period is over.")
        if duration == "infinite":
            return SlotBusyError(
                f"Slot {self._slot} is locked by an infinite lease on {self._blob.blob_name}, which no run of this "
                f"export takes (its leases last {LEASE_S} s), so it never runs out: nothing was exported. If no "
                f"one should hold it, break it: {self._break_command()}; then run again.")
        return self._busy(taken_over=False)

    def _break_command(self) -> str:
        """The az command that breaks the lock blob's lease at once (names only, never a key or SAS)."""
        return (f"az storage blob lease break --account-name {self._blob.account_name} --container-name "
                f"{self._blob.container_name} --blob-name {self._blob.blob_name} --lease-break-period 0 "
                "--auth-mode login")

    def _busy(self, *, taken_over: bool) -> SlotBusyError:
        if taken_over:
            return SlotBusyError(
                f"This run lost slot {self._slot} to another run (it stalled past its {LEASE_S} s lease on "
                f"{self._blob.blob_name}): it published nothing; the other run exports the slot."
            )
        return SlotBusyError(
            f"Another run is exporting slot {self._slot} right now (it holds the lease on {self._blob.blob_name}): "
            f"nothing to do; if no other run is active, the lease runs out within {LEASE_S} s, then run again."
        )
