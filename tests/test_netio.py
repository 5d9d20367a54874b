"""The worker's socket helpers, on real sockets."""

from __future__ import annotations

import socket

import pytest

from forkwsgi.netio import accepter


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_the_accepter_gives_what_socket_accept_gives(family, tmp_path):
    listening = socket.socket(family, socket.SOCK_STREAM)
    address = ("127.0.0.1", 0) if family == socket.AF_INET else str(tmp_path / "s")
    with listening:
        listening.bind(address)
        listening.listen()
        listening.setblocking(False)
        accept = accepter(listening)
        with pytest.raises(BlockingIOError):
            accept()  # nothing queued: the caller's cue to stop
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.connect(listening.getsockname())
            sock, peer = accept()
            with sock:
                assert (sock.family, sock.type) == (family, socket.SOCK_STREAM)
                if family == socket.AF_INET:
                    assert peer == client.getsockname()
                client.sendall(b"ping")
                assert sock.recv(4) == b"ping"
