"""What a warm Functions instance keeps between invocations: credential, connection pools, tokens.

Building these is the slow part of a cold start (and MSAL's token cache only helps if it lives on),
so one set per distinct :class:`Settings` lives as long as the process.
"""

from __future__ import annotations

import functools

from azure.identity import DefaultAzureCredential
from azure.storage.blob import ContainerClient

from . import credentials, storage, transport
from .settings import Settings
from .token import GraphTokenProvider, GraphTokens


class WarmClients:
    """What is worth keeping between invocations on a warm instance.

    The Azure credential (and its token cache), the Graph connection pool, the export container and
    the Graph token source, which holds the secret read from Key Vault and MSAL's token cache.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.azure_credential = DefaultAzureCredential()
        self.retry_budget = transport.RetryBudget(settings.graph_retries_per_run)
        self.http = transport.make_session(settings.retry_backoff_base_s, settings.graph_retries_per_page,
                                           self.retry_budget)
        self.tokens = GraphTokens(read_secret=self._read_secret, sign_in=self._sign_in)
        self._container: ContainerClient | None = None

    def container(self) -> ContainerClient:
        if self._container is None:
            s = self.settings
            self._container = storage.open_container(s.storage, s.container, self.azure_credential,
                                                  s.retry_backoff_base_s)
        return self._container

    def _read_secret(self) -> credentials.Secret:
        """The client secret's latest version, read from Key Vault with the app's own identity."""
        s = self.settings
        vault = credentials.make_secret_client(
            s.key_vault_url, self.azure_credential, authority_host=s.authority_host,
            retry_total=4, retry_backoff_factor=s.retry_backoff_base_s, connection_timeout=10, read_timeout=30,
        )
        return credentials.read_client_secret(vault, s.client_secret_name)

    def _sign_in(self, secret: credentials.Secret) -> GraphTokenProvider:
        s = self.settings
        return GraphTokenProvider(authority=s.authority, client_id=s.client_id, scope=s.graph_scope, secret=secret,
                                  timeout_s=s.http_timeout_s, backoff_base_s=s.retry_backoff_base_s)


@functools.lru_cache(maxsize=4)
def warm_clients(settings: Settings) -> WarmClients:
    """One set of clients per distinct settings, for the life of the process."""
    return WarmClients(settings)
