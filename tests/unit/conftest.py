"""The unit layer opens no network socket: every far end is a pure function, a canned adapter or an in-memory fake.

An autouse fixture refuses ``connect``, ``connect_ex`` and ``bind`` on AF_INET/AF_INET6 sockets and
``socket.create_connection``, raising :class:`SocketForbidden`; an attempt some code caught and swallowed
still fails the test at teardown. AF_UNIX sockets stay allowed (asyncio and selectors use a socketpair).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

MESSAGE = "tests/unit must not open sockets: move this test to tests/storage or tests/sandbox"
NETWORK = (socket.AF_INET, socket.AF_INET6)


class SocketForbidden(RuntimeError):
    """Not an OSError: no client library may take it for a refused connection and carry on."""


@pytest.fixture(autouse=True)
def no_network_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse network sockets for the test; the attempts made (a test that provokes one clears the list)."""
    attempts: list[str] = []

    def refuse(what: str) -> None:
        attempts.append(what)
        raise SocketForbidden(f"{MESSAGE} ({what})")

    def guarded(name: str) -> Any:
        original = getattr(socket.socket, name)

        def method(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self.family in NETWORK:
                refuse(f"socket.{name}{args!r}")
            return original(self, *args, **kwargs)
        return method

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, guarded(name))

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        refuse(f"socket.create_connection({address!r})")
        raise AssertionError("unreachable")
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    if attempts:
        pytest.fail(f"{MESSAGE}; it tried: {', '.join(attempts)}", pytrace=False)
