"""Queue refusals name the queue's role, setting and SAS (issue 24), not the container's: Azure's answers from a canned
adapter (tests/canned.py) at the SDK's seam, the queue opened by ``queues.open_queue`` as the export opens it. Against
Azurite: tests/storage/test_queues.py."""

from __future__ import annotations

import base64
import ssl
from datetime import datetime, timezone

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from graph_export import queues
from graph_export.errors import StorageError
from graph_export.settings import StorageTarget
from graph_export.storage import RefusedRequest, storage_errors
from tests.canned import Canned

QUEUE = "graph-export-tenants"
POISON = queues.poison_name(QUEUE)
ACCOUNT_URL = "https://acct.queue.core.windows.net"
BLOB_URL = "https://acct.blob.core.windows.net"
WRONG_KEY = base64.b64encode(b"not the account key, 64 bytes long, so it looks like one........").decode()
KEY_STRING = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={WRONG_KEY};EndpointSuffix=core.windows.net"
SAS_STRING = (f"BlobEndpoint={BLOB_URL};QueueEndpoint={ACCOUNT_URL};"
              "SharedAccessSignature=sv=2024-08-04&ss=bq&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=SECRETSIG")
SLOT = datetime(2026, 11, 30, 2, tzinfo=timezone.utc)
TENANT = "aaaaaaaa-0000-4000-8000-00000000000a"


class Token:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("storage-token", 4_102_444_800)


def refusal(status: int, code: str) -> Canned:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>No.</Message></Error>'
    return Canned(status, body.encode(), {"x-ms-error-code": code, "Content-Type": "application/xml"})


class ByMethod(requests.adapters.BaseAdapter):
    """Answers each request with the adapter for its HTTP method (a send answered 404, the create after it 403)."""

    def __init__(self, **by_method: requests.adapters.BaseAdapter) -> None:
        super().__init__()
        self.by_method = by_method

    def send(self, request, **kwargs):
        return self.by_method[request.method].send(request, **kwargs)

    def close(self) -> None:
        pass


class Failing(requests.adapters.BaseAdapter):
    """Fails every request before an answer, as requests does: the exception keeps the request."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def send(self, request, **kwargs):
        raise self.make(request)

    def close(self) -> None:
        pass


def options(adapter: requests.adapters.BaseAdapter) -> dict:
    session = requests.Session()
    session.mount("https://", adapter)
    return {"transport": RequestsTransport(session=session, session_owner=False), "retry_total": 0}


IDENTITY = StorageTarget(blob_service_uri=BLOB_URL, queue_service_uri=ACCOUNT_URL,
                         source="EXPORT_STORAGE__blobServiceUri")


def opened(how: str, name: str, adapter: requests.adapters.BaseAdapter, target: StorageTarget = IDENTITY) -> QueueClient:
    """``name`` opened by ``queues.open_queue`` (which registers the queue service's advice for its origin), and the
    same queue, with the same credential, through ``adapter``."""
    if how == "identity":
        queues.open_queue(target, name, Token())
        return QueueClient(ACCOUNT_URL, name, credential=Token(), **options(adapter))
    connection_string = {"key": KEY_STRING, "sas": SAS_STRING}[how]
    queues.open_queue(StorageTarget(connection_string=connection_string, source="EXPORT_STORAGE"), name, None)
    return QueueClient.from_connection_string(connection_string, name, **options(adapter))


def line_of_send(queue: QueueClient) -> str:
    """The one line of a fan-out send to ``queue`` that storage refused."""
    with pytest.raises(StorageError) as info:
        queues.send(queue, queues.TenantSlot(TENANT, SLOT))
    return checked(str(info.value))


def line_of_poison_move(poison: QueueClient) -> str:
    """The worker's poison move: a copy sent to the poison queue, inside the worker's storage_errors."""
    with pytest.raises(StorageError) as info:
        with storage_errors(f"moving a message to {poison.queue_name}", "it is retried after its lease"):
            queues.send_text(poison, "{}")
    return checked(str(info.value))


def checked(message: str) -> str:
    """Every line: one line, no credential, nothing of the blob service's advice."""
    assert "\n" not in message and "StorageErrorCode" not in message
    for secret in (WRONG_KEY, "SECRETSIG", "sig=", "storage-token"):
        assert secret not in message
    for blob in ("Blob", "(EXPORT_STORAGE__blobServiceUri)", "container generate-sas", "export container"):
        assert blob not in message
    return message


# --- the identity: the role on the queue the request went to -------------------------------------------------------


def test_an_identity_refused_on_the_fan_out_queue_is_told_its_role_on_that_queue():
    message = line_of_send(opened("identity", QUEUE, refusal(403, "AuthorizationPermissionMismatch")))
    assert message.startswith(f"Export storage denied access (AuthorizationPermissionMismatch) while sending {TENANT}'s "
                              f"slot 2026-11-30T02:00:00Z to queue {QUEUE}: give the function's identity 'Storage Queue "
                              f"Data Contributor' on queue '{QUEUE}' (as infra/ does), or, running locally with az login, give the signed-in user "
                              "'Storage Queue Data Contributor' on the account and check the storage firewall.")


def test_an_identity_refused_on_the_poison_queue_is_told_the_poison_queues_role():
    message = line_of_poison_move(opened("identity", POISON, refusal(403, "AuthorizationPermissionMismatch")))
    assert message.startswith(f"Export storage denied access (AuthorizationPermissionMismatch) while moving a message to "
                              f"{POISON}: give the function's identity 'Storage Queue Data Message Sender' on queue "
                              f"'{POISON}' (as infra/ does)")
    assert "Message Processor" not in message


def test_an_identity_that_may_not_create_a_missing_queue_is_told_to_create_it():
    adapter = ByMethod(POST=refusal(404, "QueueNotFound"), PUT=refusal(403, "AuthorizationPermissionMismatch"))
    message = line_of_send(opened("identity", QUEUE, adapter))
    assert (f"to queue {QUEUE}: queue '{QUEUE}' does not exist and the function's identity may not create it: deploy "
            f"infra/ (which creates it) or create it (az storage queue create --name {QUEUE} --account-name <account> "
            "--auth-mode login)") in message


def test_a_token_storage_does_not_accept_names_the_queue_role():
    message = line_of_send(opened("identity", QUEUE, refusal(401, "InvalidAuthenticationInfo")))
    assert message.startswith(f"Export storage refused our credentials while sending {TENANT}'s slot "
                              f"2026-11-30T02:00:00Z to queue {QUEUE}: give the function's identity 'Storage Queue Data "
                              f"Contributor' on queue '{QUEUE}'")


# --- an account key: the queue's identity setting -------------------------------------------------------------------


def test_a_wrong_key_on_a_queue_points_to_the_queue_service_uri_for_the_identity():
    message = line_of_send(opened("key", QUEUE, refusal(403, "AuthenticationFailed")))
    assert message.startswith("Export storage refused the account key in EXPORT_STORAGE (AuthenticationFailed) while "
                              f"sending {TENANT}'s slot 2026-11-30T02:00:00Z to queue {QUEUE}: the key is wrong or has been "
                              "rotated; put the account's current connection string in EXPORT_STORAGE")
    assert message.endswith("or use the app's identity instead (EXPORT_STORAGE__queueServiceUri); run fan-out again "
                            "(a slot already published is skipped).")


@pytest.mark.parametrize(("name", "role"), [(QUEUE, "Storage Queue Data Contributor"),
                                            (POISON, "Storage Queue Data Message Sender")])
def test_an_account_without_shared_keys_says_which_setting_and_role_the_queue_needs(name, role):
    message = line_of_poison_move(opened("key", name, refusal(403, "KeyBasedAuthenticationNotPermitted")))
    assert message.startswith("Export storage does not allow shared key access, so it refused the account key in "
                              "EXPORT_STORAGE (KeyBasedAuthenticationNotPermitted)")
    assert (f"use the app's identity instead (set EXPORT_STORAGE__queueServiceUri (with EXPORT_STORAGE__blobServiceUri) "
            f"and assign '{role}' on queue '{name}')") in message


# --- a SAS: a queue SAS's permissions, or an account SAS over both services -----------------------------------------


def test_a_sas_without_a_queue_permission_says_which_ones_a_queue_sas_needs():
    message = line_of_send(opened("sas", QUEUE, refusal(403, "AuthorizationPermissionMismatch")))
    assert message.startswith("Export storage refused the SAS in EXPORT_STORAGE (AuthorizationPermissionMismatch) while "
                              f"sending {TENANT}'s slot 2026-11-30T02:00:00Z to queue {QUEUE}: it does not allow this "
                              f"request; make a new SAS for queue '{QUEUE}' with read, add, update and process "
                              f"permissions (az storage queue generate-sas --name {QUEUE} --permissions raup) or, as the "
                              "one SAS in EXPORT_STORAGE serves the container and both queues, an account SAS covering "
                              "the blob and queue services (az storage account generate-sas --services bq "
                              "--resource-types co --permissions racwdlup)")


def test_a_sas_storage_does_not_accept_on_a_queue_may_be_another_queues():
    message = line_of_poison_move(opened("sas", POISON, refusal(403, "AuthenticationFailed")))
    assert ("revoked, signed with an account key that has since been rotated, or made for another queue; put a new SAS "
            f"in EXPORT_STORAGE (az storage queue generate-sas --name {POISON} --permissions raup --expiry <date>, or an "
            "account SAS for both services: az storage account generate-sas --services bq --resource-types co "
            "--permissions racwdlup --expiry <date>), or use the app's identity instead "
            "(EXPORT_STORAGE__queueServiceUri)") in message


# --- unreachable: the queue service's settings ----------------------------------------------------------------------


def test_a_queue_service_nothing_answers_on_names_the_queue_settings():
    refused = Failing(lambda request: requests.ConnectionError(ConnectionRefusedError(111, "refused"), request=request))
    message = line_of_send(opened("identity", QUEUE, refused))
    assert message.startswith(f"Export storage at {ACCOUNT_URL} is unreachable (the connection was refused) while "
                              f"sending {TENANT}'s slot 2026-11-30T02:00:00Z to queue {QUEUE}: check EXPORT_STORAGE / "
                              "EXPORT_STORAGE__queueServiceUri (is Azurite running locally?)")


def untrusted(request):
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    return requests.exceptions.SSLError(cause, request=request)


@pytest.mark.parametrize(("source", "setting"), [("EXPORT_STORAGE__blobServiceUri", "EXPORT_STORAGE__queueServiceUri"),
                                                 ("AzureWebJobsStorage__blobServiceUri",
                                                  "AzureWebJobsStorage__queueServiceUri")])
def test_an_untrusted_queue_certificate_names_the_queue_service_setting_it_came_from(source, setting):
    target = StorageTarget(blob_service_uri=BLOB_URL, queue_service_uri=ACCOUNT_URL, source=source)
    message = line_of_send(opened("identity", QUEUE, Failing(untrusted), target))
    assert message.startswith(f"Export storage at {ACCOUNT_URL} failed TLS certificate verification (unable to get local "
                              f"issuer certificate) while sending {TENANT}'s slot")
    assert f"check {setting}," in message


# --- the blob service keeps its own lines -----------------------------------------------------------------------------


def test_a_container_of_the_same_account_keeps_the_blob_advice_beside_a_registered_queue():
    opened("identity", QUEUE, refusal(403, "AuthorizationPermissionMismatch"))
    container = ContainerClient(BLOB_URL, "graph-exports", credential=Token(),
                                **options(refusal(403, "AuthorizationPermissionMismatch")))
    with pytest.raises(StorageError) as info:
        with storage_errors("opening container 'graph-exports'"):
            container.get_container_properties()
    assert str(info.value) == ("Export storage denied access (AuthorizationPermissionMismatch) while opening container "
                               "'graph-exports': give the function's identity 'Storage Blob Data Contributor' on the "
                               "export container and check the storage firewall.")


# --- which queue a request went to, from its URL ----------------------------------------------------------------------


@pytest.mark.parametrize(("account_path", "url", "method", "grant"), [
    ("/devstoreaccount1", "http://127.0.0.1:10001/devstoreaccount1/q-poison/messages?visibilitytimeout=5", "POST",
     "give the function's identity 'Storage Queue Data Message Sender' on queue 'q-poison'"),
    ("", "https://acct.queue.core.windows.net/work-q/messages/0c7a?popreceipt=AgAAAA", "DELETE",
     "give the function's identity 'Storage Queue Data Contributor' on queue 'work-q'"),
    ("", "https://acct.queue.core.windows.net/work-q?comp=metadata", "PUT",
     "give the function's identity 'Storage Queue Data Contributor' on queue 'work-q'"),
    ("", "https://acct.queue.core.windows.net/work-q", "PUT", "queue 'work-q' does not exist"),
    ("", "https://acct.queue.core.windows.net/Not_A%20Queue/messages", "POST",
     "give the function's identity 'Storage Queue Data Contributor' on the queue EXPORT_QUEUE names"),
    ("/devstoreaccount1", "https://acct.queue.core.windows.net", "", "on the queue EXPORT_QUEUE names"),
], ids=["azurite-poison", "azure-delete", "metadata-is-no-create", "create", "not-a-queue-name", "origin-only"])
def test_the_queue_named_is_the_one_in_the_refused_requests_path(account_path, url, method, grant):
    advice = queues.queue_advice("EXPORT_STORAGE", account_path, RefusedRequest(url=url, method=method))
    assert grant in advice.grant
