"""The whole pipeline against the sandbox tenant and Azurite: what it publishes, and how it fails."""

from __future__ import annotations

import gzip
import hashlib
import logging
import uuid
from datetime import datetime, timezone

import pytest

from graph_export import AuthError, ConfigError, GraphError, StorageError, load_settings, run_export
from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB, checkpoint_blob_name

from .helpers import (
    blob_names,
    latest,
    published_manifest,
    read_bytes,
    read_export,
    slot_files,
    slot_pointer,
)
from .helpers import container as helpers_container

SLOT = datetime(2026, 3, 7, 2, 0, tzinfo=timezone.utc)


def service_requests(sandbox, service):
    return [r for r in sandbox.requests if r.service == service]


def test_export_equals_the_tenant_exactly(export_env, sandbox):
    settings = load_settings()
    summary = run_export(settings, SLOT)

    users, sha = read_export(export_env, summary.blob)
    expected = list(sandbox.expected_users(settings.user_properties))
    assert len(expected) == 2_500
    assert users == expected  # every user, every selected property, Graph's order
    assert len({u["id"] for u in users}) == 2_500
    assert all(not k.startswith("@odata.") for u in users for k in u)

    assert summary.status == "succeeded" and summary.users == 2_500 and summary.pages == 3
    assert summary.blob.startswith("users/2026/03/07/users-20260307T020000Z-") and summary.blob.endswith(".jsonl.gz")
    manifest = published_manifest(export_env, SLOT)
    assert summary.manifest == manifest["manifest"] == summary.blob.replace(".jsonl.gz", ".manifest.json")
    assert manifest["run"] in summary.blob and manifest["supersedes"] is None
    assert manifest["users"] == 2_500 and manifest["sha256"] == sha == summary.sha256
    assert manifest["bytes"] == summary.bytes == len(read_bytes(export_env, summary.blob))
    assert manifest["properties"] == list(settings.user_properties)
    assert manifest["slot"] == "2026-03-07T02:00:00Z"
    pointer = latest(export_env)
    assert pointer["blob"] == summary.blob and pointer["manifest"] == summary.manifest
    assert pointer["sha256"] == sha and pointer["users"] == 2_500


def test_the_next_page_is_requested_while_this_one_is_still_arriving(export_env, sandbox):
    # Page 1 stalls for 2 s after its first 16 KiB, which hold the nextLink: page 2 must not wait for it.
    sandbox.faults.add("graph", page=1, stall_s=2.0, count=1)
    summary = run_export(load_settings(), SLOT)
    assert summary.users == sandbox.users
    first, second = (next(r for r in sandbox.requests.entries("graph") if r.page == n) for n in (1, 2))
    assert second.at - first.at < 1.0


def test_a_warm_instance_reads_the_vault_and_signs_in_once(export_env, sandbox):
    settings = load_settings()
    run_export(settings, SLOT)
    run_export(settings, datetime(2026, 3, 8, 2, tzinfo=timezone.utc))
    token_posts = [r for r in service_requests(sandbox, "entra") if r.method == "POST"]
    assert len(token_posts) == 1  # the second run was served by MSAL's cache
    vault_reads = [r for r in service_requests(sandbox, "keyvault") if r.status == 200]
    assert len(vault_reads) == 1
    assert len([n for n in blob_names(export_env) if n.endswith(".jsonl.gz")]) == 2


def test_a_slot_already_exported_is_left_alone_unless_forced(export_env, sandbox):
    first = run_export(load_settings(), SLOT)
    pages_served = len(service_requests(sandbox, "graph"))
    again = run_export(load_settings(), SLOT)
    assert again.status == "skipped" and again.blob == first.blob and again.sha256 == first.sha256
    assert len(service_requests(sandbox, "graph")) == pages_served  # Graph was not asked again
    forced = run_export(load_settings(), SLOT, force=True)
    assert forced.status == "succeeded" and forced.sha256 == first.sha256 and forced.blob != first.blob
    assert len(service_requests(sandbox, "graph")) == 2 * pages_served
    # the forced export sits beside the first, which it supersedes; both stay as they were written
    assert slot_files(export_env, SLOT) == sorted([first.blob, first.manifest, forced.blob, forced.manifest])
    assert published_manifest(export_env, SLOT)["supersedes"] == first.manifest
    assert latest(export_env)["manifest"] == forced.manifest


def test_a_late_run_of_an_older_slot_does_not_move_latest_back(export_env, sandbox):
    newer = datetime(2026, 3, 9, 2, tzinfo=timezone.utc)
    run_export(load_settings(), newer)
    run_export(load_settings(), SLOT)
    assert latest(export_env)["slot"] == "2026-03-09T02:00:00Z"


# --- failures a user can cause: one actionable line, nothing published -----------------------------

def assert_nothing_published(env):
    assert blob_names(env) == []  # the container may exist; no export, manifest or pointer does


def test_missing_setting_fails_before_contacting_anything(export_env, sandbox, monkeypatch):
    monkeypatch.delenv("CLIENT_ID")
    with pytest.raises(ConfigError, match="CLIENT_ID"):
        run_export(load_settings(), SLOT)
    assert sandbox.requests == []


def test_wrong_secret_in_the_vault(export_env, sandbox):
    sandbox.vault.set_secret(export_env["CLIENT_SECRET_NAME"], "not-the-secret-" + uuid.uuid4().hex)
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    assert "AADSTS7000215" in str(info.value) and "value" in str(info.value)
    assert_nothing_published(export_env)


def test_expired_secret(export_env, sandbox):
    sandbox.entra.expire_secrets()
    with pytest.raises(AuthError, match="AADSTS7000222.*expired"):
        run_export(load_settings(), SLOT)
    assert_nothing_published(export_env)


def test_unknown_application(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("CLIENT_ID", str(uuid.uuid4()))
    with pytest.raises(AuthError, match="AADSTS700016.*CLIENT_ID"):
        run_export(load_settings(), SLOT)
    assert_nothing_published(export_env)


def test_missing_admin_consent(export_env, sandbox):
    sandbox.entra.set_roles([])
    with pytest.raises(GraphError) as info:
        run_export(load_settings(), SLOT)
    assert "User.Read.All" in str(info.value) and "admin consent" in str(info.value)
    assert_nothing_published(export_env)


def test_secret_missing_from_the_vault(export_env, sandbox):
    sandbox.vault.delete_secret(export_env["CLIENT_SECRET_NAME"])
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert export_env["KEY_VAULT_URL"].rstrip("/") in message and f"'{export_env['CLIENT_SECRET_NAME']}'" in message
    assert_nothing_published(export_env)


def test_no_access_to_the_vault(export_env, sandbox):
    sandbox.vault.deny(sandbox.identity_principal_id)
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "Key Vault Secrets User" in message and export_env["CLIENT_SECRET_NAME"] in message
    assert export_env["KEY_VAULT_URL"].rstrip("/") in message
    assert_nothing_published(export_env)


def test_graph_failing_mid_export_publishes_nothing_and_keeps_latest(export_env, sandbox):
    run_export(load_settings(), SLOT)
    latest_before = latest(export_env)
    sandbox.faults.add(service="graph", from_page=2, status=503)  # first page fine, then down for good
    later = datetime(2026, 3, 8, 2, tzinfo=timezone.utc)
    with pytest.raises(GraphError, match="page 2 with HTTP 503"):
        run_export(load_settings(), later)
    assert slot_files(export_env, later) == [] and slot_pointer(export_env, later) is None
    assert latest(export_env) == latest_before


def test_unreachable_storage_fails_before_reading_the_secret(export_env, sandbox, monkeypatch):
    closed = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
              "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
              "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    monkeypatch.setenv("EXPORT_STORAGE", closed)
    with pytest.raises(StorageError, match="unreachable"):
        run_export(load_settings(), SLOT)
    assert service_requests(sandbox, "keyvault") == []


def test_neither_secret_nor_token_ever_reaches_the_logs(export_env, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    run_export(load_settings(), SLOT)
    sandbox.entra.expire_secrets()
    app_clients.cache_clear()
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), datetime(2026, 3, 8, 2, tzinfo=timezone.utc))
    text = caplog.text + str(info.value)
    assert len(caplog.records) > 10  # the logs were captured at all
    assert sandbox.client_secret not in text
    assert "eyJ" not in text  # no JWT (access token) in any form


def existing_container(env: dict):
    client = helpers_container(env)
    if not client.exists():
        client.create_container()
    return client


@pytest.mark.writes_invalid_records
@pytest.mark.parametrize("pointer", [b"null", b'{"slot": 5}', b'{"slot": "zzz"}', b"not json",
                                     b'{"slot": "9999-12-31T23:59:59Z", "blob": "users/x", "manifest": "m", '
                                     b'"users": 1, "sha256": "' + b"0" * 64 + b'", "finished": "9999-12-31T23:59:59Z"}'])
def test_a_pointer_that_is_not_valid_is_repaired_by_the_next_run(export_env, pointer, caplog):
    existing_container(export_env).upload_blob(LATEST_BLOB, pointer)
    summary = run_export(load_settings(), SLOT)
    pointer = latest(export_env)
    assert pointer["blob"] == summary.blob and pointer["sha256"] == summary.sha256
    assert "is not a valid pointer" in caplog.text


@pytest.mark.writes_invalid_records
@pytest.mark.parametrize("manifest", [b"{}", b"[]", b"not json", b'{"format": "graph-users-export/1", "users": "many"}'])
def test_a_corrupt_manifest_means_the_slot_was_not_exported(export_env, sandbox, manifest, caplog):
    first = run_export(load_settings(), SLOT)
    helpers_container(export_env).upload_blob(first.manifest, manifest, overwrite=True)
    summary = run_export(load_settings(), SLOT)
    assert summary.status == "succeeded" and summary.users == sandbox.users and summary.manifest != first.manifest
    assert published_manifest(export_env, SLOT)["sha256"] == read_export(export_env, summary.blob)[1]
    assert published_manifest(export_env, SLOT)["supersedes"] == first.manifest
    assert "exporting it again" in caplog.text


@pytest.mark.parametrize("checkpoint", [b"[]", b"not json", b'{"format": "graph-users-export-checkpoint/2"}',
                                        b'{"format": "graph-users-export-checkpoint/1", "pages": 3}'])
def test_a_corrupt_checkpoint_is_discarded_and_the_slot_restarts_clean(export_env, sandbox, checkpoint, caplog):
    existing_container(export_env).upload_blob(checkpoint_blob_name(SLOT), checkpoint)
    summary = run_export(load_settings(), SLOT)
    users, sha = read_export(export_env, summary.blob)
    assert users == list(sandbox.expected_users(load_settings().user_properties)) and sha == summary.sha256
    assert "unreadable" in caplog.text and checkpoint_blob_name(SLOT) not in blob_names(export_env)


def test_a_slot_far_in_the_future_is_refused_before_anything_is_written(export_env):
    with pytest.raises(ConfigError, match="slot"):
        run_export(load_settings(), datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
    assert blob_names(export_env) == []


#: What the export of the sandbox's first 2,500 users holds, with the default USER_PROPERTIES: the JSON
#: Lines, decompressed (the gzip bytes around them depend on the deflate library's version). Computed
#: independently, as json.dumps(user, ensure_ascii=False, separators=(",", ":")) of each expected user.
GOLDEN_JSONL_SHA256 = "adf09a64832b371d6e81507edb4b890b87f45c4c76c4da55c0a3c94194538e01"


def test_the_export_of_a_fixed_tenant_is_byte_identical_to_the_golden_one(export_env, sandbox):
    summary = run_export(load_settings(), SLOT)
    jsonl = gzip.decompress(read_bytes(export_env, summary.blob))
    assert hashlib.sha256(jsonl).hexdigest() == GOLDEN_JSONL_SHA256
