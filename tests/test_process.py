"""The process story, on real processes: arbiter, workers, signals, timeouts.

Each test starts the real CLI, sends real signals, and inspects the process
tree with psutil.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tests.conftest import FORKWSGI, REPO, kill_tree, wait_until

pytestmark = pytest.mark.process


def get(server, path: str = "/", timeout: float = 10.0, close: bool = True) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def titles(procs) -> list[str]:
    return [" ".join(p.cmdline()).strip() for p in procs]


def wait_titles(server, count: int, expected: str) -> list:
    """Workers exist as soon as they fork; their title follows a moment later."""
    return wait_until(lambda: (w := server.wait_workers(count)) and
                      titles(w) == [expected] * count and w, what=f"titles {expected!r}")


@contextmanager
def load(server, threads: int = 4, path: str = "/"):
    """Continuous requests from several threads until the block ends; yields the tallies."""
    tally = {"ok": 0, "failed": [], "stop": False}
    lock = threading.Lock()

    def client() -> None:
        while not tally["stop"]:
            try:
                status, _ = get(server, path)
                ok = status == 200
                error = None if ok else f"status {status}"
            except OSError as exc:
                ok, error = False, repr(exc)
            with lock:
                if ok:
                    tally["ok"] += 1
                else:
                    tally["failed"].append(error)

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    try:
        wait_until(lambda: tally["ok"] >= 20, what="the load to get going")
        yield tally
    finally:
        tally["stop"] = True
        for thread in workers:
            thread.join(15)


def test_serves_the_bundled_example(serve):
    server = serve()
    status, body = get(server)
    assert status == 200
    assert b"forkwsgi" in body


def test_four_workers_with_titles(serve):
    server = serve("tests.apps:pid", workers=4)
    arbiter = server.process
    assert "forkwsgi: arbiter [tests.apps:pid]" in " ".join(arbiter.cmdline())
    workers = wait_titles(server, 4, "forkwsgi: worker [tests.apps:pid]")
    pids = {w.pid for w in workers}
    seen = {int(get(server)[1]) for _ in range(40)}
    assert seen <= pids


def test_name_overrides_the_label(serve):
    server = serve("tests.apps:hello", "-n", "shop")
    assert "forkwsgi: arbiter [shop]" in " ".join(server.process.cmdline())
    assert wait_titles(server, 1, "forkwsgi: worker [shop]")


def test_module_spec_finds_application(serve):
    server = serve("tests.apps")
    assert get(server) == (200, b"application")


def test_ttin_ttou_change_the_count(serve):
    server = serve("tests.apps:pid", workers=2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)  # signals of one kind merge while pending: one at a time
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    assert get(server)[0] == 200


def test_killed_worker_is_replaced(serve):
    server = serve("tests.apps:pid", workers=2)
    victim = server.wait_workers(2)[0]
    victim.kill()
    victim.wait(10)
    workers = wait_until(lambda: (w := server.wait_workers(2)) and victim.pid not in
                         {p.pid for p in w} and w, what="a replacement worker")
    assert victim.pid not in {w.pid for w in workers}
    assert get(server)[0] == 200


def test_crashing_request_is_replaced(serve):
    server = serve("tests.apps:crash", workers=1)
    old = server.wait_workers(1)[0].pid
    with pytest.raises((http.client.HTTPException, OSError)):
        get(server)
    wait_until(lambda: [w for w in server.workers() if w.pid != old], what="a new worker")


def test_hung_request_is_killed_at_timeout_with_its_stack(serve):
    server = serve("tests.apps:slow", "--timeout", "2", workers=2)
    hung = threading.Thread(target=lambda: _swallow(get, server, "/?seconds=60", 30),
                            daemon=True)
    hung.start()
    # meanwhile, other requests keep succeeding on the other worker
    for _ in range(5):
        assert get(server, "/?seconds=0")[0] == 200
    server.wait_log("WORKER TIMEOUT", timeout=30)
    # faulthandler's dump of the hung worker names the app function it is stuck in
    log = server.wait_log(" in slow", timeout=15)
    assert "GET /?seconds=60" in log
    assert "apps.py" in log
    server.wait_workers(2)
    hung.join(30)
    assert get(server, "/?seconds=0")[0] == 200


def test_timeout_kills_the_hung_worker_and_no_other(serve):
    """Requests keep flowing through the kill while SIGCHLD makes the arbiter read the
    scoreboard as often as it can: a read that catches a worker mid-write must never look
    like a missed heartbeat (a healthy worker killed, its request lost)."""
    server = serve("tests.apps:slow", "--timeout", "2", workers=2)
    hung = threading.Thread(target=lambda: _swallow(get, server, "/?seconds=60", 30),
                            daemon=True)
    hung.start()
    stop = threading.Event()

    def poke():
        while not stop.wait(0.001):
            with contextlib.suppress(ProcessLookupError):
                server.signal(signal.SIGCHLD)

    poker = threading.Thread(target=poke, daemon=True)
    poker.start()
    try:
        statuses = []
        for _ in range(400):  # about 5 s of 10 ms requests, well past the 2 s timeout
            statuses.append(get(server, "/?seconds=0.01")[0])
    finally:
        stop.set()
        poker.join(5)
    assert statuses == [200] * len(statuses)
    log = server.wait_log("WORKER TIMEOUT", timeout=30)
    assert log.count("WORKER TIMEOUT") == 1, log


def _holder(server, client: socket.socket):
    """The worker holding the server side of ``client``, or None."""
    port = client.getsockname()[1]
    for worker in server.workers():
        with contextlib.suppress(psutil.Error):
            if any(c.raddr and c.raddr[1] == port for c in worker.net_connections("tcp")):
                return worker
    return None


def test_a_connection_whose_request_is_late_is_not_held_by_a_busy_worker(serve):
    """A worker that accepted a connection before its request arrived would keep it
    unserved through the next request it takes. The listener defers accept until the
    first bytes are in, so the late request goes to whichever worker is free. Each round
    races the two connections afresh."""
    for _ in range(5):
        server = serve("tests.apps:slow", workers=2)
        late = server.connect()
        hung = server.connect()
        hung.sendall(b"GET /?seconds=60 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda s=server, c=hung: _holder(s, c), what="a worker to take the hung request")
        late.sendall(b"GET /?seconds=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := late.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")
        late.close()
        hung.close()
        server.kill_tree()


def _swallow(func, *args):
    try:
        func(*args)
    except (OSError, http.client.HTTPException):
        pass


def test_hup_under_load_fails_nothing(serve):
    server = serve("tests.apps:pid", "--graceful-timeout", "10", workers=2)
    before = {w.pid for w in server.wait_workers(2)}
    with load(server) as tally:
        server.signal(signal.SIGHUP)
        wait_until(lambda: (w := server.workers()) and len(w) == 2 and
                   not ({p.pid for p in w} & before), what="a new generation")
        start = tally["ok"]
        wait_until(lambda: tally["ok"] >= start + 50, what="requests after the reload")
    assert tally["failed"] == []
    assert server.process.is_running()


def test_a_burst_of_hups_starts_one_generation_at_a_time(serve):
    server = serve("tests.apps:pid", workers=2)
    before = {w.pid for w in server.wait_workers(2)}
    peak = 0

    def count() -> list:
        nonlocal peak
        workers = server.workers()
        peak = max(peak, len(workers))
        return workers

    with load(server, threads=2) as tally:
        for _ in range(10):
            server.signal(signal.SIGHUP)
            time.sleep(0.01)  # spaced so the arbiter wakes for each: a burst, not a batch
            count()
        wait_until(lambda: len(w := count()) == 2 and not {p.pid for p in w} & before,
                   what="one generation of two new workers")
        start = tally["ok"]
        wait_until(lambda: tally["ok"] >= start + 20, what="requests after the reloads")
    # Before: every HUP forked a generation beside the others (22 processes for -w 2).
    # Now the old generation serves while at most one new one boots (plus workers being
    # killed, reaped at the arbiter's next wake-up).
    assert peak <= 6, peak
    assert tally["failed"] == []
    assert "restarting it" in server.log()
    assert server.process.is_running()


def successor_of(server):
    """The new arbiter a USR2 started, once it has both its workers up."""

    def found():
        for child in server.process.children():
            if "arbiter" in " ".join(child.cmdline()) and len(
                    [c for c in child.children() if c.status() != psutil.STATUS_ZOMBIE]) == 2:
                return child
        return None

    return wait_until(found, what="the new arbiter and its workers")


def answer_from(server, pids: set[int]) -> str | None:
    """The Connection field of a keep-alive response from one of ``pids`` (the pid app)."""

    def ask():
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            if int(resp.read()) in pids:
                return [resp.getheader("Connection")]
            return None
        finally:
            conn.close()

    return wait_until(ask, what="an answer from one of the workers asked for")[0]


def test_usr2_then_term_old_arbiter_fails_nothing(serve, tmp_path):
    pid_path = tmp_path / "forkwsgi.pid"
    server = serve("tests.apps:pid", "-p", str(pid_path), "--graceful-timeout", "10", workers=2)
    olds = {w.pid for w in server.wait_workers(2)}
    new_arbiter = []
    try:
        with load(server) as tally:
            server.signal(signal.SIGUSR2)
            child = successor_of(server)
            new_arbiter.append(child)
            assert (tmp_path / "forkwsgi.pid.oldbin").exists()
            # The old workers are on their way out: they answer Connection: close, so the
            # TERM finds no client about to reuse a connection; the new ones keep alive.
            assert answer_from(server, olds) == "close"
            assert answer_from(server, {c.pid for c in child.children()}) is None
            server.signal(signal.SIGTERM)
            assert server.wait_exit(30) == 0
            start = tally["ok"]
            wait_until(lambda: tally["ok"] >= start + 50, what="requests to the new arbiter")
        assert tally["failed"] == []
        assert int(pid_path.read_text()) == child.pid
        assert not (tmp_path / "forkwsgi.pid.oldbin").exists()
    finally:
        for proc in new_arbiter:
            kill_tree(proc.pid)


def test_usr2_whose_new_arbiter_exits_gives_the_old_workers_keep_alive_back(serve):
    server = serve("tests.apps:pid", workers=2)
    olds = {w.pid for w in server.wait_workers(2)}
    server.signal(signal.SIGUSR2)
    child = successor_of(server)
    try:
        assert answer_from(server, olds) == "close"
        child.send_signal(signal.SIGTERM)  # the new arbiter stops: the old one carries on
        server.wait_log("exited; this one carries on")
        # Within a tick of each worker's, the mark taken back shows.
        wait_until(lambda: all(answer_from(server, olds) is None for _ in range(4)),
                   what="keep-alive again from the old workers")
    finally:
        kill_tree(child.pid)


def test_term_lets_requests_in_flight_finish(serve):
    server = serve("tests.apps:slow", "--graceful-timeout", "20", workers=3)
    results = []

    def slow_request():
        try:
            results.append(get(server, "/?seconds=1.5", timeout=30))
        except (OSError, http.client.HTTPException) as exc:
            results.append(exc)

    threads = [threading.Thread(target=slow_request) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: _busy(server) == 3, what="3 requests in the workers")
    server.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert server.wait_exit(30) == 0
    assert [r[0] if isinstance(r, tuple) else r for r in results] == [200, 200, 200]


def _busy(server) -> int:
    """Client connections the workers hold (the slow app sleeps: no CPU to look at)."""
    count = 0
    for worker in server.workers():
        try:
            conns = worker.net_connections(kind="tcp")
        except psutil.Error:
            continue
        count += sum(c.status == psutil.CONN_ESTABLISHED for c in conns)
    return count


def test_max_requests_recycles_workers(serve):
    """The worker past its budget serves on until its replacement is up, then leaves: one
    worker serves throughout, and every request gets its answer."""
    server = serve("tests.apps:pid", "--max-requests", "5", workers=1)
    (first,) = server.workers()
    pids: set[int] = set()

    def replaced():
        pids.add(int(get(server)[1]))
        return len(pids) >= 2

    wait_until(replaced, what="a second worker to serve")
    assert first.pid in pids
    server.wait_log(f"worker {first.pid} exited: recycled after --max-requests")
    assert "reached max_requests (5 requests)" in server.log()
    server.wait_workers(1)


def test_an_app_calling_sys_exit_3_is_not_taken_for_a_boot_failure(serve):
    """3 is the status of a worker that could not load the app; the same number from the
    app's own sys.exit() after boot only costs that worker, which is replaced."""
    server = serve("tests.apps:exit_with", workers=1)
    before = server.wait_workers(1)[0].pid
    with pytest.raises((OSError, http.client.HTTPException)):
        get(server, "/?code=3")
    wait_until(lambda: [w.pid for w in server.workers()] not in ([], [before]),
               what="a replacement worker")
    assert server.process.is_running()
    assert "failed to boot" not in server.log()


def test_app_import_error_stops_without_respawning(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.run([*FORKWSGI, "-b", "127.0.0.1:0", "-w", "3", "tests.apps_broken:app"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    output = proc.stderr + proc.stdout
    assert "tests.apps_broken" in output
    assert "this_module_does_not_exist" in output
    assert output.count("failed to load the application") <= 3


@pytest.mark.parametrize("body", ["import os\nos._exit(1)\n",
                                  "import ctypes\nctypes.string_at(0)\n"],
                         ids=["exit-at-import", "segfault-at-import"])
def test_a_worker_that_dies_while_booting_stops_the_server(tmp_path, body):
    """Not only an ImportError: any death before the worker's loop (a crash, an exit at
    import time) stops the arbiter instead of forking replacements in a loop."""
    (tmp_path / "dies_at_import.py").write_text(body + "app = None\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}"}
    proc = subprocess.run([*FORKWSGI, "-b", "127.0.0.1:0", "-w", "3", "dies_at_import:app"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    output = proc.stderr + proc.stdout
    assert proc.returncode != 0, output
    assert "failed to boot" in output
    assert output.count("failed to boot") <= 3


def test_preload_import_error_is_reported_before_forking(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.run([*FORKWSGI, "--preload", "-b", "127.0.0.1:0", "tests.apps_broken:app"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "this_module_does_not_exist" in proc.stderr + proc.stdout


def connection_field(server) -> str | None:
    """The Connection field of a keep-alive request's response (None: none sent)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("Connection")
    finally:
        conn.close()


def test_hup_warns_the_old_workers_clients_before_it_retires_them(serve, tmp_path):
    module = tmp_path / "slow_boot_app.py"
    go = tmp_path / "go"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Length', '2')])\n"
                      "    return [b'v1']\n")
    server = serve("slow_boot_app:app", "--pythonpath", str(tmp_path), workers=1)
    (old,) = server.wait_workers(1)
    wait_until(lambda: " booted (generation 0)" in server.log(), what="v1 loaded")
    assert connection_field(server) is None  # HTTP/1.1 keep-alive: no field
    # The new generation's import waits for the test (bounded, should the test die).
    module.write_text("import os, time\n"
                      f"for _ in range(1200):\n"
                      f"    if os.path.exists({str(go)!r}):\n"
                      "        break\n"
                      "    time.sleep(0.05)\n"
                      "def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Length', '2')])\n"
                      "    return [b'v2']\n")
    server.signal(signal.SIGHUP)
    # While the new generation loads, the old worker serves, and says it will close.
    wait_until(lambda: connection_field(server) == "close", what="Connection: close")
    assert old.is_running()
    go.write_text("")
    wait_until(lambda: get(server) == (200, b"v2"), what="the new generation serving")
    wait_until(lambda: not old.is_running(), what="the old worker gone")
    assert connection_field(server) is None


def test_hup_with_a_broken_app_keeps_the_old_workers(serve, tmp_path):
    module = tmp_path / "flaky_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [])\n"
                      "    return [b'v1']\n")
    server = serve("flaky_app:app", "--pythonpath", str(tmp_path), workers=2)
    before = {w.pid for w in server.wait_workers(2)}
    # Both workers must have imported v1 before it changes: one still importing would
    # load v2, fail to boot, and its replacement (which fails too) stops the server.
    wait_until(lambda: server.log().count(" booted (generation 0)") == 2,
               what="both workers to load v1")
    module.write_text("raise ImportError('v2 is broken')\n")
    server.signal(signal.SIGHUP)
    server.wait_log("reload failed", timeout=30)
    assert get(server) == (200, b"v1")
    wait_until(lambda: {w.pid for w in server.workers()} == before, what="only the old workers")
    # They were told they would be replaced; the failed reload takes it back, and their
    # keep-alive returns (within a tick of each worker's).
    wait_until(lambda: all(connection_field(server) is None for _ in range(4)),
               what="keep-alive again")


def test_winch_stops_workers_and_hup_brings_them_back(serve):
    server = serve("tests.apps:pid", workers=2)
    server.signal(signal.SIGWINCH)
    server.wait_workers(0)
    assert server.process.is_running()
    server.signal(signal.SIGHUP)
    server.wait_workers(2)
    assert get(server)[0] == 200


def test_pidfile_written_and_removed(serve, tmp_path):
    pid_path = tmp_path / "run" / "app.pid"
    pid_path.parent.mkdir()
    server = serve("tests.apps:hello", "-p", str(pid_path))
    assert int(pid_path.read_text()) == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert not pid_path.exists()


def test_quit_is_a_quick_stop(serve):
    server = serve("tests.apps:slow", workers=1)
    threading.Thread(target=lambda: _swallow(get, server, "/?seconds=60", 30), daemon=True).start()
    wait_until(lambda: _busy(server) == 1, what="a busy worker")
    workers = server.workers()
    server.signal(signal.SIGQUIT)
    assert server.wait_exit(15) == 0
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PID namespaces are Linux")
def test_pid_1_reaps_orphans_and_stops_on_term(tmp_path):
    from tests.conftest import free_port

    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot create a PID namespace here")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    log = open(tmp_path / "pid1.log", "wb")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *FORKWSGI, "-b",
                             f"127.0.0.1:{port}", "-w", "2", "tests.apps:spawn_orphan"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        unshare = psutil.Process(proc.pid)
        arbiter = wait_until(lambda: unshare.children() and unshare.children()[0],
                             what="the arbiter")
        wait_until(lambda: len(arbiter.children()) == 2, what="two workers")

        target = _loopback(port)
        wait_until(lambda: _try_get(target), what="the server to answer")
        for _ in range(5):
            assert get(target)[0] == 200

        def no_zombies():
            try:
                kids = arbiter.children()
                return all(k.status() != psutil.STATUS_ZOMBIE for k in kids) and len(kids) == 2
            except psutil.NoSuchProcess:  # an orphan went away while we looked
                return False

        wait_until(no_zombies, what="orphans reaped by PID 1")
        arbiter.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            _swallow(p.kill)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def _loopback(port: int) -> SimpleNamespace:
    """What get() needs to reach a server this test started without the serve fixture."""
    return SimpleNamespace(host="127.0.0.1", port=port)


def _try_get(target) -> bool:
    try:
        return get(target)[0] == 200
    except OSError:
        return False


def test_usr1_reopens_the_access_log(serve, tmp_path):
    access = tmp_path / "access.log"
    server = serve("tests.apps:hello", "--access-logfile", str(access), workers=2)
    assert get(server, "/before")[0] == 200
    wait_until(lambda: access.exists() and "/before" in access.read_text(), what="a log line")
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(access.exists, what="the access log to be reopened")
    # every worker reopens on its own: ask until both have written to the new file
    wait_until(lambda: get(server, "/after")[0] == 200 and "/after" in access.read_text(),
               what="a line in the new file")
    # a request racing the signal may land in either file; once both workers have seen it,
    # every line goes to the new one
    wait_until(lambda: all(get(server, "/settle")[0] == 200 for _ in range(4))
               and "/settle" in access.read_text(), what="the workers to settle")
    for _ in range(10):
        assert get(server, "/later")[0] == 200
    wait_until(lambda: access.read_text().count("/later") == 10, what="ten new lines")
    assert "/later" not in (tmp_path / "access.log.1").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges_after_binding(serve):
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = serve("tests.apps:pid", "-u", "nobody", "-g", str(nobody.pw_gid),
                   cwd=None)
    worker = server.wait_workers(1)[0]
    wait_until(lambda: worker.uids().real == nobody.pw_uid, what="the worker to switch user")
    assert worker.gids().real == nobody.pw_gid
    assert server.process.uids().real == 0  # the arbiter keeps root to bind and signal
    assert get(server)[0] == 200


def test_env_and_chdir(serve, tmp_path):
    (tmp_path / "here_app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [(os.getcwd() + '|' + os.environ['GREETING']).encode()]\n")
    server = serve("here_app:app", "--chdir", str(tmp_path), "-e", "GREETING=hi")
    assert get(server) == (200, f"{tmp_path}|hi".encode())


def test_every_hook_runs_in_the_right_process(serve, tmp_path):
    record = tmp_path / "hooks.log"
    conf = tmp_path / "conf.py"
    conf.write_text(
        "import os\n"
        f"_RECORD = {str(record)!r}\n"
        "def _note(name):\n"
        "    with open(_RECORD, 'a') as fh:\n"
        "        fh.write(f'{name} {os.getpid()}\\n')\n"
        "def on_starting(arbiter): _note('on_starting')\n"
        "def on_reload(arbiter): _note('on_reload')\n"
        "def when_ready(arbiter): _note('when_ready')\n"
        "def pre_fork(arbiter, worker): _note('pre_fork')\n"
        "def post_fork(arbiter, worker): _note('post_fork')\n"
        "def post_worker_init(worker): _note('post_worker_init')\n"
        "def worker_exit(worker): _note('worker_exit')\n"
        "def pre_request(worker, environ): _note('pre_request')\n"
        "def post_request(worker, environ, status): _note('post_request ' + status[:3])\n"
        "def child_exit(arbiter, worker): _note('child_exit')\n"
        "def on_exit(arbiter): _note('on_exit')\n")
    server = serve("tests.apps:hello", "-c", str(conf), workers=1)
    assert get(server)[0] == 200
    server.signal(signal.SIGHUP)
    wait_until(lambda: "child_exit" in record.read_text(), what="the old worker to be reaped")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    lines = [line.split() for line in record.read_text().splitlines()]
    by_name: dict[str, set[int]] = {}
    for name, *rest in lines:
        by_name.setdefault(name, set()).add(int(rest[-1]))
    arbiter = {server.pid}
    for name in ("on_starting", "when_ready", "pre_fork", "on_reload", "child_exit", "on_exit"):
        assert by_name[name] == arbiter, name
    for name in ("post_fork", "post_worker_init", "worker_exit", "pre_request"):
        assert by_name[name] and not (by_name[name] & arbiter), name
    assert ["post_request", "200"] in [line[:2] for line in lines]


def test_systemd_socket_activation_serves_only_the_passed_socket(tmp_path):
    """LISTEN_FDS/LISTEN_PID as systemd sets them: fd 3 is served, no default bind added."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "LISTEN_FDS": "1"}
    fd = listener.fileno()
    command = " ".join(FORKWSGI) + " tests.apps:hello"
    # the shell puts the socket on fd 3 and sets LISTEN_PID to the pid exec keeps
    script = f'exec 3<&{fd}; exec {fd}<&-; LISTEN_PID=$$ exec {command}'
    log = open(tmp_path / "activated.log", "wb")
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, pass_fds=[fd],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    listener.close()
    try:
        target = _loopback(port)
        wait_until(lambda: _try_get(target), what="the activated socket to answer")
        arbiter = psutil.Process(proc.pid)
        ports = {c.laddr.port for c in arbiter.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN}
        assert ports == {port}  # not 127.0.0.1:8000 as well
        arbiter.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc.pid)
        log.close()


# --- settings that act on the process tree --------------------------------------------------


@pytest.mark.parametrize("signals", [["TERM", "TERM"], ["INT"]], ids=["second-term", "int"])
def test_second_term_and_int_are_quick_stops(serve, signals):
    """A graceful stop would wait the 60 s request out; these must not."""
    server = serve("tests.apps:slow", "--graceful-timeout", "120", workers=1)
    threading.Thread(target=lambda: _swallow(get, server, "/?seconds=60", 90),
                     daemon=True).start()
    wait_until(lambda: _busy(server) == 1, what="a busy worker")
    workers = server.workers()
    for name in signals:
        server.signal(getattr(signal, "SIG" + name))
        if name == "TERM" and len(signals) > 1:
            server.wait_log("Graceful stop")
    assert server.wait_exit(20) == 0
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "per-worker"])
def test_preload_loads_the_app_once_in_the_arbiter(serve, preload):
    server = serve("tests.apps:loaded_in", *(["--preload"] if preload else []), workers=2)
    loaded, served = map(int, get(server)[1].split())
    assert served in {w.pid for w in server.workers()}
    assert loaded == (server.pid if preload else served)


def test_max_requests_jitter_spreads_the_recycling(serve):
    """Each worker's budget is between max_requests and max_requests + jitter."""
    server = serve("tests.apps:pid", "--max-requests", "2", "--max-requests-jitter", "3",
                   workers=1)

    def budgets():
        get(server)
        found = re.findall(r"reached max_requests \((\d+) requests\)", server.log())
        return [int(n) for n in found] if len(found) >= 8 else None

    spent = wait_until(budgets, timeout=60, what="8 workers to reach their budgets")
    assert all(2 <= n <= 5 for n in spent), spent
    assert len(set(spent)) > 1, spent  # jitter: not every worker the same budget


def test_fd_bind_serves_an_inherited_socket(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    log = open(tmp_path / "fd.log", "wb")
    proc = subprocess.Popen([*FORKWSGI, "-b", f"fd://{fd}", "tests.apps:hello"], cwd=REPO,
                            env=env, pass_fds=[fd], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    listener.close()
    try:
        target = _loopback(port)
        wait_until(lambda: _try_get(target), what="the inherited socket to answer")
        assert get(target) == (200, b"Hello, world!")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc.pid)
        log.close()


def test_umask_applies_to_the_server_and_its_unix_socket(serve, tmp_path):
    path = tmp_path / "app.sock"
    server = serve("tests.apps:hello", "--umask", "077", "-b", f"unix:{path}", bind=False,
                   wait=False)
    wait_until(path.exists, what="the unix socket")
    server.wait_workers(1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666  # the socket's is --socket-mode's
    for proc in [server.process, *server.workers()]:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "Umask:\t0077" in status


def test_the_console_script_runs():
    script = Path(sys.executable).with_name("forkwsgi")
    if not script.exists():
        pytest.skip("forkwsgi is not installed in this environment (pip install -e .)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "forkwsgi" in proc.stdout


def test_a_short_timeout_never_kills_idle_workers(serve):
    """Idle workers heartbeat several times per --timeout, however short it is. Watched
    over a bounded window of requests spread across several timeouts."""
    server = serve("tests.apps:hello", "--timeout", "0.5", workers=2)
    before = {w.pid for w in server.workers()}
    for _ in range(15):
        assert get(server)[0] == 200
        time.sleep(0.1)  # idle gaps between requests: what this test is about
    assert "WORKER TIMEOUT" not in server.log()
    assert {w.pid for w in server.workers()} == before


# --- signals that cross a stop or a fork -------------------------------------------------------


def test_hup_during_a_graceful_stop_is_ignored(serve):
    server = serve("tests.apps:slow", "--graceful-timeout", "120", workers=1)
    results = []
    thread = threading.Thread(target=lambda: results.append(get(server, "/?seconds=2", 30)))
    thread.start()
    wait_until(lambda: _busy(server) == 1, what="a busy worker")
    server.signal(signal.SIGTERM)
    server.wait_log("Graceful stop")
    server.signal(signal.SIGHUP)
    server.wait_log("HUP ignored: the server is stopping")
    assert len(server.workers()) <= 1  # no new generation started
    thread.join(30)
    assert results and results[0][0] == 200
    assert server.wait_exit(30) == 0  # not after the 120 s graceful timeout


def test_term_right_after_hup_reaches_the_workers_just_forked(serve):
    """The new workers are forked by the HUP and signalled by the TERM in the same breath:
    the TERM must wait for their handlers, not be lost on the arbiter's (which left them
    running until the graceful timeout) or echoed back into the arbiter."""
    server = serve("tests.apps:hello", "--graceful-timeout", "120", workers=2)
    os.kill(server.pid, signal.SIGHUP)
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert "Quick stop" not in server.log()


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT, signal.SIGTERM],
                         ids=["quit", "int", "term"])
def test_a_stop_while_workers_import_the_app_exits_0(serve, tmp_path, sig):
    (tmp_path / "slow_import.py").write_text(
        "import time\ntime.sleep(5)\n\ndef app(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'late']\n")
    server = serve("slow_import:app", "--pythonpath", str(tmp_path), workers=2, wait=False)
    wait_until(lambda: len(server.workers()) == 2, what="two workers importing the app")
    server.signal(sig)
    assert server.wait_exit(60) == 0, server.log()
    assert "failed to boot" not in server.log()


def test_recycling_under_keep_alive_load_fails_no_request(serve):
    """Clients that reuse their connections while workers retire (--max-requests): a
    leaving worker answers the next request of each idle connection with Connection:
    close instead of dropping the connection under a request on its way."""
    server = serve("tests.apps:pid", "--max-requests", "20", workers=2)
    failures: list[str] = []
    served_by: set[bytes] = set()
    done = threading.Event()

    def client():
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        for _ in range(5000):
            if done.is_set():
                break
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                served_by.add(response.read())
                if response.getheader("Connection") == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                conn.close()
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: server.log().count("exited: recycled after --max-requests") >= 4,
                   timeout=60, what="four workers recycled")
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    assert len(served_by) > 3  # several generations of workers served
    assert failures == []
