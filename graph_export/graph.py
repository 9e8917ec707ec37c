"""Microsoft Graph's users: pages of ``GET /v1.0/users``, changes from ``/v1.0/users/delta``, and how
many there are (``/v1.0/users/$count``, for the completeness check).

:class:`GraphUsers` holds what every request shares (the session, the endpoint, the token source, the
timeout). Paging follows each ``@odata.nextLink`` as an opaque, whole URL (Graph has no ``$skip`` for
users). Throttling and transient failures are retried by the session's transport (``transport.py``).
What comes back is checked before it can reach an export: a link off the endpoint or a redirect is
never followed, a page may not exceed ``graph_stream.MAX_PAGE_BYTES``, its items must be users
(``graph_pages.py``), and no id may come twice in one listing (``userids.py``).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Generator, Iterator, Mapping, Protocol
from urllib.parse import urlencode, urlsplit

import requests

from . import graph_stream, pipeline, transport
from .errors import (
    ExportError,
    GraphError,
    PageLinkRejected,
    PageTooLarge,
    certificate_failure,
    origin_of,
    untrusted_certificate,
)
from .graph_messages import describe_graph_failure, describe_redirect, graph_error
from .graph_pages import Page, parse
from .graph_stream import ArrivingPage, reason
from .properties import MANAGER, NOT_IN_DELTA
from .userids import UserIds

__all__ = ["CONNECT_TIMEOUT", "DELTA_PREFER", "MAX_PAGES", "GraphUsers", "Page", "Tokens", "first_page_url",
           "latest_delta_url"]

log = logging.getLogger(__name__)

#: Seconds to establish a connection; the read timeout is the HTTP_TIMEOUT_SECONDS setting.
CONNECT_TIMEOUT = 10.0
#: Stop following nextLinks after this many pages: 10,000 pages x 999 users is 10 million users, far
#: above any tenant, so reaching it means a paging loop, not a big directory.
MAX_PAGES = 10_000
#: users/delta pages hold at most 200 users and refuse $top; the page size is asked for this way.
DELTA_PREFER = "odata.maxpagesize=200"
#: The longest a page waits for the next page's request to be written before it is parsed.
NEXT_REQUEST_HEAD_START_S = 0.05


class Tokens(Protocol):
    """Where pages get their bearer token: the cached one, or a fresh one after Graph rejected it."""

    def get(self) -> str: ...

    def refresh(self, rejected: str) -> str: ...


def first_page_url(graph_endpoint: str, properties: tuple[str, ...], page_size: int) -> str:
    """The first page of /users: the selection, the page size, and the manager as ``$expand`` when selected
    (a relationship cannot be in ``$select`` there; ``settings.page_size`` keeps to $expand's 100 a page)."""
    query = {"$select": ",".join(p for p in properties if p != MANAGER), "$top": str(page_size)}
    if MANAGER in properties:
        query["$expand"] = f"{MANAGER}($select=id)"
    return f"{graph_endpoint}/v1.0/users?{urlencode(query, safe='$,()=')}"


def latest_delta_url(graph_endpoint: str, properties: tuple[str, ...]) -> str:
    """users/delta for "now": no users, only a deltaLink that later rounds start from; it selects what
    users/delta tracks (the others are read apart: ``signins``)."""
    tracked = ",".join(p for p in properties if p not in NOT_IN_DELTA)
    query = urlencode({"$select": tracked, "$deltatoken": "latest"}, safe="$,")
    return f"{graph_endpoint}/v1.0/users/delta?{query}"


class GraphUsers:
    """The users of one Graph endpoint, read through ``session`` with bearer tokens from ``tokens``.

    ``sent`` is the :class:`transport.RequestSignal` the session's connections call
    (``make_session(announce=sent)``); without it pages do not overlap their next request as tightly.
    """

    def __init__(self, session: requests.Session, endpoint: str, tokens: Tokens, read_timeout_s: float, *,
                 sent: transport.RequestSignal | None = None) -> None:
        self._session, self.endpoint, self._tokens = session, endpoint, tokens
        self._timeout = (CONNECT_TIMEOUT, read_timeout_s)
        self._origin = origin_of(endpoint)
        self._sent = sent if sent is not None else transport.RequestSignal()

    def count(self) -> int | None:
        """How many users the tenant has now, by ``GET /v1.0/users/$count`` (``ConsistencyLevel: eventual``).

        Asked as pages are (:meth:`call`: the session's retries on the run's budget, one fresh token after
        a 401, no redirect followed). Whatever keeps it from being a whole number (a refusal such as 403
        without the permission or 400 without advanced queries, 5xx or no connection after the retries, a
        redirect, a body that is not a number) is one warning saying so, and None: the completeness check
        is then skipped for this end of the run, which goes on.
        """
        try:
            response = self.call("GET", "/v1.0/users/$count", what="the user count",
                                 headers={"Accept": "text/plain", "ConsistencyLevel": "eventual"})
        except ExportError as exc:  # no connection, an untrusted certificate, a redirect, the token source failing
            _count_unknown(f"could not be had ({exc})")
            return None
        with response:
            return _count_in(response)

    def pages(self, url: str, first_number: int = 1, *, ids: UserIds | None = None) -> Generator[Page, None, None]:
        """Each page of a users listing (users without ``@odata.*`` annotations, and its nextLink) to the last one.

        ``url`` is the first page's URL or, when resuming, a saved nextLink. Requests run on a background
        thread one page ahead: page k+1 is requested as soon as page k's nextLink has arrived, while page
        k's users are still being received and parsed here. At most three responses are open at a time,
        so memory does not grow with the tenant. Close the iterator (``contextlib.closing``) when stopping early.

        Every page's ids are added to ``ids`` (a fresh :class:`UserIds` if None; when resuming, the one
        restored from the checkpoint) before the page is yielded, so then ``ids`` holds the ids of every
        page yielded so far (and whatever it held before): what a checkpoint must save. Before the last
        page is yielded, ``ids.check()`` raises GraphError if any id came twice, so the caller never
        reaches the end of a listing that holds a duplicate.
        """
        return self._follow(url, first_number, UserIds() if ids is None else ids, prefer=None)

    def listing(self, url: str) -> Generator[Page, None, None]:
        """Each page of a users listing like :meth:`pages`, without keeping the ids: for a listing whose
        reader finds a repeated id itself (``signins``' unique index), at no memory per user here."""
        return self._follow(url, 1, None, prefer=None)

    def changes(self, link: str) -> Generator[Page, None, None]:
        """Each page of a users/delta round from ``link`` (an id may come again: no repeat check); the last
        one carries the deltaLink the next round starts from."""
        return self._follow(link, 1, None, prefer=DELTA_PREFER)

    def _follow(self, url: str, first_number: int, ids: UserIds | None, *,
                prefer: str | None) -> Generator[Page, None, None]:
        with pipeline.Prefetcher(self._request_pages(url, first_number, prefer), depth=1,
                                 name="graph-requests") as arriving:
            for page in arriving:
                # Let the next request go out before parsing takes the GIL: that request is what every
                # page waits for. Bounded, as it is only a matter of order.
                page.next_requested.wait(NEXT_REQUEST_HEAD_START_S)
                parsed, page_ids = parse(page, self.endpoint)
                if ids is not None:
                    ids.add_ids(parsed.number, page_ids, page.request_id)
                    if parsed.next_link is None:
                        ids.check()
                yield parsed

    def _request_pages(self, url: str, first_number: int, prefer: str | None) -> Iterator[ArrivingPage]:
        seen: set[str] = set()
        handed_out: ArrivingPage | None = None
        try:
            for number in range(first_number, first_number + MAX_PAGES):
                self._check_on_endpoint(url, number)
                fetch = functools.partial(self._get_page, url, number, prefer,
                                          is_next_link=number > 1 or "skiptoken" in url or _is_saved_delta_link(url))
                with self._sent.armed(handed_out.next_requested.set if handed_out else _nothing):
                    page = ArrivingPage(number, fetch).open()
                if page.next_link is None:
                    page.next_requested.set()  # the last page: nothing follows it
                handed_out = page
                yield page
                if page.next_link is None:
                    return
                if page.next_link in seen:
                    raise GraphError(f"Graph returned the same nextLink twice (page {number}): paging would loop.")
                seen.add(page.next_link)
                url = page.next_link
            raise GraphError(f"Stopped after {MAX_PAGES} pages without reaching the last one: paging would not end.")
        finally:
            if handed_out is not None:
                handed_out.next_requested.set()  # stopped early: nobody waits for a request that never comes

    def _check_on_endpoint(self, url: str, number: int) -> None:
        """The bearer token must never be sent anywhere but the configured Graph endpoint."""
        if origin_of(url) != self._origin or "@" in urlsplit(url).netloc:
            raise GraphError(f"Graph page {number} is linked at {origin_of(url)}, not {self._origin}: refusing to "
                             "follow it; check GRAPH_ENDPOINT.")

    def _get_page(self, url: str, number: int, prefer: str | None, *, is_next_link: bool) -> requests.Response:
        """A 200 response for ``url`` whose body has not been read yet; any other outcome raises GraphError."""
        token = self._tokens.get()
        # Never follow a redirect: requests would fetch the new location (dropping the token if it is
        # another host) and its body would become the export. Refused in a response hook, before requests
        # looks at the redirect at all: even with allow_redirects=False it reads the whole 3xx body and
        # parses its Location.
        refuse_redirects = {"response": functools.partial(_refuse_redirect, url=url, what=f"page {number}")}
        headers = {"Accept": "application/json", **({"Prefer": prefer} if prefer else {})}
        for attempt in (1, 2):
            response = self._send(url, number, {**headers, "Authorization": f"Bearer {token}"}, refuse_redirects)
            if response.status_code == 401 and attempt == 1:
                # Expired or revoked before MSAL expected: one fresh token, one more try of the same page.
                log.info("Graph rejected the access token on page %d; retrying once with a fresh token", number)
                response.close()
                token = self._tokens.refresh(token)
                continue
            break
        if response.status_code != 200:
            if is_next_link and response.status_code in (400, 404, 410):
                raise PageLinkRejected(describe_graph_failure(response, number))
            raise GraphError(describe_graph_failure(response, number))
        declared = response.headers.get("Content-Length", "").strip()
        limit = graph_stream.MAX_PAGE_BYTES
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise PageTooLarge(number, f"Content-Length {declared}", response.headers.get("request-id"), limit)
        return response

    def _send(self, url: str, number: int, headers: dict[str, str], hooks: dict[str, Any]) -> requests.Response:
        """One GET of a page, retried by the transport; GraphError when it could not be had at all."""
        try:
            return self._session.get(url, headers=headers, timeout=self._timeout, stream=True,
                                     allow_redirects=False, hooks=hooks)
        except requests.RequestException as exc:
            log.debug("Graph page %d could not be fetched", number, exc_info=True)
            raise _unreachable(exc, url, f"page {number}", published="; nothing was published") from None

    def call(self, method: str, path: str, *, what: str, json_body: Any = None,
             headers: Mapping[str, str] | None = None) -> requests.Response:
        """One request for ``path`` under the endpoint that is not a page of users (``what`` names it in
        messages), with what pages have: the token (one fresh one after a 401), the transport's retries,
        no redirect followed. The answer is returned whatever its status, its body read."""
        url = f"{self.endpoint}{path}"
        hooks = {"response": functools.partial(_refuse_redirect, url=url, what=what)}
        token = self._tokens.get()
        for attempt in (1, 2):
            try:
                response = self._session.request(
                    method, url, json=json_body, timeout=self._timeout, allow_redirects=False, hooks=hooks,
                    headers={"Accept": "application/json", **(headers or {}), "Authorization": f"Bearer {token}"})
            except requests.RequestException as exc:
                log.debug("Graph could not be asked for %s", what, exc_info=True)
                raise _unreachable(exc, url, what) from None
            if response.status_code == 401 and attempt == 1:
                log.info("Graph rejected the access token for %s; retrying once with a fresh token", what)
                token = self._tokens.refresh(token)
                continue
            break
        return response


def _count_in(response: requests.Response) -> int | None:
    """The whole number a 200 answer of /users/$count holds (text/plain, perhaps after a byte order mark,
    which OData services may send); otherwise a warning and None."""
    if response.status_code != 200:
        code, message = graph_error(response)
        request_id = response.headers.get("request-id")
        detail = f"{code}: {message}" if code else message
        _count_unknown(f"was refused with HTTP {response.status_code} ({detail})"
                       + (f" (request-id {request_id})" if request_id else ""))
        return None
    text = response.content[:64].decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        _count_unknown("came back as something other than a whole number")
        return None
    return int(text)


def _count_unknown(why: str) -> None:
    log.warning("Graph's user count (GET /users/$count) %s: recorded as unknown, and the completeness check is "
                "skipped for this end of the run", why)


_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")


def _unreachable(exc: requests.RequestException, url: str, what: str, published: str = "") -> GraphError:
    """One line for a request that got no answer: a certificate this machine does not trust (which retrying
    cannot heal), or no answer after the retries. ``published`` says what that means for the run."""
    untrusted = certificate_failure(exc)
    if untrusted is not None:
        return GraphError(f"{untrusted_certificate('Graph', origin_of(url), 'GRAPH_ENDPOINT', untrusted)}"
                          f"{published} ({what}).")
    return GraphError(f"Graph at {origin_of(url)} could not be reached for {what} after retries ({reason(exc)}): "
                      "check GRAPH_ENDPOINT and the network, then run again.")


def _is_saved_delta_link(url: str) -> bool:
    return "deltatoken=" in url and not url.endswith("deltatoken=latest")


def _nothing() -> None:
    pass


def _refuse_redirect(response: requests.Response, *args: Any, url: str, what: str, **kwargs: Any) -> requests.Response:
    """A requests response hook: any 3xx ends the run, its body unread."""
    if 300 <= response.status_code < 400:
        response.close()
        raise GraphError(describe_redirect(response, url, what))
    return response
