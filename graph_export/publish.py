"""Publishing a slot: the commit (one conditional write of the slot's pointer), and what follows it.

A run commits its files and its manifest under its own names, which nothing ever overwrites; then
the slot's pointer in the state area is written conditionally (absent for a new slot, the ETag read
before for ``--force``): that write is the moment the run's export becomes the slot's. Everything
after it (``latest.json``, the delta state, removing what a dead run left, the checkpoint) can fail
and be finished by the next run of the slot (:func:`unfinished`, :func:`finish`); a run that fails
before it leaves what consumers read byte for byte as it was.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from . import checkpoint, naming, storage
from .errors import SlotBusyError, StorageError
from .lease import SlotLease
from .records import DeltaState, Manifest, RecordError, SlotPointer, iso
from .slotrun import SlotRun, SlotStore

log = logging.getLogger(__name__)

#: Conditional writes of the delta state tried before giving up (each loss means another slot moved it).
DELTA_STATE_ATTEMPTS = 8


@dataclass(frozen=True)
class Standing:
    """The slot's pointer as read, and the export it names when that export is exactly as committed."""

    pointer: SlotPointer | None
    #: The pointer blob's ETag (None: there is none), on which a replacing commit is conditional.
    etag: str | None
    manifest: Manifest | None
    #: What a new export of the slot replaces (and so keeps): see :func:`standing`.
    supersedes: str | None = None


def standing(store: SlotStore) -> Standing:
    """Read the slot's pointer and check what it names, from properties only (nothing is downloaded
    but the manifest): a manifest or file that is missing, changed since the commit (ETag), or whose
    size or recorded sha256 disagree with the manifest means the slot is not exported (logged).

    A new export supersedes the manifest the pointer names when that is one of the slot's, usable or
    not. A damaged pointer (not parsable, or naming something that is not one of the slot's manifests)
    no longer says which export was the slot's: then the newest complete export found under the slot's
    prefix is taken to be it, so that it is kept rather than removed as something a dead run left.
    """
    name = naming.slot_pointer_name(store.slot)
    document, etag = storage.read_json_etag(store.state, name)
    if etag is None:
        return Standing(None, None, None)
    try:
        pointer = SlotPointer.parse(document)
    except RecordError as why:
        log.warning("Slot pointer %s is not valid (%s); exporting the slot again", name, why)
        return Standing(None, etag, None, _newest_complete(store))
    why_not = _why_not_published(store, pointer)
    if why_not is None:
        return Standing(pointer, etag, _manifest(store, pointer.manifest), pointer.manifest)
    log.warning("Slot %s is not exported as its pointer says: %s; exporting it again", iso(store.slot), why_not)
    ours = pointer.slot == store.slot and pointer.manifest.startswith(naming.slot_prefix(store.slot))
    return Standing(pointer, etag, None, pointer.manifest if ours else _newest_complete(store))


def _newest_complete(store: SlotStore) -> str | None:
    """The slot's manifest with the latest ``finished`` whose files are as it says, if there is one."""
    prefix = naming.slot_prefix(store.slot)
    with storage.storage_errors(f"listing {prefix}*"):
        names = [b.name for b in store.exports.list_blobs(name_starts_with=prefix) if b.name.endswith(".manifest.json")]
    complete = [m for m in map(functools.partial(_manifest, store), names)
                if m is not None and m.slot == store.slot and files_mismatch(store, m) is None]
    return max(complete, key=lambda m: m.finished).manifest if complete else None


def _manifest(store: SlotStore, name: str) -> Manifest | None:
    try:
        return Manifest.parse(storage.read_json(store.exports, name))
    except RecordError:
        return None


def _why_not_published(store: SlotStore, pointer: SlotPointer) -> str | None:
    if pointer.slot != store.slot:
        return f"the pointer is for slot {iso(pointer.slot)}"
    held = storage.properties_of(store.exports, pointer.manifest)
    if held is None:
        return f"its manifest {pointer.manifest} is missing"
    if held.etag != pointer.etags.get(pointer.manifest):
        return f"its manifest {pointer.manifest} changed after the commit"
    manifest = _manifest(store, pointer.manifest)
    if manifest is None:
        return f"its manifest {pointer.manifest} is not valid"
    if (manifest.slot, manifest.manifest, manifest.run, manifest.container) != \
            (store.slot, pointer.manifest, pointer.run, store.container):
        return f"its manifest {pointer.manifest} describes another slot, run or container"
    return files_mismatch(store, manifest, pointer.etags)


def files_mismatch(store: SlotStore, manifest: Manifest, etags: dict[str, str] | None = None) -> str | None:
    """Why the files ``manifest`` lists are not what it says (missing, other size, other recorded
    sha256, or an ETag other than ``etags`` records), from their properties; None when they are."""
    for name, (size, sha256) in manifest.files().items():
        held = storage.properties_of(store.exports, name)
        if held is None:
            return f"{name} is missing"
        if held.size != size or held.metadata.get("sha256", sha256) != sha256:
            return f"{name} does not match its manifest (size or sha256)"
        if etags is not None and held.etag != etags.get(name):
            return f"{name} changed after the commit"
    return None


def commit(run: SlotRun, manifest: Manifest, before: Standing, delta_link: str | None = None,
           taken: datetime | None = None) -> SlotPointer:
    """Write the run's manifest, then the slot's pointer to it, conditional on ``before``: the commit.

    ``delta_link``/``taken`` (delta mode) go into the pointer, from where :func:`finish` advances
    the delta state. SlotBusyError when another run committed the slot meanwhile: this one then
    published nothing (its files are removed by the slot's next successful run).
    """
    run.lease.ensure()
    etags = {**run.committed, manifest.manifest: storage.create_json(run.exports, manifest.manifest,
                                                                     manifest.to_document())}
    pointer = SlotPointer(slot=run.slot, run=run.run, manifest=manifest.manifest, etags=etags,
                          published=datetime.now(timezone.utc), delta_link=delta_link, taken=taken)
    run.lease.ensure()
    name = naming.slot_pointer_name(run.slot)
    if storage.replace_json(run.state, name, pointer.to_document(), before.etag) is None and \
            storage.read_json(run.state, name) != pointer.to_document():  # equal: this write's own, answer lost
        raise SlotBusyError(f"Another run committed slot {iso(run.slot)} while this one was exporting it ({name} "
                            "changed): this run published nothing; the other run's export stands.")
    log.info("Slot %s committed: %s", iso(run.slot), manifest.manifest)
    return pointer


def unfinished(store: SlotStore, pointer: SlotPointer, manifest: Manifest, now: datetime) -> list[str]:
    """What publishing the slot's export has not done yet (read only): ``latest.json``, the delta
    state, removing what dead runs of the slot left, the checkpoint's removal."""
    missing = []
    if storage.latest_needs(store.state, store.exports, manifest.pointer(), now):
        missing.append("latest.json")
    state = _delta_state(pointer, manifest)
    if state is not None and _delta_state_needs(store, state)[0]:
        missing.append("delta state")
    if unreferenced(store, pointer):
        missing.append("blobs no manifest names")
    if checkpoint.leftovers(store.state, store.slot):
        missing.append("checkpoint")
    return missing


def finish(store: SlotStore, pointer: SlotPointer, manifest: Manifest, lease: SlotLease) -> tuple[str, ...]:
    """Finish publishing the committed export: point ``latest.json`` at it (never backwards), advance
    the delta state, remove what dead runs of the slot left, drop the checkpoint. Returns what it did.

    A failure here says truthfully that the slot is published and what is left for the next run.
    """
    left = (f"slot {iso(store.slot)} is published ({manifest.manifest}) but not yet everywhere; run again "
            "to finish")
    did: list[str] = []
    try:
        lease.ensure()
        latest = storage.point_latest(store.state, store.exports, manifest.pointer(), datetime.now(timezone.utc), left)
        if latest == "written":
            did.append("latest.json")
        elif latest == "newer":
            log.info("%s already points at a later slot than %s; left as it is", naming.LATEST_BLOB, iso(store.slot))
        state = _delta_state(pointer, manifest)
        if state is not None and _advance(store, state, lease, left):
            did.append("delta state")
        _clean_up(store, pointer, lease, did)
    except SlotBusyError:
        log.debug("Publishing slot %s stopped", iso(store.slot), exc_info=True)  # how the lease was lost
        raise SlotBusyError(f"This run lost its lease on slot {iso(store.slot)} after committing it: {left}.") from None
    return tuple(did)


def _clean_up(store: SlotStore, pointer: SlotPointer, lease: SlotLease, did: list[str]) -> None:
    """Remove what dead runs of the slot left, and the checkpoint: best effort, as the next run tries again."""
    again = "the slot's next run tries again"
    try:
        removed = 0
        for name in unreferenced(store, pointer):
            lease.ensure()
            if storage.delete(store.exports, name, again):
                log.info("Removed %s, which a run that died before its commit left", name)
                removed += 1
        if removed:
            did.append(f"{removed} blobs no manifest names removed")
        for name in checkpoint.leftovers(store.state, store.slot):
            lease.ensure()
            storage.delete(store.state, name, again)
    except StorageError as why:
        log.warning("Slot %s is published, but cleaning up after it failed: %s", iso(store.slot), why)


def _delta_state(pointer: SlotPointer, manifest: Manifest) -> DeltaState | None:
    if pointer.delta_link is None or pointer.taken is None:
        return None
    return DeltaState(delta_link=pointer.delta_link, taken=pointer.taken, properties=manifest.properties,
                      base_manifest=manifest.manifest, base_slot=manifest.slot)


def _delta_state_needs(store: SlotStore, state: DeltaState) -> tuple[bool, str | None]:
    """Whether the delta state should move to ``state``, and the ETag it has now (None: absent).

    It only moves forward: a state based on a later slot stays; one of this slot naming another
    manifest (a replaced export) follows the pointer.
    """
    document, etag = storage.read_json_etag(store.state, naming.DELTA_STATE_BLOB)
    try:
        held = DeltaState.parse(document)
    except RecordError:  # none yet, or not valid: replaced
        return True, etag
    if held.base_slot > state.base_slot:
        pointer, problem = pointer_of(store, held)
        if pointer is not None:
            log.info("%s is already based on a later slot than %s; left as it is", naming.DELTA_STATE_BLOB,
                     iso(state.base_slot))
            return False, etag
        log.warning("%s claims a later slot (%s) than it was published for (%s); replacing it",
                    naming.DELTA_STATE_BLOB, iso(held.base_slot), problem)
    return held != state, etag


def pointer_of(store: SlotStore, state: DeltaState) -> tuple[SlotPointer | None, str | None]:
    """The pointer of the delta state's base slot when it is what that pointer committed (the same
    manifest, link and time: a state is only ever written from its slot's pointer); else why not."""
    name = naming.slot_pointer_name(state.base_slot)
    try:
        pointer = SlotPointer.parse(storage.read_json(store.state, name))
    except RecordError:
        return None, f"its pointer {name} is missing or not valid"
    if pointer.manifest != state.base_manifest:
        return None, "its pointer names another manifest"
    if (pointer.delta_link, pointer.taken) != (state.delta_link, state.taken):
        return None, "its pointer holds another delta link"
    return pointer, None


def _advance(store: SlotStore, state: DeltaState, lease: SlotLease, left: str) -> bool:
    for _ in range(DELTA_STATE_ATTEMPTS):
        needed, etag = _delta_state_needs(store, state)
        if not needed:
            return False
        lease.ensure()
        if storage.replace_json(store.state, naming.DELTA_STATE_BLOB, state.to_document(), etag, left) is not None:
            return True
    raise StorageError(f"{naming.DELTA_STATE_BLOB} kept changing while this run tried to advance it "
                       f"({DELTA_STATE_ATTEMPTS} attempts): {left}.")


def unreferenced(store: SlotStore, pointer: SlotPointer) -> list[str]:
    """The slot's published-looking blobs that no manifest reachable from a pointer names.

    Reachable: the slot pointer's manifest and every manifest it supersedes, in a chain; the ones
    ``latest.json`` and the delta state name. What remains was committed by runs that died before
    their commit. Storage that forbids deleting them (an immutability policy) keeps them; that is fine.
    """
    keep: set[str] = set()
    for name in _referenced_manifests(store, pointer):
        keep.add(name)
        manifest = _manifest(store, name)
        if manifest is not None:
            keep.update(manifest.files())
    prefix = naming.slot_prefix(store.slot)
    with storage.storage_errors(f"listing {prefix}*"):
        return [blob.name for blob in store.exports.list_blobs(name_starts_with=prefix) if blob.name not in keep]


def _referenced_manifests(store: SlotStore, pointer: SlotPointer) -> list[str]:
    names: list[str] = []
    name: str | None = pointer.manifest
    while name is not None and name not in names:
        names.append(name)
        manifest = _manifest(store, name)
        name = None if manifest is None else manifest.supersedes
    for record, field in ((naming.LATEST_BLOB, "manifest"), (naming.DELTA_STATE_BLOB, "base_manifest")):
        try:
            document = storage.read_json(store.state, record)
        except RecordError:
            continue
        if isinstance(document, dict) and isinstance(document.get(field), str):
            names.append(document[field])
    return names
