"""The Blob fault proxy itself: transparent when idle, faults fire as written, the SDK sees them."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import ContainerClient, ExponentialRetry

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
