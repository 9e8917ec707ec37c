"""The unit layer's guard (tests/unit/conftest.py): a network socket fails the test, saying where it belongs."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.unit.conftest import MESSAGE, SocketForbidden


def test_a_connection_from_a_unit_test_is_refused_naming_the_layers_it_belongs_to(no_network_sockets):
    with pytest.raises(SocketForbidden, match="tests/unit must not open sockets: move this test to tests/storage "
                                              "or tests/sandbox"):
        socket.create_connection(("127.0.0.1", 9))
    assert no_network_sockets == ["socket.create_connection(('127.0.0.1', 9))"]
    no_network_sockets.clear()  # provoked on purpose: the guard's teardown would fail this test


@pytest.mark.parametrize("family, address", [(socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET6, ("::1", 0))],
                         ids=["ipv4", "ipv6"])
def test_binding_or_connecting_a_network_socket_is_refused(no_network_sockets, family, address):
    try:
        s = socket.socket(family)
    except OSError:  # a kernel without IPv6: creating the socket is refused before the guard is asked
        pytest.skip(f"this machine cannot create an {family.name} socket")
    with s:
        for call in (s.bind, s.connect, s.connect_ex):
            with pytest.raises(SocketForbidden, match=MESSAGE):
                call(address)
    assert len(no_network_sockets) == 3
    no_network_sockets.clear()


def test_a_socketpair_stays_allowed_so_asyncio_runs():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42
    assert asyncio.run(answer()) == 42


def test_refused_is_not_an_oserror_a_client_could_take_for_a_refused_connection():
    assert not issubclass(SocketForbidden, OSError)
