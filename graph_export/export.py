"""One export, end to end: lock the slot → sign in → pages of users → files → commit → publish.

It resumes from a checkpoint when an earlier invocation of the same slot was killed; in delta mode
the pages are the changes since the previous snapshot, applied to it (``delta``). Publishing is
``publish``'s: files and manifest under the run's own names, then one conditional write of the
slot's pointer.

Both doors (the timer function and ``python -m graph_export run``) call :func:`run_export`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from . import checkpoint, completeness, delta, graph, naming, publish, tenant_root
from .clients import Clients, warm_clients
from .errors import ConfigError, IncompleteExport, PageLinkRejected, SlotBusyError, StorageError
from .lease import SlotLease
from .modes import ExportFormat, ExportMode
from .progress import RunProgress, Snapshot, log_line
from .properties import conform
from .records import ExportSummary, Manifest, Progress, UserCount, iso
from .settings import Settings
from .sink import CommittedBlob, ExportFiles, GzipBlobWriter, open_files
from .slotrun import SlotRun, SlotStore
from .transport import RetryBudget
from .userids import UserIds

log = logging.getLogger(__name__)


def run_export(settings: Settings, slot: datetime | None = None, *, force: bool = False,
               on_progress: Callable[[Snapshot], None] = log_line, progress_every_s: float | None = None,
               clients: Clients | None = None) -> ExportSummary:
    """Export every user once for ``slot`` (default: now). Raises an ExportError subclass on failure.

    A slot that already has a published export is left alone unless ``force`` (only what its
    publishing left undone is finished); a slot with a usable checkpoint resumes from it. Only one
    run exports a slot at a time (``lease``). Storage and sign-in are checked before any user is
    read. ``on_progress`` hears how far it has got at most every PROGRESS_EVERY_SECONDS (or
    ``progress_every_s``), and at the end (default: a log line). ``clients`` default to the ones
    this process keeps for ``settings``.
    """
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    try:
        slot = naming.check_slot(slot or started, started)
    except ValueError as why:  # our own message, complete: nothing underneath to keep
        raise ConfigError(f"The slot to export is not usable: {why}.") from None
    if settings.tenant_ids and not settings.tenant_id:
        raise ConfigError("TENANT_IDS is set: export one tenant at a time (python -m graph_export run --tenant <id>, "
                          "or fan-out and work).")
    clients = clients or warm_clients(settings)
    # One tenant's root (tenants/<id>/ with TENANT_IDS), applied here once: every name below is relative to it.
    root = settings.tenant_root
    store = SlotStore(tenant_root.under(clients.container(), root), tenant_root.under(clients.state_container(), root),
                      slot, settings.container)
    if not force:
        before = publish.standing(store)
        if before.pointer and before.manifest and not publish.unfinished(store, before.pointer, before.manifest,
                                                                         started):
            log.info("Slot %s was already exported; nothing to do (use --force to export it again)", iso(slot))
            return _summary(before.manifest, "skipped", store, clock)
    with SlotLease(store.state, slot) as lease:
        before = publish.standing(store)  # again, now that no other run can change it
        if before.pointer and before.manifest and not force:
            did = publish.finish(store, before.pointer, before.manifest, lease)
            log.info("Slot %s was already exported; finished what its publishing left undone: %s", iso(slot),
                     ", ".join(did) or "nothing")
            return _summary(before.manifest, "repaired" if did else "skipped", store, clock, repaired=did)
        budget = RetryBudget(settings.graph_retries_per_run)
        progress = RunProgress(budget, progress_every_s or settings.progress_every_s, on_progress)
        budget.listener = progress  # waits before retries are reported while they last
        expires = clients.tokens.check_expiry(timedelta(days=settings.credential_expiry_warning_days), started)
        clients.tokens.get()  # fail on Key Vault or sign-in before staging anything
        with clients.graph_users(budget) as graph:
            run = SlotRun(settings=settings, graph=graph, store=store,
                          names=naming.run_names(slot, naming.new_run_id()), lease=lease, progress=progress,
                          started=started, supersedes=before.supersedes)
            if settings.export_mode == ExportMode.DELTA:
                made = _delta_slot(run, force)
            else:
                made = _full_slot(run, None if force else _resumable(run))
        pointer = publish.commit(made.run, made.manifest, before, made.delta_link, made.taken)
        publish.finish(store, pointer, made.manifest, lease)
    finished = progress.finish(made.manifest.users)
    return _summary(made.manifest, "succeeded", store, clock, expires, finished)


@dataclass(frozen=True)
class _Exported:
    """What a slot's files became, committed but not yet published: the run that wrote them (a resumed
    run writes under an earlier run's names), their manifest, and in delta mode where the next slot starts."""

    run: SlotRun
    manifest: Manifest
    delta_link: str | None = None
    taken: datetime | None = None


def _delta_slot(run: SlotRun, force: bool) -> _Exported:
    """The snapshot from the changes since the last one; a full export when that cannot be trusted."""
    settings = run.settings
    try:
        return _from_changes(run, delta.load_base(run.store, settings, run.started))
    except delta.FallBack as why:
        log.warning("Delta mode: exporting slot %s in full, as %s", iso(run.slot), why)
        run.progress.reading("users")
    resume = None if force else _resumable(run)
    if resume is not None and resume.checkpoint.delta_link is not None:
        link, taken = resume.checkpoint.delta_link, resume.checkpoint.started
    else:
        resume, link, taken = None, delta.latest_link(run.graph, settings), datetime.now(timezone.utc)
    made = _full_slot(run, resume, link)
    drift = delta.measure_drift(made.run, made.manifest)
    return dataclasses.replace(made, manifest=dataclasses.replace(made.manifest, drift=drift), taken=taken)


def _from_changes(run: SlotRun, base: delta.Base) -> _Exported:
    """The changes since ``base`` and the snapshot they make, both committed (changes first); FallBack
    when the slot cannot be made so, before anything is committed."""
    with _starting_over_if_incomplete(run), GzipBlobWriter(run.blob(run.names.changes), name=run.names.changes) as feed, \
            open_files(run.settings, run.exports, run.names) as writer:
        made = delta.make_snapshot(run, base, writer, feed)
        completeness.check(made.count, writer.jsonl.users)  # before any file of the run is committed
        fed = _commit(run, feed)
        committed, csv = _commit_files(run, writer)
    manifest = run.manifest(committed, csv, made.pages, started=run.started, delta=made.applied(base, fed),
                            count=made.count)
    return _Exported(run, manifest, made.delta_link, made.taken)


def _full_slot(run: SlotRun, resume: checkpoint.Resume | None, delta_link: str | None = None) -> _Exported:
    """Every user from /users, continuing from ``resume`` (a usable checkpoint) if there is one."""
    if resume is not None:
        resumed = run.continuing(resume.checkpoint.run)
        try:
            return _Exported(resumed, _export(resumed, resume, delta_link), delta_link)
        except PageLinkRejected as exc:
            log.warning("Graph no longer accepts the checkpoint's page link (%s); restarting the slot", exc)
    return _Exported(run, _export(run, None, delta_link), delta_link)


def _resumable(run: SlotRun) -> checkpoint.Resume | None:
    s = run.settings
    return checkpoint.resumable(run.state, run.exports, run.slot, s.user_properties,
                                timedelta(hours=s.checkpoint_max_age_h), run.started,
                                needs_delta_link=s.export_mode == ExportMode.DELTA,
                                with_csv=ExportFormat.CSV in s.export_formats)


def _export(run: SlotRun, resume: checkpoint.Resume | None, delta_link: str | None) -> Manifest:
    """Page through every user into the run's files, checkpointing as it goes; commit; the manifest.

    Graph's user count is taken before the first page (a resumed run keeps the one its checkpoint
    saved) and after the last one; the snapshot must agree with them before anything is committed
    (``completeness``). Every write others could read (checkpoint, commit) first makes sure this run
    still holds the slot's lease.
    """
    settings, slot = run.settings, run.slot
    saved_ids = checkpoint.SavedIds(run.state, slot)
    if resume is not None:
        ids = resume.ids
        url, first, started = resume.checkpoint.next_link, resume.checkpoint.pages + 1, resume.checkpoint.started
        saved_ids.start(ids.to_bytes())  # drops digests appended after that checkpoint was saved
        count_before = resume.checkpoint.count_before
    else:
        count_before = run.graph.count()
        ids = UserIds()
        url, first = graph.first_page_url(settings.graph_endpoint, settings.user_properties, settings.page_size), 1
        started = run.started
    pages = first - 1

    def save_checkpoint(next_link: str, pages: int, new_ids: bytes, staged: Progress, csv: Progress | None) -> None:
        """On a writer's thread, once every page up to ``pages`` is staged: the ids, then the checkpoint."""
        run.lease.ensure()
        checkpoint.save(run.state, checkpoint.Checkpoint(
            slot=slot, run=run.run, blob=run.names.jsonl, properties=settings.user_properties, next_link=next_link,
            pages=pages, progress=staged, ids_bytes=saved_ids.append(new_ids), started=started,
            saved=datetime.now(timezone.utc), delta_link=delta_link, csv_progress=csv, count_before=count_before))
        log.debug("checkpoint after page %d: %d users", pages, staged.users)

    # Three stages overlap: page k+1 is requested as soon as page k's nextLink arrives, page k is
    # parsed and encoded here, and compression and block uploads trail behind on their own thread.
    fetched = run.progress.watch(run.graph.pages(url, first, ids=ids))
    with _starting_over_if_incomplete(run), contextlib.closing(fetched) as pages_ahead, \
            open_files(settings, run.exports, run.names, resume.checkpoint if resume else None) as writer:
        for page in pages_ahead:
            writer.write(conform(page.users, settings.user_properties))  # exactly the manifest's keys
            pages = page.number
            if page.next_link and pages % settings.checkpoint_every_pages == 0:
                writer.end_segment(functools.partial(save_checkpoint, page.next_link, pages, ids.new_bytes()))
        count = UserCount(count_before, run.graph.count(), settings.user_count_tolerance)
        completeness.check(count, writer.jsonl.users)  # before any file of the run is committed
        committed, csv = _commit_files(run, writer)
    return run.manifest(committed, csv, pages, started=started, resumed=resume is not None, count=count)


@contextlib.contextmanager
def _starting_over_if_incomplete(run: SlotRun) -> Iterator[None]:
    """On IncompleteExport, discard the slot's checkpoint, so that its next run starts over instead of
    resuming past the hole. Entered before the files are opened: the discard comes after their threads
    have saved every checkpoint they still had on the way."""
    try:
        yield
    except IncompleteExport:
        try:
            run.lease.ensure()
            checkpoint.discard(run.state, run.slot)
        except (SlotBusyError, StorageError) as why:
            log.warning("Slot %s: the checkpoint was not discarded (%s)", iso(run.slot), why)
        raise


def _commit(run: SlotRun, file: GzipBlobWriter) -> CommittedBlob:
    """Commit one file under the run's name, once sure the run still holds the slot; recorded for the pointer."""
    run.lease.ensure()
    committed = file.commit(metadata={"slot": iso(run.slot)})
    run.record(committed)
    return committed


def _commit_files(run: SlotRun, writer: ExportFiles) -> tuple[CommittedBlob, CommittedBlob | None]:
    """Commit the snapshot (and its CSV copy), once sure the run still holds the slot; recorded for the pointer."""
    run.lease.ensure()
    committed, csv = writer.commit(metadata={"slot": iso(run.slot)})
    run.record(committed, csv)
    return committed, csv


def _summary(manifest: Manifest, status: str, store: SlotStore, clock: float,
             credential_expires: datetime | None = None, done: Snapshot | None = None,
             repaired: tuple[str, ...] = ()) -> ExportSummary:
    # The blob's address without its query: a SAS in the connection string must never reach output.
    url = store.exports.get_blob_client(manifest.blob).url.split("?", 1)[0]
    return ExportSummary.of(manifest, status, url, time.monotonic() - clock, credential_expires,
                            retries=done.retries if done else 0, throttled_s=done.throttled_s if done else 0.0,
                            repaired=repaired)
