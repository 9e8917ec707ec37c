"""One tenant's root in a shared container: every blob name the export uses, below ``tenants/<id>/``.

With TENANT_IDS, each tenant's exports, manifests, ``latest.json``, locks, checkpoints and delta state live
under its own prefix in EXPORT_CONTAINER (and EXPORT_STATE_CONTAINER). The prefix is applied here, where a
run's containers are opened, and nowhere else: naming, records and manifests keep names relative to the
tenant's root, so a consumer (or ``verify --tenant``) reading below the prefix sees exactly the layout of a
single-tenant container, and no code path of one tenant can name a blob of another.

:class:`TenantContainer` answers the ContainerClient calls graph_export makes (the same set
tests/unit/memory_storage.py answers): names in are prefixed, names listed out are stripped of the prefix.
The blob clients it hands out are the SDK's own, for the full name (what messages and ``az`` commands need).
"""

from __future__ import annotations

from typing import Any, Iterator, cast

from azure.storage.blob import BlobClient, BlobProperties, ContainerClient


class TenantContainer:
    """A container seen from ``root`` (``tenants/<id>/``): what the export reads and writes is below it."""

    def __init__(self, inner: ContainerClient, root: str) -> None:
        if not root.endswith("/") or root.startswith("/"):
            raise ValueError(f"a tenant root is a relative prefix ending in '/', not {root!r}")
        self.inner = inner
        self.root = root

    @property
    def container_name(self) -> str:
        return str(self.inner.container_name)

    @property
    def url(self) -> str:
        return str(self.inner.url)

    def get_blob_client(self, blob: str) -> BlobClient:
        return self.inner.get_blob_client(self.root + blob)

    def list_blobs(self, name_starts_with: str | None = None, **kwargs: Any) -> Iterator[BlobProperties]:
        """The blobs below the root whose relative names start with ``name_starts_with``, named relatively."""
        for blob in self.inner.list_blobs(name_starts_with=self.root + (name_starts_with or ""), **kwargs):
            blob.name = blob.name[len(self.root):]
            yield blob

    def upload_blob(self, name: str, data: Any, **kwargs: Any) -> BlobClient:
        return self.inner.upload_blob(self.root + name, data, **kwargs)

    def download_blob(self, blob: str, *args: Any, **kwargs: Any) -> Any:
        return self.inner.download_blob(self.root + blob, *args, **kwargs)

    def delete_blob(self, blob: str, *args: Any, **kwargs: Any) -> None:
        self.inner.delete_blob(self.root + blob, *args, **kwargs)

    def get_container_properties(self, **kwargs: Any) -> Any:
        return self.inner.get_container_properties(**kwargs)

    def exists(self, **kwargs: Any) -> bool:
        return bool(self.inner.exists(**kwargs))


def under(container: ContainerClient, root: str) -> ContainerClient:
    """``container`` itself at the root (""), else seen from ``root``.

    Typed as a ContainerClient, which it stands in for: every module takes one, and the wrapper answers each
    call they make (tests/unit/test_tenant_root.py runs the export on it, tests/storage on Azurite).
    """
    if not root:
        return container
    if isinstance(container, TenantContainer):
        raise ValueError("a container already seen from a tenant root cannot be rooted again")
    return cast(ContainerClient, TenantContainer(container, root))
