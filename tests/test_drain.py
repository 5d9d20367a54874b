"""A stop, as clients see it: what is in flight or queued is answered, newcomers are refused.

On TERM every process of the server lets go of the listening sockets at once (a busy
worker too, from its signal handler), after taking what is queued on them; so a new
connect is refused (ECONNREFUSED: a load balancer retries elsewhere) instead of being
queued and then reset. docs/signals.md tells the same story moment by moment.

The app here holds a request at a gate (a file the test creates), so "in flight",
"queued behind it" and "refused meanwhile" are states the test waits for, never
durations. The accept queue is read from /proc/net/tcp.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import kill_tree, wait_until

pytestmark = pytest.mark.process

GATE_ENV = "FORKWSGI_TEST_GATE"  # a directory: "in-*" files say who waits, "open" lets go
GATE_LIMIT = 60.0  # a forgotten gate must not hold a worker for ever


def gated(environ, start_response):
    """``/gate`` waits until the gate opens; any other path answers at once with itself."""
    path = environ.get("PATH_INFO", "")
    if path == "/gate":
        gate = Path(os.environ[GATE_ENV])
        (gate / f"in-{os.getpid()}-{time.monotonic_ns()}").touch()
        give_up = time.monotonic() + GATE_LIMIT
        while not (gate / "open").exists() and time.monotonic() < give_up:
            time.sleep(0.01)
    body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


# --- helpers -------------------------------------------------------------------------------------


def listen_queue(port: int) -> int | None:
    """Connections waiting in the accept queue of the socket listening on 127.0.0.1:PORT;
    None when no socket listens there (every process has closed its descriptor)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN; rx_queue is the backlog
            return int(fields[4].split(":")[1], 16)
    return None


class Gate:
    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.directory = directory

    @property
    def env(self) -> dict[str, str]:
        return {GATE_ENV: str(self.directory)}

    def waiting(self) -> int:
        return len(list(self.directory.glob("in-*")))

    def open(self) -> None:
        (self.directory / "open").touch()


def send(server, path: str) -> http.client.HTTPConnection:
    """A request sent; its answer is read later with ``answer``."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", path)
    return conn


def answer(conn: http.client.HTTPConnection) -> tuple[int, str | None, bytes]:
    """(status, its Connection header, body)."""
    response = conn.getresponse()
    return response.status, response.getheader("Connection"), response.read()


def hold_every_worker(server, gate: Gate, workers: int) -> list[http.client.HTTPConnection]:
    """One gated request per worker, sent one at a time so each goes to an idle worker."""
    held = []
    for count in range(1, workers + 1):
        held.append(send(server, "/gate"))
        wait_until(lambda n=count: gate.waiting() == n, what=f"{count} request(s) at the gate")
    return held


def refused(server) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, alive


# --- a graceful stop ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_term_answers_what_is_in_flight_and_queued_and_refuses_newcomers(serve, tmp_path,
                                                                         workers):
    gate = Gate(tmp_path / "gate")
    server = serve("tests.test_drain:gated", "--graceful-timeout", "60", workers=workers,
                   env=gate.env)
    processes = [server.process, *server.workers()]
    in_flight = hold_every_worker(server, gate, workers)
    # Every worker is in the app: these wait in the kernel's accept queue.
    queued = [send(server, f"/queued/{n}") for n in range(3)]
    wait_until(lambda: listen_queue(server.port) == 3, what="3 connections in the backlog")

    server.signal(signal.SIGTERM)
    # The workers are still in the app, yet the listening socket is gone: each let go of
    # it from its TERM handler, after taking the queue.
    wait_until(lambda: listen_queue(server.port) is None, what="the listening socket to close")
    assert refused(server)
    assert gate.waiting() == workers  # nothing was answered yet

    gate.open()
    for conn in in_flight:
        assert answer(conn) == (200, "close", b"/gate")
    for n, conn in enumerate(queued):
        assert answer(conn) == (200, "close", f"/queued/{n}".encode())
    assert server.wait_exit(30) == 0
    all_gone(processes)
    log = server.log()
    assert "Graceful stop" in log and "Quick stop" not in log
    assert "Traceback" not in log


def test_idle_keep_alive_connections_get_a_last_request_then_a_clean_close(serve, tmp_path):
    gate = Gate(tmp_path / "gate")
    server = serve("tests.test_drain:gated", "--graceful-timeout", "60", workers=1,
                   env=gate.env)
    processes = [server.process, *server.workers()]
    talks, silent = send(server, "/first"), send(server, "/first")
    assert answer(talks)[:2] == (200, None) and answer(silent)[:2] == (200, None)  # kept
    in_flight = hold_every_worker(server, gate, 1)

    server.signal(signal.SIGTERM)
    wait_until(lambda: listen_queue(server.port) is None, what="the listening socket to close")
    talks.request("GET", "/last")  # on its kept-alive connection, while the worker is busy
    gate.open()

    assert answer(in_flight[0]) == (200, "close", b"/gate")
    assert answer(talks) == (200, "close", b"/last")
    silent.sock.settimeout(30)
    assert silent.sock.recv(1) == b""  # a FIN, not a reset: ConnectionResetError otherwise
    assert server.wait_exit(30) == 0
    all_gone(processes)


def test_connections_in_the_handoff_queue_at_a_stop_are_answered(serve, tmp_path):
    """With every worker busy, an idle keep-alive connection of one of them moves to the
    handoff queue (no worker is free to ask for it: the arbiter does) and waits there for
    a free worker. At a stop no worker becomes free for good: each leaving worker takes
    what waits in that queue, or the connection's next request would be lost with the
    queue when the arbiter exits."""
    gate = Gate(tmp_path / "gate")
    server = serve("tests.test_drain:gated", "--graceful-timeout", "60", "--log-level",
                   "debug", workers=2, env=gate.env)
    kept = send(server, "/first")
    assert answer(kept)[:2] == (200, None)
    in_flight = hold_every_worker(server, gate, 2)
    server.wait_log("to the handoff queue")  # the custodian of kept's worker moved it
    kept.request("GET", "/last")  # its bytes wait with its descriptor in the queue

    server.signal(signal.SIGTERM)
    wait_until(lambda: listen_queue(server.port) is None, what="the listening socket to close")
    gate.open()
    for conn in in_flight:
        assert answer(conn) == (200, "close", b"/gate")
    assert answer(kept) == (200, "close", b"/last")
    assert server.wait_exit(30) == 0


# --- --shutdown-delay -----------------------------------------------------------------------------


def test_during_the_shutdown_delay_requests_are_served_and_a_second_term_stops(serve, tmp_path):
    server = serve("tests.apps:hello", "--shutdown-delay", "300", workers=1)
    processes = [server.process, *server.workers()]
    kept = send(server, "/")
    assert answer(kept)[:2] == (200, None)

    server.signal(signal.SIGTERM)
    server.wait_log("TERM: serving for 300 s more before stopping (--shutdown-delay)")
    fresh = send(server, "/")
    assert answer(fresh) == (200, None, b"Hello, world!")  # served as before, kept alive
    kept.request("GET", "/")
    assert answer(kept) == (200, None, b"Hello, world!")
    assert listen_queue(server.port) is not None
    server.signal(signal.SIGHUP)
    server.wait_log("HUP ignored: the server is stopping")  # the stop has begun

    server.signal(signal.SIGTERM)  # not the 300 s: now, and still gracefully
    assert server.wait_exit(60) == 0
    all_gone(processes)
    log = server.log()
    assert "Graceful stop" in log and "Quick stop" not in log
    assert "--shutdown-delay is over" not in log


def test_the_shutdown_delay_runs_out_into_a_graceful_stop(serve):
    server = serve("tests.apps:hello", "--shutdown-delay", "0.3", workers=1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(60) == 0
    log = server.log()
    order = [log.index(line) for line in ("serving for 0.3 s more", "--shutdown-delay is over",
                                          "Graceful stop")]
    assert order == sorted(order)


def test_no_shutdown_delay_while_a_usr2_successor_holds_the_sockets(serve):
    """The delay is there so that nothing gets refused; after USR2 nothing would be."""
    server = serve("tests.apps:hello", "--shutdown-delay", "300", workers=1)
    old = server.process

    def successor():
        for child in old.children():
            with contextlib.suppress(psutil.Error):
                if [c for c in child.children() if c.status() != psutil.STATUS_ZOMBIE]:
                    return child
        return None

    server.signal(signal.SIGUSR2)
    new = wait_until(successor, what="the new arbiter and its worker")
    try:
        server.signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0  # not after 300 s
        assert "(--shutdown-delay)" not in server.log()
        assert answer(send(server, "/")) == (200, None, b"Hello, world!")  # the new one serves
    finally:
        kill_tree(new.pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["int", "quit"])
def test_int_and_quit_during_the_shutdown_delay_stop_quickly(serve, sig):
    server = serve("tests.apps:hello", "--shutdown-delay", "300", workers=1)
    server.signal(signal.SIGTERM)
    server.wait_log("serving for 300 s more")
    server.signal(sig)
    assert server.wait_exit(60) == 0
    assert "Quick stop" in server.log()
