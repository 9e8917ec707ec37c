"""Delta mode's ``signInActivity``: read for every user beside the change feed, kept on local disk.

users/delta does not track ``signInActivity`` (it changes with every sign-in, and Graph leaves it out of
change tracking), yet an audit wants it as of the slot for every user. So a delta slot that selects it
reads ``GET /v1.0/users?$select=id,signInActivity`` through (500 users a page, Graph's limit with
``signInActivity``) and the merge takes each user's value from there by id. The values are held in a
SQLite file in the temporary directory (``tempfile``), not in memory: at 1,000,000 users they are
500 MB on disk (measured), and memory must stay flat in tenant size.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from typing import Any, Iterator

from . import graph, jsontext
from .errors import GraphError
from .graph import GraphUsers
from .properties import SIGN_IN_ACTIVITY_PAGE, conform

SIGN_IN_ACTIVITY = "signInActivity"
#: Rows are appended as pages arrive and indexed once at the end: a third of the time of inserting into
#: a keyed table (at 1,000,000 users, ~14 s and 2 s instead of ~35 s, measured on the 2-core machine).
#: The index is unique: it is what finds an id Graph listed twice (the listing keeps no ids in memory).
_SCHEMA = "CREATE TABLE sign_ins (id TEXT NOT NULL, value BLOB NOT NULL)"
_INDEX = "CREATE UNIQUE INDEX sign_ins_by_id ON sign_ins (id)"
#: What :meth:`SignIns.get` answers for a user the listing did not hold.
NOT_LISTED = object()


class SignIns:
    """Each user's ``signInActivity`` as Graph listed it, by user id (JSON text; null when Graph sent none)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self.users = 0
        self.pages = 0
        #: Users of the snapshot the listing did not hold (the merge counts them).
        self.missed = 0

    def add(self, users: list[dict[str, Any]]) -> None:
        rows = [(u["id"], jsontext.dumps_line(u[SIGN_IN_ACTIVITY])) for u in conform(users, ("id", SIGN_IN_ACTIVITY))]
        with self._db:
            self._db.executemany("INSERT INTO sign_ins VALUES (?, ?)", rows)
        self.users += len(rows)
        self.pages += 1

    def get(self, user_id: str) -> Any:
        """The user's signInActivity (None: Graph sent none); :data:`NOT_LISTED` for a user the listing did
        not hold (created since it was read, or lost with a page)."""
        row = self._db.execute("SELECT value FROM sign_ins WHERE id = ?", (user_id,)).fetchone()
        return NOT_LISTED if row is None else jsontext.loads(row[0])


@contextlib.contextmanager
def read(users: GraphUsers) -> Iterator[SignIns]:
    """Every user's signInActivity, read now; the file is deleted when the block ends."""
    with tempfile.TemporaryDirectory(prefix="graph-export-sign-ins-") as folder:
        connection = sqlite3.connect(os.path.join(folder, "sign-ins.sqlite3"), isolation_level="DEFERRED")
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute(_SCHEMA)
            sign_ins = SignIns(connection)
            url = graph.first_page_url(users.endpoint, ("id", SIGN_IN_ACTIVITY), SIGN_IN_ACTIVITY_PAGE)
            with contextlib.closing(users.listing(url)) as pages:
                for page in pages:
                    sign_ins.add(page.users)
            try:
                connection.execute(_INDEX)
            except sqlite3.IntegrityError:
                raise GraphError("Graph listed a user twice in the signInActivity listing (GET /users?$select="
                                 "id,signInActivity): its pages are not consistent; nothing was published. "
                                 "Run again.") from None
            yield sign_ins
        finally:
            connection.close()
