"""Applying a slot's changes to the previous snapshot (``delta``), against in-memory blobs."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
from datetime import datetime, timezone

import pytest

from graph_export.delta import Changes, FallBack, Fingerprints, merge
from graph_export.records import Manifest
from graph_export.sink import GzipBlobWriter, encode_user
from tests.unit.test_sink import MemoryBlob, lines

PROPS = ("id", "displayName", "mail", "businessPhones", "accountEnabled")
WHEN = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)


def user(i: int, **changed) -> dict:
    return {"id": f"id-{i:06d}", "displayName": f"Zoë {i}", "mail": f"u{i}@contoso.com",
            "businessPhones": [f"+1 555 {i:04d}"] if i % 2 else [], "accountEnabled": True, **changed}


def snapshot(users: list[dict], *, segments: int = 3) -> tuple[MemoryBlob, Manifest]:
    """A base export written by the real writer (several gzip members), and its manifest."""
    blob = MemoryBlob("users/base.jsonl.gz")
    with GzipBlobWriter(blob, block_size=4096) as writer:  # type: ignore[arg-type]
        step = max(1, len(users) // segments)
        for at in range(0, len(users), step):
            writer.write(users[at:at + step])
            writer.end_segment()
        committed = writer.commit()
    manifest = Manifest(container="c", blob=blob.blob_name, manifest="m", users=committed.users, pages=1,
                        properties=PROPS, bytes=committed.bytes, uncompressed_bytes=committed.uncompressed_bytes,
                        sha256=committed.sha256, slot=WHEN, started=WHEN, finished=WHEN, resumed=False,
                        tenant_id="t", graph_endpoint="https://graph.microsoft.com")
    return blob, manifest


def apply(base: list[dict], pages: list[list[dict]], *, limit: int = 1000) -> tuple[list[dict], object]:
    blob, manifest = snapshot(base)
    changes = Changes(limit)
    for page in pages:
        changes.add(page)
    out = MemoryBlob("users/new.jsonl.gz")
    with GzipBlobWriter(out) as writer:  # type: ignore[arg-type]
        counts = merge(manifest, blob, changes, PROPS, writer)  # type: ignore[arg-type]
        committed = writer.commit()
    assert out.committed is not None and committed.users == len(lines(out.committed))
    return lines(out.committed), counts


def test_updates_merge_into_the_previous_record_and_absent_properties_are_kept():
    base = [user(i) for i in range(10)]
    result, counts = apply(base, [[{"id": "id-000003", "mail": None}],  # cleared since
                                  [{"id": "id-000005", "displayName": "Renamed", "accountEnabled": False}]])
    assert result[3] == user(3, mail=None)
    assert result[5] == user(5, displayName="Renamed", accountEnabled=False)
    assert [u["id"] for u in result] == [u["id"] for u in base]  # order kept
    assert (counts.added, counts.updated, counts.removed) == (0, 2, 0)


def test_removals_drop_users_and_an_unknown_removal_is_no_error():
    base = [user(i) for i in range(10)]
    result, counts = apply(base, [[{"id": "id-000002", "@removed": {"reason": "changed"}},
                                   {"id": "id-000007", "@removed": {"reason": "deleted"}},
                                   {"id": "never-there", "@removed": {"reason": "deleted"}}]])
    assert [u["id"] for u in result] == [u["id"] for u in base if u["id"] not in ("id-000002", "id-000007")]
    assert (counts.added, counts.updated, counts.removed) == (0, 0, 2)


def test_new_users_follow_in_order_with_absent_properties_null_or_empty():
    base = [user(i) for i in range(3)]
    result, counts = apply(base, [[{"id": "new-b", "displayName": "B"}, {"id": "new-a", "mail": "a@x"}]])
    assert result[:3] == base
    assert result[3] == {"id": "new-b", "displayName": "B", "mail": None, "businessPhones": [], "accountEnabled": None}
    assert result[4]["id"] == "new-a" and result[4]["mail"] == "a@x"
    assert counts.added == 2


def test_the_last_occurrence_of_an_id_wins_across_pages():
    base = [user(i) for i in range(5)]
    result, _ = apply(base, [
        [{"id": "id-000001", "displayName": "first"}, {"id": "id-000002", "@removed": {"reason": "changed"}}],
        [{"id": "id-000001", "mail": "second@x"}, {"id": "id-000002", "displayName": "restored"}],
        [{"id": "id-000003", "mail": "x"}, {"id": "id-000003", "@removed": {"reason": "deleted"}}],
    ])
    by_id = {u["id"]: u for u in result}
    assert by_id["id-000001"] == user(1, displayName="first", mail="second@x")  # minimal updates accumulate
    assert by_id["id-000002"] == user(2, displayName="restored")  # restored after removal: merged into the base
    assert "id-000003" not in by_id


def test_unchanged_users_are_copied_byte_for_byte():
    base = [user(i) for i in range(50)]
    blob, manifest = snapshot(base)
    out = MemoryBlob("users/new.jsonl.gz")
    with GzipBlobWriter(out) as writer:  # type: ignore[arg-type]
        merge(manifest, blob, Changes(10), PROPS, writer)  # type: ignore[arg-type]
        writer.commit()
    assert blob.committed is not None and out.committed is not None
    assert gzip.decompress(out.committed) == gzip.decompress(blob.committed)


@pytest.mark.parametrize("damage", ["sha256", "users"])
def test_a_base_that_does_not_match_its_manifest_falls_back(damage):
    blob, manifest = snapshot([user(i) for i in range(20)])
    wrong = dataclasses.replace(manifest, **({"sha256": "0" * 64} if damage == "sha256" else {"users": 19}))
    with GzipBlobWriter(MemoryBlob()) as writer, pytest.raises(FallBack, match="does not match its manifest"):  # type: ignore[arg-type]
        merge(wrong, blob, Changes(10), PROPS, writer)  # type: ignore[arg-type]


def test_a_base_that_is_not_gzip_falls_back():
    blob, manifest = snapshot([user(i) for i in range(20)])
    blob.committed = b"not gzip at all" * 10
    manifest = dataclasses.replace(manifest, sha256=hashlib.sha256(blob.committed).hexdigest())
    with GzipBlobWriter(MemoryBlob()) as writer, pytest.raises(FallBack, match="not valid gzip"):  # type: ignore[arg-type]
        merge(manifest, blob, Changes(10), PROPS, writer)  # type: ignore[arg-type]


@pytest.mark.parametrize("at", [20, 21, 40, 0.3, 0.5, 0.8])
def test_a_base_damaged_inside_its_deflate_stream_falls_back(at):
    """A byte flipped in transit or at rest: whatever the decompressor raises (ISA-L's own error for a bad
    deflate block is not an OSError) is the documented fallback too, never an unexpected failure."""
    blob, manifest = snapshot([user(i) for i in range(2000)], segments=1)
    assert blob.committed is not None
    data = bytearray(blob.committed)
    data[at if isinstance(at, int) else int(len(data) * at)] ^= 0xFF
    blob.committed = bytes(data)
    with GzipBlobWriter(MemoryBlob()) as writer, pytest.raises(FallBack):  # type: ignore[arg-type]
        merge(manifest, blob, Changes(10), PROPS, writer)  # type: ignore[arg-type]


def test_too_many_changed_users_falls_back_and_repeats_count_once():
    changes = Changes(3)
    changes.add([{"id": "a"}, {"id": "a", "mail": "x"}, {"id": "b"}, {"id": "c", "@removed": {"reason": "deleted"}}])
    with pytest.raises(FallBack, match="DELTA_MAX_CHANGES"):
        changes.add([{"id": "d"}])


def test_change_records_are_published_without_annotations_but_removed():
    published = Changes(10).add([{"id": "a", "@odata.type": "#microsoft.graph.user", "mail": "x",
                                  "@microsoft.graph.something": 1},
                                 {"id": "b", "@removed": {"reason": "changed"}}])
    assert published == [{"id": "a", "mail": "x"}, {"id": "b", "@removed": {"reason": "changed"}}]


def test_random_changes_equal_applying_them_to_a_dict():
    rng = random.Random(7)
    base = [user(i) for i in range(300)]
    expected = {u["id"]: dict(u) for u in base}
    base_by_id = {u["id"]: u for u in base}
    pages: list[list[dict]] = []
    for _ in range(6):
        page = []
        for _ in range(40):
            uid = f"id-{rng.randrange(340):06d}"
            if rng.random() < 0.25:
                page.append({"id": uid, "@removed": {"reason": rng.choice(["changed", "deleted"])}})
                expected.pop(uid, None)
            else:
                change = {"id": uid, "displayName": f"n{rng.randrange(1000)}"}
                if rng.random() < 0.3:
                    change["mail"] = None
                page.append(change)
                # A user back after a removal (restored) is merged into its base record, if it had one.
                fresh = {p: [] if p == "businessPhones" else None for p in PROPS}
                expected[uid] = {**(expected.get(uid) or base_by_id.get(uid) or fresh), **change}
        pages.append(page)
    result, _ = apply(base, pages)
    assert {u["id"]: u for u in result} == expected
    assert len(result) == len(expected) and json.dumps(result, ensure_ascii=False)


def test_fingerprints_count_users_that_differ_in_either_direction():
    def prints(users: list[dict]) -> Fingerprints:
        f = Fingerprints()
        f.write_lines([encode_user(u) for u in users])
        return f

    base = [user(i) for i in range(500)]
    same = prints(base)
    assert same.differing(prints(list(reversed(base)))) == 0  # order does not matter
    changed = [*base[:10], user(10, mail=None), *base[11:499], user(9999)]  # one changed, one gone, one new
    assert prints(base).differing(prints(changed)) == 3


def test_properties_beyond_the_selection_in_a_change_are_not_kept():
    base = [user(i) for i in range(3)]
    result, _ = apply(base, [[{"id": "id-000001", "mail": "new@x", "passwordProfile": {"password": "x"}},
                              {"id": "new-1", "displayName": "N", "signInActivity": {"x": 1}}]])
    assert result[1] == user(1, mail="new@x") and list(result[1]) == list(PROPS)
    assert list(result[3]) == list(PROPS)  # a new user: the selected properties, nothing else
