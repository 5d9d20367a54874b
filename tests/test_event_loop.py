"""The worker's event loop, seen from real clients: request bodies received before the app
is called (buffered in memory, then spooled), slow bodies, 100-continue, connections handed
to a free sibling worker, descriptor limits and shedding at the connection cap.

The apps are in tests/loop_apps.py. Every server is the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests

from tests.conftest import Server, wait_until
from tests.http_client import Reader

GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
ESTABLISHED, SYN_RECV, LISTEN = 0x01, 0x03, 0x0A  # /proc/net/tcp states


# --- helpers ------------------------------------------------------------------------------------


def _proc_tcp() -> list[tuple[int, int, int, int]]:
    """``(local port, remote port, state, rx_queue)`` of every IPv4 TCP socket on the host.

    For a listening socket rx_queue is its accept queue; for a connection, the bytes the
    kernel holds that its owner has not read yet."""
    rows = []
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            local, remote = fields[1], fields[2]
            rx = fields[4].split(":")[1]
            rows.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                         int(fields[3], 16), int(rx, 16)))
    return rows


def _accept_queue(port: int) -> int | None:
    """Connections waiting in the listener's accept queue (None: no listener on ``port``)."""
    for local, _remote, state, rx in _proc_tcp():
        if local == port and state == LISTEN:
            return rx
    return None


def _all_received(server_port: int, client_ports: set[int]) -> bool:
    """Every connection from ``client_ports`` is open on the server side with nothing left
    unread in the kernel: a worker accepted it and read what the client sent."""
    seen = {remote: (state, rx) for local, remote, state, rx in _proc_tcp()
            if local == server_port and remote in client_ports}
    return len(seen) == len(client_ports) and all(
        state == ESTABLISHED and rx == 0 for state, rx in seen.values())


def _handed_to_accept(server_port: int, client_ports: set[int]) -> bool:
    """The kernel is past the handshake of every connection from ``client_ports``.

    The listeners set TCP_DEFER_ACCEPT: a connection that sends nothing stays in SYN_RECV
    on the server side, out of accept()'s reach, for about a second."""
    return not any(local == server_port and remote in client_ports and state == SYN_RECV
                   for local, remote, state, _rx in _proc_tcp())


def _holders(server: Server, socks: list[socket.socket]) -> dict[int, set[int]]:
    """For each client socket's local port, the PIDs of the workers holding its other end."""
    ports = {sock.getsockname()[1]: set() for sock in socks}
    for worker in server.workers():
        with contextlib.suppress(psutil.Error):
            for conn in worker.net_connections("tcp"):
                if conn.raddr and conn.laddr[1] == server.port and conn.raddr[1] in ports:
                    ports[conn.raddr[1]].add(worker.pid)
    return ports


def _settled_holders(server: Server, socks: list[socket.socket]) -> dict[int, int]:
    """Port -> the one worker holding that connection, once each has exactly one (a
    connection being handed over is in flight between two workers for a moment)."""
    def settled():
        held = _holders(server, socks)
        if all(len(pids) == 1 for pids in held.values()):
            return {port: next(iter(pids)) for port, pids in held.items()}
        return None

    return wait_until(settled, timeout=10, what="every connection to be held by one worker")


def _pid_reply(reply) -> dict[str, str]:
    """``pid=.. n=.. path=..`` from tests/loop_apps.py's ``pids`` app, as a dict."""
    assert reply.status == 200, reply
    return _pid_fields(reply.body.decode())


def _pid_fields(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split())


def _worker_pids(server: Server, count: int) -> list[int]:
    return sorted(worker.pid for worker in server.wait_workers(count))


def _running(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
    return True


def _plain_get(server: Server, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A normal request on a new connection through http.client; the timeout is a hang guard."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def _own_nofile(needed: int):
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (as far as the hard limit
    allows) for the block, then put it back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def _idle_connections(server: Server, count: int):
    """``count`` silent connections to ``server`` (raising this process's own open-file
    limit to fit); yields them and their client ports; closes them all on the way out."""
    idle: list[socket.socket] = []
    with _own_nofile(count + 512):
        try:
            for _ in range(count):
                idle.append(server.connect(timeout=10))
            yield idle, {sock.getsockname()[1] for sock in idle}
        finally:
            _close_all(idle)


class _Trickle:
    """Sends one byte to each socket every ``interval`` seconds from a thread, until stopped
    or until the server closes that socket."""

    def __init__(self, socks: list[socket.socket], interval: float = 0.2) -> None:
        self.socks = list(socks)
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        live = list(self.socks)
        while live and not self.stop.wait(self.interval):
            for sock in list(live):
                try:
                    sock.sendall(b"x")
                except OSError:
                    live.remove(sock)

    def __enter__(self) -> _Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def _start_tricklers(server: Server, count: int = 2) -> list[socket.socket]:
    """``count`` connections that announce a 1 MB body and send its first byte; returns once
    a worker holds each of them."""
    socks = []
    try:
        for _ in range(count):
            sock = server.connect(timeout=15)
            sock.sendall(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nx")
            socks.append(sock)
        wait_until(lambda: all(_holders(server, socks).values()), timeout=10,
                   what="a worker to accept each trickling client")
    except BaseException:
        _close_all(socks)
        raise
    return socks


# --- 1. slow bodies do not hold a worker --------------------------------------------------------


def test_trickling_bodies_do_not_hold_up_normal_requests(serve):
    """Two clients dribble a 1 MB body a byte every 0.2 s into a two-worker server. The loop
    receives bodies before the app runs, so neither worker is pinned: normal requests on new
    connections are answered at once (the 5 s socket timeout is a hang guard, far below the
    30 s --timeout that a pinned worker would need), and no worker is killed."""
    server = serve("tests.loop_apps:digest", workers=2)
    before = _worker_pids(server, 2)
    tricklers = _start_tricklers(server)
    try:
        with _Trickle(tricklers):
            for index in range(6):
                status, body = _plain_get(server, f"/read?n={index}")
                assert status == 200
                assert json.loads(body)["length"] == 0
            response = requests.post(f"{server.url}/read", data=b"abc", timeout=5)
            assert response.status_code == 200
            assert response.json()["sha256"] == hashlib.sha256(b"abc").hexdigest()
        assert _worker_pids(server, 2) == before
        assert _running(before)
    finally:
        _close_all(tricklers)


def test_a_body_below_the_minimum_rate_gets_408_and_is_closed(serve):
    """5 bytes a second is under the default 240 B/s minimum: once the 1 s grace has passed
    each trickling client is answered 408 and closed; others are served all along and no
    worker is replaced."""
    server = serve("tests.loop_apps:digest", "--body-rate-grace", "1", workers=2)
    before = _worker_pids(server, 2)
    tricklers = _start_tricklers(server)
    try:
        with _Trickle(tricklers):
            for index in range(3):
                assert _plain_get(server, f"/read?n={index}")[0] == 200
            readers = [Reader(sock) for sock in tricklers]
            for sock, reader in zip(tricklers, readers, strict=True):
                sock.settimeout(15)  # hang guard: the --body-timeout (30 s) never expires
                reply = reader.read()
                assert reply.status == 408, reply
                assert reply.header("Connection") == "close"
        for reader in readers:
            assert reader.closed(timeout=15)
        assert _plain_get(server, "/read")[0] == 200
        assert _worker_pids(server, 2) == before
        assert _running(before)
    finally:
        _close_all(tricklers)


# --- 2. an announced body costs nothing until it arrives ----------------------------------------


@pytest.mark.timeout(90)
def test_a_1gib_content_length_with_no_body_does_not_grow_the_worker(serve):
    """20 clients announce 1 GiB each (no body limit) and send 4 KiB of it, then nothing:
    the worker takes them all into its loop without reserving memory for what was
    announced, and still serves a normal request."""
    server = serve("tests.loop_apps:digest", "--limit-request-body", "0")
    worker = server.wait_workers(1)[0]
    # Warm up every code path the test runs: a small body and one spooled past 1 MiB.
    with requests.Session() as session:
        for size in (10, 2 * MiB):
            response = session.post(f"{server.url}/read", data=b"w" * size, timeout=10)
            assert response.json()["length"] == size
    rss_before = worker.memory_info().rss
    socks: list[socket.socket] = []
    try:
        head = b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % GiB
        for _ in range(20):
            sock = server.connect(timeout=10)
            sock.sendall(head + b"z" * (4 * KiB))
            socks.append(sock)
        ports = {sock.getsockname()[1] for sock in socks}
        wait_until(lambda: _all_received(server.port, ports), timeout=15,
                   what="the worker to accept every connection and read what it sent")
        growth = worker.memory_info().rss - rss_before
        assert growth < 8 * MiB, f"the worker grew by {growth / MiB:.1f} MiB"
        status, body = _plain_get(server, "/read?after=1")
        assert status == 200 and json.loads(body)["length"] == 0
    finally:
        _close_all(socks)


# --- 3. over the body limit: 413 before the app -------------------------------------------------


def _flask_server(serve, tmp_path: Path) -> tuple[Server, Path]:
    marker = tmp_path / "flask-called"
    server = serve("tests.loop_apps:flask_app()", "--limit-request-body", "1000",
                   env={"LOOP_CALLED_MARKER": str(marker)})
    return server, marker


def _assert_flask_still_called(server: Server, marker: Path) -> None:
    """The marker works: a body under the limit reaches Flask (and is the only call)."""
    response = requests.post(f"{server.url}/upload", data=b"u" * 600, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["size"] == 600
    assert marker.read_text().splitlines() == ["POST /upload"]


def _chunked_5000() -> bytes:
    data = random.Random(3).randbytes(5000)
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 500]), data[i:i + 500])
                    for i in range(0, len(data), 500)) + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", [
    pytest.param(b"Transfer-Encoding: chunked\r\n", id="chunked"),
    # the head alone says too much: 413 without waiting for the body
    pytest.param(b"Content-Length: 5000\r\n", id="content-length"),
])
def test_an_oversized_body_is_413_and_flask_is_never_called(serve, tmp_path, framing):
    server, marker = _flask_server(serve, tmp_path)
    body = _chunked_5000() if b"chunked" in framing else b""
    with server.connect(timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\n" + framing
                     + b"Content-Type: application/octet-stream\r\n\r\n" + body)
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 413, reply
        assert reply.header("Connection") == "close"
        assert reader.closed()
    assert not marker.exists(), f"the app was called: {marker.read_text()!r}"
    _assert_flask_still_called(server, marker)


# --- 4. many idle connections --------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_2000_idle_connections_do_not_lock_out_normal_requests(serve):
    """2000 silent connections fill both workers' default cap (1000 each): the workers shed
    the oldest of them, so real requests still get in."""
    server = serve("tests.loop_apps:pids", workers=2)
    with _idle_connections(server, 2000) as (_idle, ports):
        wait_until(lambda: _handed_to_accept(server.port, ports)
                   and _accept_queue(server.port) == 0, timeout=30,
                   what="the workers to take every idle connection")
        for index in range(3):
            status, body = _plain_get(server, f"/pid?n={index}")
            assert status == 200 and f"n={index}" in body.decode()
            response = requests.get(f"{server.url}/pid?n=r{index}", timeout=5)
            assert response.status_code == 200


# --- 5. descriptor limits -------------------------------------------------------------------------

_FD_TROUBLE = re.compile(r"too many open files|emfile|enfile|accept failed", re.IGNORECASE)


def _fd_trouble_lines(server: Server) -> list[str]:
    return [line for line in server.log().splitlines() if _FD_TROUBLE.search(line)]


@pytest.mark.timeout(90)
def test_with_256_descriptors_600_idle_clients_neither_flood_the_log_nor_break_the_server(
        serve):
    server = serve("tests.loop_apps:pids", workers=2, nofile=256)
    assert server.process.rlimit(psutil.RLIMIT_NOFILE) == (256, 256)  # the setup worked
    with _idle_connections(server, 600) as (_idle, ports):
        wait_until(lambda: _handed_to_accept(server.port, ports), timeout=30,
                   what="the idle connections to reach the accept queue")
        # Hold them for about 2 s, looking at the log all along: a worker that retries a
        # failing accept() in a loop writes thousands of lines in that time.
        for _ in range(20):
            trouble = _fd_trouble_lines(server)
            assert len(trouble) < 50, "log flood:\n" + "\n".join(trouble[:10])
            time.sleep(0.1)
    status, body = _plain_get(server, "/pid?n=after", timeout=10)
    assert status == 200 and "n=after" in body.decode()
    assert len(_fd_trouble_lines(server)) < 50
    # 1000 connections per worker do not fit in 256 descriptors: lowered, and said so
    server.wait_log("max_connections", timeout=5)


# --- 6. connections handed to a free worker -------------------------------------------------------


def _pipelined_setup(server: Server, count: int = 6):
    """``count`` keep-alive connections, each used once; returns them, their readers and
    ``(x, y, a, b)``: a and b are two connections worker x holds, y the other worker."""
    socks = [server.connect(timeout=10) for _ in range(count)]
    try:
        readers = {sock: Reader(sock) for sock in socks}
        for sock in socks:
            sock.sendall(GET % b"/pid?n=0")
            assert _pid_reply(readers[sock].read())["n"] == "0"
        # Nothing is in the app now, so nothing moves: where each connection is, it stays.
        holders = _settled_holders(server, socks)
        workers = _worker_pids(server, 2)
        by_worker: dict[int, list[socket.socket]] = {pid: [] for pid in workers}
        for sock in socks:
            by_worker[holders[sock.getsockname()[1]]].append(sock)
        x = next(pid for pid, held in by_worker.items() if len(held) >= 2)
        y = next(pid for pid in workers if pid != x)
        a, b = by_worker[x][:2]
    except BaseException:
        _close_all(socks)
        raise
    return socks, readers, (x, y, a, b)


def _slow_target(marker: Path) -> bytes:
    return b"/slow?seconds=1.5&marker=" + quote(str(marker)).encode()


def _assert_nothing_more(sock: socket.socket, reader: Reader) -> None:
    """One more request on ``sock`` gets its own answer next (no duplicate came before it),
    and nothing follows that."""
    sock.sendall(GET % b"/pid?n=3")
    assert _pid_reply(reader.read())["n"] == "3"
    assert reader.buf == b""
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        extra = sock.recv(65536)
        pytest.fail(f"bytes after the last response: {extra!r}")


def test_pipelined_requests_on_a_connection_moved_to_a_free_worker_are_answered_once(
        serve, tmp_path):
    """While worker x is inside the app, its idle keep-alive connection b moves to the free
    worker y: two requests pipelined on b are answered by y, once each, in order."""
    server = serve("tests.loop_apps:pids", workers=2)
    socks, readers, (x, y, a, b) = _pipelined_setup(server)
    try:
        marker = tmp_path / "slow-started"
        a.sendall(GET % _slow_target(marker))
        wait_until(marker.exists, timeout=10, what="the slow request to be inside the app")
        b.sendall(GET % b"/pid?n=1" + GET % b"/pid?n=2")
        first, second = _pid_reply(readers[b].read()), _pid_reply(readers[b].read())
        assert (first["n"], second["n"]) == ("1", "2")
        assert (int(first["pid"]), int(second["pid"])) == (y, y), f"x={x} y={y}"
        slow = _pid_reply(readers[a].read())
        assert (slow["path"], int(slow["pid"])) == ("/slow", x)
        _assert_nothing_more(b, readers[b])
    finally:
        _close_all(socks)


@pytest.mark.timeout(90)
def test_connections_moving_while_workers_recycle_and_reload_lose_no_request(serve):
    """Handoff under --max-requests and HUP: keep-alive clients with one slow request in
    four keep moving between workers that retire and are replaced; every request gets its
    own answer, in order, and none fails."""
    server = serve("tests.loop_apps:pids", "--max-requests", "15", "--log-level", "debug",
                   workers=2)
    failures: list[str] = []
    pids: set[str] = set()

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=20)
        for n in range(40):
            path = "/slow?seconds=0.05&n=" if n % 4 == index % 4 else "/pid?n="
            try:
                conn.request("GET", f"{path}{index}-{n}")
                response = conn.getresponse()
                reply = _pid_fields(response.read().decode())
                if reply["n"] != f"{index}-{n}":
                    failures.append(f"asked {index}-{n}, answered {reply['n']}")
                pids.add(reply["pid"])
                if response.getheader("Connection") == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{index}-{n}: {exc!r}")
                conn.close()
        conn.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: "moved" in server.log(), timeout=30, what="a first handoff")
    server.signal(signal.SIGHUP)
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len(pids) > 4  # workers recycled and reloaded under the clients
    assert "handoff: took" in server.log()


def test_a_partial_head_moves_with_the_bytes_already_received(serve, tmp_path):
    """Worker x has read half of a head on b when its app call turns slow: b moves to the
    free worker y with those bytes, and y answers the request once the head is complete,
    then the one pipelined behind it."""
    server = serve("tests.loop_apps:pids", workers=2)
    socks, readers, (x, y, a, b) = _pipelined_setup(server)
    try:
        b_port = b.getsockname()[1]
        b.sendall(b"GET /pid?n=1 HTTP/1.1\r\nHost: t\r\n")  # the head's blank line missing
        wait_until(lambda: _all_received(server.port, {b_port}), timeout=10,
                   what="worker x to read the partial head")
        marker = tmp_path / "slow-started"
        a.sendall(GET % _slow_target(marker))
        wait_until(marker.exists, timeout=10, what="the slow request to be inside the app")
        wait_until(lambda: _holders(server, [b])[b_port] == {y}, timeout=10,
                   what=f"connection b to move from worker {x} to worker {y}")
        b.sendall(b"\r\n" + GET % b"/pid?n=2")
        first, second = _pid_reply(readers[b].read()), _pid_reply(readers[b].read())
        assert (first["n"], second["n"]) == ("1", "2")
        assert (int(first["pid"]), int(second["pid"])) == (y, y)
        assert int(_pid_reply(readers[a].read())["pid"]) == x
        _assert_nothing_more(b, readers[b])
    finally:
        _close_all(socks)


def test_without_handoff_pipelined_requests_wait_for_their_worker(serve, tmp_path):
    """--handoff-after 0: b stays in busy worker x; its pipelined requests are answered by x
    after the slow one, once each, in order."""
    server = serve("tests.loop_apps:pids", "--handoff-after", "0", workers=2)
    socks, readers, (x, _y, a, b) = _pipelined_setup(server)
    try:
        marker = tmp_path / "slow-started"
        a.sendall(GET % _slow_target(marker))
        wait_until(marker.exists, timeout=10, what="the slow request to be inside the app")
        b.sendall(GET % b"/pid?n=1" + GET % b"/pid?n=2")
        assert int(_pid_reply(readers[a].read())["pid"]) == x
        first, second = _pid_reply(readers[b].read()), _pid_reply(readers[b].read())
        assert (first["n"], second["n"]) == ("1", "2")
        assert (int(first["pid"]), int(second["pid"])) == (x, x)
        _assert_nothing_more(b, readers[b])
    finally:
        _close_all(socks)


# --- 7. Expect: 100-continue with buffering -------------------------------------------------------


def test_100_continue_comes_from_the_server_before_the_app_runs(serve):
    """With buffering the server asks for the body as soon as it accepts the head, even for
    an app that will never read it, and calls the app once the body is in."""
    server = serve("tests.loop_apps:digest")
    with server.connect(timeout=5) as sock:  # the timeout: a hang guard
        reader = Reader(sock)
        for path, body in ((b"/noread", b"0123456789"), (b"/read", b"abcdefghij")):
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                         b"Expect: 100-continue\r\n\r\n" % path)
            interim = reader.read()
            assert interim.status == 100, interim
            assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
            sock.sendall(body)
            reply = reader.read()
            assert reply.status == 200, reply
            result = json.loads(reply.body)
            assert result["path"] == path.decode()
            if path == b"/read":
                assert result["sha256"] == hashlib.sha256(body).hexdigest()
            assert reply.header("Connection") is None  # the body was all read: kept


def test_100_continue_over_the_limit_is_413_without_continue(serve):
    server = serve("tests.loop_apps:digest", "--limit-request-body", "100")
    with server.connect(timeout=5) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        reply = reader.read()  # the first thing the server sends
        assert reply.status == 413, reply
        assert reply.header("Connection") == "close"
        assert reader.closed()


def test_without_buffering_100_continue_waits_for_the_app_to_read(serve):
    server = serve("tests.loop_apps:digest", "--no-request-buffering")
    with server.connect(timeout=5) as sock:
        sock.sendall(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reply = Reader(sock).read()
        assert reply.status == 200, reply  # no 100 first: the app never asked for the body
    with server.connect(timeout=5) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        assert reader.read().status == 100
        sock.sendall(b"data")
        assert json.loads(reader.read().body)["length"] == 4


# --- 8. bodies arrive intact, in memory or spooled ------------------------------------------------


def _split_lines(body: bytes) -> list[bytes]:
    parts = body.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _bodies() -> dict[str, bytes]:
    rng = random.Random(8)
    # 3 MiB, over the 1 MiB in-memory threshold, with one 1 MiB line straddling it
    big = rng.randbytes(MiB - 1000) + b"L" * MiB + b"\n" + rng.randbytes(MiB - 1 + 1000)
    return {"0": b"", "1": b"z", "100KiB": rng.randbytes(100 * KiB), "3MiB": big}


READ_WAYS = ("/read", "/readall", "/lines", "/readline", "/readline?hint=1000")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("buffering", [True, False], ids=["buffered", "unbuffered"])
def test_bodies_arrive_intact_in_memory_or_spooled(serve, buffering):
    """Bodies of 0 B, 1 B, 100 KiB and 3 MiB, framed by Content-Length and chunked, read
    with read(n), read(), iteration and readline(): the app sees every byte, in order."""
    server = serve("tests.loop_apps:digest", *(() if buffering else ("--no-request-buffering",)))
    with requests.Session() as session:
        for name, body in _bodies().items():
            lines = _split_lines(body)
            for framing in ("length", "chunked"):
                if framing == "length":
                    data = body
                else:
                    data = (body[i:i + 7001] for i in range(0, len(body), 7001))
                for way in READ_WAYS:
                    label = f"{name} {framing} {way}"
                    response = session.post(f"{server.url}{way}", data=data, timeout=30)
                    if framing == "chunked":  # the generator is spent: a new one next time
                        data = (body[i:i + 7001] for i in range(0, len(body), 7001))
                    assert response.status_code == 200, (label, response.text)
                    sent = response.request.headers
                    assert (sent.get("Transfer-Encoding") == "chunked") == (framing == "chunked")
                    result = response.json()
                    assert result["length"] == len(body), label
                    assert result["sha256"] == hashlib.sha256(body).hexdigest(), label
                    if way in ("/lines", "/readline"):
                        assert result["lines"] == len(lines), label
                        assert result["longest"] == max(map(len, lines), default=0), label
                    elif way.startswith("/readline?hint="):
                        assert result["longest"] <= 1000, label


def test_the_handoff_queue_never_blocks_a_worker():
    """A worker woken for a batch that a sibling took first must find the queue empty, not
    wait in recv for the next one (nor a custodian in send on a full queue): both ends are
    non-blocking, whatever socket.recv_fds/send_fds do with their flags argument."""
    from forkwsgi.handoff import make_pair

    send, receive = make_pair()
    with send, receive:
        assert not send.getblocking() and not receive.getblocking()
        with pytest.raises(BlockingIOError):
            socket.recv_fds(receive, 1024, 4)
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):  # fill the queue: the send that does not fit fails
                socket.send_fds(send, [b"x" * 60_000], [receive.fileno()])


@pytest.mark.process
def test_a_free_worker_sees_which_siblings_are_in_a_request_and_which_of_them_wait():
    """What Handoff.watch reads: the busy siblings' slots (never its own) with their
    request's start, and whether a process sleeps (a request waiting on I/O) or runs."""
    from forkwsgi import scoreboard
    from forkwsgi.handoff import _sleeping

    board = scoreboard.Scoreboard(slots=8)  # the writers' views hold it: no close()
    mine, sibling, idle = (scoreboard.SlotWriter(board, board.claim(pid))
                           for pid in (101, 202, 303))
    for writer in (mine, sibling, idle):
        writer.set_state(scoreboard.IDLE)
    assert mine.busy_siblings() == [] and mine.workers_idle() == 3
    sibling.busy(1234.5, scoreboard.describe("GET", "/slow", "127.0.0.1:1"))
    mine.busy(1240.0, scoreboard.describe("GET", "/", "127.0.0.1:2"))
    assert mine.busy_siblings() == [(sibling.index, 202, 1234.5)]
    assert idle.busy_siblings() == [(mine.index, 101, 1240.0), (sibling.index, 202, 1234.5)]
    assert idle.workers_idle() == 1
    sleeper = psutil.Popen(["sleep", "30"])
    try:
        wait_until(lambda: sleeper.status() == psutil.STATUS_SLEEPING, what="sleep to sleep")
        assert _sleeping(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not _sleeping(os.getpid())  # running: this very test
    assert not _sleeping(2**22 + 12345)  # no such process
