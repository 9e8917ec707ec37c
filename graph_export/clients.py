"""What a warm Functions instance keeps between invocations: credentials, storage clients, tokens.

Building these is the slow part of a cold start (and MSAL's token cache only helps if it lives on),
so one set per distinct :class:`Settings` lives as long as the process. What belongs to one run (its
Graph connections and retry budget) is made per run: :meth:`WarmClients.graph_users`.
"""

from __future__ import annotations

import contextlib
import functools
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


class WarmClients:
    """What is worth keeping between invocations on a warm instance.

    The Azure credential (and its token cache), the export and state containers, and the Graph token
    source, which holds the app's credential (read from Key Vault, or the federated assertion) and
    MSAL's token cache.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A user-assigned identity must be named; without one, the system-assigned identity (or az login).
        self.azure_credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        self.tokens = GraphTokens(read_credential=self._read_credential, sign_in=self._sign_in,
                                  read_older=self._read_older_certificates)
        self._containers: dict[str, ContainerClient] = {}

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
        return self._open(self.settings.container)

    def state_container(self) -> ContainerClient:
        """Where the mutable records live (EXPORT_STATE_CONTAINER, by default the export container)."""
        return self._open(self.settings.state_container)

    def _open(self, name: str) -> ContainerClient:
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

    def _read_older_certificates(self, newest: Credential) -> list[Credential]:
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

    def _sign_in(self, credential: Credential) -> GraphTokenProvider:
        s = self.settings
        return GraphTokenProvider(authority=s.authority, client_id=s.client_id, scope=s.graph_scope,
                                  credential=credential,
                                  timeout_s=s.http_timeout_s, backoff_base_s=s.retry_backoff_base_s)


@functools.lru_cache(maxsize=4)
def warm_clients(settings: Settings) -> WarmClients:
    """One set of clients per distinct settings, for the life of the process."""
    return WarmClients(settings)
