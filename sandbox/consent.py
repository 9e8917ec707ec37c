"""Customer tenants and the app's consent in them: what Entra looks up when a multi-tenant app signs in.

An app registration lives in one tenant (the provider's *home* tenant); in every other tenant the app
exists only as a *service principal*, which an administrator's consent creates, holding the application
permissions (app roles) granted there ("Application and service principal objects in Microsoft Entra
ID": https://learn.microsoft.com/entra/identity-platform/app-objects-and-service-principals). A
client-credentials token for a tenant is issued to that service principal: its ``oid`` is the service
principal's object id in that tenant, its ``roles`` the roles granted there. Without a service principal
the sign-in is refused with AADSTS7000229 (see :data:`MISSING_SERVICE_PRINCIPAL`).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

#: AADSTS7000229, as Entra answers a client-credentials request of an app without a service principal in
#: the tenant: ``invalid_client``, "The client application {app} is missing service principal in the
#: tenant {tenant}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119" (quoted from
#: real responses in Azure/azure-sdk-for-net#46762 and Azure/Commercial-Marketplace-SaaS-Accelerator#830).
MISSING_SERVICE_PRINCIPAL = 7000229
MISSING_SERVICE_PRINCIPAL_TEXT = ("The client application {app} is missing service principal in the tenant {tenant}. "
                                  "See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119")


@dataclass
class ServicePrincipal:
    """An app's service principal in one tenant: its object id there and the Graph roles granted there."""

    app_id: str
    object_id: str
    roles: list[str] = field(default_factory=list)


@dataclass
class Organization:
    """A customer tenant as Entra knows it: its id, its initial domain, the apps consented in it."""

    tenant_id: str
    domain: str
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def consent(self, app_id: str, roles: list[str]) -> ServicePrincipal:
        """Admin consent: the app's service principal (created once, its object id kept) with exactly ``roles``."""
        key = app_id.lower()
        with self._lock:
            principal = self.service_principals.get(key)
            if principal is None:
                principal = ServicePrincipal(app_id=key, object_id=str(uuid.uuid4()))
                self.service_principals[key] = principal
            principal.roles = list(roles)
            return principal

    def revoke(self, app_id: str) -> None:
        """Delete the app's service principal here (what removing the enterprise application does)."""
        with self._lock:
            self.service_principals.pop(app_id.lower(), None)

    def principal(self, app_id: str) -> ServicePrincipal | None:
        with self._lock:
            return self.service_principals.get(app_id.lower())
