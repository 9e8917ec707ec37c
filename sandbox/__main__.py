"""``python -m sandbox serve``: run the sandbox tenant and Azurite until Ctrl-C / SIGTERM.

``python -m sandbox demo`` runs one export against them instead (see :mod:`sandbox.demo`).

Prints the settings as ``export NAME='value'`` lines (or one JSON object with ``--json``) on stdout,
so ``eval "$(python -m sandbox serve ... &)"``-style scripts and humans can point the function app at
it. The client secret is never printed: the app reads it from the sandbox Key Vault, like in Azure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from . import Sandbox
from .azurite import Azurite, AzuriteError
from .demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sandbox tenant and Azurite until interrupted")
    serve.add_argument("--users", type=int, default=10_000, help="number of directory users (default 10000)")
    serve.add_argument("--workdir", type=Path, help="where certificates and Azurite data go "
                                                    "(default: a new temporary directory, removed at exit)")
    serve.add_argument("--faults", type=Path, help="JSON file of fault rules (see sandbox/faults.py); "
                                                   "SANDBOX_FAULTS is also read")
    serve.add_argument("--page-latency-ms", type=float, default=0, help="delay before each Graph page")
    serve.add_argument("--token-lifetime-s", type=int, default=3599, help="access token lifetime")
    serve.add_argument("--customer-tenants", type=int, default=0,
                       help="also host this many consented customer tenants of --users users each, and print "
                            "TENANT_IDS (their ids) instead of TENANT_ID")
    serve.add_argument("--no-azurite", action="store_true", help="do not start Azurite")
    serve.add_argument("--max-seconds", type=float, help="stop by itself after this long")
    serve.add_argument("--json", action="store_true", help="print one JSON object instead of export lines")
    demo = sub.add_parser("demo", help="start everything, run one export through the real CLI, verify it, stop")
    demo.add_argument("--users", type=int, default=10_000, help="number of directory users (default 10000)")
    demo.add_argument("--delta", action="store_true",
                      help="two slots in EXPORT_MODE=delta, 1%% of the users changed in between")
    demo.add_argument("--workdir", type=Path, default=Path(".sandbox"),
                      help="certificates and Azurite data (default .sandbox/, git-ignored)")
    demo.add_argument("--exports", type=Path, default=Path("exports"),
                      help="where a verified copy of the export goes (default exports/, git-ignored)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.users, args.workdir, args.exports, args.delta)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    owns_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="graph-sandbox-")) if owns_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sandbox = Sandbox(users=args.users, workdir=workdir, token_lifetime_s=args.token_lifetime_s,
                      page_latency_ms=args.page_latency_ms, customer_tenants=max(0, args.customer_tenants))
    azurite = None if args.no_azurite else Azurite(workdir)
    try:
        try:
            sandbox.faults.load_env()
            if args.faults:
                sandbox.faults.load_file(args.faults)
        except (OSError, ValueError) as e:
            print(f"sandbox: bad fault rules: {e}", file=sys.stderr)
            return 2
        sandbox.start()
        if azurite is not None:
            azurite.start()
        settings = sandbox.multi_tenant_settings() if sandbox.tenant_ids else dict(sandbox.settings)
        if azurite is not None:
            settings["EXPORT_STORAGE"] = azurite.connection_string
        if args.json:
            print(json.dumps(settings, indent=2))
        else:
            for name, value in settings.items():
                print(f"export {name}={_shell_quote(value)}")
        sys.stdout.flush()
        rules = len(sandbox.faults.rules)
        print(f"sandbox: tenant {sandbox.tenant_id} with {args.users} users, {rules} fault rule(s); "
              f"workdir {workdir}; Ctrl-C to stop", file=sys.stderr)
        if args.max_seconds is not None:
            stop.wait(args.max_seconds)
        else:
            while not stop.wait(3600):
                pass
        return 0
    except AzuriteError as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 1
    finally:
        if azurite is not None:
            azurite.stop()
        sandbox.stop()
        if owns_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _shell_quote(value: str) -> str:
    """Single-quote for POSIX shells, always (values contain ';', '=' and '/')."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


if __name__ == "__main__":
    sys.exit(main())
