"""What a warm Functions instance keeps between invocations: credential, connection pools, tokens.

Building these is the slow part of a cold start (and MSAL's token cache only helps if it lives on),
so one set per distinct :class:`Settings` lives as long as the process.
"""

from __future__ import annotations

import functools

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import ContainerClient

from . import credentials, storage, transport
from .graph import GraphUsers
from .settings import CredentialKind, Settings
from .token import Credential, GraphTokenProvider, GraphTokens


class WarmClients:
    """What is worth keeping between invocations on a warm instance.

    The Azure credential (and its token cache), the Graph connection pool, the export container and
    the Graph token source, which holds the app's credential (read from Key Vault, or the federated
    assertion) and MSAL's token cache.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A user-assigned identity must be named; without one, the system-assigned identity (or az login).
        self.azure_credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        self.retry_budget = transport.RetryBudget(settings.graph_retries_per_run)
        retry = transport.budgeted_retry(settings.retry_backoff_base_s, settings.graph_retries_per_page,
                                         self.retry_budget)
        sent = transport.RequestSignal()
        self.http = transport.make_session(retry, announce=sent)
        self.tokens = GraphTokens(read_secret=self._read_credential, sign_in=self._sign_in,
                                  read_older=self._read_older_certificates)
        self.graph = GraphUsers(self.http, settings.graph_endpoint, self.tokens, settings.http_timeout_s, sent=sent)
        self._containers: dict[str, ContainerClient] = {}

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

    def _sign_in(self, secret: Credential) -> GraphTokenProvider:
        s = self.settings
        return GraphTokenProvider(authority=s.authority, client_id=s.client_id, scope=s.graph_scope, secret=secret,
                                  timeout_s=s.http_timeout_s, backoff_base_s=s.retry_backoff_base_s)


@functools.lru_cache(maxsize=4)
def warm_clients(settings: Settings) -> WarmClients:
    """One set of clients per distinct settings, for the life of the process."""
    return WarmClients(settings)
