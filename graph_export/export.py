"""One export, end to end: storage → client secret → token → pages of users → blob → manifest → latest.

Both doors (the timer function and ``python -m graph_export run``) call :func:`run_export`.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from azure.identity import DefaultAzureCredential
from azure.storage.blob import ContainerClient

from . import credentials, graph, naming, sink
from .errors import AuthError
from .settings import Settings
from .token import GraphTokenProvider

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "graph-users-export/1"


@dataclass(frozen=True)
class ExportSummary:
    """What one successful run published; printed by the CLI and logged by the function."""

    status: str
    users: int
    pages: int
    container: str
    blob: str
    manifest: str
    url: str
    bytes: int
    sha256: str
    slot: str
    started: str
    finished: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (f"Export {self.status}: {self.users} users in {self.pages} pages -> "
                f"{self.container}/{self.blob} ({self.bytes} bytes, sha256 {self.sha256}) "
                f"in {self.duration_s:.1f} s")


class WarmClients:
    """What is worth keeping between invocations on a warm instance.

    Connection pools, the Azure credential's token cache, the secret read from Key Vault and the
    MSAL application with its token cache. A sign-in failure drops the secret and MSAL app, so the
    next run reads the vault again (someone may have fixed or rotated the secret meanwhile).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.azure_credential = DefaultAzureCredential()
        self.http = graph.make_session(settings.retry_backoff_base_s)
        self._container: ContainerClient | None = None
        self._tokens: GraphTokenProvider | None = None

    def container(self) -> ContainerClient:
        if self._container is None:
            s = self.settings
            self._container = sink.open_container(s.storage, s.container, self.azure_credential,
                                                  s.retry_backoff_base_s)
        return self._container

    def access_token(self) -> str:
        try:
            return self._token_provider().acquire()
        except AuthError:
            self._tokens = None
            raise

    def _token_provider(self) -> GraphTokenProvider:
        if self._tokens is None:
            s = self.settings
            vault = credentials.make_secret_client(
                s.key_vault_url, self.azure_credential,
                retry_total=4, retry_backoff_factor=s.retry_backoff_base_s,
                connection_timeout=10, read_timeout=30,
            )
            secret = credentials.read_client_secret(vault, s.client_secret_name)
            self._tokens = GraphTokenProvider(authority=s.authority, client_id=s.client_id,
                                              scope=s.graph_scope, secret=secret, http_client=self.http)
        return self._tokens


@functools.lru_cache(maxsize=4)
def warm_clients(settings: Settings) -> WarmClients:
    """One set of clients per distinct settings, for the life of the process."""
    return WarmClients(settings)


def run_export(settings: Settings, slot: datetime | None = None) -> ExportSummary:
    """Export every user once for ``slot`` (default: now). Raises an ExportError subclass on failure.

    Order matters: storage and sign-in are checked before any user is read, and nothing becomes
    visible until the blob commit; the manifest and then ``latest.json`` follow the commit.
    """
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    slot = naming.normalize_slot(slot or started)
    clients = warm_clients(settings)
    container = clients.container()
    clients.access_token()  # fail on Key Vault or sign-in before staging anything

    writer = sink.JsonlGzipBlobWriter(container.get_blob_client(naming.export_blob_name(slot)))
    pages = 0
    for users in graph.iter_user_pages(clients.http, settings.graph_endpoint, settings.user_properties,
                                       settings.page_size, clients.access_token):
        writer.write(users)
        pages += 1
        log.debug("page %d: %d users so far", pages, writer.users)
    committed = writer.commit(metadata={"slot": _iso(slot)})
    finished = datetime.now(timezone.utc)

    manifest_name = naming.manifest_blob_name(slot)
    sink.write_json(container, manifest_name, {
        "format": MANIFEST_FORMAT,
        "container": settings.container,
        "blob": committed.name,
        "users": committed.users,
        "pages": pages,
        "properties": list(settings.user_properties),
        "bytes": committed.bytes,
        "uncompressed_bytes": committed.uncompressed_bytes,
        "sha256": committed.sha256,
        "slot": _iso(slot),
        "started": _iso(started),
        "finished": _iso(finished),
        "tenant_id": settings.tenant_id,
        "graph_endpoint": settings.graph_endpoint,
    })
    if not sink.point_latest(container, {"slot": _iso(slot), "blob": committed.name, "manifest": manifest_name,
                                         "users": committed.users, "sha256": committed.sha256,
                                         "finished": _iso(finished)}):
        log.warning("%s already points at a later slot than %s; left as it is", naming.LATEST_BLOB, _iso(slot))

    summary = ExportSummary(
        status="succeeded", users=committed.users, pages=pages, container=settings.container,
        blob=committed.name, manifest=manifest_name, url=container.get_blob_client(committed.name).url,
        bytes=committed.bytes, sha256=committed.sha256, slot=_iso(slot), started=_iso(started),
        finished=_iso(finished), duration_s=round(time.monotonic() - clock, 3),
    )
    log.info(summary.line())
    return summary


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
