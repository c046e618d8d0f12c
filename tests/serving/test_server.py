"""Binding: the listening socket the server runs on."""

from __future__ import annotations

import asyncio
import socket

import pytest

from padless.serving.server import bind


def test_connections_to_the_bound_socket_send_without_delay() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket made with proto=TCP;
    without it each response waits ~40 ms for a delayed ACK."""
    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        sock = bind("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 30)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0


@pytest.mark.parametrize(("host", "port", "message"), [
    ("127.0.0.1", 70000, "outside 0-65535"),
    ("192.0.2.1", 0, "cannot listen on 192.0.2.1:0"),  # not an address of this machine
])
def test_a_bad_address_is_a_value_error(host: str, port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bind(host, port)
