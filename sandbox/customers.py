"""One customer tenant of the sandbox, as tests handle it: its directory, and the app's consent there.

Each customer tenant has its own tenant id and domain, its own :class:`sandbox.graph.Graph` (so its own
:class:`sandbox.directory.Directory`, whose users are computed like the home tenant's but with ids in the
tenant's own namespace, :func:`sandbox.tenant.id_namespace`) and, once consented, a service principal of
the provider's app (:mod:`sandbox.consent`). Graph serves it on the sandbox's one Graph listener to tokens
whose ``tid`` is this tenant (:mod:`sandbox.graphtenants`).
"""

from __future__ import annotations

from typing import Any, Iterator

from .consent import Organization, ServicePrincipal
from .directory import Directory
from .entra import Entra
from .graph import Graph


class CustomerTenant:
    """A tenant where the provider's multi-tenant app may be consented, with users of its own."""

    def __init__(self, *, entra: Entra, graph: Graph, organization: Organization, client_id: str) -> None:
        self._entra = entra
        self.graph = graph
        self.organization = organization
        self._client_id = client_id

    @property
    def tenant_id(self) -> str:
        return self.organization.tenant_id

    @property
    def domain(self) -> str:
        return self.organization.domain

    @property
    def directory(self) -> Directory:
        """This tenant's users: change them as in the home tenant (``/users`` and ``/users/delta`` follow)."""
        return self.graph.directory

    @property
    def users(self) -> int:
        """Live users now."""
        return len(self.graph.directory)

    @users.setter
    def users(self, value: int) -> None:
        """Start over with ``value`` users and no changes."""
        self.graph.directory.reset(int(value))

    def expected_users(self, properties: list[str] | tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        """Exactly what paging this tenant's ``/users?$select=properties`` yields now, in order."""
        return self.graph.expected_users(properties)

    # --- consent ----------------------------------------------------------------------------------

    @property
    def principal(self) -> ServicePrincipal | None:
        """The app's service principal here, None while not consented."""
        return self.organization.principal(self._client_id)

    @property
    def consented(self) -> bool:
        return self.principal is not None

    @property
    def roles(self) -> list[str]:
        """The Graph application permissions granted to the app here ([] when not consented)."""
        principal = self.principal
        return list(principal.roles) if principal is not None else []

    def consent(self, roles: list[str]) -> ServicePrincipal:
        """Admin consent with exactly ``roles`` (again: the same service principal, new roles)."""
        return self._entra.consent(self.tenant_id, roles, self._client_id)

    def revoke_consent(self) -> None:
        """Delete the app's service principal here: sign-ins answer AADSTS7000229 from now on; tokens issued
        before stay valid until they expire, as Entra's do."""
        self._entra.revoke_consent(self.tenant_id, self._client_id)

    def set_roles(self, roles: list[str]) -> None:
        """Grant exactly ``roles`` to the consented app (tokens issued later carry them)."""
        if not self.consented:
            raise KeyError(f"the app is not consented in tenant {self.tenant_id}: call consent() first")
        self.consent(roles)

    def __repr__(self) -> str:
        return f"CustomerTenant({self.tenant_id}, {self.domain}, users={self.users}, consented={self.consented})"
