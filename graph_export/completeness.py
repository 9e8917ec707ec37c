"""Completeness: a snapshot holds as many users as Graph counted around reading them, or it is not published.

Every run asks Graph how many users the tenant has (``GraphUsers.count``, ``GET /users/$count``) when
it begins and once it has read every user (or every change), before any file of the run is
committed. The snapshot's users must lie in the range those counts allow (``UserCount.allowed``):
from the smaller to the larger, widened by USER_COUNT_TOLERANCE for Graph's eventual consistency. A
page that Graph, a proxy or the client lost, or a delta snapshot that drifted from the tenant, lands
outside it: :func:`check` raises :class:`IncompleteExport` before the commit, and discards the slot's
checkpoint so that the next run reads every user again rather than resume past the hole.
"""

from __future__ import annotations

import logging

from .errors import IncompleteExport
from .records import UserCount

log = logging.getLogger(__name__)


def check(count: UserCount, users: int) -> None:
    """IncompleteExport when a snapshot of ``users`` users lies outside what ``count`` allows.

    With both counts unknown there is nothing to check; with one unknown, the other alone sets the range.
    """
    if count.holds(users):
        if count.allowed() is None:
            log.warning("Graph's user count is unknown at both ends of the run: the snapshot's %d users were not "
                        "checked for completeness", users)
        else:
            log.info("%s; the snapshot holds %d (tolerance %d): complete", counted(count), users, count.tolerance)
        return
    raise IncompleteExport(f"{counted(count)}, but the snapshot holds {users} (tolerance {count.tolerance}): not "
                           "published; latest.json is unchanged and the slot's checkpoint was discarded, so the "
                           "next run reads every user again. Run again; if it recurs, something between Graph and "
                           "this app is losing pages (a proxy), or Graph is (report it to Microsoft with the run's "
                           "log); if the tenant changes by more than that while it is exported, raise "
                           "USER_COUNT_TOLERANCE.")


def counted(count: UserCount) -> str:
    """What Graph counted, in words: ``Graph counted 20000 users at the start and 20001 at the end``."""
    before = "an unknown number" if count.before is None else str(count.before)
    after = "an unknown number" if count.after is None else str(count.after)
    return f"Graph counted {before} users at the start and {after} at the end"
