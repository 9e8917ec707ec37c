"""What the quickstart sample leads people to write: collect every user in a list, one json.dumps,
one upload_blob at the end (uncompressed JSON array, as the samples do)."""

from __future__ import annotations

import json

import requests

from .common import auth_headers, container, first_url


def main() -> None:
    session, headers = requests.Session(), auth_headers()
    users: list[dict] = []
    url: str | None = first_url()
    while url:
        page = session.get(url, headers=headers, timeout=60).json()
        users.extend(page["value"])
        url = page.get("@odata.nextLink")
    container().upload_blob("seed/users.json", json.dumps(users), overwrite=True)
    print(json.dumps({"users": len(users)}))


if __name__ == "__main__":
    main()
