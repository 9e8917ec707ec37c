"""Retry policies for the Azure SDK clients (Blob Storage, Key Vault) that tell a setting to fix from a blip.

Retrying only helps a service that is there. A TLS certificate this machine does not trust never
heals, so it is never retried; a connection that is refused or a name that does not resolve means
nothing is listening at the configured address, so it is not retried either until that endpoint has
answered once (after that, it is a blip of a service that was there: it is retried as usual). A slow
or busy service keeps every retry it is allowed. Whenever one request has been retrying for more than
:data:`PROGRESS_AFTER_S`, each further wait is announced with a warning on the ``graph_export`` log, so
a run that waits is never silent.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.storage.blob import ExponentialRetry

from .errors import certificate_failure, origin_of, refused_or_unresolved

log = logging.getLogger(__name__)

#: A request that has been retrying (waits included) for longer than this announces each further wait.
PROGRESS_AFTER_S = 3.0


def not_worth_retrying(error: BaseException | None, answered: bool) -> bool:
    """Whether a failed connection cannot heal by retrying: see the module's docstring."""
    if error is None:
        return False
    if certificate_failure(error) is not None:
        return True
    return not answered and refused_or_unresolved(error) is not None


def announce_wait(service: str, origin: str, why: str, retry: int, waited_s: float, wait_s: float) -> None:
    """Log a progress warning for retry ``retry`` once one request's waits add up to more than PROGRESS_AFTER_S."""
    if waited_s + wait_s > PROGRESS_AFTER_S:
        log.warning("%s at %s %s; retry %d in %s s (%s s spent waiting so far)", service, origin, why, retry,
                    _seconds(wait_s), _seconds(waited_s))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def _announce(settings: dict[str, Any], service: str, wait_s: float) -> None:
    """:func:`announce_wait` for an Azure SDK retry policy, keeping the count in its per-request settings."""
    waited = float(settings.get("graph_export_waited_s", 0.0))
    retry = int(settings.get("graph_export_retries", 0)) + 1
    settings["graph_export_waited_s"], settings["graph_export_retries"] = waited + max(wait_s, 0.0), retry
    announce_wait(service, settings.get("graph_export_origin", "its endpoint"),
                  settings.get("graph_export_why", "failed"), retry, waited, wait_s)


def describe_failure(status: int | None, error: BaseException | None) -> str:
    """A few words on what a retried attempt met: a status, or the kind of connection failure."""
    if status is not None:
        return f"answered HTTP {status}"
    why = refused_or_unresolved(error)
    if why is not None:
        return why
    return f"the connection failed ({type(error).__name__})" if error is not None else "no answer"


class StorageRetry(ExponentialRetry):
    """The storage SDK's exponential retry, failing at once on what retrying cannot fix, and saying when it waits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Whether the storage endpoint has answered anything (any status) to this client yet.
        self.answered = False

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        response: PipelineResponse[Any, Any] = super().send(request)  # type: ignore[no-untyped-call]
        self.answered = True
        return response

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None,
                  error: Any = None) -> bool:
        if response is not None:
            self.answered = True
        if not_worth_retrying(error, self.answered):
            return False
        more = bool(super().increment(settings, request, response=response, error=error))
        if more:
            settings["graph_export_origin"] = origin_of(str(request.url))
            settings["graph_export_why"] = describe_failure(getattr(response, "status_code", None), error)
        return more

    def sleep(self, settings: dict[str, Any], transport: Any) -> None:
        backoff = self.get_backoff_time(settings)
        _announce(settings, "Export storage", max(backoff, 0.0))
        if backoff and backoff > 0:
            transport.sleep(backoff)


class VaultRetry(RetryPolicy[Any, Any]):
    """azure-core's retry for Key Vault, failing at once on what retrying cannot fix, and saying when it waits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answered = False

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        response = super().send(request)
        self.answered = True
        return response

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        if isinstance(response, PipelineResponse):
            self.answered = True
        if not_worth_retrying(error, self.answered):
            return False
        more = bool(super().increment(settings, response=response, error=error))
        if more and response is not None:
            settings["graph_export_origin"] = origin_of(str(response.http_request.url))
            status = response.http_response.status_code if isinstance(response, PipelineResponse) else None
            settings["graph_export_why"] = describe_failure(status, error)
        return more

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        wait = (self.get_retry_after(response) if response else None) or self.get_backoff_time(settings)
        _announce(settings, "Key Vault", wait)
        super().sleep(settings, transport, response=response)
