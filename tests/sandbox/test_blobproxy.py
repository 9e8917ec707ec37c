"""The Blob fault proxy itself: transparent when idle, faults fire as written, the SDK sees them."""

from __future__ import annotations

import http.client
import uuid

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobLeaseClient, ContainerClient, ContentSettings, ExponentialRetry

from sandbox.blobproxy import BlobFaultProxy

FAST_RETRY = ExponentialRetry(initial_backoff=0.01, increment_base=0.01, retry_total=3, random_jitter_range=0.01)


@pytest.fixture
def proxy(azurite):
    with BlobFaultProxy(azurite) as running:
        yield running


@pytest.fixture
def container(proxy):
    client = ContainerClient.from_connection_string(proxy.connection_string, f"proxy-{uuid.uuid4().hex[:10]}",
                                                    retry_policy=FAST_RETRY)
    client.create_container()
    return client


def test_traffic_passes_through_unchanged(container, proxy):
    container.upload_blob("a.txt", b"hello" * 1000)
    assert container.download_blob("a.txt").readall() == b"hello" * 1000
    assert container.get_blob_client("a.txt").get_blob_properties().size == 5000
    assert all(outcome in (200, 201, 206) for *_, outcome in proxy.requests)


def test_a_503_on_put_block_is_retried_by_the_sdk(container, proxy):
    rule = proxy.add("503", query_contains="comp=block", count=1)
    blob = container.get_blob_client("b.bin")
    blob.stage_block("00000000", b"x" * 100)
    blob.commit_block_list(["00000000"])
    assert rule.fired == 1
    outcomes = [o for _, _, target, o in proxy.requests if "comp=block&" in target or target.endswith("comp=block")]
    assert outcomes[:2] == [503, 201]


def test_a_reset_is_retried_by_the_sdk(container, proxy):
    rule = proxy.add("reset", method="PUT", count=1)
    container.upload_blob("c.txt", b"data")
    assert rule.fired == 1 and container.download_blob("c.txt").readall() == b"data"
    assert "reset" in [o for *_, o in proxy.requests]


def test_persistent_faults_surface_after_the_sdks_retries(container, proxy):
    proxy.add("503", method="PUT", count=None)
    with pytest.raises(HttpResponseError) as info:
        container.upload_blob("d.txt", b"data")
    assert info.value.status_code == 503
    proxy.clear()
    proxy.add("reset", method="PUT", count=None)
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        container.upload_blob("e.txt", b"data")


# --- A container-level WORM policy (time-based retention), which Azurite itself lacks -----------------

IMMUTABLE = "BlobImmutableDueToPolicy"
NAME = "dir/ä b%+.txt"  # percent-encoded on the wire: the proxy must decode it and ask about this very blob


@pytest.fixture
def worm(proxy):
    """A protected container holding one committed blob, and an unprotected one whose name extends it."""
    name = f"worm-{uuid.uuid4().hex[:10]}"
    protected = ContainerClient.from_connection_string(proxy.connection_string, name, retry_policy=FAST_RETRY)
    other = ContainerClient.from_connection_string(proxy.connection_string, name + "x", retry_policy=FAST_RETRY)
    for client in (protected, other):
        client.create_container()
        client.upload_blob(NAME, b"original", metadata={"state": "sealed"})
        client.upload_blob("source.txt", b"replacement")
    proxy.protect_container(name)
    yield protected, other
    proxy.unprotect_container(name)
    for client in (protected, other):
        client.delete_container()


MESSAGES = {  # as Azure words them (see the comments at the top of sandbox/blobproxy.py)
    IMMUTABLE: "This operation is not permitted as the blob is immutable due to a policy.",
    "ContainerImmutabilityPolicyLocked":
        "The requested operation is not allowed as the container has a locked immutability policy.",
}


def path_of(container):
    return "/" + container.url.split("/", 3)[3]


def assert_refused(info, code=IMMUTABLE):
    error = info.value
    assert (error.status_code, error.error_code) == (409, code)
    assert error.response.headers["x-ms-error-code"] == code
    assert f"<Code>{code}</Code><Message>{MESSAGES[code]}\nRequestId:" in error.response.text()


def assert_untouched(container):
    blob = container.get_blob_client(NAME)
    properties = blob.get_blob_properties()
    assert blob.download_blob().readall() == b"original"
    assert properties.metadata == {"state": "sealed"}
    assert properties.content_settings.content_type == "application/octet-stream"
    assert sorted(b.name for b in container.list_blobs(include=["snapshots"])) == sorted([NAME, "source.txt"])


def stage_and_commit(container):
    blob = container.get_blob_client(NAME)
    blob.stage_block("AAAA", b"replacement")
    blob.commit_block_list(["AAAA"])


OVERWRITES = {
    "put blob, overwrite=True": lambda c: c.get_blob_client(NAME).upload_blob(b"replacement", overwrite=True),
    "put block list": stage_and_commit,
    "copy blob onto it": lambda c: c.get_blob_client(NAME).start_copy_from_url(c.get_blob_client("source.txt").url),
    "set blob metadata": lambda c: c.get_blob_client(NAME).set_blob_metadata({"state": "changed"}),
    "set blob properties": lambda c: c.get_blob_client(NAME).set_http_headers(ContentSettings(content_type="a/b")),
    "snapshot blob": lambda c: c.get_blob_client(NAME).create_snapshot(),
    "delete blob": lambda c: c.get_blob_client(NAME).delete_blob(),
}


@pytest.mark.parametrize("operation", OVERWRITES)
def test_a_protected_blob_cannot_be_overwritten_changed_or_deleted(worm, proxy, operation):
    protected, other = worm
    with pytest.raises(HttpResponseError) as info:
        OVERWRITES[operation](protected)
    assert_refused(info)
    number, method, target, outcome = proxy.requests[-1]
    assert outcome == 409 and method in ("PUT", "DELETE") and target.startswith(f"{path_of(protected)}/")
    assert_untouched(protected)
    OVERWRITES[operation](other)  # the same call in an unprotected container goes through
    assert proxy.requests[-1][3] in (200, 201, 202)


def test_new_blobs_can_be_created_in_a_protected_container(worm, proxy):
    protected, _ = worm
    protected.upload_blob("small.txt", b"put blob")
    chunked = ContainerClient.from_connection_string(proxy.connection_string, protected.container_name,
                                                     max_single_put_size=1000, max_block_size=1000)
    chunked.upload_blob("large.bin", b"x" * 3000)  # three Put Block and a Put Block List
    protected.get_blob_client("copy.txt").start_copy_from_url(protected.get_blob_client("source.txt").url)
    assert protected.download_blob("small.txt").readall() == b"put blob"
    assert protected.download_blob("large.bin").readall() == b"x" * 3000
    assert len([t for _, _, t, _ in proxy.requests if "large.bin" in t and "comp=block&" in t]) == 3
    assert protected.download_blob("copy.txt").readall() == b"replacement"
    assert 409 not in [outcome for *_, outcome in proxy.requests]
    with pytest.raises(HttpResponseError) as info:  # ... and from then on they are protected as well
        protected.upload_blob("small.txt", b"again", overwrite=True)
    assert_refused(info)


def test_put_block_on_a_protected_blob_is_allowed_but_committing_it_is_not(worm, proxy):
    protected, _ = worm
    blob = protected.get_blob_client(NAME)
    blob.stage_block("QkxPQ0sx", b"staged")
    assert proxy.requests[-1][3] == 201
    committed, uncommitted = blob.get_block_list("all")
    assert [b.id for b in uncommitted] == ["QkxPQ0sx"]
    with pytest.raises(HttpResponseError) as info:
        blob.commit_block_list(["QkxPQ0sx"])
    assert_refused(info)
    assert_untouched(protected)


def test_a_protected_container_cannot_be_deleted_through_the_blob_api(worm, proxy):
    protected, other = worm
    with pytest.raises(HttpResponseError) as info:
        protected.delete_container()
    assert_refused(info, "ContainerImmutabilityPolicyLocked")
    assert proxy.requests[-1][1:] == ("DELETE", f"{path_of(protected)}?restype=container", 409)
    assert_untouched(protected)
    empty = ContainerClient.from_connection_string(proxy.connection_string, f"worm-{uuid.uuid4().hex[:10]}")
    empty.create_container()
    proxy.protect_container(empty.container_name)
    with pytest.raises(HttpResponseError) as info:  # even empty: only the control plane may delete it
        empty.delete_container()
    assert_refused(info, "ContainerImmutabilityPolicyLocked")
    proxy.unprotect_container(empty.container_name)
    empty.delete_container()
    assert not empty.exists()
    proxy.protect_container("worm-never-created")  # a container that does not exist: Azurite's own 404
    with pytest.raises(HttpResponseError) as info:
        ContainerClient.from_connection_string(proxy.connection_string, "worm-never-created").delete_container()
    assert (info.value.status_code, info.value.error_code) == (404, "ContainerNotFound")


def test_a_snapshot_taken_before_the_policy_is_protected_too(worm, proxy):
    protected, _ = worm
    proxy.unprotect_container(protected.container_name)
    snapshot = protected.get_blob_client(NAME).create_snapshot()["snapshot"]
    proxy.protect_container(protected.container_name)
    old = protected.get_blob_client(NAME, snapshot=snapshot)
    with pytest.raises(HttpResponseError) as info:
        old.delete_blob()
    assert_refused(info)
    assert "snapshot=" in proxy.requests[-1][2]
    assert old.download_blob().readall() == b"original"
    proxy.unprotect_container(protected.container_name)  # lifted, the snapshot can go again
    old.delete_blob()
    proxy.protect_container(protected.container_name)
    assert_untouched(protected)


def test_an_unprotected_container_in_the_same_account_is_unaffected(worm):
    _, other = worm  # its name is the protected one plus "x": containers match exactly, not by prefix
    blob = other.get_blob_client(NAME)
    blob.upload_blob(b"new", overwrite=True)
    blob.set_blob_metadata({"state": "open"})
    blob.delete_blob()
    assert not blob.exists()


def test_leases_on_a_protected_blob_work_but_do_not_unlock_it(worm, proxy):
    # Lease Blob is not among the operations a policy prohibits (the table cited in sandbox/blobproxy.py).
    protected, _ = worm
    blob = protected.get_blob_client(NAME)
    lease = BlobLeaseClient(blob)
    lease.acquire(lease_duration=15)
    lease.renew()
    assert blob.get_blob_properties().lease.state == "leased"
    with pytest.raises(HttpResponseError) as info:
        blob.delete_blob(lease=lease)
    assert_refused(info)
    lease.release()
    BlobLeaseClient(blob).acquire(lease_duration=-1)
    BlobLeaseClient(blob).break_lease(lease_break_period=0)
    assert blob.get_blob_properties().lease.state == "broken"
    assert_untouched(protected)


def test_a_failing_condition_gets_azurites_own_answer(worm, proxy):
    protected, _ = worm
    blob = protected.get_blob_client(NAME)
    etag = blob.get_blob_properties().etag
    with pytest.raises(HttpResponseError) as info:  # overwrite=False: If-None-Match: *
        blob.upload_blob(b"replacement")
    assert (info.value.status_code, info.value.error_code) == (409, "BlobAlreadyExists")
    blob.stage_block("AAAA", b"replacement")
    with pytest.raises(HttpResponseError) as info:
        blob.commit_block_list(["AAAA"], match_condition=MatchConditions.IfMissing)
    assert (info.value.status_code, info.value.error_code) == (409, "BlobAlreadyExists")
    with pytest.raises(HttpResponseError) as info:
        blob.commit_block_list(["AAAA"], etag='"0x8D000000000DEAD"', match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412 and info.value.error_code == "ConditionNotMet"
    with pytest.raises(HttpResponseError) as info:  # the condition holds: the policy answers
        blob.commit_block_list(["AAAA"], etag=etag, match_condition=MatchConditions.IfNotModified)
    assert_refused(info)
    with pytest.raises(HttpResponseError) as info:  # Azurite would ignore this condition and write
        blob.set_blob_metadata({"state": "changed"}, match_condition=MatchConditions.IfMissing)
    assert_refused(info)
    assert [outcome for *_, outcome in proxy.requests[-6:]] == [409, 201, 409, 412, 409, 409]
    assert_untouched(protected)


def test_container_names_are_decoded_before_they_are_matched(worm, proxy):
    protected, _ = worm
    encoded = "".join(f"%{ord(ch):02X}" for ch in protected.container_name)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:  # unsigned: had the proxy not matched it, Azurite would have answered 403
        connection.request("DELETE", f"/devstoreaccount1/{encoded}/dir/%C3%A4%20b%25%2B.txt")
        response = connection.getresponse()
        assert (response.status, response.getheader("x-ms-error-code")) == (409, IMMUTABLE)
        response.read()
    finally:
        connection.close()
    assert_untouched(protected)


def test_faults_take_precedence_over_the_policy(worm, proxy):
    protected, _ = worm
    rule = proxy.add("503", method="PUT", count=1)
    with pytest.raises(HttpResponseError) as info:
        protected.upload_blob(NAME, b"replacement", overwrite=True)
    assert_refused(info)
    assert rule.fired == 1 and [outcome for *_, outcome in proxy.requests[-2:]] == [503, 409]


def test_protected_containers_can_be_named_up_front(azurite):
    with BlobFaultProxy(azurite, protected=["a-one", "a-two"]) as running:
        running.protect_container("a-three")
        running.unprotect_container("a-two")
        assert running.protected_containers == {"a-one", "a-three"}
        with pytest.raises(ValueError):
            running.protect_container("a/b")
