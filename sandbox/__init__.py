"""A local "sandbox tenant": Entra ID, managed identity, Key Vault and Microsoft Graph look-alikes.

The production code runs *unmodified* against it: MSAL, azure-identity, azure-keyvault-secrets and
requests talk real HTTP(S) to loopback ports, and only settings change (``Sandbox.settings``). Blob
Storage is Azurite (:class:`sandbox.azurite.Azurite`), started separately.

    with Sandbox(users=2_500, workdir=tmp_path) as sb:
        os.environ.update(sb.settings)
        ...                                  # run the export
        assert exported == list(sb.expected_users(properties))
        sb.directory.update(sb.directory.id_of(7), jobTitle="CFO")   # the tenant changes; delta sees it

Besides the client secret the app can sign in with a certificate kept in the vault
(:meth:`Sandbox.use_certificate`, :meth:`Sandbox.rotate_certificate`) or with a federated credential
trusting the function's user-assigned managed identity (:meth:`Sandbox.use_federated`); both return
the settings to merge over :attr:`Sandbox.settings`.

The tenant above is the provider's *home* tenant, where the (multi-tenant) app registration lives. The
sandbox can host customer tenants beside it (``Sandbox(customer_tenants=3)`` or :meth:`Sandbox.add_tenant`),
each with its own id, domain and users and the app's consent there (:class:`sandbox.customers.CustomerTenant`):
the app signs in at ``/{customer}/oauth2/v2.0/token`` with the same credential and reads that tenant's
users from the same Graph URL; :meth:`Sandbox.multi_tenant_settings` has ``TENANT_IDS``.

    with Sandbox(users=100, customer_tenants=[500, 2_000]) as sb:
        os.environ.update(sb.multi_tenant_settings())
        first = sb.tenant(sb.tenant_ids[0])
        first.revoke_consent()                 # its sign-ins now answer AADSTS7000229
        sb.faults.add("graph", tenant=sb.tenant_ids[1], page=2, status=503)   # one tenant's Graph fails

Nothing here logs or prints the client secret, a private key, an assertion or any token.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import certs
from .ca import TlsFiles, generate_tls
from .customers import CustomerTenant
from .directory import Directory
from .entra import TOKEN_EXCHANGE_AUDIENCES, AppRegistration, Entra, new_client_secret
from .faults import FaultPlan, FaultRule
from .graph import Graph
from .graphtenants import GraphTenants
from .identity import PATH as IDENTITY_PATH
from .identity import ManagedIdentityEndpoint
from .keyvault import VAULT_RESOURCE, KeyVault
from .requestlog import RequestLog, RequestRecord
from .server import ServiceServer, tls_context
from .tenant import TENANT_DOMAIN, id_namespace, make_user, select
from .tokens import Resources, TokenService

__all__ = ["Sandbox", "CustomerTenant", "Directory", "FaultPlan", "FaultRule", "RequestLog", "RequestRecord",
           "make_user", "select"]

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
KEY_VAULT_APP_ID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
SECRET_NAME = "graph-client-secret"
CERTIFICATE_NAME = "graph-client-certificate"
TOKEN_EXCHANGE_AUDIENCE = TOKEN_EXCHANGE_AUDIENCES[0]
GRAPH_ROLES = ["User.Read.All"]


STORAGE_RESOURCE = "https://storage.azure.com"
STORAGE_APP_ID = "e406a681-f3d4-42a8-90b6-c2b029497af1"


class Sandbox:
    """One tenant: an app registration with a secret, a managed identity allowed into the vault, users;
    and any number of customer tenants where the app may be consented.

    ``customer_tenants``: how many customer tenants to create, each of ``users`` users and consented with
    the home tenant's roles; or a sequence of their sizes. Services exist from construction (so tests can change state before ``start()``); ports, URLs,
    certificates and :attr:`settings` exist between ``start()`` and ``stop()``.
    """

    def __init__(self, users: int = 10_000, workdir: Path | str | None = None, *,
                 token_lifetime_s: int = 3599, page_latency_ms: float = 0,
                 tenant_id: str | None = None, tenant_domain: str = TENANT_DOMAIN,
                 customer_tenants: int | Sequence[int] = 0) -> None:
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = None
        self.tenant_id = (tenant_id or str(uuid.uuid4())).lower()
        self.tenant_domain = tenant_domain
        self.secret_name = SECRET_NAME
        self.requests = RequestLog()
        self.faults = FaultPlan()
        self.tokens = TokenService()
        self.resources = Resources()
        self.resources.add("graph", GRAPH_RESOURCE, GRAPH_APP_ID)
        self.resources.add("keyvault", VAULT_RESOURCE, KEY_VAULT_APP_ID)
        # Azure Storage (served by Azurite with --oauth basic); the storage SDK asks for this scope.
        self.resources.add("storage", STORAGE_RESOURCE, STORAGE_APP_ID)

        self.entra = Entra(tenant_id=self.tenant_id, tenant_domain=tenant_domain, tokens=self.tokens,
                           resources=self.resources, token_lifetime_s=token_lifetime_s)
        self.app: AppRegistration = self.entra.register_app(roles=list(GRAPH_ROLES),
                                                            sign_in_audience="AzureADMultipleOrgs")
        self._client_secret = new_client_secret()
        secret = self.entra.add_secret(self._client_secret)

        user_principal_id = str(uuid.uuid4())
        self.identity = ManagedIdentityEndpoint(
            tenant_id=self.tenant_id, principal_id=str(uuid.uuid4()), client_id=str(uuid.uuid4()),
            header_secret=str(uuid.uuid4()), tokens=self.tokens, resources=self.resources,
            token_lifetime_s=token_lifetime_s, user_client_id=str(uuid.uuid4()), user_principal_id=user_principal_id,
            user_resource_id=("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-graph-export-sbx"
                              "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-graph-export-sbx"),
            authority_host=lambda: self._url("entra"))
        self.vault = KeyVault(tenant_id=self.tenant_id, authority_host=lambda: self._url("entra"),
                              tokens=self.tokens, resources=self.resources)
        self.vault.allow(self.identity.principal_id)
        self.vault.allow(user_principal_id)
        # The vault copy expires when the app's secret does, as a deployment that sets --expires would.
        self.vault.set_secret(self.secret_name, self._client_secret, expires=secret.expires_at)
        #: name -> (private key PEM, cert PEM) of the current version of each certificate made by use_certificate.
        self._certificates: dict[str, tuple[bytes, bytes]] = {}

        self.graph = Graph(tenant_id=self.tenant_id, tenant_domain=tenant_domain, tokens=self.tokens,
                           resources=self.resources, users=users, page_latency_ms=page_latency_ms)
        #: The one Graph listener: every hosted tenant's Graph behind it, chosen by the token's tid.
        self.graphs = GraphTenants(self.graph, self.tokens)
        self._customers: dict[str, CustomerTenant] = {}
        sizes = [users] * customer_tenants if isinstance(customer_tenants, int) else list(customer_tenants)
        for size in sizes:
            self.add_tenant(size)
        self._servers: dict[str, ServiceServer] = {}
        self._tls: TlsFiles | None = None
        self._owns_workdir = False

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "Sandbox":
        """Generate the CA and certificate, bind every service to a free loopback port, serve."""
        if self._servers:
            raise RuntimeError("sandbox already started")
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="graph-sandbox-"))
            self._owns_workdir = True
        else:
            self.workdir = self._workdir_arg
        self._tls = generate_tls(self.workdir / "tls")
        ctx = tls_context(self._tls.cert_file, self._tls.key_file)
        try:
            for service, tls in ((self.entra, True), (self.identity, False), (self.vault, True), (self.graphs, True)):
                self._servers[service.name] = ServiceServer(service, request_log=self.requests, faults=self.faults,
                                                            ssl_context=ctx if tls else None)
            self.entra.base_url = self._url("entra")
            self.vault.base_url = self._url("keyvault")
            self.graphs.base_url = self._url("graph")
            # Production asks for "{GRAPH_ENDPOINT}/.default", so the sandbox's own URL is a Graph audience.
            self.resources.add("graph", self.graphs.base_url)
            for server in self._servers.values():
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server and remove the work dir if the sandbox created it. Idempotent."""
        # In parallel: each server needs up to one poll interval to leave serve_forever().
        stoppers = [threading.Thread(target=server.stop, daemon=True) for server in self._servers.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=10)
        self._servers.clear()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._owns_workdir = False

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what clients are configured with -------------------------------------------------------

    @property
    def settings(self) -> dict[str, str]:
        """The production settings that point at this sandbox (storage settings excluded)."""
        self._require_started()
        assert self._tls is not None
        return {
            "TENANT_ID": self.tenant_id,
            "CLIENT_ID": self.app.client_id,
            "KEY_VAULT_URL": self._url("keyvault"),
            "CLIENT_SECRET_NAME": self.secret_name,
            "AUTHORITY_HOST": self._url("entra"),
            "GRAPH_ENDPOINT": self._url("graph"),
            "IDENTITY_ENDPOINT": self._url("identity") + IDENTITY_PATH,
            "IDENTITY_HEADER": self.identity.header_secret,
            "REQUESTS_CA_BUNDLE": str(self._tls.ca_file),
            "SSL_CERT_FILE": str(self._tls.ca_file),
        }

    def multi_tenant_settings(self, tenant_ids: Sequence[str] | None = None) -> dict[str, str]:
        """:attr:`settings` for a run over many tenants: ``TENANT_IDS`` (comma-separated; default every
        customer tenant, in the order added) and no ``TENANT_ID``. Key Vault and the managed identity stay
        the home tenant's."""
        chosen = list(self.tenant_ids if tenant_ids is None else tenant_ids)
        settings = {k: v for k, v in self.settings.items() if k != "TENANT_ID"}
        return {**settings, "TENANT_IDS": ",".join(chosen)}

    # --- customer tenants -------------------------------------------------------------------------

    def add_tenant(self, users: int = 1_000, *, tenant_id: str | None = None, domain: str | None = None,
                   consent: bool = True, roles: list[str] | None = None) -> CustomerTenant:
        """A customer tenant with ``users`` users of its own (ids in its own namespace) and, unless
        ``consent=False``, the app consented there with ``roles`` (default: the home tenant's). Works
        before or after ``start()``."""
        tid = (tenant_id or str(uuid.uuid4())).lower()
        name = domain or f"customer{len(self._customers) + 1}.onmicrosoft.com"
        organization = self.entra.add_tenant(tid, name)
        graph = Graph(tenant_id=tid, tenant_domain=name, tokens=self.tokens, resources=self.resources,
                      users=users, page_latency_ms=self.graph.page_latency_ms, namespace=id_namespace(tid))
        self.graphs.add(graph)
        customer = CustomerTenant(entra=self.entra, graph=graph, organization=organization,
                                  client_id=self.app.client_id)
        if consent:
            customer.consent(list(self.app.roles) if roles is None else roles)
        self._customers[tid] = customer
        return customer

    @property
    def tenant_ids(self) -> list[str]:
        """The customer tenants' ids, in the order added (the home tenant is :attr:`tenant_id`)."""
        return list(self._customers)

    @property
    def customers(self) -> list[CustomerTenant]:
        return list(self._customers.values())

    def tenant(self, tenant_id: str) -> CustomerTenant:
        """A customer tenant by id; KeyError for any other (the home tenant is this object itself)."""
        return self._customers[tenant_id.lower()]

    @property
    def ca_file(self) -> Path:
        self._require_started()
        assert self._tls is not None
        return self._tls.ca_file

    @property
    def tls(self) -> TlsFiles:
        """The CA and server certificate, e.g. to serve Azurite over HTTPS with the same trust."""
        self._require_started()
        assert self._tls is not None
        return self._tls

    @property
    def client_id(self) -> str:
        return self.app.client_id

    @property
    def client_secret(self) -> str:
        """The current valid client secret value (also the latest vault version). Never log it."""
        return self._client_secret

    @property
    def principal_id(self) -> str:
        """Object id of the function app's managed identity (the one allowed into the vault)."""
        return self.identity.principal_id

    @property
    def identity_principal_id(self) -> str:
        """Alias of :attr:`principal_id`."""
        return self.identity.principal_id

    @property
    def user_identity_client_id(self) -> str:
        """Client id of the function app's user-assigned managed identity (MANAGED_IDENTITY_CLIENT_ID)."""
        assert self.identity.user is not None
        return self.identity.user.client_id

    @property
    def user_identity_principal_id(self) -> str:
        """Object (principal) id of the user-assigned identity: the ``sub`` of its token-exchange tokens."""
        assert self.identity.user is not None
        return self.identity.user.principal_id

    @property
    def federation_issuer(self) -> str:
        """``{authority}/{tenant}/v2.0``: the issuer of the managed identity's token-exchange tokens."""
        self._require_started()
        return self.identity.federation_issuer()

    @property
    def directory(self) -> Directory:
        """The tenant's users: add, update, delete and restore them (``/users`` and ``/users/delta`` follow)."""
        return self.graph.directory

    @property
    def users(self) -> int:
        """Live users now."""
        return len(self.graph.directory)

    @users.setter
    def users(self, value: int) -> None:
        """Start over with a fresh tenant of ``value`` users and no changes."""
        self.graph.directory.reset(int(value))

    @property
    def token_lifetime_s(self) -> int:
        """Lifetime of tokens issued from now on by Entra and the managed identity endpoint."""
        return self.entra.token_lifetime_s

    @token_lifetime_s.setter
    def token_lifetime_s(self, value: int) -> None:
        self.entra.token_lifetime_s = self.identity.token_lifetime_s = int(value)

    @property
    def page_latency_ms(self) -> float:
        """Delay before each successful Graph page (benchmarks)."""
        return self.graph.page_latency_ms

    @page_latency_ms.setter
    def page_latency_ms(self, value: float) -> None:
        """Every tenant's Graph, the home one and the customers'."""
        for graph in [self.graph, *(c.graph for c in self._customers.values())]:
            graph.page_latency_ms = float(value)

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def connections(self, service: str) -> int:
        """Client connections ``service`` has accepted: a keep-alive client paging Graph uses one."""
        self._require_started()
        return self._servers[service].connections_accepted

    def url(self, service: str) -> str:
        """Base URL of ``entra``, ``identity``, ``keyvault`` or ``graph``."""
        self._require_started()
        return self._url(service)

    # --- expectations and knobs for tests -------------------------------------------------------

    def expected_users(self, properties: list[str] | tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        """Exactly what following every nextLink of ``/users?$select=properties`` yields now, in order
        (``directory.users(properties)``)."""
        return self.graph.expected_users(properties)

    def rotate_secret(self) -> None:
        """New secret in Entra and as a new vault version; the old secret stops working at once."""
        old = self._client_secret
        new = new_client_secret()
        secret = self.entra.add_secret(new)
        self.vault.set_secret(self.secret_name, new, expires=secret.expires_at)
        self.entra.remove_secret(old)
        self._client_secret = new

    def set_secret_expiry(self, days: float) -> float:
        """Move the end date of the current client secret to ``days`` from now (negative: expired), in
        Entra and on the vault's latest version (``attributes.exp``); return it as epoch seconds."""
        expires_at = time.time() + days * 86400
        for secret in self.entra.app().secrets:
            if secret.value == self._client_secret:
                secret.expires_at = expires_at
        self.vault.update_secret(self.secret_name, expires=expires_at)
        return expires_at

    # --- certificate and federated credentials ----------------------------------------------------

    def new_certificate(self, *, days: float = 365, common_name: str = "graph-export") -> tuple[bytes, bytes]:
        """A fresh self-signed RSA 2048 certificate: ``(private key PEM, cert PEM)``, ending ``days`` from now."""
        return certs.new_certificate(days=days, common_name=common_name)

    def use_certificate(self, *, form: str = "pkcs12", days: float = 365, name: str = CERTIFICATE_NAME,
                        register: bool = True) -> dict[str, str]:
        """Sign in with a certificate: make one, import it into the vault as ``name`` (``form`` "pkcs12" or
        "pem"), register its public part on the app (unless ``register=False``); return the settings of
        that mode, to merge over :attr:`settings`."""
        key_pem, cert_pem = self.new_certificate(days=days)
        self.vault.import_certificate(name, key_pem, cert_pem, form=form)
        if register:
            self.entra.add_certificate(cert_pem)
        self._certificates[name.lower()] = (key_pem, cert_pem)
        return {"CLIENT_CREDENTIAL": "certificate", "CLIENT_CERTIFICATE_NAME": name}

    def rotate_certificate(self, name: str = CERTIFICATE_NAME, *, keep_old_registered: bool = False,
                           days: float = 365) -> str:
        """A new certificate as a new version of ``name`` (same form), registered on the app; the previous
        one unregistered unless ``keep_old_registered`` (a rotation policy plus a deployment). Returns the
        new version id."""
        versions = self.vault.certificate_versions(name)
        if not versions:
            raise KeyError(f"no certificate {name!r} in the vault: call use_certificate() first")
        form = "pem" if versions[-1].content_type == certs.PEM else "pkcs12"
        key_pem, cert_pem = self.new_certificate(days=days)
        version = self.vault.import_certificate(name, key_pem, cert_pem, form=form)
        self.entra.add_certificate(cert_pem)
        old = self._certificates.get(name.lower())
        if old is not None and not keep_old_registered:
            self.entra.remove_certificate(old[1])
        self._certificates[name.lower()] = (key_pem, cert_pem)
        return version

    def certificate(self, name: str = CERTIFICATE_NAME) -> tuple[bytes, bytes]:
        """``(private key PEM, cert PEM)`` of the current version of a certificate made here. Never log it."""
        return self._certificates[name.lower()]

    def use_federated(self, *, register: bool = True, subject: str | None = None,
                      audience: str = TOKEN_EXCHANGE_AUDIENCE) -> dict[str, str]:
        """Sign in with a federated credential: register one on the app trusting the user-assigned identity
        (issuer :attr:`federation_issuer`, subject its principal id unless ``subject`` is given, audience
        ``audience``) unless ``register=False``; return the settings of that mode."""
        if register:
            self.entra.add_federated_credential(issuer=self.federation_issuer,
                                                subject=subject or self.user_identity_principal_id,
                                                audiences=[audience])
        return {"CLIENT_CREDENTIAL": "federated", "MANAGED_IDENTITY_CLIENT_ID": self.user_identity_client_id}

    def issue_token(self, resource: str = "graph", *, roles: list[str] | None = None,
                    lifetime_s: int | None = None, tenant_id: str | None = None,
                    principal_id: str | None = None) -> str:
        """Mint a token directly (bypassing Entra), e.g. an expired or wrong-audience one for tests.

        ``resource`` is "graph", "keyvault" or a literal audience. Default roles: the app's roles
        for Graph, none otherwise; in a consented customer tenant its service principal's id and roles there.
        """
        aud = {"graph": self.graph.base_url or GRAPH_RESOURCE, "keyvault": VAULT_RESOURCE}.get(resource, resource)
        customer = self._customers.get((tenant_id or "").lower())
        principal = customer.principal if customer is not None else None
        if roles is None:
            granted = principal.roles if principal is not None else self.app.roles
            roles = list(granted) if resource == "graph" else []
        oid = principal_id or (principal.object_id if principal is not None else self.app.principal_id)
        token, _ = self.tokens.issue(aud=aud, tenant_id=tenant_id or self.tenant_id, appid=self.app.client_id,
                                     oid=oid, roles=roles,
                                     lifetime_s=self.entra.token_lifetime_s if lifetime_s is None else lifetime_s)
        return token

    # --- internals ------------------------------------------------------------------------------

    def _url(self, service: str) -> str:
        server = self._servers.get(service)
        return server.base_url if server is not None else ""

    def _require_started(self) -> None:
        if not self._servers:
            raise RuntimeError("sandbox is not running: call start() or use it as a context manager")

    def __repr__(self) -> str:  # never include the secret
        state = "running" if self._servers else "stopped"
        customers = f", customer_tenants={len(self._customers)}" if self._customers else ""
        return f"Sandbox(tenant={self.tenant_id}, users={self.users}{customers}, {state})"
