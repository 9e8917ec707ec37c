"""The sandbox tenant in its own process, so its CPU never counts against a contender.

Prints one JSON line: the settings that point at it plus a Graph access token minted for the
contenders that do not sign in themselves (signing in is not what is compared). Then it reads line
commands on stdin, answering each with one JSON line, until stdin closes:

- ``changes N SEED``: ``directory.random_changes(random.Random(SEED), N)``; answers the live user count
- ``requests``: Graph requests (all of them, and those for users/delta) since the last ``clear``, and
  the live user count
- ``clear``: forget the request log
- ``reset``: a fresh tenant of ``--users`` users without changes (earlier delta links expire)
- ``roles A,B``: the app's Graph application permissions from now on (e.g. ``User.Read.All,AuditLog.Read.All``)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbox import Sandbox


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--customer-tenants", type=int, default=0,
                        help="customer tenants of --users users each, consented (the line then has TENANT_IDS' settings)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as workdir, \
            Sandbox(users=args.users, workdir=Path(workdir), token_lifetime_s=4 * 3600,
                    page_latency_ms=args.latency_ms, customer_tenants=args.customer_tenants) as tenant:
        settings = tenant.multi_tenant_settings() if args.customer_tenants else tenant.settings
        print(json.dumps({"settings": settings, "graph_token": tenant.issue_token("graph")}), flush=True)
        for line in sys.stdin:  # until the benchmark closes our stdin
            if line.strip():
                print(json.dumps(answer(tenant, line.split(), args.users)), flush=True)
    return 0


def answer(tenant: Sandbox, words: list[str], users: int) -> dict[str, Any]:
    command, rest = words[0], words[1:]
    try:
        if command == "changes" and len(rest) == 2:
            tenant.directory.random_changes(random.Random(int(rest[1])), int(rest[0]))
            return {"changes": int(rest[0]), "users": tenant.users}
        if command == "requests" and not rest:
            graph = tenant.requests.entries("graph")
            delta = sum(1 for r in graph if r.path.rstrip("/").lower() in ("/v1.0/users/delta", "/v1.0/users/delta()"))
            return {"graph": len(graph), "delta": delta, "users": tenant.users}
        if command == "clear" and not rest:
            tenant.requests.clear()
            return {"cleared": True}
        if command == "reset" and not rest:
            tenant.users = users
            return {"users": tenant.users}
        if command == "roles" and len(rest) == 1:
            tenant.entra.set_roles(rest[0].split(","))
            return {"roles": rest[0].split(",")}
    except ValueError as why:
        return {"error": f"{' '.join(words)}: {why}"}
    return {"error": f"unknown command {' '.join(words)!r}: changes N SEED | requests | clear | reset | roles A,B"}


if __name__ == "__main__":
    sys.exit(main())
