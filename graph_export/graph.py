"""Pages of users from Microsoft Graph ``GET /v1.0/users`` and its change feed ``/v1.0/users/delta``.

Paging follows each ``@odata.nextLink`` as an opaque, whole URL (Graph has no ``$skip`` for users).
Throttling and transient failures are retried by the session's transport (``transport.py``).
What comes back is checked before it can reach an export: a redirect is never followed, a page may
not exceed :data:`MAX_PAGE_BYTES`, every item of ``value`` must be an object with a non-empty string
``id``, and no id may come twice in one listing (``userids.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator, Protocol, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import orjson
import requests

from . import jsontext, pipeline, transport
from .errors import GraphError, causes, certificate_failure, first_line, origin_of, untrusted_certificate
from .transport import RETRY_STATUSES, RunBudgetExhausted
from .userids import UserIds

log = logging.getLogger(__name__)

#: Seconds to establish a connection; the read timeout is the HTTP_TIMEOUT_SECONDS setting.
CONNECT_TIMEOUT = 10.0
#: Stop following nextLinks after this many pages: 10,000 pages x 999 users is 10 million users, far
#: above any tenant, so reaching it means a paging loop, not a big directory.
MAX_PAGES = 10_000
#: The most one page's body may hold, checked against Content-Length and against the bytes actually
#: read. 999 users with every property the sandbox fills in are 0.6 MB, with ~40 properties ~1.2 MB,
#: and even users with long proxyAddresses lists stay well under 20 MB a page; 64 MiB is ~100 x a
#: wide page, so only a broken or hostile answer reaches it, before it can take gigabytes to parse.
MAX_PAGE_BYTES = 64 * 1024 * 1024

USER_READ_ALL_ROLE_ID = "df021288-bdef-4463-88db-98f22de89214"  # Microsoft Graph application role
#: AuditLog.Read.All, the application role Graph requires (with an Entra ID P1/P2 licence) for signInActivity.
AUDIT_LOG_READ_ALL_ROLE_ID = "b0afded3-3588-46d8-8b3d-9842eff778da"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


class Tokens(Protocol):
    """Where pages get their bearer token: the cached one, or a fresh one after Graph rejected it."""

    def get(self) -> str: ...

    def refresh(self, rejected: str) -> str: ...


class PageLinkRejected(GraphError):
    """Graph refused a nextLink (expired or unknown skiptoken): paging must start over."""


def first_page_url(graph_endpoint: str, properties: tuple[str, ...], page_size: int) -> str:
    query = urlencode({"$select": ",".join(properties), "$top": str(page_size)}, safe="$,")
    return f"{graph_endpoint}/v1.0/users?{query}"


def latest_delta_url(graph_endpoint: str, properties: tuple[str, ...]) -> str:
    """users/delta for "now": no users, only a deltaLink that later rounds start from."""
    query = urlencode({"$select": ",".join(properties), "$deltatoken": "latest"}, safe="$,")
    return f"{graph_endpoint}/v1.0/users/delta?{query}"


#: users/delta pages hold at most 200 users and refuse $top; the page size is asked for this way.
DELTA_PREFER = "odata.maxpagesize=200"


@dataclass(frozen=True)
class Page:
    number: int
    users: list[dict[str, Any]]
    next_link: str | None
    #: users/delta only: on the last page of a round, where the next round starts.
    delta_link: str | None = None


#: How much of a response is read before looking for its nextLink. Graph writes ``@odata.nextLink``
#: before ``value`` (about a kilobyte in), so the next request can go out while the rest of this
#: page is still arriving.
HEAD_BYTES = 8 * 1024
#: The rest of a page is read in large pieces: fewer trips through the HTTP stack.
REST_BYTES = 256 * 1024
#: The longest a page waits for the next page's request to be written before it is parsed.
NEXT_REQUEST_HEAD_START_S = 0.05
_Bytes = TypeVar("_Bytes", bytes, bytearray)
_NEXT_LINK = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")')


class PageCut(GraphError):
    """The connection broke off while a page's body was arriving; the caller only sees the second one."""

    def __init__(self, number: int, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"The connection to Graph broke off while page {number} was arriving ({reason}), twice: nothing was "
            "published; check the network path to GRAPH_ENDPOINT and run again (the export resumes from its "
            "last checkpoint)."
        )


class PageTooLarge(GraphError):
    """A page's body exceeds MAX_PAGE_BYTES (declared or actually sent): stopped before it is read."""

    def __init__(self, number: int, size: str, request_id: str | None) -> None:
        where = f" (request-id {request_id})" if request_id else ""
        super().__init__(
            f"Graph page {number} is larger than the {MAX_PAGE_BYTES // (1024 * 1024)} MiB a page of 999 users "
            f"can plausibly take ({size}): stopped before reading it into memory and nothing was published; "
            f"check GRAPH_ENDPOINT and any proxy in between, and report it to Microsoft if it persists{where}."
        )


class ArrivingPage:
    """A page whose status and nextLink are known while the rest of its body may still be arriving.

    A connection that breaks mid-body is transient, and a page's URL can be asked for again: each page
    is fetched whole once more before the run gives up.
    """

    def __init__(self, number: int, fetch: Callable[[], requests.Response]) -> None:
        self.number = number
        #: Set once the request for the page after this one is out (or will never be): see iter_user_pages.
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
                raise PageTooLarge(self.number, f"more than {MAX_PAGE_BYTES} bytes arrived", self.request_id)
            body += piece
        self._head_reader = None  # the body is complete: closing the head's reader is harmless now
        return body

    def close(self) -> None:
        self._response.close()
        self._head_reader = None


def next_link_in(raw: bytes | bytearray) -> str | None:
    """The page-level ``@odata.nextLink`` found in raw JSON bytes, without parsing the users.

    A value inside a user cannot match: its quotes would be escaped. The parsed page is compared with
    what this found (see :func:`iter_user_pages`), so a mismatch fails loudly instead of dropping users.
    """
    found = _NEXT_LINK.search(raw)
    if found is None:
        return None
    return orjson.loads(found.group(1)) or None


def iter_user_pages(
    session: requests.Session,
    url: str,
    graph_endpoint: str,
    tokens: Tokens,
    read_timeout_s: float,
    first_number: int = 1,
    *,
    ids: UserIds | None = None,
    change_feed: bool = False,
) -> Generator[Page, None, None]:
    """Yield each page (users without ``@odata.*`` annotations, and its nextLink) until the last one.

    ``url`` is the first page's URL or, when resuming, a saved nextLink. Requests run on a background
    thread one page ahead: page k+1 is requested as soon as page k's nextLink has arrived, while page
    k's users are still being received and parsed here. At most three responses are open at a time,
    so memory does not grow with the tenant. Close the iterator (``contextlib.closing``) when stopping early.

    Every page's ids are added to ``ids`` (a fresh :class:`UserIds` if None; when resuming, the one
    restored from the checkpoint) before the page is yielded, so then ``ids`` holds the ids of every
    page yielded so far (and whatever it held before): what a checkpoint must save. Before the last
    page is yielded, ``ids.check()`` raises GraphError if any id came twice, so the caller never
    reaches the end of a listing that holds a duplicate. A ``change_feed`` (users/delta, where an id
    may come again) has no such check, and asks for its page size with ``Prefer``.
    """
    if not change_feed:
        ids = UserIds() if ids is None else ids
    prefer = DELTA_PREFER if change_feed else None
    requested = _request_pages(session, url, graph_endpoint, tokens, read_timeout_s, first_number, prefer)
    with pipeline.Prefetcher(requested, depth=1, name="graph-requests") as arriving:
        for page in arriving:
            # Let the next request go out before parsing takes the GIL: that request is what every
            # page waits for. Bounded, as it is only a matter of order.
            page.next_requested.wait(NEXT_REQUEST_HEAD_START_S)
            parsed, page_ids = _parse(page, graph_endpoint)
            if ids is not None and not change_feed:
                ids.add_ids(parsed.number, page_ids, page.request_id)
                if parsed.next_link is None:
                    ids.check()
            yield parsed


def _request_pages(session: requests.Session, url: str, graph_endpoint: str, tokens: Tokens,
                   read_timeout_s: float, first_number: int, prefer: str | None) -> Iterator[ArrivingPage]:
    origin = _origin(graph_endpoint)
    seen: set[str] = set()
    timeout = (CONNECT_TIMEOUT, read_timeout_s)
    handed_out: ArrivingPage | None = None
    try:
        for number in range(first_number, first_number + MAX_PAGES):
            if _origin(url) != origin:
                # The bearer token must never be sent anywhere but the configured Graph endpoint.
                raise GraphError(
                    f"Graph page {number} is linked at {_origin(url)}, not {origin}: refusing to follow it; "
                    "check GRAPH_ENDPOINT."
                )
            fetch = functools.partial(_get_page, session, url, tokens, number, timeout, prefer,
                                      is_next_link=number > 1 or "skiptoken" in url or _is_saved_delta_link(url))
            with transport.on_request_sent(handed_out.next_requested.set if handed_out else _nothing):
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


def _is_saved_delta_link(url: str) -> bool:
    return "deltatoken=" in url and not url.endswith("deltatoken=latest")


def _nothing() -> None:
    pass


def _parse(page: ArrivingPage, graph_endpoint: str) -> tuple[Page, list[str]]:
    """The page, and its users' ids (checked: every item is an object with a non-empty string id)."""
    number, raw = page.number, page.body()
    try:
        body = jsontext.loads(raw)  # orjson, or for a lone surrogate escape (valid JSON) the fallback
    except ValueError:
        raise GraphError(f"Graph returned page {number} as something other than JSON: check GRAPH_ENDPOINT.") from None
    users = body.get("value") if isinstance(body, dict) else None
    if not isinstance(users, list):
        raise GraphError(f"Graph returned page {number} without a 'value' list: check GRAPH_ENDPOINT.")
    ids = user_ids(users, number, page.request_id)
    if (body.get("@odata.nextLink") or None) != page.next_link:
        # The next request followed the link found in the raw bytes; never page on from a wrong one.
        where = f" (request-id {page.request_id})" if page.request_id else ""
        raise GraphError(f"Graph page {number} has an ambiguous @odata.nextLink: stopped rather than risk "
                         f"missing users; report this response to Microsoft{where}.")
    # Page-level annotations (context, nextLink) are expected; only look inside each user when the
    # raw page holds more of them than that, which Graph rarely sends.
    page_level = sum(1 for key in body if key.startswith("@odata."))
    if raw.count(b'"@odata.') > page_level:
        users = [strip_annotations(u) for u in users]
    delta_link = body.get("@odata.deltaLink") or None
    if delta_link is not None and (not isinstance(delta_link, str) or _origin(delta_link) != _origin(graph_endpoint)):
        raise GraphError(f"Graph page {number} carries a deltaLink that is not on {_origin(graph_endpoint)}: "
                         "refusing to keep it; check GRAPH_ENDPOINT.")
    return Page(number, users, page.next_link, delta_link), ids


_ID = operator.itemgetter("id")
_STR_ONLY = {str}


def user_ids(users: list[Any], number: int, request_id: str | None = None) -> list[str]:
    """Each item's ``id``; GraphError if an item is not an object with a non-empty string ``id``.

    The common case costs three passes in C (take every id, the set of their types, look for ""),
    ~30 ns a user; only a page that fails them is walked item by item to say which one and why.
    """
    try:
        ids = list(map(_ID, users))  # TypeError: an item that is not an object; KeyError: no id
    except (TypeError, KeyError):
        ids = None
    if ids is not None and (not ids or (set(map(type, ids)) == _STR_ONLY and "" not in ids)):
        return ids
    for position, item in enumerate(users):
        if not isinstance(item, dict):
            wrong = f"is {_kind(item)}, not a user object"
        elif "id" not in item:
            wrong = "is an object without an 'id'"
        elif type(item["id"]) is not str:
            wrong = f"has an 'id' that is {_kind(item['id'])}, not a string"
        elif not item["id"]:
            wrong = "has an empty 'id'"
        else:
            continue
        where = f" (request-id {request_id})" if request_id else ""
        raise GraphError(
            f"Graph page {number} holds something that is not a user: value[{position}] {wrong}; nothing was "
            f"published; check GRAPH_ENDPOINT and any proxy in between, and report it to Microsoft if it "
            f"persists{where}."
        )
    raise AssertionError("unreachable: the fast check failed but every item is a user")  # pragma: no cover


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages: never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def strip_annotations(user: dict[str, Any]) -> dict[str, Any]:
    """Drop ``@odata.*`` keys: they describe the response, not the user."""
    return {k: v for k, v in user.items() if not k.startswith("@odata.")}


def _get_page(session: requests.Session, url: str, tokens: Tokens, number: int,
              timeout: tuple[float, float], prefer: str | None, *, is_next_link: bool) -> requests.Response:
    """A 200 response for ``url`` whose body has not been read yet; any other outcome raises GraphError."""
    token = tokens.get()
    # Never follow a redirect: requests would fetch the new location (dropping the token if it is
    # another host) and its body would become the export. Refused in a response hook, before requests
    # looks at the redirect at all: even with allow_redirects=False it reads the whole 3xx body and
    # parses its Location.
    refuse_redirects = {"response": functools.partial(_refuse_redirect, page_url=url, page_number=number)}
    headers = {"Accept": "application/json", **({"Prefer": prefer} if prefer else {})}
    for attempt in (1, 2):
        try:
            response = session.get(url, headers={**headers, "Authorization": f"Bearer {token}"},
                                   timeout=timeout, stream=True, allow_redirects=False, hooks=refuse_redirects)
        except requests.RequestException as exc:
            untrusted = certificate_failure(exc)
            if untrusted is not None:
                raise GraphError(f"{untrusted_certificate('Graph', origin_of(url), 'GRAPH_ENDPOINT', untrusted)}; "
                                 f"nothing was published (page {number}).") from None
            raise GraphError(
                f"Graph at {_origin(url)} could not be reached for page {number} after retries "
                f"({_reason(exc)}): check GRAPH_ENDPOINT and the network, then run again."
            ) from None
        if response.status_code == 401 and attempt == 1:
            # Expired or revoked before MSAL expected: one fresh token, one more try of the same page.
            log.info("Graph rejected the access token on page %d; retrying once with a fresh token", number)
            response.close()
            token = tokens.refresh(token)
            continue
        break
    if response.status_code != 200:
        if is_next_link and response.status_code in (400, 404, 410):
            raise PageLinkRejected(describe_graph_failure(response, number))
        raise GraphError(describe_graph_failure(response, number))
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > MAX_PAGE_BYTES:
        response.close()
        raise PageTooLarge(number, f"Content-Length {declared}", response.headers.get("request-id"))
    return response


def _refuse_redirect(response: requests.Response, *args: Any, page_url: str, page_number: int,
                     **kwargs: Any) -> requests.Response:
    """A requests response hook: any 3xx ends the run, its body unread."""
    if 300 <= response.status_code < 400:
        response.close()
        raise GraphError(describe_redirect(response, page_url, page_number))
    return response


def describe_redirect(response: requests.Response, url: str, page_number: int) -> str:
    """One line for a 3xx: the status and where it pointed, as an origin only (a URL may carry secrets)."""
    location = response.headers.get("Location")
    try:
        resolved = urljoin(url, location) if location else None
    except ValueError:
        resolved = location
    target = f"a redirect to {origin_of(resolved)}" if resolved else "a redirect without a Location"
    request_id = response.headers.get("request-id")
    where = f" (request-id {request_id})" if request_id else ""
    return (f"Graph answered page {page_number} with HTTP {response.status_code}, {target}: refused, as users are "
            f"only read from GRAPH_ENDPOINT and a redirect is never followed, and nothing was published; check "
            f"that GRAPH_ENDPOINT is the Graph root (e.g. https://graph.microsoft.com) and any proxy in "
            f"between{where}.")


def _read(receive: Callable[[], _Bytes], number: int) -> _Bytes:
    try:
        return receive()
    except requests.RequestException as exc:
        raise PageCut(number, _reason(exc)) from None


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause's class, e.g. ReadTimeoutError or RunBudgetExhausted; never a URL with a token."""
    *_, cause = causes(exc)
    return str(cause) if isinstance(cause, RunBudgetExhausted) else type(cause).__name__


def describe_graph_failure(response: requests.Response, page_number: int) -> str:
    """One actionable line for a failed page: the status, Graph's error code, what to do, request id."""
    code, message = _graph_error(response)
    request_id = response.headers.get("request-id")
    where = f" (request-id {request_id})" if request_id else ""
    status = response.status_code
    if status == 403 and code == "Authorization_RequestDenied":
        advice = ("grant the app registration the Microsoft Graph User.Read.All *application* permission and "
                  f"admin consent (az ad app permission add --id <CLIENT_ID> --api {GRAPH_APP_ID} "
                  f"--api-permissions {USER_READ_ALL_ROLE_ID}=Role; az ad app permission admin-consent "
                  "--id <CLIENT_ID>)")
    elif status == 403 and code == "Authentication_MSGraphPermissionMissing":
        advice = ("USER_PROPERTIES selects signInActivity, which Graph serves only to an app with the Microsoft Graph "
                  "AuditLog.Read.All *application* permission and admin consent, in a tenant with an Entra ID P1 or P2 "
                  f"licence: grant it (az ad app permission add --id <CLIENT_ID> --api {GRAPH_APP_ID} "
                  f"--api-permissions {AUDIT_LOG_READ_ALL_ROLE_ID}=Role, then admin consent; infra/deploy.sh does "
                  "both when USER_PROPERTIES selects signInActivity) or remove signInActivity from USER_PROPERTIES")
    elif status == 403 and code == "Authentication_RequestFromNonPremiumTenantOrB2CTenant":
        advice = ("USER_PROPERTIES selects signInActivity, which Graph serves only in a tenant with an Entra ID P1 or "
                  "P2 licence (and to an app with AuditLog.Read.All): license the tenant or remove signInActivity "
                  "from USER_PROPERTIES")
    elif status == 401:
        advice = ("Graph did not accept the access token: check that GRAPH_ENDPOINT and AUTHORITY_HOST belong "
                  "to the same cloud")
    elif status == 400:
        advice = "Graph rejected the query: check USER_PROPERTIES for misspelt or unsupported properties"
    elif status in RETRY_STATUSES:
        advice = ("Graph kept failing after the retries allowed (GRAPH_MAX_RETRIES_PER_PAGE / "
                  "GRAPH_MAX_RETRIES_PER_RUN): nothing was published; the next run resumes from the last checkpoint")
    else:
        advice = "nothing was published; check the message and run again"
    detail = f"{code}: {message}" if code else message
    return f"Graph failed listing users on page {page_number} with HTTP {status} ({detail}): {advice}{where}."


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), first_line(str(error.get("message") or ""), 200)
    except (ValueError, AttributeError, json.JSONDecodeError):
        return "", first_line(response.reason or "", 200)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
