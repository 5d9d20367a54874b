"""Fixtures that start the real ``forkwsgi`` CLI and clean up its process tree.

Every server runs as a subprocess on a free loopback port; readiness is
polled, never slept for; the finalizer kills the whole tree by PID.

The ``process`` marker: a test that starts a process (the server, nginx, the
CLI, any subprocess) is marked, automatically when it uses ``serve``,
``server`` or ``frontends``, else by its module's ``pytestmark``. ``pytest -m "not process"``
runs the in-process tests alone, in seconds; there a test that starts a
process after all fails, naming itself, so the marker cannot drift.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
FORKWSGI = [sys.executable, "-m", "forkwsgi"]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02,
               what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Server:
    """A running ``forkwsgi`` arbiter started by a test."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, log_path: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = log_path
        self.url = f"http://{host}:{port}"
        self.pid = proc.pid

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def workers(self) -> list[psutil.Process]:
        """Live worker processes (children of the arbiter, zombies excluded)."""
        try:
            children = self.process.children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
        return alive

    def wait_workers(self, count: int, timeout: float = 20.0) -> list[psutil.Process]:
        def enough():
            workers = self.workers()
            return (workers,) if len(workers) == count else None  # truthy even when empty

        return wait_until(enough, timeout, what=f"{count} workers")[0]  # type: ignore[index]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        wait_until(lambda: text in self.log(), timeout, what=f"{text!r} in the log")
        return self.log()

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def request(self, raw: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes, read until the server closes; the whole reply."""
        with self.connect(timeout) as sock:
            sock.sendall(raw)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill_tree(self) -> None:
        """SIGKILL the workers while the arbiter still reaps them, then the arbiter."""
        kill_tree(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (children first); wait until none runs."""
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    wait_until(lambda: all(_gone(p) for p in tree), timeout=20, interval=0.01,
               what=f"process tree {pid} to die")


def listening(host: str, port: int, proc: subprocess.Popen) -> bool:
    """Whether ``proc`` accepts on ``host:port`` (it must not have exited)."""
    if proc.poll() is not None:
        raise AssertionError(f"forkwsgi exited early with status {proc.returncode}")
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Runs forkwsgi with RLIMIT_NOFILE soft = hard = argv[1]; exec, so the PID stays the arbiter's.
_NOFILE_WRAPPER = ("import os, resource, sys; n = int(sys.argv[1]); "
                   "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'forkwsgi', *sys.argv[2:]])")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(app, *args, workers=1, env=None, wait=True, nofile=None) -> Server``.

    Starts ``python -m forkwsgi -b 127.0.0.1:PORT -w WORKERS *args APP`` in
    the repository root (so ``tests.apps:...`` imports), stdout and stderr to
    a log file, and waits until the port accepts and the workers are up.
    ``nofile`` starts it with that open-file limit (soft and hard).
    """
    started: list[Server] = []

    def start(app: str = "forkwsgi.examples.hello:app", *args: str, workers: int = 1,
              env: dict[str, str] | None = None, wait: bool = True, host: str = "127.0.0.1",
              bind: bool = True, cwd: Path | None = None, nofile: int | None = None) -> Server:
        port = free_port(host)
        log_path = tmp_path / f"server-{len(started)}.log"
        bind_args = ["-b", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"] if bind else []
        command = FORKWSGI if nofile is None else \
            [sys.executable, "-c", _NOFILE_WRAPPER, str(nofile)]
        cmd = [*command, *bind_args, "-w", str(workers), *args, app]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), str(REPO), full_env.get("PYTHONPATH", "")) if p)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                    cwd=cwd or REPO, start_new_session=True)
        server = Server(proc, host, port, log_path)
        started.append(server)
        if wait:
            try:
                wait_until(lambda: listening(host, port, proc), what="the server to listen")
                server.wait_workers(workers)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- server log ---\n{server.log()}") from None
        return server

    yield start
    for server in started:
        # A quick stop first: the arbiter reaps its own workers, so nothing is left to
        # re-parent; then make sure of it by PID.
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            server.signal(signal.SIGQUIT)
            server.wait_exit(10)
        server.kill_tree()


@pytest.fixture
def server(serve: Callable[..., Server]) -> Server:
    """One worker serving tests/apps.py's echo app (the environ back as JSON)."""
    return serve("tests.apps:echo")


@pytest.fixture
def frontends(tmp_path: Path) -> Iterator[object]:
    """Real nginx, httpd and HAProxy started by the test (tests/frontends.py), killed after."""
    from tests.frontends import Frontends  # late: that module imports this one

    with Frontends(tmp_path) as started:
        yield started


# --- the process marker ----------------------------------------------------------------------

PROCESS_FIXTURES = frozenset({"serve", "server", "frontends"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "process: starts real processes (servers, front-ends, the CLI); "
        "deselect with -m 'not process' for the quick in-process run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


class _NoProcess:
    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("this test starts a process: mark it with pytest.mark.process")


@pytest.fixture(autouse=True)
def _process_marker_is_true(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                            ) -> None:
    """Unmarked tests may not start a process (and so cannot slow the quick run down)."""
    if request.node.get_closest_marker("process") is None:
        monkeypatch.setattr(subprocess, "Popen", _NoProcess)
