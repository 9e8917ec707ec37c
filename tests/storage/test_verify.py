"""``verify`` on small exports built here with the exporter's own writers (``sink``) in Azurite: every
check, each on its own (its settings and its CLI's arguments need no storage: tests/unit/test_verify.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from graph_export import cli, naming, storage, verify
from graph_export.csvfile import REPLACEMENT, CsvEncoder
from graph_export.records import CsvFile, DeltaApplied, Manifest, SlotPointer
from graph_export.settings import SETTINGS, StorageTarget
from graph_export.sink import CommittedBlob, ExportFiles, GzipBlobWriter, encode_user

REPO = Path(__file__).resolve().parents[2]
PROPERTIES = ("id", "displayName", "mail", "accountEnabled", "businessPhones", "employeeId")
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
RUN = "0123456789ab"
NAMES = naming.run_names(SLOT, RUN)
STAMP = "2026-03-07T02:00:00Z"


def make_users(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Users as a /users page holds them after ``conform``: exactly PROPERTIES, padded to ~400 bytes."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        out.append({"id": str(uuid.UUID(int=rng.getrandbits(128))), "displayName": f"User {n} " + "x" * 300,
                    "mail": f"user{n}@contoso.example" if n % 7 else None, "accountEnabled": n % 3 != 0,
                    "businessPhones": [f"+1 555 {n:04d}"] if n % 2 else [], "employeeId": f"{n:06d}"})
    return out


TRICKY = [  # what the CSV encodes with care: formulas, apostrophes, quotes, newlines, lone surrogates
    {"id": "a1", "displayName": "=1+1", "mail": "'quoted", "accountEnabled": True, "businessPhones": ["-2+3"],
     "employeeId": " @SUM(A1)"},
    {"id": "a2", "displayName": "Zoë \"the\" ,\r\nsecond line", "mail": None, "accountEnabled": False,
     "businessPhones": [], "employeeId": "\tx"},
    {"id": "a3", "displayName": "lone \ud83d surrogate", "mail": "x\udc00@y", "accountEnabled": True,
     "businessPhones": ["\ud800"], "employeeId": "-1"},
]


@dataclasses.dataclass
class Built:
    container: Any
    manifest: Manifest
    pointer: SlotPointer

    def verify(self, **kwargs) -> verify.Report:
        return verify.verify(self.container, self.container, self.container.container_name, **kwargs)

    def problem(self, **kwargs) -> str:
        report = self.verify(**kwargs)
        bad = [v for v in report.slots + [report.latest] if v is not None and not v.ok]
        assert bad, [v.line() for v in report.slots]
        return bad[0].line()


def build(container, users: list[dict[str, Any]], *, lines: list[bytes] | None = None, csv: bool = True,
          excel: bool = False, csv_users: list[dict[str, Any]] | None = None,
          csv_properties: tuple[str, ...] = PROPERTIES, segment_every: int = 0, changes: list[bytes] | None = None,
          manifest: dict[str, Any] | None = None, pointer: dict[str, Any] | None = None,
          raw_jsonl: bytes | None = None) -> Built:
    """Publish one slot as the exporter does: files, manifest, pointer (the commit), latest.json."""
    lines = [encode_user(u) for u in users] if lines is None else lines
    with GzipBlobWriter(container.get_blob_client(NAMES.jsonl)) as jsonl:
        for n, line in enumerate(lines, 1):
            jsonl.write_lines([line])
            if segment_every and n % segment_every == 0:
                jsonl.end_segment()
        data = jsonl.commit()
    if raw_jsonl is not None:
        etag = container.get_blob_client(NAMES.jsonl).upload_blob(raw_jsonl, overwrite=True)["etag"]
        data = dataclasses.replace(data, bytes=len(raw_jsonl), sha256=hashlib.sha256(raw_jsonl).hexdigest(), etag=etag)
    csv_file = None
    if csv:
        encoder = CsvEncoder(csv_properties, excel=excel)
        with GzipBlobWriter(container.get_blob_client(NAMES.csv)) as writer:
            writer.write_encoded(encoder.header(), 0)
            rows = users if csv_users is None else csv_users
            writer.write_encoded(encoder.rows(rows), len(rows))
            csv_file = writer.commit()
    fed = None
    if changes is not None:
        with GzipBlobWriter(container.get_blob_client(NAMES.changes)) as writer:
            writer.write_lines(changes)
            fed = writer.commit()
    return commit(container, data, csv_file, fed, manifest=manifest, pointer=pointer)


def commit(container, data: CommittedBlob, csv: CommittedBlob | None = None, fed: CommittedBlob | None = None, *,
           manifest: dict[str, Any] | None = None, pointer: dict[str, Any] | None = None) -> Built:
    """The manifest of the committed files, then the slot's pointer to it, then latest.json."""
    delta = None if fed is None else DeltaApplied(
        base_manifest="users/base.manifest.json", base_sha256="0" * 64, changes_blob=fed.name,
        changes_bytes=fed.bytes, changes_sha256=fed.sha256, change_records=fed.users, added=0, updated=fed.users,
        removed=0)
    made = Manifest(
        container=container.container_name, blob=data.name, manifest=NAMES.manifest, users=data.users, pages=1,
        properties=PROPERTIES, bytes=data.bytes, uncompressed_bytes=data.uncompressed_bytes, sha256=data.sha256,
        slot=SLOT, started=SLOT, finished=SLOT, resumed=False, tenant_id="contoso.onmicrosoft.com",
        graph_endpoint="https://graph.microsoft.com", mode="full" if delta is None else "delta", delta=delta,
        csv=None if csv is None else CsvFile(blob=csv.name, bytes=csv.bytes, uncompressed_bytes=csv.uncompressed_bytes,
                                             sha256=csv.sha256),
        run=RUN)
    made = dataclasses.replace(made, **(manifest or {}))
    etags = {blob.name: blob.etag for blob in (data, csv, fed) if blob is not None}
    etags[NAMES.manifest] = storage.create_json(container, NAMES.manifest, made.to_document())
    committed = SlotPointer(slot=SLOT, run=RUN, manifest=NAMES.manifest, etags=etags, published=SLOT)
    committed = dataclasses.replace(committed, **(pointer or {}))
    storage.write_json(container, naming.slot_pointer_name(SLOT), committed.to_document())
    storage.write_json(container, naming.LATEST_BLOB, made.pointer().to_document())
    return Built(container, made, committed)


# --- ok -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("excel", [False, True])
def test_an_export_over_several_pieces_and_gzip_members_verifies(blob_container, excel):
    users = make_users(6_000) + TRICKY  # ~2.5 MB of JSON Lines: lines and rows cut across 1 MiB pieces
    built = build(blob_container, users, excel=excel, segment_every=1_000)
    report = built.verify()
    assert [v.line() for v in report.slots] == [f"ok {STAMP} 6003 users {NAMES.manifest}"]
    assert report.latest is not None and report.latest.line() == f"ok latest.json 6003 users {NAMES.manifest}"
    assert report.ok and report.summary() == "verified 1 slot and latest.json: all ok"


def test_the_exporters_own_files_writer_verifies_lone_surrogates_included(blob_container):
    """ExportFiles writes both files from the same pages, as a run does; the CSV holds U+FFFD, the JSON the escape."""
    with ExportFiles(blob_container.get_blob_client(NAMES.jsonl), blob_container.get_blob_client(NAMES.csv),
                     CsvEncoder(PROPERTIES)) as files:
        files.write(make_users(50))
        files.end_segment(lambda jsonl, csv: None)
        files.write(TRICKY)
        files.write_lines([encode_user(u) for u in make_users(5, seed=3)])  # a delta slot's merged lines
        data, csv = files.commit({"slot": STAMP})
    text = gzip.decompress(blob_container.download_blob(NAMES.csv).readall()).decode("utf-8")
    assert f"lone {REPLACEMENT} surrogate" in text and "'=1+1" in text
    assert b"lone \\ud83d surrogate" in gzip.decompress(blob_container.download_blob(NAMES.jsonl).readall())
    report = commit(blob_container, data, csv).verify()
    assert report.ok and report.slots[0].line() == f"ok {STAMP} 58 users {NAMES.manifest}"


def test_an_empty_export_verifies(blob_container):
    report = build(blob_container, []).verify()
    assert report.ok and report.slots[0].line() == f"ok {STAMP} 0 users {NAMES.manifest}"


def test_a_delta_slot_verifies_its_changes(blob_container):
    users = make_users(20)
    changes = [encode_user({"id": users[0]["id"], "mail": "new@contoso.example"}),
               encode_user({"id": users[1]["id"], "@removed": {"reason": "changed"}})]
    assert build(blob_container, users, changes=changes).verify().ok


# --- the files ----------------------------------------------------------------------------------------


def test_a_line_with_a_key_beyond_the_properties_fails(blob_container):
    users = make_users(10)
    users[3] = {**users[3], "surname": "Extra"}
    assert build(blob_container, users, csv=False).problem() == (
        f"FAILED {STAMP}: line 4 of {NAMES.jsonl} has 'surname': its keys are not the manifest's properties")


def test_a_line_that_is_not_a_user_object_fails(blob_container):
    lines = [encode_user(u) for u in make_users(5)]
    for bad, why in ((b"not json", "is not JSON"), (b"[1, 2]", "is not a JSON object")):
        built = build_again(blob_container, [], lines=lines[:2] + [bad] + lines[2:], csv=False)
        assert built.problem() == f"FAILED {STAMP}: line 3 of {NAMES.jsonl} {why}"


def test_a_user_without_an_id_fails(blob_container):
    users = make_users(5)
    users[4]["id"] = None
    assert build(blob_container, users, csv=False).problem() == f"FAILED {STAMP}: line 5 of {NAMES.jsonl} has no user id"


def test_a_file_ending_in_the_middle_of_a_line_fails(blob_container):
    whole = b"".join(encode_user(u) + b"\n" for u in make_users(3))
    built = build(blob_container, [], lines=[], csv=False, raw_jsonl=gzip.compress(whole[:-20]),
                  manifest={"users": 3, "uncompressed_bytes": len(whole) - 20})
    assert built.problem() == f"FAILED {STAMP}: {NAMES.jsonl} ends in the middle of line 3"


def test_a_file_that_is_not_gzip_or_has_a_bad_block_fails(blob_container):
    good = gzip.compress(b"".join(encode_user(u) + b"\n" for u in make_users(200)))
    corrupt = good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 0xFF]) + good[len(good) // 2 + 1:]
    for raw in (b"plain text, not gzip", corrupt):
        problem = build_again(blob_container, [], lines=[], csv=False, raw_jsonl=raw,
                              manifest={"users": 200}).problem()
        assert problem.startswith(f"FAILED {STAMP}: {NAMES.jsonl} is not valid gzip ("), problem


def test_counts_and_sizes_must_be_the_manifests(blob_container):
    users = make_users(30)
    cases = [({"users": 31}, f"{NAMES.jsonl} holds 30 users, the manifest says 31"),
             ({"uncompressed_bytes": 5}, f"{NAMES.jsonl} is "),
             ({"sha256": "f" * 64}, f"{NAMES.jsonl} does not match its sha256 in the manifest"),
             ({"bytes": 3}, f"{NAMES.jsonl} is ")]
    for changed, why in cases:
        problem = build_again(blob_container, users, manifest=changed).problem()
        assert problem.startswith(f"FAILED {STAMP}: {why}"), problem
    assert "bytes uncompressed, the manifest says 5" in build_again(blob_container, users,
                                                                     manifest={"uncompressed_bytes": 5}).problem()
    assert "bytes, the manifest says 3" in build_again(blob_container, users, manifest={"bytes": 3}).problem()


def build_again(container, users, **kwargs) -> Built:
    container.delete_blobs(*[b.name for b in container.list_blobs(name_starts_with="users/2026")])
    return build(container, users, **kwargs)


def test_the_csv_copy_must_be_the_json_lines_row_by_row(blob_container):
    users = make_users(3_000) + TRICKY
    other = [dict(u) for u in users]
    other[2_999]["displayName"] = "someone else"
    fewer, more = users[:-1], users + make_users(1, seed=5)
    csv_name, jsonl = NAMES.csv, NAMES.jsonl
    assert build_again(blob_container, users, csv_users=other).problem() == (
        f"FAILED {STAMP}: row 3000 of {csv_name} is not the CSV of line 3000 of {jsonl}")
    assert build_again(blob_container, users, csv_users=fewer).problem() == (
        f"FAILED {STAMP}: {csv_name} ends after row 3002, but {jsonl} has more users")
    assert build_again(blob_container, users, csv_users=more).problem() == (
        f"FAILED {STAMP}: {csv_name} holds more rows than {jsonl} has users")
    assert build_again(blob_container, users, csv_properties=PROPERTIES[::-1]).problem() == (
        f"FAILED {STAMP}: the header of {csv_name} is not the manifest's properties")
    surrogate = [dict(u) for u in users]
    surrogate[-1]["displayName"] = "lone ? surrogate"  # what a lossy writer would have put for the U+FFFD
    assert build_again(blob_container, users, csv_users=surrogate).problem() == (
        f"FAILED {STAMP}: row 3003 of {csv_name} is not the CSV of line 3003 of {jsonl}")


def test_the_changes_of_a_delta_slot_are_checked(blob_container):
    users = make_users(5)
    changes = [encode_user({"id": users[0]["id"]}), encode_user({"mail": "no id"})]
    assert build_again(blob_container, users, changes=changes).problem() == (
        f"FAILED {STAMP}: line 2 of {NAMES.changes} has no user id")
    built = build_again(blob_container, users, changes=changes[:1])
    manifest = dataclasses.replace(built.manifest, delta=dataclasses.replace(built.manifest.delta, change_records=2))
    recommit_manifest(built, manifest)
    assert built.problem() == f"FAILED {STAMP}: {NAMES.changes} holds 1 change records, the manifest says 2"


def recommit_manifest(built: Built, manifest: Manifest) -> None:
    """Write ``manifest`` over the built one and point the pointer at its new ETag (a consistent re-commit)."""
    etag = built.container.get_blob_client(NAMES.manifest).upload_blob(
        json.dumps(manifest.to_document()), overwrite=True)["etag"]
    pointer = dataclasses.replace(built.pointer, etags={**built.pointer.etags, NAMES.manifest: etag})
    storage.write_json(built.container, naming.slot_pointer_name(SLOT), pointer.to_document())
    storage.write_json(built.container, naming.LATEST_BLOB, manifest.pointer().to_document())


# --- the pointer and the manifest ---------------------------------------------------------------------


def test_the_pointer_must_parse_and_be_for_its_slot(blob_container):
    built = build(blob_container, make_users(3))
    name = naming.slot_pointer_name(SLOT)
    blob_container.get_blob_client(name).upload_blob(b"{not json", overwrite=True)
    assert built.problem(slot=SLOT) == f"FAILED {STAMP}: {name} is not JSON"
    storage.write_json(blob_container, name, {"format": "graph-users-export-slot/1"})
    assert built.problem(slot=SLOT).startswith(f"FAILED {STAMP}: {name} is not a valid slot pointer (slot pointer field")
    later = dataclasses.replace(built.pointer, slot=datetime(2026, 3, 8, 2, tzinfo=timezone.utc))
    storage.write_json(blob_container, name, later.to_document())
    assert built.problem(slot=SLOT) == f"FAILED {STAMP}: {name} is the pointer of slot 2026-03-08T02:00:00Z"


@pytest.mark.parametrize(("changed", "why"), [
    ({"run": "ba9876543210"}, f"was written by run ba9876543210, the pointer names run {RUN}"),
    ({"container": "elsewhere"}, "describes container 'elsewhere', not "),
    ({"slot": datetime(2026, 3, 8, 2, tzinfo=timezone.utc)}, "is for slot 2026-03-08T02:00:00Z"),
    ({"blob": "users/other.jsonl.gz"}, f"lists users/other.jsonl.gz, which is not a name of run {RUN} "
                                       f"(expected {NAMES.jsonl})"),
    ({"manifest": "users/other.manifest.json"}, "says it is users/other.manifest.json"),
])
def test_the_manifest_must_be_the_pointers_slot_run_and_container(blob_container, changed, why):
    problem = build(blob_container, make_users(3), manifest=changed).problem(slot=SLOT)
    assert problem.startswith(f"FAILED {STAMP}: its manifest {NAMES.manifest} {why}"), problem


def test_the_pointer_must_record_every_files_etag(blob_container):
    built = build(blob_container, make_users(3))
    pointer = dataclasses.replace(built.pointer, etags={k: v for k, v in built.pointer.etags.items() if k != NAMES.csv})
    storage.write_json(blob_container, naming.slot_pointer_name(SLOT), pointer.to_document())
    assert built.problem() == f"FAILED {STAMP}: the pointer records no ETag for {NAMES.csv}"


def test_a_manifest_changed_after_the_commit_fails_even_when_it_no_longer_parses(blob_container):
    built = build(blob_container, make_users(3))
    blob_container.get_blob_client(NAMES.manifest).upload_blob(b"{}", overwrite=True)
    assert built.problem() == (f"FAILED {STAMP}: its manifest {NAMES.manifest} changed after the commit (its ETag is "
                               "not the one the pointer recorded)")
    assert built.verify().latest.line() == f"FAILED latest.json: names {NAMES.manifest}, which is missing or not valid"


def test_latest_json_must_parse(blob_container):
    built = build(blob_container, make_users(3))
    blob_container.get_blob_client(naming.LATEST_BLOB).upload_blob(b"[]", overwrite=True)
    assert built.problem() == "FAILED latest.json: users/latest.json is not valid (latest.json is not a JSON object)"
    blob_container.get_blob_client(naming.LATEST_BLOB).upload_blob(b"nope", overwrite=True)
    assert built.problem() == "FAILED latest.json: users/latest.json is not JSON"


def test_all_lists_pointers_by_slot_and_reports_a_name_that_is_none(blob_container):
    built = build(blob_container, make_users(3))
    storage.write_json(blob_container, "state/users-2026030.current.json", {})
    lines: list[str] = []
    report = built.verify(every=True, echo=lines.append)
    assert lines[:3] == [f"ok {STAMP} 3 users {NAMES.manifest}",
                         "FAILED state/users-2026030.current.json: not a slot pointer's name "
                         "(state/users-YYYYMMDDTHHMMSSZ.current.json)",
                         f"ok latest.json 3 users {NAMES.manifest}"]
    assert report.summary() == ("verify FAILED: 1 of 2 slots not as committed (see the FAILED lines); verified 2 slots "
                                "and latest.json")


def test_all_warns_when_a_newer_slot_is_not_in_latest_json(blob_container):
    built = build(blob_container, make_users(3))
    storage.write_json(blob_container, naming.LATEST_BLOB, dataclasses.replace(
        built.manifest.pointer(), slot=datetime(2026, 3, 6, 2, tzinfo=timezone.utc)).to_document())
    lines: list[str] = []
    built.verify(every=True, echo=lines.append)
    assert ("warning: latest.json names slot 2026-03-06T02:00:00Z, but slot 2026-03-07T02:00:00Z is newer: its "
            "publishing is unfinished (run that slot again to finish it)") in lines




def test_cli_verify_ok_then_failed(clean_environment, capsys, blob_container, azurite):
    built = build(blob_container, make_users(4))
    clean_environment.setenv("EXPORT_STORAGE", azurite.connection_string)
    clean_environment.setenv("EXPORT_CONTAINER", blob_container.container_name)
    assert cli.main(["verify"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ok {STAMP} 4 users {NAMES.manifest}", f"ok latest.json 4 users {NAMES.manifest}",
                                "verified 1 slot and latest.json: all ok"] and err == ""
    recommit_manifest(built, dataclasses.replace(built.manifest, users=5))
    assert cli.main(["verify", "--slot", STAMP]) == 7
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"FAILED {STAMP}: {NAMES.jsonl} holds 4 users, the manifest says 5"]
    assert err.splitlines() == ["error: verify FAILED: 1 of 1 slot not as committed (see the FAILED lines); verified 1 "
                                "slot"]


# --- memory: flat in the number of users ------------------------------------------------------------------


def build_big(container, users: int) -> None:
    """``users`` GUID users with their CSV copy, written in pages as the exporter writes them."""
    page = make_users(999)
    encoder = CsvEncoder(PROPERTIES)
    rng = random.Random(users)
    with GzipBlobWriter(container.get_blob_client(NAMES.jsonl)) as jsonl, \
            GzipBlobWriter(container.get_blob_client(NAMES.csv)) as csv:
        csv.write_encoded(encoder.header(), 0)
        done = 0
        while done < users:
            chunk = [{**u, "id": str(uuid.UUID(int=rng.getrandbits(128)))} for u in page[:users - done]]
            jsonl.write(chunk)
            csv.write_encoded(encoder.rows(chunk), len(chunk))
            done += len(chunk)
        data, csv_file = jsonl.commit(), csv.commit()
    commit(container, data, csv_file)


def verify_peak_mb(azurite, container: str) -> float:
    """``python -m graph_export verify`` in its own process: its peak RSS (VmHWM) in MB, read as it exits."""
    measured = ("import atexit, runpy, sys\n"
                "atexit.register(lambda: sys.stderr.write('HWM ' + next(l for l in open('/proc/self/status')"
                " if l.startswith('VmHWM:')).split()[1] + '\\n'))\n"
                "sys.argv = ['graph_export', 'verify']\n"
                "runpy.run_module('graph_export', run_name='__main__', alter_sys=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env.update(EXPORT_STORAGE=azurite.connection_string, EXPORT_CONTAINER=container)
    done = subprocess.run([sys.executable, "-c", measured], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "verified 1 slot and latest.json: all ok"
    return int(done.stderr.split("HWM ")[-1].split()[0]) / 1024


#: Both sizes well past one 4 MiB GET per file (at 100,000 users each file still fits in the first GET).
MEMORY_USERS = (200_000, 600_000)
#: What may grow besides the ids' digests (8 bytes a user, ~8.5 as arrays grow): where the SDK's GET of the
#: next 4 MiB chunk (about 36 MB while it is joined, measured) lands on what is alive. Measured on
#: 2026-12-02: +8.3 MB in all (3.4 MB of it digests); holding the lines would add ~170 MB, the ids as text ~34 MB.
MEMORY_MARGIN_MB = 8


@pytest.mark.slow
def test_verify_peak_memory_does_not_grow_with_the_users(azurite):
    """The peak of a verify of 600,000 users (~250 MB of JSON Lines, and its CSV copy) is that of 200,000
    users plus the ids' digests and a fixed margin: nothing a file holds is kept."""
    peaks = {}
    for users in MEMORY_USERS:
        target = StorageTarget(connection_string=azurite.connection_string, source="EXPORT_STORAGE")
        container = storage.open_container(target, f"mem-{uuid.uuid4().hex[:12]}", None, 0.01)
        build_big(container, users)
        peaks[users] = verify_peak_mb(azurite, container.container_name)
    small, large = MEMORY_USERS
    digests_mb = (large - small) * 8.5 / 2**20
    print(f"\nverify peak RSS: {peaks[small]:.1f} MB at {small:,} users, {peaks[large]:.1f} MB at {large:,} "
          f"(digests: {digests_mb:.1f} MB)")
    assert peaks[large] - peaks[small] < digests_mb + MEMORY_MARGIN_MB
