"""``python -m graph_export``: argument parsing, logging and exit codes around ``run`` (the one pipeline),
``verify`` (reading back what it published) and ``properties`` (what USER_PROPERTIES can select)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from . import failures, naming, queues, redact, status, tenant_properties, tenant_root, verify, worker
from .clients import warm_clients
from .errors import ConfigError, ExportError
from .export import run_export
from .progress import Snapshot
from .records import iso
from .settings import TENANTS_PREFIX, Settings, load_settings, load_storage_settings, load_tenant_ids
from .transport import RetryBudget

log = logging.getLogger("graph_export")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.debug)
    if args.command == "verify":
        return _one_line_on_failure(lambda: _verify(args), args.debug, "the export was not fully verified")
    if args.command == "properties":
        return _one_line_on_failure(lambda: _properties(args), args.debug, "nothing was listed")
    if args.command == "fan-out":
        return _one_line_on_failure(lambda: _fan_out(args), args.debug, "some tenants may have no message")
    if args.command == "work":
        return _one_line_on_failure(lambda: _work(args), args.debug, "the message being exported is retried")
    if args.command == "status":
        return _one_line_on_failure(lambda: _status(args), args.debug, "nothing was read")
    return _one_line_on_failure(lambda: _run(args), args.debug, "nothing was published for this run")


def _one_line_on_failure(command: Callable[[], str], debug: bool, interrupted: str) -> int:
    """Run ``command``, print what it returns on stdout; any failure is one ``error:`` line on stderr
    (redacted: an exception's text may hold a URL with its query) and the failure's exit code."""
    try:
        output = command()
    except ExportError as exc:
        if debug:
            log.exception("failed")
        print(f"error: {redact.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted}.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unmapped failure: still one line, traceback on request
        if debug:
            log.exception("unexpected failure")
        print(f"error: unexpected {type(exc).__name__} ({redact.redact(str(exc))}); {interrupted}. "
              "Run again with --debug for the traceback and report it.", file=sys.stderr)
        return 1
    print(output)
    return 0


def _run(args: argparse.Namespace) -> str:
    """``run``: one export; its summary as one JSON object."""
    if args.settings:
        apply_settings_file(args.settings)
    settings = load_settings()
    if args.tenant:
        settings = settings.for_tenant(args.tenant)
    slot = _parse_slot(args.slot) if args.slot else None
    kept = failures.kept(tenant_root.under(warm_clients(settings).state_container(), settings.tenant_root),
                         slot or datetime.now(timezone.utc)) if args.tenant else contextlib.nullcontext()
    with kept:
        return _run_one(args, settings, slot)


def _run_one(args: argparse.Namespace, settings: Settings, slot: datetime | None) -> str:
    if args.quiet:
        summary = run_export(settings, slot, force=args.force, on_progress=_silent)
    elif sys.stderr.isatty():
        with LiveProgress() as live:
            summary = run_export(settings, slot, force=args.force, on_progress=live.show,
                                 progress_every_s=LiveProgress.EVERY_S)
    else:
        summary = run_export(settings, slot, force=args.force)
    return json.dumps(summary.as_dict())


def _verify(args: argparse.Namespace) -> str:
    """``verify``: one line per slot (and for latest.json) on stdout as decided, then the summary; a
    failure's summary is the one ``error:`` line on stderr, with VerifyError's exit code."""
    if args.settings:
        apply_settings_file(args.settings)
    settings = load_storage_settings()  # no Graph or Key Vault settings needed: a consumer can run it
    if args.tenant:
        settings = settings.for_tenant(args.tenant)
    slot = _parse_verify_slot(args.slot) if args.slot else None
    report = verify.run(settings, slot=slot, every=args.all, echo=lambda line: print(line, flush=True))
    report.raise_if_failed()
    return report.summary()


def _properties(args: argparse.Namespace) -> str:
    """``properties``: what USER_PROPERTIES can select in this tenant, signed in as ``run`` signs in."""
    if args.settings:
        apply_settings_file(args.settings)
    settings = load_settings()
    with warm_clients(settings).graph_users(RetryBudget(settings.graph_retries_per_run)) as graph:
        extensions = tenant_properties.user_extensions(graph, args.app)
    return tenant_properties.report(extensions, args.app)


def _multi_tenant_settings(args: argparse.Namespace, command: str) -> Settings:
    if args.settings:
        apply_settings_file(args.settings)
    settings = load_settings()
    if not settings.tenant_ids:
        raise ConfigError(f"{command} needs TENANT_IDS (the tenants to fan out to); with one tenant, use run.")
    return settings


def _fan_out(args: argparse.Namespace) -> str:
    """``fan-out``: one message per tenant of TENANT_IDS for the slot (default: now) on EXPORT_QUEUE."""
    settings = _multi_tenant_settings(args, "fan-out")
    slot = _parse_slot(args.slot) if args.slot else naming.normalize_slot(datetime.now(timezone.utc))
    queue, _ = worker.open_queues(settings)
    sent = queues.fan_out(queue, settings.tenant_ids, slot)
    return json.dumps({"queue": settings.export_queue, "slot": iso(slot), "tenants": [m.tenant for m in sent]})


def _work(args: argparse.Namespace) -> str:
    """``work``: the queue trigger's loop, here, until EXPORT_QUEUE is empty; a message moved to the poison
    queue is a failure (exit 1), named in the one error line."""
    settings = _multi_tenant_settings(args, "work")
    queue, poison = worker.open_queues(settings)
    report = worker.work(settings, queue, poison, retry_delay_s=args.retry_delay, lease_s=args.lease,
                         on_line=lambda line: print(line, file=sys.stderr, flush=True))
    if report.poisoned:
        raise ExportError(f"{len(report.poisoned)} message(s) moved to {queues.poison_name(settings.export_queue)} "
                          f"after failing (tenants {', '.join(report.poisoned)}); the other tenants were exported: "
                          "fix the cause shown in their Export failed: lines and fan out again.")
    return json.dumps(report.as_dict())


def _status(args: argparse.Namespace) -> str:
    """``status``: per tenant of TENANT_IDS (or the one tenant), the latest published slot, its users, a newer failure."""
    if args.settings:
        apply_settings_file(args.settings)
    env_tenants = load_tenant_ids()
    _, state = verify.open_containers(load_storage_settings())
    tenants = [(t, f"{TENANTS_PREFIX}{t}/") for t in env_tenants] or [("(single tenant)", "")]
    standings = [status.of_tenant(state, tenant, root) for tenant, root in tenants]
    if args.json:
        return json.dumps([s.as_dict() for s in standings])
    return "\n".join(s.line() for s in standings)


def _parse_verify_slot(text: str) -> datetime:
    """``verify --slot``: any slot that can have a pointer (unbounded: a slot out of range has none)."""
    try:
        return naming.parse_slot(text)
    except ValueError as why:
        raise ConfigError(f"--slot {why}.") from None


class LiveProgress:
    """The run's progress on a terminal (tqdm): users (or changes) so far, their rate, pages, retries, throttled
    seconds, and a wait before a retry while it lasts (its seconds left and reason, the clock running on)."""

    EVERY_S = 0.25

    def __init__(self) -> None:
        self._bar = tqdm(unit=" users", unit_scale=True, file=sys.stderr, dynamic_ncols=True, leave=True,
                         desc="export")
        self._waited = False

    def show(self, snapshot: Snapshot) -> None:
        postfix: dict[str, object] = {}
        if snapshot.waiting is not None:  # first, so that a narrow terminal still shows it
            postfix["waiting"] = f"{snapshot.waiting.left_s:.0f}s ({snapshot.waiting.reason})"
        if snapshot.final and snapshot.changes and snapshot.published is not None:
            postfix["published"] = f"{snapshot.published:,} users"
        postfix.update(pages=snapshot.pages, retries=snapshot.retries, throttled=f"{snapshot.throttled_s:.0f}s")
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.unit = " changes" if snapshot.changes else " users"
        if snapshot.users < self._bar.n:  # a delta slot fell back to a full export: its count starts again
            self._bar.reset()
        self._bar.update(snapshot.users - self._bar.n)
        if snapshot.final or snapshot.waiting is not None or self._waited:
            self._bar.refresh()  # a wait moves no count: without this the display, clock included, stands still
        self._waited = snapshot.waiting is not None

    def __enter__(self) -> "LiveProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _silent(snapshot: Snapshot) -> None:
    """--quiet: no progress, only the summary (or the error)."""


def apply_settings_file(path: Path) -> None:
    """Load a ``local.settings.json``'s ``Values`` into the environment, as ``func start`` does."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8")).get("Values")
    except (OSError, ValueError, AttributeError) as exc:
        log.debug("Settings file %s could not be read", path, exc_info=True)  # errno, or where the JSON broke
        raise ConfigError(f"Cannot read settings file {path} ({type(exc).__name__}): "
                          "give a local.settings.json with a \"Values\" object.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"Settings file {path} has no \"Values\" object: copy local.settings.json.example.")
    os.environ.update({str(k): str(v) for k, v in values.items() if v is not None})


def _parse_slot(text: str) -> datetime:
    """``--slot`` as a bounded UTC slot, or ConfigError (exit 2) before anything is contacted.

    Bounded here, not only in ``run_export``, so the one line names ``--slot``: a slot years ahead
    would otherwise name an export that sorts after every real one.
    """
    try:
        return naming.check_slot(naming.parse_slot(text), datetime.now(timezone.utc))
    except ValueError as why:  # unparseable, no UTC form (overflow), or out of bounds
        raise ConfigError(f"--slot {why}.") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m graph_export",
                                     description="Export every Microsoft Graph user to Blob Storage.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one export now with settings from the environment",
                              description="Run one export with settings from the environment (see README).")
    _with_settings_file(run)
    run.add_argument("--slot", metavar="TIME",
                     help="schedule slot to export as (ISO 8601, UTC; from 2000 to 5 minutes past now); default: now")
    run.add_argument("--force", action="store_true",
                     help="export the slot again even if it was already exported, ignoring any checkpoint")
    run.add_argument("--tenant", metavar="TENANT_ID",
                     help="with TENANT_IDS: export this one tenant (its exports are under tenants/<id>/)")
    _with_debug(run)
    run.add_argument("--quiet", action="store_true",
                     help="no progress (a live display on a terminal, else a line every PROGRESS_EVERY_SECONDS)")
    check = commands.add_parser(
        "verify", help="download what consumers read and check it against what was committed",
        description="Walk latest.json -> slot pointer -> manifest -> files, download every file and check it "
                    "against the commit (ETags), the manifest (size, sha256, users, properties) and, for the "
                    "CSV copy, the JSON Lines. Needs only the storage settings. One line per slot, then a "
                    "summary; exit 7 when anything is not as committed.")
    _with_settings_file(check)
    which = check.add_mutually_exclusive_group()
    which.add_argument("--slot", metavar="TIME", help="verify this slot (ISO 8601, UTC) instead of latest.json's")
    which.add_argument("--all", action="store_true",
                       help="verify every slot that has a pointer, latest.json, and warn of blobs no pointer reaches")
    check.add_argument("--tenant", metavar="TENANT_ID",
                       help="verify one tenant's export of a TENANT_IDS deployment (below tenants/<id>/)")
    _with_debug(check)
    listing = commands.add_parser(
        "properties", help="list what USER_PROPERTIES can select in this tenant",
        description="List Graph's user properties that /users can return and the tenant's directory extensions "
                    "for users (extension_<appId>_<name>), signed in with the same settings as run. Listing "
                    "every app's extensions needs Directory.Read.All; --app lists only the named apps' and needs "
                    "Application.Read.All instead. Exporting extensions needs neither.")
    _with_settings_file(listing)
    listing.add_argument("--app", action="append", default=[], metavar="APP_ID",
                         help="list only the extensions of this app registration (Application (client) ID); repeatable")
    _with_debug(listing)
    for name, help_text, description in (
            ("fan-out", "TENANT_IDS: enqueue one message per tenant for a slot on EXPORT_QUEUE",
             "Send one message per tenant of TENANT_IDS ({\"tenant\", \"slot\"}) to EXPORT_QUEUE, as the timer does at "
             "each slot; the queue-triggered function (or `work`) exports each. A slot already published is skipped."),
            ("work", "TENANT_IDS: process EXPORT_QUEUE's messages here until it is empty",
             "What the queue trigger does in Azure, locally: export each message's tenant and slot, delete it on "
             "success, retry a failure after host.json's visibilityTimeout, and move it to <queue>-poison after "
             "maxDequeueCount attempts."),
            ("status", "each tenant's latest published slot, its users, and a newer failure",
             "Per tenant of TENANT_IDS (or the one tenant without it): the latest published slot, its user count, "
             "and the last failure if it is newer. Needs only the storage settings and TENANT_IDS.")):
        command = commands.add_parser(name, help=help_text, description=description)
        _with_settings_file(command)
        _with_debug(command)
        if name == "fan-out":
            command.add_argument("--slot", metavar="TIME", help="the slot to fan out (ISO 8601, UTC); default: now")
        if name == "work":
            command.add_argument("--retry-delay", type=int, metavar="SECONDS", default=None,
                                 help="seconds before a failed message is tried again (default: host.json's "
                                      "visibilityTimeout)")
            command.add_argument("--lease", type=int, metavar="SECONDS", default=worker.LEASE_S,
                                 help="seconds a received message stays invisible to other workers, renewed halfway "
                                      "while its tenant is exported; a killed worker's message comes back within "
                                      f"them (default {worker.LEASE_S}, the Functions host's)")
        if name == "status":
            command.add_argument("--json", action="store_true", help="one JSON list instead of a line per tenant")
    return parser


def _with_settings_file(command: argparse.ArgumentParser) -> None:
    command.add_argument("--settings", type=Path, metavar="FILE",
                         help="read settings from a local.settings.json 'Values' object (overrides the environment)")


def _with_debug(command: argparse.ArgumentParser) -> None:
    command.add_argument("--debug", action="store_true", help="verbose logs and tracebacks on failure")


def _configure_logging(debug: bool) -> None:
    """Our own ``graph_export`` log at INFO (DEBUG with --debug); the libraries' warnings only with --debug.

    What urllib3 (its "Retrying …" warnings), the Azure SDK and MSAL log about a failure reaches the
    user as our one error line, so without --debug they show errors only, and MSAL nothing below
    CRITICAL: it logs a sign-in answer that is not JSON, body and traceback, at ERROR.
    With --debug they inherit DEBUG like everything else: urllib3 then logs each request line with
    its query (a SAS ``sig``, a ``$deltatoken``), so the handler that prints them redacts every record
    first (``redact``).
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install(logging.getLogger())
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    for library, quiet in (("urllib3", logging.ERROR), ("requests", logging.ERROR), ("azure", logging.ERROR),
                           ("msal", logging.CRITICAL)):
        logging.getLogger(library).setLevel(logging.NOTSET if debug else quiet)
