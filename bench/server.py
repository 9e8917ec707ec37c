"""The sandbox tenant in its own process, so its CPU never counts against a contender.

Prints one JSON line: the settings that point at it plus a Graph access token minted for the
contenders that do not sign in themselves (signing in is not what is compared). Runs until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from sandbox import Sandbox


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as workdir, \
            Sandbox(users=args.users, workdir=Path(workdir), token_lifetime_s=4 * 3600,
                    page_latency_ms=args.latency_ms) as tenant:
        print(json.dumps({"settings": tenant.settings, "graph_token": tenant.issue_token("graph")}), flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
