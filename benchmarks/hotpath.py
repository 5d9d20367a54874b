"""Where the microseconds of one small keep-alive request go, step by step.

Times each step of the per-request path in-process (no load generator):
parse, environ, response head, scoreboard marks, and the whole dispatch of
a hello request over a socketpair, against the bare cost of the same
send/recv pair. Run pinned to one core:

    taskset -c 0 python benchmarks/hotpath.py

Time on this machine is noisy; instructions are not. ``--instructions`` runs
the connection turn under valgrind (callgrind) 1 and 20,001 times and prints
the difference per turn, so the interpreter's start-up cancels out:

    python benchmarks/hotpath.py --instructions
"""

from __future__ import annotations

import argparse
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from forkwsgi import scoreboard  # noqa: E402
from forkwsgi.connection import HEAD, Connection, Connections  # noqa: E402
from forkwsgi.dispatch import Dispatcher  # noqa: E402
from forkwsgi.environ import (  # noqa: E402
    TrustedPeers,  # noqa: E402
    base_environ,
    build_environ,
    connection_environ,
)
from forkwsgi.http.parser import parse_head  # noqa: E402
from forkwsgi.protocols.http import HTTP  # noqa: E402
from forkwsgi.response import Response, date_header  # noqa: E402
from forkwsgi.settings import make_config  # noqa: E402

REQUEST = (b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\nConnection: keep-alive\r\n\r\n")
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]
N = 100_000


def hello(environ, start_response):
    start_response("200 OK", HEADERS)
    return [b"Hello, world!"]


class _Worker:
    alive = True
    requests_left = 0
    pid = 0
    slot = None


def per_call(func, number: int = N) -> float:
    return min(timeit.repeat(func, number=number, repeat=5)) / number * 1e6


def instructions_per_turn() -> float:
    """Instructions of one connection turn, counted by callgrind."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")

    def counted(turns: int) -> int:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--turns", str(turns)], capture_output=True, text=True, check=True)
        return int(re.search(r"Collected : (\d+)", result.stderr).group(1))

    return (counted(20_001) - counted(1)) / 20_000


def main(turns: int | None = None) -> None:
    cfg = make_config({}, app="hello")
    slot = scoreboard.SlotWriter(scoreboard.Scoreboard(4), 0)
    dispatcher = Dispatcher(hello, cfg, slot, _Worker())
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    conn = Connection(server, connection_environ(base_environ("127.0.0.1", "8000", True),
                                                 ("127.0.0.1", 5555)),
                      frozenset(), "127.0.0.1:5555", 0, HTTP, HEAD, 0.0)
    epoll = select.epoll()
    worker = _Worker()
    worker.slot = slot
    pool = Connections(worker, dispatcher, epoll, cfg, [], TrustedPeers([]), frozenset())
    pool.conns[conn.fd] = conn
    head, consumed = parse_head(REQUEST, dispatcher.limits)
    request = scoreboard.describe(head.method, head.target, conn.client)

    def response_head():
        response = Response(server, 30.0, True, False, True, b"Server: forkwsgi\r\n")
        response.start_response("200 OK", HEADERS)
        return response._compile_head(13)

    served = [0]

    def count_and_drain():
        served[0] += 1
        if served[0] % 64 == 0:  # keep the socket buffer from filling
            try:
                while client.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

    def dispatch():
        dispatcher.serve(conn, head, b"")
        count_and_drain()

    def connection_turn():
        # What the loop does for one readable keep-alive connection: recv, parse, the
        # state machine, dispatch, send. The client's request is written first.
        client.send(REQUEST)
        pool.readable(conn)
        count_and_drain()

    def bare_send():
        server.send(b"x" * 150)
        count_and_drain()

    if turns is not None:
        for _ in range(turns):
            connection_turn()
        return

    rows = [
        ("parse_head", per_call(lambda: parse_head(REQUEST, dispatcher.limits))),
        ("build_environ", per_call(lambda: build_environ(head, conn.environ, frozenset()))),
        ("response head", per_call(response_head)),
        ("scoreboard busy+done", per_call(lambda: (slot.busy(1.0, request),
                                                   slot.done(2.0, 1.0, "200 OK", 0, 13)))),
        ("Date header", per_call(date_header)),
        ("time.monotonic", per_call(time.monotonic)),
        ("send of 150 bytes", per_call(bare_send)),
        ("dispatch (environ+app+response+send)", per_call(dispatch)),
        ("client send + connection turn (recv+parse+dispatch)", per_call(connection_turn)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  µs/request (best of 5 x {N})")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:6.2f}")
    total = rows[0][1] + rows[-2][1]
    print(f"{'parse + dispatch':<{width}}  {total:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, help="only run N connection turns (for a profiler)")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per connection turn, under callgrind")
    args = parser.parse_args()
    if args.instructions:
        print(f"connection turn: {instructions_per_turn():,.0f} instructions")
    else:
        main(args.turns)
