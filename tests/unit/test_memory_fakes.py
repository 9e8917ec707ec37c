"""What the contract test with Azurite cannot show of the in-memory fakes: time, WORM, the transport seam, delta.

Lease expiry needs a clock (Azurite's leases take 15 s to run out), an immutability policy Azurite
lacks, and the memory Graph must sit under the export's transport as a socket would.
"""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobLeaseClient

from graph_export import storage, transport
from tests.unit.memory_graph import MemoryDirectory, MemoryGraph, MemorySignIn, make_users
from tests.unit.memory_storage import MemoryAccount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def code_of(call) -> tuple[str, str]:
    with pytest.raises(HttpResponseError) as raised:
        call()
    return type(raised.value).__name__, str(getattr(raised.value.error_code, "value", raised.value.error_code))


def test_a_lease_runs_out_after_its_duration_and_then_anyone_may_take_the_blob():
    clock = Clock()
    blob = MemoryAccount(clock=clock).container("c").get_blob_client("state/x.lock")
    blob.upload_blob(b"")
    ours, theirs = BlobLeaseClient(blob), BlobLeaseClient(blob)
    ours.acquire(lease_duration=15)
    clock.now += 14.9
    assert code_of(lambda: theirs.acquire(lease_duration=15)) == ("ResourceExistsError", "LeaseAlreadyPresent")
    clock.now += 0.2
    assert blob.get_blob_properties().lease.state == "expired"
    blob.upload_blob(b"", overwrite=True)  # an expired lease asks nothing of a write
    theirs.acquire(lease_duration=15)
    assert code_of(ours.renew) == ("ResourceExistsError", "LeaseIdMismatchWithLeaseOperation")
    assert code_of(lambda: blob.delete_blob(lease=ours)) == ("HttpResponseError", "LeaseIdMismatchWithBlobOperation")


def test_an_immutable_container_keeps_what_it_holds_but_takes_new_blobs_and_blocks():
    exports = MemoryAccount().container("exports", immutable=True)
    exports.upload_blob("users/a.manifest.json", b"{}")
    blob = exports.get_blob_client("users/a.manifest.json")
    assert code_of(lambda: blob.upload_blob(b"[]", overwrite=True)) == ("ResourceExistsError",
                                                                         "BlobImmutableDueToPolicy")
    assert code_of(blob.delete_blob) == ("ResourceExistsError", "BlobImmutableDueToPolicy")
    assert code_of(lambda: blob.upload_blob(b"[]")) == ("ResourceExistsError", "BlobAlreadyExists")  # condition first
    assert storage.delete(exports, "users/a.manifest.json") is False  # storage.py keeps it, as under Azure's policy
    exports.get_blob_client("users/b.jsonl.gz").stage_block("00", b"x")
    assert exports.download_blob("users/a.manifest.json").readall() == b"{}"


def graph(users: int = 3) -> tuple[MemoryGraph, str]:
    sign_in = MemorySignIn()
    service = MemoryGraph(MemoryDirectory(make_users(users)), sign_in, max_page=2)
    return service, sign_in.sign_in(sign_in.read_credential()).acquire()


def test_the_memory_graph_answers_through_the_exports_own_transport_and_its_announcing_connections():
    service, token = graph()
    announced: list[int] = []
    with transport.make_session(transport.budgeted_retry(0.0, 2, transport.RetryBudget(5)),
                                announce=lambda: announced.append(1)) as session:
        service.serve(session)
        page = session.get(f"{service.endpoint}/v1.0/users?$select=id&$top=999",
                           headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        refused = session.get(f"{service.endpoint}/v1.0/users", timeout=5)
        with pytest.raises(requests.ConnectionError):
            session.get("https://graph.microsoft.com/v1.0/users", timeout=5)  # nothing else is reachable
    assert [u["id"] for u in page["value"]] == [u["id"] for u in make_users(2)] and "$skiptoken=" in page[
        "@odata.nextLink"]
    assert refused.status_code == 401 and announced == [1, 1]


def test_a_delta_round_holds_each_change_once_and_ends_with_the_link_to_the_next():
    service, token = graph(5)
    with requests.Session() as session:
        service.serve(session)

        def follow(url: str) -> tuple[list[dict], str]:
            items = []
            while True:
                body = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
                items += body["value"]
                if "@odata.deltaLink" in body:
                    return items, body["@odata.deltaLink"]
                url = body["@odata.nextLink"]

        nothing, link = follow(f"{service.endpoint}/v1.0/users/delta?$select=id,mail&$deltatoken=latest")
        ids = [u["id"] for u in make_users(5)]
        service.directory.update(ids[1], mail="new@contoso.example")
        service.directory.remove(ids[2])
        service.directory.add(make_users(1, start=9)[0])
        service.directory.update(ids[1], mail="newer@contoso.example")
        changes, following = follow(link)
        again, _ = follow(following)
    assert nothing == [] and again == []
    assert changes == [{"id": ids[2], "@removed": {"reason": "changed"}},
                       {"id": make_users(1, start=9)[0]["id"], "mail": "user9@contoso.example"},
                       {"id": ids[1], "mail": "newer@contoso.example"}]
