"""A scriptable fault plan: make a service fail on chosen requests, the way the real one can.

A rule names a service and *which* requests it hits (the n-th request to that service; a Graph page
by number, 1 for the first as clients count; every Graph request from page k on; only Entra or Graph
requests for one ``tenant`` id, when the sandbox hosts several; or simply every request), *what* happens and *how often* it fires (``count``; default: every time). Exactly one action
per rule:

- ``status``: answer with that HTTP status, the service's own error body (or ``body``) and any
  ``headers``, e.g. 503 with ``Retry-After``, or 302/307 with a ``Location`` elsewhere;
- ``drop``: close the connection without an answer; ``delay_s``: wait, then answer normally;
- ``stall_s`` / ``cut``: answer normally, but pause after the first ``PARTIAL_BYTES`` of the body,
  or close the connection there, the way a slow or broken network does;
- Graph pages only, answering a normal page (status 200, its nextLink kept) with something wrong in
  it: ``value`` replaces the page's ``value`` list with the one given (numbers, strings, nulls,
  lists, objects without an id: whatever JSON); ``repeat_user=N`` puts tenant user N (0-based, as
  ``$select`` shapes it) first on the page again, so an id of an earlier page comes twice;
  ``pad_bytes=N`` adds N bytes of JSON whitespace before the closing brace (still valid JSON),
  streamed from a fixed buffer so a page of gigabytes costs the sandbox no memory; ``chunked=True``
  (alone, or with one of these) sends the page with ``Transfer-Encoding: chunked`` and no
  Content-Length, the way a server that streams its answer does; ``skip_next=True`` moves the page's
  ``@odata.nextLink`` on by one page (a users listing's or a delta round's), so the client silently
  receives one page fewer, the way a Graph or proxy fault that loses a page would.

Rules are checked in the order they were added; the first one that matches and has firings left is
applied. A rule's ``fired`` counts its firings and ``sent_bytes`` how much of a page-action body got
out before it ended or the client hung up. Rules come from Python (:meth:`FaultPlan.add`) or from JSON
(a file or the ``SANDBOX_FAULTS`` environment variable) so the CLI sandbox can run the same scenarios
as the tests.

JSON form: a list of objects with the same keys as :meth:`FaultPlan.add`, e.g.
``[{"service": "graph", "page": 2, "status": 503, "headers": {"Retry-After": "2"}, "count": 1}]`` or
``[{"service": "graph", "page": 1, "value": [1, "x", null, [], {"displayName": "no id"}]}]``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SERVICES = ("graph", "entra", "keyvault", "identity")
ACTIONS = ("status", "drop", "delay", "stall", "cut", "value", "repeat_user", "pad", "chunked", "skip_next")
#: Actions that answer a normal Graph page differently: with something wrong in it, or chunked.
PAGE_ACTIONS = ("value", "repeat_user", "pad", "chunked", "skip_next")
#: Where ``stall_s`` pauses and ``cut`` closes a response body.
PARTIAL_BYTES = 16 * 1024
ENV_VAR = "SANDBOX_FAULTS"


@dataclass
class FaultRule:
    """One rule. Exactly one action: ``status`` (respond with it), ``drop``, ``delay_s``, ``stall_s``, ``cut``,
    or (Graph pages) ``value``, ``repeat_user``, ``pad_bytes``, ``skip_next`` or ``chunked``; the four before
    ``chunked`` may be chunked too."""

    service: str
    status: int | None = None
    drop: bool = False
    delay_s: float | None = None
    stall_s: float | None = None     # answer normally, pausing partway through the body
    cut: bool = False                # answer normally, but close the connection partway through the body
    value: list[Any] | None = None   # Graph: a normal page, with this as its "value"
    repeat_user: int | None = None   # Graph: a normal page, with tenant user N (0-based) first again
    pad_bytes: int | None = None     # Graph: a normal page, with N bytes of whitespace before its last "}"
    chunked: bool = False            # Graph: Transfer-Encoding chunked, no Content-Length (alone or with the above)
    skip_next: bool = False          # Graph: a normal page whose nextLink skips the page after it
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None                 # None: the service's own error body for ``status``
    request: int | None = None       # 1-based request number for that service
    page: int | None = None          # Graph: page number, 1 for the first
    from_page: int | None = None     # Graph: every request for page >= from_page
    path_contains: str | None = None # e.g. "/token" to leave Entra's discovery document alone
    tenant: str | None = None        # Entra / Graph: only requests for this tenant id (path / token tid)
    count: int | None = None         # how many times it fires; None (default) = forever
    fired: int = 0
    sent_bytes: int = 0              # page actions: body bytes written (before the client hung up)

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"fault service must be one of {SERVICES}, not {self.service!r}")
        actions = [self.status is not None, self.drop, self.delay_s is not None, self.stall_s is not None, self.cut,
                   self.value is not None, self.repeat_user is not None, self.pad_bytes is not None, self.skip_next]
        if sum(actions) + (self.chunked and not any(actions[5:])) != 1:
            raise ValueError("a fault rule needs exactly one action: status=N, drop=True, delay_s=S, stall_s=S, "
                             "cut=True, value=[...], repeat_user=N, pad_bytes=N, skip_next=True or chunked=True "
                             "(which also goes with the four before it)")
        if self.action in PAGE_ACTIONS and self.service != "graph":
            raise ValueError("value / repeat_user / pad_bytes / skip_next / chunked only apply to the 'graph' service")
        if self.value is not None and not isinstance(self.value, list):
            raise ValueError(f"value must be a list (the page's users), not {type(self.value).__name__}")
        if self.repeat_user is not None and (type(self.repeat_user) is not int or self.repeat_user < 0):
            raise ValueError(f"repeat_user must be a user index >= 0, not {self.repeat_user!r}")
        if self.pad_bytes is not None and (type(self.pad_bytes) is not int or self.pad_bytes < 1):
            raise ValueError(f"pad_bytes must be a number of bytes >= 1, not {self.pad_bytes!r}")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP status code, not {self.status}")
        if (self.page is not None or self.from_page is not None) and self.service != "graph":
            raise ValueError("page / from_page only apply to the 'graph' service")
        if self.tenant is not None and self.service not in ("graph", "entra"):
            raise ValueError("tenant only applies to the 'graph' and 'entra' services")
        if self.tenant is not None:
            self.tenant = self.tenant.lower()
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1, or None for 'forever'")

    @property
    def action(self) -> str:
        chosen = {"status": self.status is not None, "drop": self.drop, "delay": self.delay_s is not None,
                  "stall": self.stall_s is not None, "cut": self.cut, "value": self.value is not None,
                  "repeat_user": self.repeat_user is not None, "pad": self.pad_bytes is not None,
                  "skip_next": self.skip_next, "chunked": self.chunked}
        return next(name for name, on in chosen.items() if on)

    def describe(self) -> str:
        """Short text for the request log, e.g. ``graph page=1 -> 503``."""
        where = [f"{k}={v}" for k, v in (("request", self.request), ("page", self.page),
                                         ("from_page", self.from_page), ("path", self.path_contains),
                                         ("tenant", self.tenant))
                 if v is not None]
        what = {"status": f"{self.status}", "drop": "drop", "delay": f"delay {self.delay_s}s",
                "stall": f"stall {self.stall_s}s", "cut": "cut",
                "value": f"value of {len(self.value or ())} items", "repeat_user": f"repeat user {self.repeat_user}",
                "pad": f"pad {self.pad_bytes} bytes", "skip_next": "skip the next page", "chunked": "chunked"}[self.action]
        also = ["chunked"] if self.chunked and self.action != "chunked" else []
        return " ".join([self.service, *where, "->", what, *also])

    def matches(self, service: str, number: int, path: str, page: int | None, tenant: str | None = None) -> bool:
        if service != self.service or (self.count is not None and self.fired >= self.count):
            return False
        if self.tenant is not None and (tenant or "").lower() != self.tenant:
            return False
        if self.request is not None and self.request != number:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        if self.page is not None and page != self.page:
            return False
        if self.from_page is not None and (page is None or page < self.from_page):
            return False
        return True


class FaultPlan:
    """The live, thread-safe list of rules shared by all sandbox services."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, service: str, *, status: int | None = None, drop: bool = False,
            delay_s: float | None = None, stall_s: float | None = None, cut: bool = False,
            value: list[Any] | None = None, repeat_user: int | None = None, pad_bytes: int | None = None,
            chunked: bool = False, skip_next: bool = False, headers: Mapping[str, str] | None = None, body: Any = None,
            request: int | None = None, page: int | None = None, from_page: int | None = None,
            path_contains: str | None = None, tenant: str | None = None, count: int | None = None) -> FaultRule:
        """Add a rule and return it (its ``fired`` attribute counts firings).

        ``count=None`` (the default) fires on every matching request; ``count=1`` only once, e.g. one
        503 on page 1 that a retry gets past.
        """
        rule = FaultRule(service=service, status=status, drop=drop, delay_s=delay_s, stall_s=stall_s, cut=cut,
                         value=value, repeat_user=repeat_user, pad_bytes=pad_bytes, chunked=chunked, skip_next=skip_next,
                         headers={str(k): str(v) for k, v in (headers or {}).items()}, body=body,
                         request=request, page=page, from_page=from_page,
                         path_contains=path_contains, tenant=tenant, count=count)
        with self._lock:
            self._rules.append(rule)
        return rule

    def load(self, rules: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Add rules given as dicts (the JSON form); unknown keys are an error, not ignored."""
        added = []
        for spec in rules:
            spec = dict(spec)
            if "service" not in spec:
                raise ValueError(f"fault rule without 'service': {spec}")
            try:
                added.append(self.add(spec.pop("service"), **spec))
            except TypeError as e:
                raise ValueError(f"bad fault rule {spec}: {e}") from None
        return added

    def load_json(self, text: str) -> list[FaultRule]:
        data = json.loads(text)
        return self.load([data] if isinstance(data, dict) else data)

    def load_file(self, path: str | Path) -> list[FaultRule]:
        return self.load_json(Path(path).read_text(encoding="utf-8"))

    def load_env(self, environ: Mapping[str, str] | None = None) -> list[FaultRule]:
        """Load ``SANDBOX_FAULTS``: inline JSON, or the path of a JSON file."""
        value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
        if not value:
            return []
        return self.load_json(value) if value[0] in "[{" else self.load_file(value)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, service: str, number: int, path: str, page: int | None = None,
             tenant: str | None = None) -> FaultRule | None:
        """Find the first matching rule, count the firing, and return it (None: serve normally)."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(service, number, path, page, tenant):
                    rule.fired += 1
                    return rule
        return None
