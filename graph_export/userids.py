"""Every user id of one export, as 64-bit digests: a repeated id fails the run before anything is published.

A ``GET /users`` listing never returns a user twice, so the same ``id`` twice in one export means the
paging went wrong (or something between us and Graph replayed a page) and the export would hold a
duplicate. Keeping the ids themselves would cost ~100 bytes a user, a set of them several times that;
this keeps 8 bytes a user:

- **Digest** (:func:`digest`): a Graph object id is a GUID (8-4-4-4-12 hex digits); its 128 bits are
  folded to 64 by XOR of the two halves (each read little-endian). Entra object ids are random GUIDs,
  so the fold is uniform. Any other id is hashed with BLAKE2b to 8 bytes. Both depend on the id alone,
  never on the process (Python's ``hash()`` is salted per process), so the digests a killed run saved
  (:meth:`UserIds.to_bytes`) mean the same in the process that resumes it. A page of GUIDs is digested
  with a few whole-page operations (join, hex-decode, one big-integer XOR): ~60 ns a user, where one
  BLAKE2b call per id costs ~300 ns.
- **Storage**: 64 ``array('Q')`` buckets chosen by the digest's low 6 bits, 8 MB at 1,000,000 users;
  after each page the bucket lengths are noted (256 bytes a page) so a repeat can be traced to pages.
- **Check** (:meth:`UserIds.check`, after the last page): each bucket that grew since the last check
  is turned into a set and compared with its length, so at most one bucket's set (~1 MB at 1,000,000
  users) exists at a time: ~60 ms at 1,000,000 users.

Checking every id as its page arrives instead (a bitmap in front of 4,096 buckets, which could also
name the repeated id) was measured in a real 1,000,000-user export: ~0.6 s more CPU than this, almost
all of it cache misses; either way a repeat fails the run before anything is committed.

Two different ids with the same 64-bit digest would be reported as a repeat: for n distinct random
ids that happens with probability about n²/2^65 (3 × 10^-8 at 1,000,000 users, 3 × 10^-6 at
10,000,000), a false failure that the next run resolves; a real repeat is never missed.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Iterable, Mapping, Sequence

from .errors import GraphError

_BUCKET_BITS = 6
_BUCKET_MASK = (1 << _BUCKET_BITS) - 1
#: Where restored digests came from, in place of a page number.
RESTORED = 0

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_ID = itemgetter("id")
_LITTLE = sys.byteorder == "little"
assert array("Q").itemsize == 8 and array("I").itemsize == 4


def digest(user_id: str) -> int:
    """The 64-bit digest of one id; the same in every process and on every machine."""
    if len(user_id) == 36 and _GUID.fullmatch(user_id):
        raw = bytes.fromhex(user_id.replace("-", ""))
        return int.from_bytes(raw[:8], "little") ^ int.from_bytes(raw[8:], "little")
    hashed = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(hashed, "little")


def page_digests(ids: Sequence[str]) -> array[int]:
    """``digest(i) for i in ids`` as an ``array('Q')``; whole-page operations when every id is a GUID."""
    n = len(ids)
    out = array("Q")
    if not n:
        return out
    joined = ",".join(ids)
    # With the commas where they must be, every id is exactly 36 characters long, and with the
    # hyphens where they must be (and nowhere else) each is 8-4-4-4-12; unhexlify checks the rest.
    if (len(joined) == 37 * n - 1 and joined.count(",") == n - 1 and joined.count("-") == 4 * n
            and joined[36::37] == "," * (n - 1) and joined[8::37] == joined[13::37] == joined[18::37]
            == joined[23::37] == "-" * n):
        try:
            raw = binascii.unhexlify(joined.encode("ascii").translate(None, b"-,"))
        except (UnicodeEncodeError, binascii.Error):
            raw = None
        if raw is not None:
            halves = memoryview(raw).cast("Q")
            folded = int.from_bytes(halves[0::2].tobytes(), "little") ^ int.from_bytes(halves[1::2].tobytes(), "little")
            out.frombytes(folded.to_bytes(8 * n, "little"))
            if not _LITTLE:
                out.byteswap()
            return out
    out.extend(map(digest, ids))
    return out


@dataclass(frozen=True)
class Repeat:
    """An id found twice: the page it first came on (``RESTORED``: before a resume) and the page it came again on."""

    first_page: int
    page: int
    request_id: str | None


class UserIds:
    """The digests of every user id of one export so far, in ~8 bytes a user.

    ``add`` (or ``add_ids``) each page, then ``check()`` once the last page is in: it raises
    :class:`GraphError` if an id came twice, naming the pages. ``to_bytes``/``from_bytes`` carry the
    digests across a resume (8 bytes a user, in any order); ``new_bytes`` hands out only what was
    added since its last call, so a caller can store them in appended pieces.
    """

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(1 << _BUCKET_BITS)]
        self._appends = [bucket.append for bucket in self._buckets]
        self._count = 0
        #: After each add: (page number, its request-id, every bucket's length then).
        self._pages: list[int] = []
        self._request_ids: list[str | None] = []
        self._marks: list[array[int]] = []
        self._checked = [0] * len(self._buckets)
        self._handed_out = [0] * len(self._buckets)

    def __len__(self) -> int:
        return self._count

    def add(self, page_number: int, users: Sequence[Mapping[str, Any]], request_id: str | None = None) -> None:
        """Add one page of users (each a dict with a string ``id``, as ``graph`` checks)."""
        self.add_ids(page_number, list(map(_ID, users)), request_id)

    def add_ids(self, page_number: int, ids: Sequence[str], request_id: str | None = None) -> None:
        """Add one page's ids."""
        digests = page_digests(ids)
        appends, mask = self._appends, _BUCKET_MASK
        for d in digests:
            appends[d & mask](d)
        self._count += len(digests)
        self._note(page_number, request_id)

    def check(self) -> None:
        """Raise GraphError if any id was added twice; only buckets that grew since the last check are looked at."""
        for b, bucket in enumerate(self._buckets):
            if len(bucket) == self._checked[b]:
                continue
            if len(set(bucket)) != len(bucket):
                raise GraphError(self._describe(self._repeat_in(b)))
            self._checked[b] = len(bucket)

    def to_bytes(self) -> bytes:
        """Every digest, 8 bytes little-endian each, in no particular order."""
        return b"".join(_little_endian(bucket) for bucket in self._buckets)

    def new_bytes(self) -> bytes:
        """The digests added since the last ``new_bytes()`` (or since creation / ``from_bytes``).

        The pieces handed out, concatenated, hold the same digests as :meth:`to_bytes`.
        """
        pieces = []
        for b, bucket in enumerate(self._buckets):
            start = self._handed_out[b]
            if start < len(bucket):
                pieces.append(_little_endian(bucket[start:]))
                self._handed_out[b] = len(bucket)
        return b"".join(pieces)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | Iterable[bytes]) -> "UserIds":
        """The ids that ``to_bytes`` (or ``new_bytes`` pieces, joined or as an iterable) described.

        Raises ValueError if the length is not a multiple of 8. A digest twice is not refused here:
        ``check()`` reports it (as a repeat before the resume point).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = b"".join(data)
        if len(data) % 8:
            raise ValueError(f"saved user ids are {len(data)} bytes long, not a multiple of 8")
        digests = array("Q")
        digests.frombytes(data)
        if not _LITTLE:
            digests.byteswap()
        ids = cls()
        appends, mask = ids._appends, _BUCKET_MASK
        for d in digests:
            appends[d & mask](d)
        ids._count = len(digests)
        ids._note(RESTORED, None)
        ids._handed_out = [len(bucket) for bucket in ids._buckets]
        return ids

    def _note(self, page_number: int, request_id: str | None) -> None:
        self._pages.append(page_number)
        self._request_ids.append(request_id)
        self._marks.append(array("I", map(len, self._buckets)))

    def _repeat_in(self, b: int) -> Repeat:
        """The first digest of bucket ``b`` seen twice, traced to the pages that added it."""
        seen: set[int] = set()
        for position, d in enumerate(self._buckets[b]):
            if d in seen:
                first = self._buckets[b].index(d)
                ends = [mark[b] for mark in self._marks]  # bucket b's length after each add
                at, again = bisect_right(ends, first), bisect_right(ends, position)
                return Repeat(self._pages[at], self._pages[again], self._request_ids[again])
            seen.add(d)
        raise AssertionError("a bucket whose set is smaller than itself holds a repeat")  # pragma: no cover

    @staticmethod
    def _describe(r: Repeat) -> str:
        where = f" (request-id {r.request_id})" if r.request_id else ""
        if r.page == RESTORED:
            pages = "both times before the page this run resumed from"
        elif r.first_page == RESTORED:
            pages = f"before the page this run resumed from and again on page {r.page}"
        elif r.first_page == r.page:
            pages = f"both times on page {r.page}"
        else:
            pages = f"on page {r.first_page} and again on page {r.page}"
        return (f"Graph returned the same user twice in one listing, {pages}: a listing never repeats a user, so "
                f"this export would hold a duplicate and nothing was published; run the export again, and if it "
                f"happens again report it to Microsoft{where}.")


def _little_endian(digests: array[int]) -> bytes:
    if _LITTLE:
        return digests.tobytes()
    swapped = array("Q", digests)
    swapped.byteswap()
    return swapped.tobytes()
