"""One run per slot: the lease on a slot's lock blob, against Azurite."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from azure.storage.blob import BlobLeaseClient

from graph_export import lease
from graph_export.errors import SlotBusyError, StorageError
from graph_export.lease import SlotLease
from graph_export.naming import lock_blob_name

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)


@pytest.fixture
def container(blob_container):
    return blob_container


def test_a_second_run_of_the_slot_is_refused_while_the_first_holds_it(container):
    with SlotLease(container, SLOT) as first:
        with pytest.raises(SlotBusyError, match="Another run is exporting slot 2026-03-07T02:00:00Z"):
            SlotLease(container, SLOT).__enter__()
        first.ensure()  # still ours
        with SlotLease(container, datetime(2026, 3, 8, 2, tzinfo=timezone.utc)):
            pass  # another slot is independent
    with SlotLease(container, SLOT):  # released on exit: the next run gets in at once
        pass


def test_a_lease_taken_over_stops_every_later_write(container, monkeypatch):
    monkeypatch.setattr(lease, "SAFE_MARGIN_S", lease.LEASE_S)  # ensure() always asks the service
    with SlotLease(container, SLOT) as stalled:
        # As if this run stalled past its lease and another run took the slot over.
        BlobLeaseClient(container.get_blob_client(lock_blob_name(SLOT))).break_lease(lease_break_period=0)
        BlobLeaseClient(container.get_blob_client(lock_blob_name(SLOT))).acquire(lease_duration=15)
        with pytest.raises(SlotBusyError, match="lost slot .* published nothing"):
            stalled.ensure()
        with pytest.raises(SlotBusyError):
            stalled.ensure()  # and stays lost


def test_a_run_that_failed_still_lets_the_next_one_in(container):
    with pytest.raises(RuntimeError):
        with SlotLease(container, SLOT):
            raise RuntimeError("the export failed")
    with SlotLease(container, SLOT):
        pass


def test_a_lock_removed_by_the_run_that_took_over_counts_as_lost(container, monkeypatch):
    monkeypatch.setattr(lease, "SAFE_MARGIN_S", lease.LEASE_S)
    with SlotLease(container, SLOT) as stalled:
        lock = container.get_blob_client(lock_blob_name(SLOT))
        BlobLeaseClient(lock).break_lease(lease_break_period=0)
        lock.delete_blob()  # what the other run does when it finishes
        with pytest.raises(SlotBusyError, match="lost slot"):
            stalled.ensure()


def test_an_infinite_lease_no_run_takes_says_how_to_break_it(container):
    lock = container.get_blob_client(lock_blob_name(SLOT))
    lock.upload_blob(b"")
    foreign = BlobLeaseClient(lock)
    foreign.acquire(lease_duration=-1)  # infinite: e.g. a tool or an operator, never our 15 s lease
    with pytest.raises(SlotBusyError) as info:
        SlotLease(container, SLOT).__enter__()
    message = str(info.value)
    assert "infinite lease on state/users-20260307T020000Z.lock" in message
    assert "runs out within" not in message  # it never does
    command = (f"az storage blob lease break --account-name devstoreaccount1 --container-name "
               f"{container.container_name} --blob-name state/users-20260307T020000Z.lock")
    assert command in message and "--auth-mode login" in message
    foreign.break_lease(lease_break_period=0)  # what that command does
    with SlotLease(container, SLOT):
        pass


def test_another_runs_15_s_lease_keeps_the_wait_and_retry_advice(container):
    with SlotLease(container, SLOT):
        with pytest.raises(SlotBusyError) as info:
            SlotLease(container, SLOT).__enter__()
    assert "the lease runs out within 15 s, then run again" in str(info.value)
    assert "az storage blob lease break" not in str(info.value)


def test_a_failure_of_a_run_that_lost_the_slot_meanwhile_is_reported_as_that_loss(container, monkeypatch):
    # A run frozen past its lease wakes mid-write and fails on a blob the run that took over removed:
    # the operator hears that the slot was lost and nothing was published, not a storage 404.
    monkeypatch.setattr(lease, "SAFE_MARGIN_S", lease.LEASE_S)
    with pytest.raises(SlotBusyError, match="lost slot .* published nothing") as raised:
        with SlotLease(container, SLOT):
            lock = container.get_blob_client(lock_blob_name(SLOT))
            BlobLeaseClient(lock).break_lease(lease_break_period=0)
            BlobLeaseClient(lock).acquire(lease_duration=15)
            raise StorageError("Blob users/…ids not found while appending: published nothing; run again.")
    assert isinstance(raised.value.__cause__, StorageError)


def test_a_failure_while_the_slot_is_still_held_stands_as_it_is(container, monkeypatch):
    monkeypatch.setattr(lease, "SAFE_MARGIN_S", lease.LEASE_S)
    with pytest.raises(StorageError, match="appending"):
        with SlotLease(container, SLOT):
            raise StorageError("Blob not found while appending.")
    with SlotLease(container, SLOT):  # and the lock was released
        pass
