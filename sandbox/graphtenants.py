"""One Graph listener for every tenant the sandbox hosts: each request is served by its token's tenant.

Microsoft Graph has one host for all tenants (``graph.microsoft.com``): which directory a request reads
is not in its URL but in its access token, whose ``tid`` claim names the tenant Entra issued it in
("Microsoft identity platform access tokens", claims reference: ``tid`` "represents the tenant that the
user is signing in to"). So this front verifies nothing itself: it reads the ``tid`` of a token the
sandbox signed and hands the request to that tenant's :class:`sandbox.graph.Graph`, which verifies the
token in full against its *own* tenant id, as before. A token of a tenant the sandbox does not host goes
to the home tenant's Graph and is refused there (401 ``InvalidAuthenticationToken``, "Invalid issuer");
a nextLink of one tenant followed with another tenant's token reaches the other tenant's Graph, whose
skiptoken key differs, and is refused as an invalid page token (400): no request ever reads the users
of a tenant other than its token's.
"""

from __future__ import annotations

import threading

from .faults import FaultRule
from .graph import Graph
from .server import Request, Response
from .tokens import TokenError, TokenService, bearer


class GraphTenants:
    """The ``graph`` service: routes each request to the :class:`Graph` of its token's tenant."""

    name = "graph"

    def __init__(self, home: Graph, tokens: TokenService) -> None:
        self.home = home
        self.tokens = tokens
        self._lock = threading.Lock()
        self._graphs: dict[str, Graph] = {home.tenant_id.lower(): home}
        self._base_url = ""

    @property
    def base_url(self) -> str:
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        """Every tenant's Graph answers on the same listener, so their links all start with its URL."""
        with self._lock:
            self._base_url = value
            for graph in self._graphs.values():
                graph.base_url = value

    def add(self, graph: Graph) -> None:
        """Host another tenant's Graph (from now on, its tokens' requests are served by it)."""
        with self._lock:
            if graph.tenant_id.lower() in self._graphs:
                raise ValueError(f"tenant {graph.tenant_id} already has a Graph")
            graph.base_url = self._base_url
            self._graphs[graph.tenant_id.lower()] = graph

    def of(self, tenant_id: str) -> Graph:
        """The Graph of a hosted tenant; KeyError for any other."""
        with self._lock:
            return self._graphs[tenant_id.lower()]

    # --- the service protocol -------------------------------------------------------------------

    def tenant_of(self, request: Request) -> str | None:
        """The ``tid`` of the request's bearer token if this sandbox signed it (lower case), else None.

        Only the signature is checked: lifetime, audience and issuer are the tenant's Graph's to judge.
        """
        try:
            claims = self.tokens.signed_claims(bearer(request.header("Authorization")))
        except TokenError:
            return None
        tid = claims.get("tid")
        return tid.lower() if isinstance(tid, str) else None

    def handle(self, request: Request) -> Response:
        return self._graph_for(request).handle(request)

    def page_of(self, request: Request) -> int | None:
        return self._graph_for(request).page_of(request)

    def fault_response(self, request: Request, status: int) -> Response:
        return self._graph_for(request).fault_response(request, status)

    def fault_page(self, request: Request, response: Response, rule: FaultRule) -> Response:
        return self._graph_for(request).fault_page(request, response, rule)

    def _graph_for(self, request: Request) -> Graph:
        tenant = self.tenant_of(request)
        with self._lock:
            return self._graphs.get(tenant, self.home) if tenant is not None else self.home
