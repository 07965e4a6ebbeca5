"""The suite's own NATS server (tests/support/nats_server.py): two test workers can pick the
same free port between :func:`free_port` and the server's bind; a first start that loses that
race moves to other ports instead of failing the test (seen once in CI: "bind: address already
in use")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.nats_server import NatsServer


def test_a_first_start_whose_port_was_taken_moves_to_free_ports(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = NatsServer(store_dir=tmp_path / "nats", port=port).start()
        try:
            assert server.port != port
            with socket.create_connection(("127.0.0.1", server.port), timeout=2):
                pass
        finally:
            server.stop()


def test_a_restart_keeps_its_port_and_says_why_it_cannot(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats").start()
    port = server.port
    server.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(RuntimeError, match="address already in use"):
            server.start()  # clients reconnect to the same URL: no other port
    assert server.port == port
