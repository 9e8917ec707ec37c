"""What a warm Functions instance keeps between invocations: credentials, storage clients, tokens.

Building these is the slow part of a cold start (and MSAL's token cache only helps if it lives on), so
they live as long as the process, in two layers. :class:`AppClients` is what every tenant of one
deployment shares: the Azure identity, the containers, and the app's credential, read from Key Vault
once for all tenants of TENANT_IDS rather than once per tenant. :class:`WarmClients` is one tenant's:
its sign-in authority and MSAL token cache. What belongs to one run (its Graph connections and retry
budget) is made per run: :meth:`WarmClients.graph_users`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections import OrderedDict
from typing import ContextManager, Iterator, Protocol

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import ContainerClient

from . import credentials, storage, transport
from .graph import GraphUsers
from .modes import CredentialKind
from .settings import Settings
from .token import Credential, GraphTokenProvider, GraphTokens


class Clients(Protocol):
    """What an export needs from outside itself: storage, Graph tokens, and a Graph client for each run."""

    tokens: GraphTokens

    def container(self) -> ContainerClient: ...

    def state_container(self) -> ContainerClient: ...

    def graph_users(self, budget: transport.RetryBudget) -> ContextManager[GraphUsers]: ...


#: How many tenants' sign-ins (MSAL app and token cache) one process keeps; a tenant beyond them signs in
#: afresh (one token request), with the shared credential: the vault is not read again for it.
TENANTS_KEPT = 32


class AppClients:
    """What every tenant of one deployment shares on a warm instance: the Azure credential (and its token
    cache), the export and state containers (a tenant's names are under its root, ``tenant_root``), and the
    app registration's credential, read once for all tenants.

    The credential is read again only when a tenant's sign-in gave up on the one it was given (rejected,
    expiring, or any other sign-in failure: ``token.GraphTokens``) and no tenant has read the vault since it
    was given: a credential rotated in the vault is picked up by the first tenant to be refused, and the
    others then use what that read found.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A user-assigned identity must be named; without one, the system-assigned identity (or az login).
        self.azure_credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        self._containers: dict[str, ContainerClient] = {}
        # Two invocations at once on one instance (host.json's queue batch): one vault read between them.
        self._lock = threading.Lock()
        self._credential_lock = threading.Lock()
        self._credential: Credential | None = None
        self._tenants: OrderedDict[str, WarmClients] = OrderedDict()

    def for_tenant(self, settings: Settings) -> "WarmClients":
        """``settings``' tenant's clients (settings equal to this app's but for the tenant), kept for the
        :data:`TENANTS_KEPT` tenants used last."""
        with self._lock:
            clients = self._tenants.pop(settings.tenant_id, None) or WarmClients(settings, self)
            self._tenants[settings.tenant_id] = clients
            while len(self._tenants) > TENANTS_KEPT:
                self._tenants.popitem(last=False)
            return clients

    def credential(self) -> Credential:
        """The app's credential: the one read already, or the vault (or the federated assertion) now."""
        with self._credential_lock:
            if self._credential is None:
                self._credential = self._read_credential()
            return self._credential

    def credential_after(self, forgotten: Credential) -> Credential:
        """The credential for a tenant that gave up on ``forgotten``: read again, unless another tenant has
        read it since ``forgotten`` was handed out (then what that read found)."""
        with self._credential_lock:
            if self._credential is None or self._credential is forgotten:
                self._credential = self._read_credential()
            return self._credential

    def container(self, name: str) -> ContainerClient:
        with self._lock:
            if name not in self._containers:
                s = self.settings
                self._containers[name] = storage.open_container(s.storage, name, self.azure_credential,
                                                                s.retry_backoff_base_s)
            return self._containers[name]

    def _read_credential(self) -> Credential:
        """The credential CLIENT_CREDENTIAL names: the latest secret or certificate in Key Vault, read with
        the app's own identity, or the federated assertion of its user-assigned identity."""
        s = self.settings
        if s.client_credential == CredentialKind.FEDERATED:
            identity = ManagedIdentityCredential(client_id=s.managed_identity_client_id)
            return credentials.FederatedAssertion(identity, s.federated_token_audience)
        vault = self._vault()
        if s.client_credential == CredentialKind.CERTIFICATE:
            return credentials.read_client_certificate(vault, s.client_certificate_name,
                                                       send_x5c=s.certificate_send_x5c)
        return credentials.read_client_secret(vault, s.client_secret_name)

    def read_older_certificates(self, newest: Credential) -> list[Credential]:
        """Certificate versions other than ``newest`` that are enabled and unexpired, newest first (at most two)."""
        s = self.settings
        if s.client_credential != CredentialKind.CERTIFICATE:
            return []
        older = credentials.older_certificate_versions(self._vault(), s.client_certificate_name, newest.version,
                                                       send_x5c=s.certificate_send_x5c, limit=2)
        return list(older)

    def _vault(self) -> SecretClient:
        s = self.settings
        return credentials.make_secret_client(
            s.key_vault_url, self.azure_credential, authority_host=s.authority_host,
            retry_total=4, retry_backoff_factor=s.retry_backoff_base_s, connection_timeout=10, read_timeout=30,
        )


class WarmClients:
    """One tenant's clients on a warm instance: the Graph token source for its authority (MSAL's token
    cache, signed in with the app's shared credential), and the app's containers."""

    def __init__(self, settings: Settings, app: AppClients) -> None:
        self.settings = settings
        self.app = app
        self.tokens = GraphTokens(read_credential=app.credential, sign_in=self._sign_in,
                                  read_older=app.read_older_certificates, read_after=app.credential_after)

    @contextlib.contextmanager
    def graph_users(self, budget: transport.RetryBudget) -> Iterator[GraphUsers]:
        """A Graph client for one run: its own connections, its retries drawn on ``budget``, this process's tokens.

        Per run, not kept: runs are hours apart (Graph has closed idle connections long before), and a
        run's retry budget must be its own even when two runs share the process.
        """
        s = self.settings
        retry = transport.budgeted_retry(s.retry_backoff_base_s, s.graph_retries_per_page, budget)
        sent = transport.RequestSignal()
        with transport.make_session(retry, announce=sent) as session:
            yield GraphUsers(session, s.graph_endpoint, self.tokens, s.http_timeout_s, sent=sent)

    def container(self) -> ContainerClient:
        """The export container (EXPORT_CONTAINER): published files and manifests, never overwritten."""
        return self.app.container(self.settings.container)

    def state_container(self) -> ContainerClient:
        """Where the mutable records live (EXPORT_STATE_CONTAINER, by default the export container)."""
        return self.app.container(self.settings.state_container)

    def _sign_in(self, credential: Credential) -> GraphTokenProvider:
        s = self.settings
        return GraphTokenProvider(authority=s.authority, client_id=s.client_id, scope=s.graph_scope,
                                  credential=credential,
                                  timeout_s=s.http_timeout_s, backoff_base_s=s.retry_backoff_base_s)


@functools.lru_cache(maxsize=4)
def app_clients(settings: Settings) -> AppClients:
    """One set of shared clients per deployment (settings but the tenant), for the life of the process."""
    return AppClients(settings)


def warm_clients(settings: Settings) -> WarmClients:
    """``settings``' tenant's clients, on its deployment's shared ones (:func:`app_clients`)."""
    return app_clients(dataclasses.replace(settings, tenant_id="")).for_tenant(settings)
