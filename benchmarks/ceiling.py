"""The ceiling of a Python-level loop on this machine: epoll, recv, one fixed send.

No parsing, no WSGI: every readable socket gets the same canned response. Whatever
this reaches under the runner's wrk load is as fast as any server whose request
loop runs in Python can go here. It serves for ``--seconds`` and exits by itself.

    taskset -c 0 python benchmarks/ceiling.py --port 8117 --seconds 20 &
    taskset -c 1 wrk -t1 -c50 -d5s http://127.0.0.1:8117/
"""

from __future__ import annotations

import argparse
import select
import socket
import time

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
            b"Date: Wed, 25 Nov 2026 04:48:57 GMT\r\nServer: ceiling\r\n\r\nHello, world!")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8117)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    listener.setblocking(False)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for fd, _ in epoll.poll(0.5):
            conn = conns.get(fd)
            if conn is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                conns[sock.fileno()] = sock
                epoll.register(sock.fileno(), select.EPOLLIN)
                continue
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                del conns[fd]
                conn.close()
                continue
            conn.send(RESPONSE)


if __name__ == "__main__":
    main()
