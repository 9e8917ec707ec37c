"""Pages of users from Microsoft Graph ``GET /v1.0/users``.

Paging follows each ``@odata.nextLink`` as an opaque, whole URL (Graph has no ``$skip`` for users).
Throttling and transient failures are retried by urllib3's ``Retry`` mounted on the session, which
honours ``Retry-After`` on 429/503 and otherwise backs off exponentially with jitter.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Iterator
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import GraphError, first_line

log = logging.getLogger(__name__)

#: Statuses Graph documents as transient; 429 and 503 usually carry Retry-After.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Retries of one request before the run fails.
MAX_RETRIES_PER_REQUEST = 6
#: (connect, read) timeouts in seconds: a page of 999 users normally arrives in 1-3 s.
TIMEOUT = (10.0, 120.0)
#: Stop following nextLinks after this many pages: 5,000 pages x 999 users is 5 million users, far
#: above any tenant, so reaching it means a paging loop, not a big directory.
MAX_PAGES = 5_000

USER_READ_ALL_ROLE_ID = "df021288-bdef-4463-88db-98f22de89214"  # Microsoft Graph application role
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

TokenSource = Callable[[], str]


def make_session(backoff_base_s: float) -> requests.Session:
    """The Graph transport: keep-alive connection pool with retries for throttling and faults."""
    retry = Retry(
        total=MAX_RETRIES_PER_REQUEST,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        backoff_factor=backoff_base_s,
        backoff_jitter=backoff_base_s,
        backoff_max=60.0,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so its Graph error can be reported
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=4)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def first_page_url(graph_endpoint: str, properties: tuple[str, ...], page_size: int) -> str:
    query = urlencode({"$select": ",".join(properties), "$top": str(page_size)}, safe="$,")
    return f"{graph_endpoint}/v1.0/users?{query}"


def iter_user_pages(
    session: requests.Session,
    graph_endpoint: str,
    properties: tuple[str, ...],
    page_size: int,
    token: TokenSource,
) -> Iterator[list[dict]]:
    """Yield each page's users (``@odata.*`` annotations removed) until Graph sends no nextLink.

    Only one page is held at a time, so memory does not grow with the tenant.
    """
    url: str | None = first_page_url(graph_endpoint, properties, page_size)
    origin = _origin(graph_endpoint)
    seen: set[str] = set()
    for page_number in range(1, MAX_PAGES + 1):
        assert url is not None
        body = _get_page(session, url, token(), page_number)
        users = body.get("value")
        if not isinstance(users, list):
            raise GraphError(f"Graph returned page {page_number} without a 'value' list: check GRAPH_ENDPOINT.")
        yield [strip_annotations(u) for u in users]
        url = body.get("@odata.nextLink")
        if not url:
            return
        if _origin(url) != origin:
            # The bearer token must never be sent anywhere but the configured Graph endpoint.
            raise GraphError(
                f"Graph page {page_number} links to {_origin(url)}, not {origin}: refusing to follow it; "
                "check GRAPH_ENDPOINT."
            )
        if url in seen:
            raise GraphError(f"Graph returned the same nextLink twice (page {page_number}): paging would loop.")
        seen.add(url)
    raise GraphError(f"Stopped after {MAX_PAGES} pages without reaching the last one: paging would not end.")


def strip_annotations(user: dict) -> dict:
    """Drop ``@odata.*`` keys: they describe the response, not the user."""
    return {k: v for k, v in user.items() if not k.startswith("@odata.")}


def _get_page(session: requests.Session, url: str, access_token: str, page_number: int) -> dict:
    try:
        response = session.get(
            url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        raise GraphError(
            f"Graph at {_origin(url)} could not be reached for page {page_number} after retries "
            f"({type(exc).__name__}): check GRAPH_ENDPOINT and the network, then run again."
        ) from None
    if response.status_code != 200:
        raise GraphError(describe_graph_failure(response, page_number))
    try:
        return response.json()
    except ValueError:
        raise GraphError(f"Graph returned page {page_number} as something other than JSON: check GRAPH_ENDPOINT.") from None


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
    elif status == 401:
        advice = ("Graph did not accept the access token: check that GRAPH_ENDPOINT and AUTHORITY_HOST belong "
                  "to the same cloud")
    elif status == 400:
        advice = "Graph rejected the query: check USER_PROPERTIES for misspelt or unsupported properties"
    elif status in RETRY_STATUSES:
        advice = "Graph kept failing after retries: nothing was published; run again later"
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
