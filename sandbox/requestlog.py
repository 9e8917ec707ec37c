"""A thread-safe record of every request the sandbox served.

Tests assert on what actually went over the wire (how many token requests, which page was retried,
which fault fired). Entries hold only the path, never the query string, headers or body, so no client
secret, assertion or access token can end up in the log.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class RequestRecord:
    """One served (or deliberately dropped) request."""

    service: str          # "entra", "identity", "keyvault" or "graph"
    number: int           # 1-based request number for this service
    method: str
    path: str             # without the query string
    status: int | None    # None when the connection was dropped by a fault
    fault: str | None     # description of the fault rule applied, if any
    page: int | None = None   # Graph only: page number, 1 for the first
    tenant: str | None = None  # Entra and Graph: the tenant id it was for (path / token ``tid``), if known
    at: float = 0.0       # time.time() when the request arrived
    duration_ms: float = 0.0


class RequestLog:
    """Append-only, thread-safe list of :class:`RequestRecord`, plus per-service request counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._counters: dict[str, int] = {}

    def next_number(self, service: str) -> int:
        """Reserve the next 1-based request number for ``service`` (fault rules match on it)."""
        with self._lock:
            n = self._counters.get(service, 0) + 1
            self._counters[service] = n
            return n

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def entries(self, service: str | None = None, *, tenant: str | None = None) -> list[RequestRecord]:
        """A snapshot copy, optionally for one service and/or one tenant id only."""
        wanted = tenant.lower() if tenant is not None else None
        with self._lock:
            return [r for r in self._records if (service is None or r.service == service)
                    and (wanted is None or r.tenant == wanted)]

    def count(self, service: str | None = None, *, status: int | None = None) -> int:
        return sum(1 for r in self.entries(service) if status is None or r.status == status)

    def clear(self) -> None:
        """Forget records and restart the per-service request numbering."""
        with self._lock:
            self._records.clear()
            self._counters.clear()

    def __eq__(self, other: object) -> bool:
        """Compares like a list of records, so ``sandbox.requests == []`` reads naturally in tests."""
        if isinstance(other, RequestLog):
            return self.entries() == other.entries()
        if isinstance(other, (list, tuple)):
            return self.entries() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __getitem__(self, index: int) -> RequestRecord:
        return self.entries()[index]

    def __repr__(self) -> str:
        return f"RequestLog({self.entries()!r})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.entries())
