"""The duplicate-id check: stable 64-bit digests, detection on the page a repeat arrives, save and restore."""

import os
import subprocess
import sys
import uuid

import pytest

from graph_export.errors import GraphError
from graph_export.userids import UserIds, digest, page_digests
from sandbox.tenant import make_user

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guid_with_digest(d: int, salt: int = 0) -> str:
    """A GUID whose digest is ``d``: its first half XOR its second half (little-endian) is ``d``."""
    raw = (d ^ salt).to_bytes(8, "little") + salt.to_bytes(8, "little")
    return str(uuid.UUID(bytes=raw))


def guid_from_bytes(raw: bytes) -> str:
    return guid_with_digest(int.from_bytes(raw, "little"))


def tenant_ids(start: int, stop: int) -> list[str]:
    return [make_user(i)["id"] for i in range(start, stop)]


# --- the digest ----------------------------------------------------------------------------------

def test_digests_are_fixed_values_not_per_process_hashes():
    # These values are saved next to checkpoints and read back by another process, maybe another
    # version: they must never change. (Python's hash() would differ in every process.)
    assert digest("f3f6798b-7685-54c7-85a0-92d621050052") == 0x955480575DEB5676
    assert digest("user@contoso.com") == 0x78E716A420A514D6  # not a GUID: BLAKE2b, 8 bytes, little-endian
    assert digest("Zoë") == 0x9A89EF9506B79F78
    assert digest("") == 0xB4B2797457A0A6E4


def test_digests_and_saved_bytes_are_the_same_in_another_process():
    ids = tenant_ids(0, 50) + ["not-a-guid", "Łukasz"]
    here = UserIds()
    here.add_ids(1, ids)
    code = ("import sys; from graph_export.userids import UserIds; u = UserIds(); "
            "u.add_ids(1, sys.argv[1:]); sys.stdout.buffer.write(u.to_bytes())")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": REPO}
    there = subprocess.run([sys.executable, "-c", code, *ids], env=env, capture_output=True, check=True).stdout
    assert there == here.to_bytes()


def test_a_guid_is_the_same_id_in_either_case():
    assert digest("F3F6798B-7685-54C7-85A0-92D621050052") == digest("f3f6798b-7685-54c7-85a0-92d621050052")


@pytest.mark.parametrize("ids", [
    [],
    tenant_ids(0, 999),
    [i.upper() for i in tenant_ids(0, 20)],
    tenant_ids(0, 5) + ["not-a-guid"] + tenant_ids(5, 10),                  # one non-GUID: per-id path
    # Lengths 37 and 35 that line up as two GUIDs when joined without a separator: still not GUIDs.
    ["aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaab", "bbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"],
    ["aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa,", "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"],   # a comma inside
    ["gggggggg-aaaa-aaaa-aaaa-aaaaaaaaaaaa"],                                 # not hex
    ["aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaa\u00e9"],                            # not ASCII
    ["aaaaaaaa-aaaa-aaaa-aaaaaaaaa-aaaaaaaa"],                                # hyphens elsewhere
])
def test_whole_page_digests_equal_one_digest_per_id(ids):
    assert list(page_digests(ids)) == [digest(i) for i in ids]


# --- detection -----------------------------------------------------------------------------------

def test_no_repeat_no_error_and_every_id_counted():
    ids = UserIds()
    for page in range(3):
        ids.add(page + 1, [make_user(i) for i in range(page * 999, (page + 1) * 999)])
    ids.check()
    assert len(ids) == 3 * 999


def test_an_id_of_an_earlier_page_fails_naming_both_pages_and_the_request_id():
    ids = UserIds()
    ids.add_ids(1, tenant_ids(0, 999), "rid-1")
    ids.add_ids(2, tenant_ids(999, 1998), "rid-2")
    ids.add_ids(3, tenant_ids(1998, 2500) + [tenant_ids(0, 999)[123]] + tenant_ids(2500, 2600), "rid-3")
    with pytest.raises(GraphError) as info:
        ids.check()
    message = str(info.value)
    assert "the same user twice in one listing, on page 1 and again on page 3:" in message
    assert "(request-id rid-3)" in message and "nothing was published" in message and "\n" not in message


def test_an_id_twice_on_one_page_fails_too():
    page = tenant_ids(0, 10)
    ids = UserIds()
    ids.add_ids(7, page + [page[3]])
    with pytest.raises(GraphError, match="twice in one listing, both times on page 7:"):
        ids.check()


def test_check_looks_again_at_buckets_that_grew_since_it_passed():
    page = tenant_ids(0, 500)
    ids = UserIds()
    ids.add_ids(1, page)
    ids.check()
    ids.check()  # nothing new: nothing to look at
    ids.add_ids(2, tenant_ids(500, 600))
    ids.check()
    ids.add_ids(3, [page[42]], "rid-3")
    with pytest.raises(GraphError, match="on page 1 and again on page 3: .*rid-3"):
        ids.check()


def test_different_ids_with_the_same_digest_count_as_a_repeat():
    # A 64-bit collision (odds ~n²/2^65): reported like a repeat, so a real repeat is never missed.
    a, b = guid_with_digest(0x0123456789ABCDEF, salt=1), guid_with_digest(0x0123456789ABCDEF, salt=2)
    assert a != b and digest(a) == digest(b)
    ids = UserIds()
    ids.add_ids(1, [a])
    ids.add_ids(2, [b])
    with pytest.raises(GraphError, match="on page 1 and again on page 2"):
        ids.check()


def test_ids_sharing_a_bucket_or_most_bits_are_not_repeats():
    ids = UserIds()
    ids.add_ids(1, [guid_with_digest(d) for d in (1, 1 + 64, 1 + 128, 1 << 63 | 1, (1 << 64) - 63)])
    ids.check()
    assert len(ids) == 5


# --- saving and restoring ------------------------------------------------------------------------

def test_to_bytes_is_eight_bytes_a_user_and_from_bytes_restores_them():
    saved = UserIds()
    saved.add_ids(1, tenant_ids(0, 999))
    saved.add_ids(2, tenant_ids(999, 1500) + ["not-a-guid"])
    data = saved.to_bytes()
    assert len(data) == 8 * 1501
    restored = UserIds.from_bytes(data)
    assert len(restored) == 1501
    assert sorted(chunks(restored.to_bytes())) == sorted(chunks(data))
    restored.add_ids(3, tenant_ids(1500, 2000))  # new users: fine
    restored.check()
    restored.add_ids(4, ["not-a-guid"], "rid-4")  # one saved before the resume point: caught
    with pytest.raises(GraphError, match="before the page this run resumed from and again on page 4: .*rid-4"):
        restored.check()


def test_a_repeat_among_the_restored_ids_is_caught_too():
    # A run killed after a checkpoint had not checked yet: the run that resumes it does.
    saved = UserIds()
    saved.add_ids(1, ["a", "b"])
    saved.add_ids(2, ["a"])
    restored = UserIds.from_bytes(saved.to_bytes())
    restored.add_ids(3, ["c"])
    with pytest.raises(GraphError, match="both times before the page this run resumed from"):
        restored.check()


def test_new_bytes_hands_out_each_digest_once_and_the_pieces_restore():
    ids = UserIds()
    ids.add_ids(1, tenant_ids(0, 999))
    first = ids.new_bytes()
    ids.add_ids(2, tenant_ids(999, 1200))
    second = ids.new_bytes()
    assert (len(first), len(second), ids.new_bytes()) == (8 * 999, 8 * 201, b"")
    assert sorted(chunks(first + second)) == sorted(chunks(ids.to_bytes()))
    restored = UserIds.from_bytes([first, second])
    assert len(restored) == 1200 and restored.new_bytes() == b""
    restored.add_ids(3, tenant_ids(0, 1))
    assert len(restored.new_bytes()) == 8
    with pytest.raises(GraphError):
        restored.check()


def test_from_bytes_refuses_a_length_that_is_not_whole_digests():
    with pytest.raises(ValueError, match="not a multiple of 8"):
        UserIds.from_bytes(b"1234567")
    assert len(UserIds.from_bytes(b"")) == 0


def test_memory_is_about_eight_bytes_a_user():
    ids = UserIds()
    fixed = sum(sys.getsizeof(b) for b in ids._buckets)
    n = 100_000
    all_ids = [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % (1 << 128))) for i in range(1, n + 1)]
    for start in range(0, n, 999):
        ids.add_ids(start // 999 + 1, all_ids[start:start + 999])
    ids.check()
    grown = sum(sys.getsizeof(b) for b in ids._buckets) - fixed
    per_page = sum(sys.getsizeof(m) for m in ids._marks) / len(ids._marks)
    assert grown < n * 8 * 1.15 and per_page < 400 and fixed < 10_000


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + 8] for i in range(0, len(data), 8)]
