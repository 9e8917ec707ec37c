"""What a Graph page must be before any of it reaches an export: JSON, a ``value`` list of users, one nextLink.

Every item of ``value`` must be an object with a non-empty string ``id``; the parsed nextLink must be
the one the next request already followed; a deltaLink must stay on the Graph endpoint. Each failure
is one GraphError line naming the page (and Graph's request id), never a user's data.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Any

from . import jsontext
from .errors import GraphError, origin_of
from .graph_stream import ArrivingPage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    number: int
    users: list[dict[str, Any]]
    next_link: str | None
    #: users/delta only: on the last page of a round, where the next round starts.
    delta_link: str | None = None


def parse(page: ArrivingPage, graph_endpoint: str) -> tuple[Page, list[str]]:
    """The page, and its users' ids (checked: every item is an object with a non-empty string id)."""
    number, raw = page.number, page.body()
    try:
        body = jsontext.loads(raw)  # orjson, or for a lone surrogate escape (valid JSON) the fallback
    except ValueError:
        log.debug("Graph page %d is not JSON", number, exc_info=True)
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
    endpoint = origin_of(graph_endpoint)
    if delta_link is not None and (not isinstance(delta_link, str) or origin_of(delta_link) != endpoint):
        raise GraphError(f"Graph page {number} carries a deltaLink that is not on {endpoint}: "
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
