"""``clients.Clients`` from memory: containers of a MemoryAccount, Graph from a MemoryGraph, real tokens and retries.

What ``run_export(..., clients=MemoryClients(...))`` runs on in the unit layer. Only the far ends are
in memory (the storage service, and Graph and Entra ID behind the HTTP transport); the Graph client of
each run is built as ``clients.WarmClients.graph_users`` builds it: the export's retry policy
(``transport.budgeted_retry``) drawing on that run's budget, ``transport.make_session`` with its
announcing connections, and ``graph.GraphUsers`` with a real ``token.GraphTokens``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, cast

from azure.storage.blob import ContainerClient

from graph_export import transport
from graph_export.graph import GraphUsers
from graph_export.settings import Settings
from graph_export.token import GraphTokens
from tests.unit.memory_graph import MemoryDirectory, MemoryGraph, MemorySignIn
from tests.unit.memory_storage import MemoryAccount


class MemoryClients:
    """One process's clients for ``settings``: keep one across runs to share it as a warm instance does.

    ``immutable_exports`` puts EXPORT_CONTAINER under a WORM policy (use it with a separate
    EXPORT_STATE_CONTAINER). ``budgets`` collects each run's retry budget as it was handed over.
    """

    def __init__(self, settings: Settings, directory: MemoryDirectory, *, storage: MemoryAccount | None = None,
                 sign_in: MemorySignIn | None = None, max_page: int = 50, immutable_exports: bool = False) -> None:
        self.settings = settings
        self.storage = storage or MemoryAccount()
        self.sign_in = sign_in or MemorySignIn()
        self.graph = MemoryGraph(directory, self.sign_in, endpoint=settings.graph_endpoint, max_page=max_page)
        self.tokens = GraphTokens(self.sign_in.read_credential, self.sign_in.sign_in)  # type: ignore[arg-type]
        self.budgets: list[transport.RetryBudget] = []
        self.storage.container(settings.container, immutable=immutable_exports)
        self.storage.container(settings.state_container)

    def container(self) -> ContainerClient:
        return cast(ContainerClient, self.storage.container(self.settings.container, create=False))

    def state_container(self) -> ContainerClient:
        return cast(ContainerClient, self.storage.container(self.settings.state_container, create=False))

    @contextlib.contextmanager
    def graph_users(self, budget: transport.RetryBudget) -> Iterator[GraphUsers]:
        """As ``WarmClients.graph_users`` makes it, with no backoff between retries (Retry-After still counts)."""
        self.budgets.append(budget)
        s = self.settings
        retry = transport.budgeted_retry(0.0, s.graph_retries_per_page, budget)
        sent = transport.RequestSignal()
        with transport.make_session(retry, announce=sent) as session:
            self.graph.serve(session)
            yield GraphUsers(session, s.graph_endpoint, self.tokens, s.http_timeout_s, sent=sent)
