"""A Graph page's body as it arrives: its nextLink from the first kilobytes, the rest within a bound.

Reading the head first lets the next page's request go out while this page's users are still on the
wire (``graph.GraphUsers`` does the overlapping). A body that breaks off is asked for once more; one
larger than :data:`MAX_PAGE_BYTES` is refused before it can take gigabytes of memory to parse.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable, Iterator, TypeVar

import orjson
import requests

from .errors import PageCut, PageTooLarge, causes
from .transport import RunBudgetExhausted

log = logging.getLogger(__name__)

#: The most one page's body may hold, checked against Content-Length and against the bytes actually
#: read. 999 users with every property the sandbox fills in are 0.6 MB, with ~40 properties ~1.2 MB,
#: and even users with long proxyAddresses lists stay well under 20 MB a page; 64 MiB is ~100 x a
#: wide page, so only a broken or hostile answer reaches it, before it can take gigabytes to parse.
MAX_PAGE_BYTES = 64 * 1024 * 1024
#: How much of a response is read before looking for its nextLink. Graph writes ``@odata.nextLink``
#: before ``value`` (about a kilobyte in), so the next request can go out while the rest of this
#: page is still arriving.
HEAD_BYTES = 8 * 1024
#: The rest of a page is read in large pieces: fewer trips through the HTTP stack.
REST_BYTES = 256 * 1024
_Bytes = TypeVar("_Bytes", bytes, bytearray)
_NEXT_LINK = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")')


class ArrivingPage:
    """A page whose status and nextLink are known while the rest of its body may still be arriving.

    A connection that breaks mid-body is transient, and a page's URL can be asked for again: each page
    is fetched whole once more before the run gives up.
    """

    def __init__(self, number: int, fetch: Callable[[], requests.Response]) -> None:
        self.number = number
        #: Set once the request for the page after this one is out (or will never be): see GraphUsers.
        self.next_requested = threading.Event()
        self.request_id: str | None = None
        self.next_link: str | None = None
        self._fetch = fetch
        self._body: bytes | bytearray | None = None
        self._head: bytes | bytearray = b""
        self._head_reader: Iterator[bytes] | None = None

    def open(self) -> "ArrivingPage":
        """Request the page and read until its nextLink is known: its head, or if need be all of it."""
        self._response = self._fetch()
        self.request_id = self._response.headers.get("request-id")
        try:
            self._head = _read(self._read_head, self.number)
        except PageCut as cut:
            self._head = self._body = self._fetch_again(cut)
        self.next_link = next_link_in(self._head)
        if self.next_link is None:
            # Not in the head: the link may come after the users, so this page cannot overlap the next.
            self.next_link = next_link_in(self.body())
        return self

    def body(self) -> bytes | bytearray:
        """The whole response body; waits for whatever has not arrived yet."""
        if self._body is None:
            try:
                self._body = _read(lambda: self._read_rest(self._head), self.number)
            except PageCut as cut:
                self._body = self._fetch_again(cut)
        return self._body

    def _fetch_again(self, cut: PageCut) -> bytearray:
        log.warning("Graph page %d broke off while arriving (%s); asking for it again", self.number, cut.reason)
        self._response.close()
        self._head_reader = None
        self._response = self._fetch()
        self.request_id = self._response.headers.get("request-id")
        return _read(lambda: self._read_rest(b""), self.number)

    def _read_head(self) -> bytes:
        # The head's reader is kept until the body is complete: a dropped generator is closed at once,
        # and closing it mid-body makes urllib3 close the connection of a chunked response (the rest of
        # the body would then silently come up short).
        self._head_reader = self._response.iter_content(HEAD_BYTES)
        return next(self._head_reader, b"")

    def _read_rest(self, head: bytes | bytearray) -> bytearray:
        """``head`` and the rest of the body, failing as soon as more than MAX_PAGE_BYTES have arrived.

        Gathered in one growing buffer (which orjson parses as it is), never as pieces joined at the
        end: a page costs its own size in memory once, not twice.
        """
        body = bytearray(head)
        for piece in self._response.iter_content(REST_BYTES):
            if len(body) + len(piece) > MAX_PAGE_BYTES:
                self._response.close()
                raise PageTooLarge(self.number, f"more than {MAX_PAGE_BYTES} bytes arrived", self.request_id,
                                   MAX_PAGE_BYTES)
            body += piece
        self._head_reader = None  # the body is complete: closing the head's reader is harmless now
        return body

    def close(self) -> None:
        self._response.close()
        self._head_reader = None


def next_link_in(raw: bytes | bytearray) -> str | None:
    """The page-level ``@odata.nextLink`` found in raw JSON bytes, without parsing the users.

    A value inside a user cannot match: its quotes would be escaped. The parsed page is compared with
    what this found (``graph_pages.parse``), so a mismatch fails loudly instead of dropping users.
    """
    found = _NEXT_LINK.search(raw)
    if found is None:
        return None
    return orjson.loads(found.group(1)) or None


def _read(receive: Callable[[], _Bytes], number: int) -> _Bytes:
    try:
        return receive()
    except requests.RequestException as exc:
        log.debug("Graph page %d broke off while arriving", number, exc_info=True)
        raise PageCut(number, reason(exc)) from None


def reason(exc: requests.RequestException) -> str:
    """The innermost cause's class, e.g. ReadTimeoutError or RunBudgetExhausted; never a URL with a token."""
    *_, cause = causes(exc)
    return str(cause) if isinstance(cause, RunBudgetExhausted) else type(cause).__name__
