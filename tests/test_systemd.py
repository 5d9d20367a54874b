"""systemd: sd_notify, the watchdog, upgrades that systemd follows, socket activation, units.

A real AF_UNIX datagram socket, bound by the test where NOTIFY_SOCKET points,
stands in for systemd: it receives every message with the sender's PID
(SO_PASSCRED), as systemd does, so the tests check who said what and in which
order. The server is the real CLI; upgrades are real signals and execs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from forkwsgi import notify
from tests.conftest import FORKWSGI, REPO, free_port, kill_tree, wait_until

UNITS = REPO / "conf" / "systemd"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NotifySocket:
    """What systemd listens on: every message as (sender PID, its KEY=VALUE fields)."""

    def __init__(self, where: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if where is None:  # abstract: no file, a name only
            self.name = f"@forkwsgi-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + self.name[1:])
        else:
            self.name = str(where)
            self.sock.bind(self.name)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def poll(self) -> list[tuple[int, dict[str, str]]]:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except BlockingIOError:
                return self.messages
            sender = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = _UCRED.unpack(value[:_UCRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((sender, fields))

    def find(self, key: str, start: int = 0, value: str | None = None) -> int | None:
        """The index of the first message from ``start`` on that carries ``key``."""
        for index, (_, fields) in enumerate(self.poll()[start:], start):
            if key in fields and (value is None or fields[key] == value):
                return index
        return None

    def wait(self, key: str, start: int = 0, value: str | None = None,
             timeout: float = 30.0) -> int:
        """Poll until a message from ``start`` on carries ``key``; its index."""
        found: list[int] = []

        def seen() -> bool:
            index = self.find(key, start, value)
            if index is not None:
                found.append(index)
            return index is not None

        wait_until(seen, timeout, what=f"{key} in a message from index {start}")
        return found[-1]

    def __getitem__(self, index: int) -> tuple[int, dict[str, str]]:
        return self.poll()[index]

    def count(self, key: str, sender: int | None = None, start: int = 0) -> int:
        return sum(1 for pid, fields in self.poll()[start:]
                   if key in fields and (sender is None or pid == sender))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def get(host: str, port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def children(pid: int) -> set[int]:
    """Live children of ``pid`` (its workers; zombies are on their way out)."""
    alive = set()
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.add(child.pid)
    return alive


ENV_APP = """\
import json, os
def app(environ, start_response):
    keys = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FORKWSGI__NOTIFY_FD",
            "FORKWSGI__WORKERS")
    body = json.dumps({"pid": os.getpid(), "env": {k: os.environ.get(k) for k in keys}})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
"""

# Each worker says it is waiting, then waits in post_worker_init (after the app is loaded,
# before its loop) until the test creates the gate file.
GATE_CONF = """\
import os, time
GATE = {gate!r}
def post_worker_init(worker):
    open(GATE + ".waiting-%d" % os.getpid(), "w").close()
    while not os.path.exists(GATE):
        time.sleep(0.02)
"""


def waiting(tmp_path: Path) -> int:
    return len(list(tmp_path.glob("gate.waiting-*")))


# --- in-process: the environment and the wire ---------------------------------------------


def test_the_systemd_variables_leave_the_environment():
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
               "WATCHDOG_PID": "42", "PATH": "/bin"}
    notifier = notify.Notifier.from_environ(42, environ)
    assert environ == {"PATH": "/bin"}  # what a forked worker inherits
    assert notifier.address == "/run/systemd/notify"
    assert notifier.watchdog_every == 15.0
    env = notifier.successor_env(43)
    assert env == {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
                   "WATCHDOG_PID": "43"}


def test_the_watchdog_is_only_for_the_pid_systemd_names():
    environ = {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}
    notifier = notify.Notifier.from_environ(8, environ)
    assert notifier.address == "\0sd"
    assert not notifier.watchdog_every and notifier.deadline() is None
    assert notify.Notifier.from_environ(8, {"NOTIFY_SOCKET": "relative"}).address is None


def test_messages_reach_a_real_socket_and_silence_without_one(tmp_path):
    listener = NotifySocket(tmp_path / "n.sock")
    try:
        notifier = notify.Notifier(listener.name, watchdog_usec=2_000_000)
        notifier.ready(os.getpid(), "2 worker(s) up")
        notifier.tick(time.monotonic(), lambda: "2 worker(s) up")  # the status is unchanged
        notifier.stopping()
        notifier.stopping()
        wait_until(lambda: len(listener.poll()) == 3, what="three messages")
        (pid, ready), (_, ping), (_, stopping) = listener.poll()
        assert pid == os.getpid()
        assert ready == {"READY": "1", "MAINPID": str(os.getpid()),
                         "STATUS": "2 worker(s) up"}
        assert ping == {"WATCHDOG": "1"}
        assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
        silent = notify.Notifier()
        assert not silent.send("READY=1") and not silent.owes_ready()
    finally:
        listener.close()


# --- the server under a stand-in systemd --------------------------------------------------


def test_ready_waits_for_every_worker_then_reload_and_stop(serve, tmp_path, notify_socket):
    (tmp_path / "envapp.py").write_text(ENV_APP)
    gate = tmp_path / "gate"
    conf = tmp_path / "gate.py"
    conf.write_text(GATE_CONF.format(gate=str(gate)))
    server = serve("envapp:app", "-c", str(conf), "--pythonpath", str(tmp_path), workers=2,
                   env={"NOTIFY_SOCKET": notify_socket.name})
    wait_until(lambda: waiting(tmp_path) == 2, what="both workers in post_worker_init")
    first = notify_socket.wait("STATUS")  # the arbiter speaks meanwhile, but not READY
    assert notify_socket[first][1]["STATUS"].startswith("0/2 workers up")
    assert notify_socket.find("READY") is None
    gate.touch()
    ready = notify_socket.wait("READY")
    sender, fields = notify_socket[ready]
    assert sender == server.pid
    assert fields["MAINPID"] == str(server.pid)
    assert fields["STATUS"].startswith("2/2 workers up, 0 busy")

    # The workers never see the variables that would let the app speak for the service.
    status, body = get(server.host, server.port)
    assert status == 200
    assert set(json.loads(body)["env"].values()) == {None}

    # HUP: RELOADING=1 with the time it began at once, READY=1 once the new workers accept.
    gate.unlink()
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    server.signal(signal.SIGHUP)
    reloading = notify_socket.wait("RELOADING", ready + 1)
    began = int(notify_socket[reloading][1]["MONOTONIC_USEC"])
    assert before_usec <= began <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    wait_until(lambda: waiting(tmp_path) == 4, what="the new workers in post_worker_init")
    assert notify_socket.find("READY", reloading) is None
    gate.touch()
    reloaded = notify_socket.wait("READY", reloading)
    assert notify_socket[reloaded][1]["MAINPID"] == str(server.pid)

    server.signal(signal.SIGTERM)
    stopping = notify_socket.wait("STOPPING", reloaded)
    assert notify_socket[stopping][0] == server.pid
    assert server.wait_exit(30) == 0
    assert all(pid == server.pid for pid, _ in notify_socket.poll())


def test_a_reload_that_cannot_load_the_app_still_ends_with_ready(serve, tmp_path,
                                                                   notify_socket):
    """Type=notify-reload waits for READY=1 after RELOADING=1: a failed reload must send it
    too, or `systemctl reload` would hang until its timeout."""
    module = tmp_path / "flaky_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [])\n"
                      "    return [b'v1']\n")
    server = serve("flaky_app:app", "--pythonpath", str(tmp_path), workers=2,
                   env={"NOTIFY_SOCKET": notify_socket.name})
    ready = notify_socket.wait("READY")
    before = children(server.pid)
    module.write_text("raise ImportError('v2 is broken')\n")
    server.signal(signal.SIGHUP)
    reloading = notify_socket.wait("RELOADING", ready + 1)
    notify_socket.wait("READY", reloading)
    assert "reload failed" in server.log()
    assert get(server.host, server.port) == (200, b"v1")
    wait_until(lambda: children(server.pid) == before, what="only the old workers")


def test_the_watchdog_pings_from_the_arbiter_loop(serve, notify_socket):
    server = serve("tests.apps:hello", env={"NOTIFY_SOCKET": notify_socket.name,
                                            "WATCHDOG_USEC": "200000"})
    ready = notify_socket.wait("READY")
    # Every 0.1 s, though nothing else wakes the arbiter: its sleep ends in time for it.
    wait_until(lambda: notify_socket.count("WATCHDOG", server.pid, ready) >= 10,
               what="ten watchdog pings")
    assert {pid for pid, _ in notify_socket.poll()} == {server.pid}


@pytest.mark.process
def test_no_watchdog_when_watchdog_pid_names_another_process(tmp_path, notify_socket):
    """sd_watchdog_enabled(3): WATCHDOG_PID says which process pings (systemd sets it to
    the main PID); one that is not ours means the pings are not ours to send."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}",
           "NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "200000"}
    command = " ".join([*FORKWSGI, "-b", f"127.0.0.1:{port}", "tests.apps:hello"])
    # the shell's own PID is the one exec keeps; its parent's is someone else's
    script = f"WATCHDOG_PID=$PPID exec {command}"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = notify_socket.wait("READY")
        assert get("127.0.0.1", port)[0] == 200
        # The next status line (at least 2 s after READY, when the count changed) comes
        # long after 20 pings would have, were they ours.
        notify_socket.wait("STATUS", ready + 1)
        assert notify_socket.count("WATCHDOG") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc.pid)
        log.close()


def test_an_abstract_notify_socket(serve):
    listener = NotifySocket()  # @name: no file
    try:
        server = serve("tests.apps:hello", env={"NOTIFY_SOCKET": listener.name})
        ready = listener.wait("READY")
        assert listener[ready] == (server.pid, {"READY": "1", "MAINPID": str(server.pid),
                                                "STATUS": listener[ready][1]["STATUS"]})
    finally:
        listener.close()


def test_usr2_fork_hands_mainpid_to_the_new_arbiter(serve, tmp_path, notify_socket):
    """NotifyAccess=main: only the main PID may move MAINPID, so the old arbiter sends
    MAINPID=<new> with READY=1 once the new one's workers are up, and falls silent."""
    pid_path = tmp_path / "forkwsgi.pid"
    server = serve("tests.apps:pid", "-p", str(pid_path), workers=2,
                   env={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "400000"})
    old = server.pid
    ready = notify_socket.wait("READY")
    new_arbiter = []
    try:
        server.signal(signal.SIGUSR2)
        reloading = notify_socket.wait("RELOADING", ready + 1)
        assert notify_socket[reloading][0] == old
        handed = notify_socket.wait("MAINPID", reloading)
        sender, fields = notify_socket[handed]
        new = int(fields["MAINPID"])
        new_arbiter.append(new)
        assert sender == old and new != old and fields["READY"] == "1"
        assert psutil.Process(new).ppid() == old
        assert len(children(new)) == 2  # its workers were up before it was announced
        # From then on the new arbiter speaks (its watchdog), the old one never again.
        wait_until(lambda: notify_socket.count("WATCHDOG", new, handed) >= 3,
                   what="the new arbiter's watchdog pings")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        assert get(server.host, server.port)[0] == 200
        os.kill(new, signal.SIGTERM)
        stopping = notify_socket.wait("STOPPING", handed)
        assert notify_socket[stopping][0] == new
        wait_until(lambda: not psutil.pid_exists(new) or
                   psutil.Process(new).status() == psutil.STATUS_ZOMBIE,
                   what="the new arbiter to exit")
        assert all(pid != old for pid, _ in notify_socket.poll()[handed + 1:])
    finally:
        for pid in new_arbiter:
            kill_tree(pid)


# --- in-place upgrade: same PID ------------------------------------------------------------


def _keep_alive_client(host, port, tally, lock) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    while not tally["stop"]:
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            if response.getheader("Connection") == "close":
                conn.close()
            _count(tally, lock, response.status, body, None)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _count(tally, lock, 0, b"", f"keep-alive: {exc!r}")
    conn.close()


def _new_connection_client(host, port, tally, lock) -> None:
    while not tally["stop"]:
        try:
            status, body = get(host, port)
            _count(tally, lock, status, body, None)
        except (OSError, http.client.HTTPException) as exc:
            _count(tally, lock, 0, b"", f"new connection: {exc!r}")


def _count(tally, lock, status, body, error) -> None:
    with lock:
        if error is None and status == 200:
            tally["ok"] += 1
            tally["served_by"].append(int(body))
        else:
            tally["failed"].append(error or f"status {status}")


@contextlib.contextmanager
def load(host: str, port: int):
    """Two keep-alive clients and two that connect anew for every request, until the end."""
    tally = {"ok": 0, "failed": [], "served_by": [], "stop": False}
    lock = threading.Lock()
    threads = [threading.Thread(target=client, args=(host, port, tally, lock), daemon=True)
               for client in (_keep_alive_client, _keep_alive_client,
                              _new_connection_client, _new_connection_client)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: tally["ok"] >= 50, what="the load to get going")
        yield tally
    finally:
        tally["stop"] = True
        for thread in threads:
            thread.join(15)


def test_in_place_upgrade_under_load_keeps_the_pid_and_fails_nothing(serve, notify_socket):
    server = serve("tests.apps:pid", "--upgrade", "in-place", "--graceful-timeout", "10",
                   workers=2,
                   env={"NOTIFY_SOCKET": notify_socket.name})
    arbiter = server.process
    born = arbiter.create_time()
    ready = notify_socket.wait("READY")
    old_workers = children(server.pid)
    assert len(old_workers) == 2
    with load(server.host, server.port) as tally:
        server.signal(signal.SIGUSR2)
        reloading = notify_socket.wait("RELOADING", ready + 1)
        upgraded = notify_socket.wait("READY", reloading)
        assert notify_socket[upgraded][1]["MAINPID"] == str(server.pid)
        wait_until(lambda: len(w := children(server.pid)) == 2 and not w & old_workers,
                   what="two new workers and the old ones gone")
        new_workers = children(server.pid)
        seen = len(tally["served_by"]) + 20  # past any answer the old ones sent just before
        wait_until(lambda: tally["ok"] >= seen + 200, what="requests after the upgrade")
        after = set(tally["served_by"][seen:])
    assert tally["failed"] == [], server.log()[-6000:]
    assert after <= new_workers and after  # the new workers serve, and only they
    assert psutil.Process(server.pid).create_time() == born  # the same process throughout
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() !=
                   psutil.STATUS_ZOMBIE for pid in old_workers)
    assert "Re-executed in place: 2 worker(s)" in server.log()
    assert {pid for pid, _ in notify_socket.poll()} == {server.pid}


V1_APP = """\
def app(environ, start_response):
    start_response('200 OK', [])
    return [b'v1']
"""


def test_in_place_upgrade_is_refused_when_the_new_code_fails_its_check(serve, tmp_path,
                                                                        notify_socket):
    """The exec cannot be undone, so the new code's --check-config runs first: here the
    application does not import, and the running image serves on, untouched."""
    module = tmp_path / "flaky_app.py"
    module.write_text(V1_APP)
    server = serve("flaky_app:app", "--pythonpath", str(tmp_path), "--upgrade", "in-place",
                   workers=2, env={"NOTIFY_SOCKET": notify_socket.name})
    notify_socket.wait("READY")
    wait_until(lambda: server.log().count(" booted (generation 0)") == 2,
               what="both workers to load v1")
    before = children(server.pid)
    module.write_text("raise ImportError('v2 is broken')\n")
    server.signal(signal.SIGUSR2)
    log = server.wait_log("fails --check-config")
    assert "v2 is broken" in log  # the check's own error, in the server's log
    assert "re-executing in place" not in log
    assert notify_socket.find("RELOADING") is None  # nothing began, so nothing to end
    assert get(server.host, server.port) == (200, b"v1")
    assert children(server.pid) == before
    module.write_text(V1_APP.replace("v1", "v2"))  # fixed: the next USR2 goes through
    server.signal(signal.SIGUSR2)
    wait_until(lambda: get(server.host, server.port) == (200, b"v2"), what="v2 served")


def test_in_place_upgrade_whose_workers_cannot_load_keeps_the_old_ones(serve, tmp_path,
                                                                       notify_socket):
    """The check passed, but the new workers cannot load the application (here it fails
    outside --check-config only): the adopted old workers serve on, as after a HUP."""
    module = tmp_path / "flaky_app.py"
    module.write_text(V1_APP)
    server = serve("flaky_app:app", "--pythonpath", str(tmp_path), "--upgrade", "in-place",
                   workers=2, env={"NOTIFY_SOCKET": notify_socket.name})
    ready = notify_socket.wait("READY")
    wait_until(lambda: server.log().count(" booted (generation 0)") == 2,
               what="both workers to load v1")
    before = children(server.pid)
    module.write_text("import sys\n"
                      "if '--check-config' not in sys.argv:\n"
                      "    raise ImportError('v2 is broken in the workers')\n"
                      + V1_APP.replace("v1", "v2"))
    server.signal(signal.SIGUSR2)
    reloading = notify_socket.wait("RELOADING", ready + 1)
    notify_socket.wait("READY", reloading)  # the old generation serves: the upgrade is over
    assert "reload failed" in server.log()
    assert "Re-executed in place: 2 worker(s)" in server.log()
    assert server.process.is_running()
    assert get(server.host, server.port) == (200, b"v1")
    assert children(server.pid) == before


def _listening_inodes(pid: int) -> dict[int, str]:
    """Port -> the socket's inode, for every TCP socket the process listens on."""
    found = {}
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN:
            found[conn.laddr.port] = os.readlink(f"/proc/{pid}/fd/{conn.fd}")
    return found


@pytest.mark.process
def test_socket_activation_survives_an_in_place_upgrade(tmp_path, notify_socket):
    """systemd-socket-activate passes the socket (LISTEN_FDS) and execs forkwsgi on the
    first connection; the in-place upgrade keeps both the PID and that very socket, and
    binds nothing of its own (not 127.0.0.1:8000, the default)."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed")
    port = free_port()
    pythonpath = f"{REPO / 'src'}{os.pathsep}{REPO}"
    cmd = [activate, "-l", f"127.0.0.1:{port}", "-E", f"PYTHONPATH={pythonpath}",
           "-E", "PYTHONUNBUFFERED=1", "-E", f"NOTIFY_SOCKET={notify_socket.name}",
           *FORKWSGI, "--upgrade", "in-place", "-w", "2", "tests.apps:pid"]
    log = open(tmp_path / "activated.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_until(lambda: _answers(port), what="the activated server to answer")
        ready = notify_socket.wait("READY")
        assert notify_socket[ready][0] == proc.pid  # systemd-socket-activate exec'd us
        sockets = _listening_inodes(proc.pid)
        assert list(sockets) == [port]
        old_workers = children(proc.pid)
        proc.send_signal(signal.SIGUSR2)
        upgraded = notify_socket.wait("READY", notify_socket.wait("RELOADING", ready + 1))
        assert notify_socket[upgraded][0] == proc.pid
        wait_until(lambda: len(w := children(proc.pid)) == 2 and not w & old_workers,
                   what="the new workers alone")
        assert get("127.0.0.1", port)[0] == 200
        assert int(get("127.0.0.1", port)[1]) in children(proc.pid)
        assert _listening_inodes(proc.pid) == sockets  # the same socket, and no other
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc.pid)
        log.close()


def _answers(port: int) -> bool:
    try:
        return get("127.0.0.1", port, timeout=5)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


# --- the units --------------------------------------------------------------------------------

# Directives newer than the systemd that verifies them: systemd before 253 warns that it
# ignores them. Nothing else may be reported.
NEWER_THAN_SYSTEMD = {253: (re.compile(r"Failed to parse service type, ignoring: notify-reload"),
                            re.compile(r"Unknown key '?ReloadSignal'? in section"))}


@pytest.mark.process
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    version_line = subprocess.run([analyze, "--version"], capture_output=True, text=True,
                                  timeout=60).stdout.split("\n", 1)[0]
    version = int(re.match(r"systemd (\d+)", version_line).group(1))  # type: ignore[union-attr]
    script = Path(sys.executable).with_name("forkwsgi")
    exec_start = str(script) if script.exists() else f"{sys.executable} -m forkwsgi"
    units = []
    for unit in ("forkwsgi.socket", "forkwsgi.service"):
        text = (UNITS / unit).read_text()
        # The placeholder path must be a real executable for verify: this environment's.
        text = text.replace("/srv/myapp/.venv/bin/forkwsgi", exec_start)
        (tmp_path / unit).write_text(text)
        units.append(str(tmp_path / unit))
    # --man=no: no man pages to look up; --recursive-errors=no: judge these units alone,
    # not the system's own (a container has no systemd running, and no multi-user.target).
    proc = subprocess.run([analyze, "verify", "--man=no", "--recursive-errors=no", *units],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    output = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    tolerated = [pattern for newer, patterns in NEWER_THAN_SYSTEMD.items() if version < newer
                 for pattern in patterns]
    reported = [line for line in output if not any(p.search(line) for p in tolerated)]
    assert reported == [], "\n".join(output)
    if len(reported) == len(output):  # nothing was tolerated: the exit status counts too
        assert proc.returncode == 0, "\n".join(output)


def test_the_service_unit_says_what_the_server_needs():
    service = (UNITS / "forkwsgi.service").read_text()
    settings = dict(line.split("=", 1) for line in service.splitlines()
                    if "=" in line and not line.startswith(("#", " ")))
    assert settings["Type"] == "notify-reload"
    assert settings["ReloadSignal"] == "SIGHUP"
    assert settings["NotifyAccess"] == "main"  # see notify.py: the old arbiter moves MAINPID
    assert "--upgrade in-place" in service
    assert float(settings["TimeoutStopSec"]) > 30  # above the default --graceful-timeout
    assert settings["KillMode"] == "mixed"
    for hardening in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert settings[hardening] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert "RuntimeDirectory" in settings and "WatchdogSec" in settings
