"""The transport floor: GET every page with a plain requests session and discard the body.

The nextLink is found in the raw bytes (no JSON parse): the least any client can do.
"""

from __future__ import annotations

import json

import requests

from .common import auth_headers, first_url

NEXT = b'"@odata.nextLink":"'


def main() -> None:
    session, headers = requests.Session(), auth_headers()
    url: str | None = first_url()
    pages = 0
    while url:
        body = session.get(url, headers=headers, timeout=60).content
        pages += 1
        start = body.find(NEXT)
        url = json.loads(body[start + len(NEXT) - 1: body.index(b'"', start + len(NEXT)) + 1]) if start >= 0 else None
    print(json.dumps({"pages": pages, "users": None}))


if __name__ == "__main__":
    main()
