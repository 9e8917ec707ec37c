"""One export, end to end: storage → credential → token → pages of users → blob → manifest → latest.

It resumes from a checkpoint when an earlier invocation of the same slot was killed; in delta mode
the pages are the changes since the previous snapshot, applied to it (``delta``).

Both doors (the timer function and ``python -m graph_export run``) call :func:`run_export`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from azure.storage.blob import BlobClient, ContainerClient

from . import checkpoint, delta, graph, naming, publish, sink
from .clients import WarmClients, warm_clients
from .errors import ConfigError
from .lease import SlotLease
from .progress import RunProgress, Snapshot, log_line
from .records import DeltaState, ExportSummary, Manifest, Progress, iso
from .settings import Settings
from .userids import UserIds

log = logging.getLogger(__name__)


def run_export(settings: Settings, slot: datetime | None = None, *, force: bool = False,
               on_progress: Callable[[Snapshot], None] = log_line, progress_every_s: float | None = None,
               ) -> ExportSummary:
    """Export every user once for ``slot`` (default: now). Raises an ExportError subclass on failure.

    A slot that already has a published export is left alone unless ``force``; a slot with a usable
    checkpoint resumes from it. Only one run exports a slot at a time (``lease``). Storage and sign-in
    are checked before any user is read, nothing becomes visible until the blob commit, and the
    manifest and then ``latest.json`` follow it. ``on_progress`` hears how far it has got at most
    every PROGRESS_EVERY_SECONDS (or ``progress_every_s``), and at the end (default: a log line).
    """
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    try:
        slot = naming.check_slot(slot or started, started)
    except ValueError as why:
        raise ConfigError(f"The slot to export is not usable: {why}.") from None
    clients = warm_clients(settings)
    container = clients.container()
    if not force and (done := publish.published(container, slot)) is not None:
        return _summary(done, "skipped", container, clock)
    with SlotLease(container, slot) as lease:
        if not force and (done := publish.published(container, slot)) is not None:
            return _summary(done, "skipped", container, clock)  # another run finished it meanwhile
        clients.retry_budget.reset(settings.graph_retries_per_run)
        progress = RunProgress(clients.retry_budget, progress_every_s or settings.progress_every_s, on_progress)
        expires = clients.tokens.check_expiry(timedelta(days=settings.credential_expiry_warning_days), started)
        clients.tokens.get()  # fail on Key Vault or sign-in before staging anything

        blob = container.get_blob_client(naming.export_blob_name(slot))
        state: DeltaState | None = None
        if settings.export_mode == "delta":
            manifest, state = _delta_slot(settings, clients, container, blob, slot, started, lease, force, progress)
        else:
            resume = None if force else _resumable(settings, container, blob, slot, started)
            manifest = _full_slot(settings, clients, container, blob, slot, started, lease, resume, progress)
        publish.publish(container, manifest, lease, state)
        checkpoint.delete(container, slot)
    finished = progress.finish()
    return _summary(manifest, "succeeded", container, clock, expires, finished)


def _delta_slot(settings: Settings, clients: WarmClients, container: ContainerClient, blob: BlobClient,
                slot: datetime, started: datetime, lease: SlotLease, force: bool,
                progress: RunProgress) -> tuple[Manifest, DeltaState]:
    """The snapshot from the changes since the last one; a full export when that cannot be trusted."""
    try:
        return delta.export_slot(settings, clients, container, blob, slot,
                                 delta.load_base(container, settings, started), started, lease, progress)
    except delta.FallBack as why:
        log.warning("Delta mode: exporting slot %s in full, as %s", iso(slot), why)
    resume = None if force else _resumable(settings, container, blob, slot, started)
    if resume is not None and resume.checkpoint.delta_link is not None:
        link, taken = resume.checkpoint.delta_link, resume.checkpoint.started
    else:
        resume, link, taken = None, delta.latest_link(clients, settings), datetime.now(timezone.utc)
    manifest = _full_slot(settings, clients, container, blob, slot, started, lease, resume, progress, link)
    manifest = dataclasses.replace(manifest, drift=delta.measure_drift(settings, clients, container, manifest, started))
    return manifest, DeltaState(delta_link=link, taken=taken, properties=settings.user_properties,
                                base_manifest=manifest.manifest, base_slot=slot)


def _full_slot(settings: Settings, clients: WarmClients, container: ContainerClient, blob: BlobClient,
               slot: datetime, started: datetime, lease: SlotLease, resume: checkpoint.Resume | None,
               progress: RunProgress, delta_link: str | None = None) -> Manifest:
    """Every user from /users, continuing from ``resume`` (a usable checkpoint) if there is one."""
    try:
        return _export(settings, clients, container, blob, slot, resume, started, lease, progress, delta_link)
    except graph.PageLinkRejected as exc:
        if resume is None:
            raise
        log.warning("Graph no longer accepts the checkpoint's page link (%s); restarting the slot", exc)
        return _export(settings, clients, container, blob, slot, None, started, lease, progress, delta_link)


def _resumable(settings: Settings, container: ContainerClient, blob: BlobClient, slot: datetime,
               now: datetime) -> checkpoint.Resume | None:
    return checkpoint.resumable(container, blob, slot, settings.user_properties,
                                timedelta(hours=settings.checkpoint_max_age_h), now,
                                needs_delta_link=settings.export_mode == "delta",
                                csv_blob=sink.csv_blob(settings, container, slot))


def _export(settings: Settings, clients: WarmClients, container: ContainerClient, blob: BlobClient,
            slot: datetime, resume: checkpoint.Resume | None, started: datetime, lease: SlotLease,
            progress: RunProgress, delta_link: str | None) -> Manifest:
    """Page through every user into ``blob``, checkpointing as it goes; commit; return the manifest.

    Every write others could read (checkpoint, blob commit) first makes sure this run still holds
    the slot's lease.
    """
    saved_ids = checkpoint.SavedIds(container, slot)
    if resume is not None:
        ids = resume.ids
        url, first, started = resume.checkpoint.next_link, resume.checkpoint.pages + 1, resume.checkpoint.started
        saved_ids.start(ids.to_bytes())  # drops digests appended after that checkpoint was saved
    else:
        ids = UserIds()
        url, first = graph.first_page_url(settings.graph_endpoint, settings.user_properties, settings.page_size), 1
    pages = first - 1

    def save_checkpoint(next_link: str, pages: int, new_ids: bytes, staged: Progress, csv: Progress | None) -> None:
        """On a writer's thread, once every page up to ``pages`` is staged: the ids, then the checkpoint."""
        lease.ensure()
        checkpoint.save(container, checkpoint.Checkpoint(
            slot=slot, blob=blob.blob_name, properties=settings.user_properties, next_link=next_link, pages=pages,
            progress=staged, ids_bytes=saved_ids.append(new_ids), started=started, saved=datetime.now(timezone.utc),
            delta_link=delta_link, csv_progress=csv))
        log.debug("checkpoint after page %d: %d users", pages, staged.users)

    # Three stages overlap: page k+1 is requested as soon as page k's nextLink arrives, page k is
    # parsed and encoded here, and compression and block uploads trail behind on their own thread.
    fetched = progress.watch(graph.iter_user_pages(clients.http, url, settings.graph_endpoint, clients.tokens,
                                                   settings.http_timeout_s, first, ids=ids))
    with contextlib.closing(fetched) as pages_ahead, \
            sink.open_files(settings, container, blob, slot, resume.checkpoint if resume else None) as writer:
        for page in pages_ahead:
            writer.write(page.users)
            pages = page.number
            if page.next_link and pages % settings.checkpoint_every_pages == 0:
                writer.end_segment(functools.partial(save_checkpoint, page.next_link, pages, ids.new_bytes()))
        lease.ensure()
        committed, csv = writer.commit(metadata={"slot": iso(slot)})
    finished = datetime.now(timezone.utc)
    return Manifest(
        container=settings.container, blob=committed.name, manifest=naming.manifest_blob_name(slot),
        users=committed.users, pages=pages, properties=settings.user_properties, bytes=committed.bytes,
        uncompressed_bytes=committed.uncompressed_bytes, sha256=committed.sha256, slot=slot, started=started,
        finished=finished, resumed=resume is not None, tenant_id=settings.tenant_id,
        graph_endpoint=settings.graph_endpoint, csv=csv,
    )


def _summary(manifest: Manifest, status: str, container: ContainerClient, clock: float,
             credential_expires: datetime | None = None, done: Snapshot | None = None) -> ExportSummary:
    url = container.get_blob_client(manifest.blob).url
    return ExportSummary.of(manifest, status, url, time.monotonic() - clock, credential_expires,
                            retries=done.retries if done else 0, throttled_s=done.throttled_s if done else 0.0)
