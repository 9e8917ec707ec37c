"""``verify`` against real exports (sandbox + Azurite): ok for what the export publishes, FAILED for each
way a blob can stop being what was committed. Breakage is done with the plain storage SDK.

Some tests *re-commit* a broken file: they also rewrite the manifest's size and sha256 for it and the
pointer's ETags, as a buggy exporter (or someone covering their tracks) would. Then no property
check can see it, only the deep check of the content: that is what those tests are for.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from graph_export import StorageError, VerifyError, load_settings, run_export, verify
from graph_export.clients import app_clients
from graph_export.naming import LATEST_BLOB, slot_pointer_name
from graph_export.settings import load_storage_settings

from .helpers import REPO, container, latest, published_manifest, read_bytes, read_json, slot_pointer, state_container

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
DAY = timedelta(days=1)
USERS = 2_500


def export(slot: datetime = SLOT, **kwargs):
    app_clients.cache_clear()
    return run_export(load_settings(), slot, **kwargs)


def verified(**kwargs) -> tuple[verify.Report, list[str]]:
    lines: list[str] = []
    report = verify.run(load_storage_settings(), echo=lines.append, **kwargs)
    return report, lines


def failed(**kwargs) -> list[str]:
    """The FAILED lines of a verify that must fail (and raise VerifyError, exit 7)."""
    report, lines = verified(**kwargs)
    assert not report.ok, lines
    with pytest.raises(VerifyError) as raised:
        report.raise_if_failed()
    assert raised.value.exit_code == 7 and str(raised.value).startswith("verify FAILED: ")
    return [line for line in lines if line.startswith("FAILED ")]


def put(env: dict, name: str, data: bytes | str, *, state: bool = False) -> str:
    """Overwrite (or create) a blob with the plain SDK; its new ETag."""
    where = state_container(env) if state else container(env)
    return where.get_blob_client(name).upload_blob(data, overwrite=True)["etag"]


def stamp(slot: datetime) -> str:
    return slot.strftime("%Y-%m-%dT%H:%M:%SZ")


def recommit(env: dict, slot: datetime, name: str, data: bytes) -> None:
    """Replace ``name`` with ``data`` and make the manifest and the pointer agree with it again."""
    etag = put(env, name, data)
    pointer = slot_pointer(env, slot)
    manifest = read_json(env, pointer["manifest"])
    size, sha, plain = len(data), hashlib.sha256(data).hexdigest(), len(gzip.decompress(data))
    if manifest["blob"] == name:
        manifest.update(bytes=size, sha256=sha, uncompressed_bytes=plain)
    elif manifest["csv"] and manifest["csv"]["blob"] == name:
        manifest["csv"].update(bytes=size, sha256=sha, uncompressed_bytes=plain)
    else:
        manifest["delta"].update(changes_bytes=size, changes_sha256=sha)
    pointer["etags"][pointer["manifest"]] = put(env, pointer["manifest"], json.dumps(manifest, indent=2))
    pointer["etags"][name] = etag
    put(env, slot_pointer_name(slot), json.dumps(pointer), state=True)
    # latest.json follows the manifest, as a re-commit would leave it
    held = latest(env)
    if held["manifest"] == pointer["manifest"]:
        held.update(sha256=manifest["sha256"])
        put(env, LATEST_BLOB, json.dumps(held), state=True)


def edit_lines(data: bytes, edit) -> bytes:
    lines = gzip.decompress(data).split(b"\n")
    assert lines.pop() == b""
    return gzip.compress(b"".join(line + b"\n" for line in edit(lines)))


# --- ok: what the export publishes verifies ---------------------------------------------------------

def test_a_full_export_verifies_through_latest_json(export_env):
    summary = export()
    report, lines = verified()
    assert report.ok, lines
    assert lines == [f"ok {stamp(SLOT)} {USERS} users {summary.manifest}",
                     f"ok latest.json {USERS} users {summary.manifest}"]
    assert report.summary() == "verified 1 slot and latest.json: all ok"


@pytest.fixture
def csv_env(export_env, monkeypatch):
    monkeypatch.setenv("EXPORT_FORMATS", "jsonl,csv")
    return export_env


def test_a_forced_export_with_its_csv_copy_verifies_and_the_superseded_one_is_no_orphan(csv_env, monkeypatch):
    first = export()
    monkeypatch.setenv("CSV_EXCEL", "true")  # the forced one's CSV starts with a byte order mark
    forced = export(force=True)
    assert forced.manifest != first.manifest and read_json(csv_env, forced.manifest)["supersedes"] == first.manifest
    assert read_bytes(csv_env, read_json(csv_env, forced.manifest)["csv"]["blob"])[:2] == b"\x1f\x8b"
    report, lines = verified(every=True)
    assert report.ok and report.warnings == [], lines
    assert lines == [f"ok {stamp(SLOT)} {USERS} users {forced.manifest}",
                     f"ok latest.json {USERS} users {forced.manifest}"]
    assert verified(slot=SLOT)[1] == [f"ok {stamp(SLOT)} {USERS} users {forced.manifest}"]


def test_a_delta_series_with_csv_verifies_slot_by_slot(csv_env, sandbox, monkeypatch):
    monkeypatch.setenv("EXPORT_MODE", "delta")
    rng = random.Random(19)
    summaries = []
    for n in range(3):
        if n:
            sandbox.directory.random_changes(rng, 40)
        summaries.append(export(SLOT + n * DAY))
    assert [s.mode for s in summaries] == ["full", "delta", "delta"]
    assert published_manifest(csv_env, SLOT + 2 * DAY)["delta"]["change_records"] > 0
    report, lines = verified(every=True)
    assert report.ok and report.warnings == [], lines
    assert lines == [f"ok {stamp(SLOT + n * DAY)} {s.users} users {s.manifest}" for n, s in enumerate(summaries)] + \
        [f"ok latest.json {summaries[-1].users} users {summaries[-1].manifest}"]
    assert report.summary() == "verified 3 slots and latest.json: all ok"


# --- FAILED: each way what consumers read can differ from the commit ----------------------------------

def test_a_data_blob_overwritten_with_other_valid_gzip_fails(export_env):
    summary = export()
    other = edit_lines(read_bytes(export_env, summary.blob), lambda lines: lines[::-1])  # the same users, valid
    put(export_env, summary.blob, other)
    assert failed() == [f"FAILED {stamp(SLOT)}: {summary.blob} changed after the commit "
                        "(its ETag is not the one the pointer recorded)"]


def test_a_data_blob_replaced_under_a_recommitted_pointer_still_fails_on_its_sha256(export_env):
    """The pointer's ETags made to agree, the manifest's sha256 not: only the download's digest can tell."""
    summary = export()
    other = edit_lines(read_bytes(export_env, summary.blob), lambda lines: lines[::-1])
    recommit(export_env, SLOT, summary.blob, other)
    pointer = slot_pointer(export_env, SLOT)
    manifest = read_json(export_env, pointer["manifest"])
    manifest["sha256"] = summary.sha256  # what the export recorded, not what the blob now holds
    pointer["etags"][pointer["manifest"]] = put(export_env, pointer["manifest"], json.dumps(manifest, indent=2))
    put(export_env, slot_pointer_name(SLOT), json.dumps(pointer), state=True)
    assert failed(slot=SLOT) == [f"FAILED {stamp(SLOT)}: {summary.blob} does not match its sha256 in the manifest"]


def test_a_truncated_file_fails(export_env):
    summary = export()
    data = read_bytes(export_env, summary.blob)
    put(export_env, summary.blob, data[:-100])
    assert failed() == [f"FAILED {stamp(SLOT)}: {summary.blob} changed after the commit "
                        "(its ETag is not the one the pointer recorded)"]
    pointer = slot_pointer(export_env, SLOT)
    pointer["etags"][summary.blob] = put(export_env, summary.blob, data[: len(data) // 2])
    put(export_env, slot_pointer_name(SLOT), json.dumps(pointer), state=True)
    assert failed() == [f"FAILED {stamp(SLOT)}: {summary.blob} is {len(data) // 2} bytes, the manifest says "
                        f"{len(data)}"]


def test_a_truncated_file_recommitted_fails_as_gzip_that_ends_early(export_env):
    summary = export()
    data = read_bytes(export_env, summary.blob)
    half = data[: len(data) // 2]
    pointer = slot_pointer(export_env, SLOT)
    pointer["etags"][summary.blob] = put(export_env, summary.blob, half)
    manifest = read_json(export_env, pointer["manifest"])
    manifest.update(bytes=len(half), sha256=hashlib.sha256(half).hexdigest())
    pointer["etags"][pointer["manifest"]] = put(export_env, pointer["manifest"], json.dumps(manifest))
    put(export_env, slot_pointer_name(SLOT), json.dumps(pointer), state=True)
    assert failed(slot=SLOT) == [f"FAILED {stamp(SLOT)}: {summary.blob} ends before its gzip stream does (truncated)"]


def test_a_line_missing_a_property_fails(export_env):
    summary = export()

    def drop_mail(lines):
        user = json.loads(lines[9])
        del user["mail"]
        lines[9] = json.dumps(user).encode()
        return lines

    recommit(export_env, SLOT, summary.blob, edit_lines(read_bytes(export_env, summary.blob), drop_mail))
    assert failed() == [f"FAILED {stamp(SLOT)}: line 10 of {summary.blob} lacks 'mail': its keys are not the "
                        "manifest's properties"]


def test_a_duplicated_user_fails(export_env):
    summary = export()

    def repeat_fifth(lines):
        lines[1999] = lines[4]  # same count, one user twice, another gone
        return lines

    recommit(export_env, SLOT, summary.blob, edit_lines(read_bytes(export_env, summary.blob), repeat_fifth))
    assert failed() == [f"FAILED {stamp(SLOT)}: {summary.blob} holds the same user id on more than one line"]


def test_a_csv_row_changed_fails(csv_env):
    summary = export()
    csv_blob = read_json(csv_env, summary.manifest)["csv"]["blob"]
    data = read_bytes(csv_env, csv_blob)
    changed = gzip.decompress(data).split(b"\r\n")
    assert changed[7].count(b",") > 3
    changed[7] = changed[7].replace(b",", b",x", 1)  # row 7 after the header: line 7's user
    changed = gzip.compress(b"\r\n".join(changed))
    put(csv_env, csv_blob, changed)
    assert failed() == [f"FAILED {stamp(SLOT)}: {csv_blob} changed after the commit "
                        "(its ETag is not the one the pointer recorded)"]
    recommit(csv_env, SLOT, csv_blob, changed)
    assert failed() == [f"FAILED {stamp(SLOT)}: row 7 of {csv_blob} is not the CSV of line 7 of {summary.blob}"]


def test_latest_json_naming_a_manifest_the_pointer_does_not_fails(export_env):
    first = export()
    forced = export(force=True)
    stale = read_json(export_env, first.manifest)  # a whole, valid export, but not the slot's any more
    pointer = {"slot": stale["slot"], "blob": stale["blob"], "manifest": stale["manifest"], "users": stale["users"],
               "sha256": stale["sha256"], "finished": stale["finished"]}
    put(export_env, LATEST_BLOB, json.dumps(pointer), state=True)
    report, lines = verified()
    assert lines == [f"ok {stamp(SLOT)} {USERS} users {forced.manifest}",
                     f"FAILED latest.json: names {first.manifest}, but the pointer of slot {stamp(SLOT)} names "
                     f"{forced.manifest}"]
    assert not report.ok
    assert report.summary() == ("verify FAILED: latest.json not as committed (see the FAILED lines); verified 1 slot "
                                "and latest.json")


def test_latest_json_disagreeing_with_its_manifest_fails(export_env):
    export()
    held = latest(export_env)
    held["users"] += 1
    put(export_env, LATEST_BLOB, json.dumps(held), state=True)
    assert failed()[-1] == f"FAILED latest.json: its users disagree with {held['manifest']}"


def test_a_manifest_edited_after_the_commit_fails(export_env):
    summary = export()
    manifest = read_json(export_env, summary.manifest)
    manifest["pages"] += 1  # still a valid manifest, and every file still as it lists them
    put(export_env, summary.manifest, json.dumps(manifest, indent=2))
    assert failed() == [f"FAILED {stamp(SLOT)}: its manifest {summary.manifest} changed after the commit "
                        "(its ETag is not the one the pointer recorded)"]


@pytest.mark.parametrize("which", ["jsonl", "csv"])
def test_a_missing_file_fails(csv_env, which):
    summary = export()
    name = summary.blob if which == "jsonl" else read_json(csv_env, summary.manifest)["csv"]["blob"]
    container(csv_env).delete_blob(name)
    assert failed(every=True) == [f"FAILED {stamp(SLOT)}: {name} is missing"]


def test_a_missing_pointer_or_latest_json_fails(export_env):
    with pytest.raises(StorageError, match="There is no container"):  # a typo never makes an empty container
        verified()
    assert not container(export_env).exists()
    container(export_env).create_container()
    assert failed() == ["FAILED latest.json: users/latest.json is missing: nothing was published here yet, or its "
                        "publishing is unfinished"]
    assert failed(every=True) == ["FAILED latest.json: users/latest.json is missing: nothing was published here yet, "
                                  "or its publishing is unfinished"]
    assert verified(every=True)[0].summary().startswith("verify FAILED: no slot to verify")
    export()
    state_container(export_env).delete_blob(slot_pointer_name(SLOT))
    assert failed() == [f"FAILED {stamp(SLOT)}: {slot_pointer_name(SLOT)} is missing: the slot was never committed",
                        f"FAILED latest.json: names slot {stamp(SLOT)}, which has no valid slot pointer"]


def test_all_warns_of_blobs_no_pointer_reaches_without_failing(export_env):
    summary = export()
    dead_run = summary.manifest.replace(read_json(export_env, summary.manifest)["run"], "0123456789ab")
    dead_blob = dead_run.replace(".manifest.json", ".jsonl.gz")
    container(export_env).upload_blob(dead_blob, read_bytes(export_env, summary.blob))
    container(export_env).upload_blob(dead_run, read_bytes(export_env, summary.manifest))
    report, lines = verified(every=True)
    assert report.ok, lines
    assert lines[2:] == [
        f"warning: {dead_blob}: a file no slot pointer reaches (left by a run that ended before its commit, which the "
        "slot's next run removes; by a run still exporting; or older than slot pointers)",
        f"warning: {dead_run}: a manifest no slot pointer reaches (left by a run that ended before its commit, which "
        "the slot's next run removes; by a run still exporting; or older than slot pointers)"]
    assert report.summary() == "verified 1 slot and latest.json: all ok (2 warnings)"


def test_all_with_a_separate_state_container(export_env, monkeypatch):
    monkeypatch.setenv("EXPORT_STATE_CONTAINER", export_env["EXPORT_CONTAINER"] + "-state")
    summary = export()
    assert not container(export_env).get_blob_client(LATEST_BLOB).exists()
    report, lines = verified(every=True)
    assert report.ok and report.warnings == [], lines
    assert lines[0] == f"ok {stamp(SLOT)} {USERS} users {summary.manifest}"


# --- the CLI, as a consumer runs it: only the storage settings ----------------------------------------

def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph_export", "verify", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def consumer_env(export_env: dict) -> dict:
    """The environment of someone who reads the export: no Graph, Key Vault or tenant settings at all."""
    storage_only = {"EXPORT_STORAGE", "EXPORT_CONTAINER", "EXPORT_STATE_CONTAINER", "RETRY_BACKOFF_BASE_SECONDS"}
    env = {k: v for k, v in os.environ.items() if k not in export_env}
    env.update({k: v for k, v in export_env.items() if k in storage_only})
    assert "TENANT_ID" not in env and "KEY_VAULT_URL" not in env
    return env


def test_cli_ok_and_failed_exit_codes_and_lines(export_env, sandbox):
    summary = export()
    env = consumer_env(export_env)
    ok = run_cli(env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"ok {stamp(SLOT)} {USERS} users {summary.manifest}",
                                      f"ok latest.json {USERS} users {summary.manifest}",
                                      "verified 1 slot and latest.json: all ok"]
    assert ok.stderr == ""

    put(export_env, summary.blob, gzip.compress(b'{"id":"x"}\n'))
    bad = run_cli("--all", env=env)
    assert bad.returncode == 7
    assert bad.stdout.splitlines() == [
        f"FAILED {stamp(SLOT)}: {summary.blob} changed after the commit (its ETag is not the one the pointer "
        "recorded)", f"ok latest.json {USERS} users {summary.manifest}"]
    assert bad.stderr.splitlines() == ["error: verify FAILED: 1 of 1 slot not as committed (see the FAILED lines); "
                                       "verified 1 slot and latest.json"]
    everything = ok.stdout + ok.stderr + bad.stdout + bad.stderr
    assert "AccountKey" not in everything and "http" not in everything and sandbox.client_secret not in everything


def test_cli_slot_and_settings_errors(export_env, tmp_path):
    export()
    env = consumer_env(export_env)
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {k: env.pop(k) for k in ("EXPORT_STORAGE", "EXPORT_CONTAINER")}}))
    missing = run_cli(env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: Invalid settings: EXPORT_STORAGE__blobServiceUri (or EXPORT_STORAGE) is "
                                     "missing")
    other = run_cli("--settings", str(settings), "--slot", "2026-03-08T02:00:00Z", env=env)
    assert other.returncode == 7
    assert other.stdout.splitlines()[0] == (f"FAILED 2026-03-08T02:00:00Z: {slot_pointer_name(SLOT + DAY)} is missing: "
                                            "the slot was never committed")
    right = run_cli("--settings", str(settings), "--slot", "2026-03-07T03:00:00+01:00", env=env)
    assert right.returncode == 0 and right.stdout.splitlines()[-1] == "verified 1 slot: all ok"
    assert run_cli("--settings", str(settings), "--slot", "yesterday", env=env).returncode == 2
