"""``python -m graph_export status``: per tenant, the latest published slot, its users, and a newer failure.

Read from each tenant's own root (``latest.json`` and ``state/failure.json``), so it needs only storage; a
tenant that never published says so. Without TENANT_IDS, the one tenant at the container's root.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.storage.blob import ContainerClient

from . import failures, storage, tenant_root
from .naming import LATEST_BLOB
from .records import FailureRecord, LatestPointer, RecordError, iso


@dataclass(frozen=True)
class TenantStatus:
    """One tenant's standing: what consumers read now, and a failure newer than it (if any)."""

    tenant: str
    latest: LatestPointer | None
    failure: FailureRecord | None

    def as_dict(self) -> dict[str, object]:
        latest = self.latest
        failure = self.failure
        return {"tenant": self.tenant,
                "latest_slot": None if latest is None else iso(latest.slot),
                "users": None if latest is None else latest.users,
                "last_failure": None if failure is None else {"slot": iso(failure.slot), "failed": iso(failure.failed),
                                                              "error": failure.error}}

    def line(self) -> str:
        published = ("nothing published yet" if self.latest is None else
                     f"latest slot {iso(self.latest.slot)}, {self.latest.users} users")
        if self.failure is None:
            return f"{self.tenant}: {published}"
        return (f"{self.tenant}: {published}; failed {iso(self.failure.failed)} (slot {iso(self.failure.slot)}): "
                f"{self.failure.error}")


def of_tenant(state: ContainerClient, tenant: str, root: str) -> TenantStatus:
    """``tenant``'s status from the state container, seen from ``root``; a failure only if newer than latest."""
    seen = tenant_root.under(state, root)
    try:
        document = storage.read_json(seen, LATEST_BLOB)
        latest = None if document is None else LatestPointer.parse(document)
    except RecordError:
        latest = None
    failure = failures.last(seen)
    if failure is not None and latest is not None and failure.failed <= latest.finished:
        failure = None
    return TenantStatus(tenant=tenant, latest=latest, failure=failure)
