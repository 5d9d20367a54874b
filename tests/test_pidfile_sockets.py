"""The pidfile and the unix socket files, on real servers: who may write the pidfile,
who removes it, and who may connect to a unix socket.

Each test starts the real CLI; processes are inspected with psutil and files with
os.stat. Connecting as another user forks a child that drops to ``nobody``.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.conftest import FORKWSGI, REPO, kill_tree, wait_until

APP = "tests.apps:hello"
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

pytestmark = pytest.mark.process

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners and users")


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[ERROR]" in line]


def assert_one_line_error(server, expected: str) -> None:
    log = server.log()
    assert "Traceback" not in log, log
    assert [line for line in error_lines(log) if expected in line] == error_lines(log), log
    assert len(error_lines(log)) == 1, log


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORKWSGI_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return subprocess.run([*FORKWSGI, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


# --- the pidfile: a directory it cannot be written in ----------------------------------------


@pytest.mark.parametrize("where, reason", [
    ("missing/app.pid", "No such file or directory"),
    ("a-file/app.pid", "Not a directory"),
])
def test_an_unwritable_pidfile_is_one_line_and_exit_1(serve, tmp_path, where, reason):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / where
    server = serve(APP, "-p", str(path), wait=False)
    assert server.wait_exit() == 1
    assert_one_line_error(server, f"cannot write pidfile {path} (setting 'pid'): {reason}")
    assert "Listening at" not in server.log()


def test_check_config_catches_an_unwritable_pidfile(tmp_path):
    path = tmp_path / "missing" / "app.pid"
    result = run_cli("--check-config", "-p", str(path), APP)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"forkwsgi: error: cannot write pidfile {path} (setting 'pid'): "
        "No such file or directory"]
    assert run_cli("--check-config", "-p", str(tmp_path / "app.pid"), APP).returncode == 0
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


def test_check_config_passes_beside_the_running_server(serve, tmp_path):
    """A check before a reload or an upgrade finds the pidfile of the server it is for."""
    path = tmp_path / "app.pid"
    server = serve(APP, "-p", str(path))
    result = run_cli("--check-config", "-p", str(path), APP)
    assert result.returncode == 0, result.stderr
    assert int(path.read_text()) == server.pid


# --- the pidfile: a running arbiter owns it, a stale one is replaced -----------------------


def test_a_second_server_on_a_live_pidfile_is_refused_and_leaves_it(serve, tmp_path):
    path = tmp_path / "app.pid"
    first = serve(APP, "-p", str(path))
    assert int(path.read_text()) == first.pid
    second = serve(APP, "-p", str(path), wait=False)
    assert second.wait_exit() == 1
    assert_one_line_error(second, f"pidfile {path} (setting 'pid') names a running forkwsgi "
                                  f"arbiter, pid {first.pid}")
    assert "Listening at" not in second.log()  # refused before it bound anything
    assert int(path.read_text()) == first.pid  # its exit removed nothing of the first's
    assert first.process.is_running() and first.request(REQUEST).startswith(b"HTTP/1.1 200")
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert not path.exists()


def test_a_pidfile_of_a_dead_process_is_replaced(serve, tmp_path):
    path = tmp_path / "app.pid"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path.write_text(f"{gone.pid}\n")
    server = serve(APP, "-p", str(path))
    assert int(path.read_text()) == server.pid
    assert f"replacing stale pidfile {path}: pid {gone.pid}" in server.log()


def test_a_pidfile_naming_another_program_is_replaced(serve, tmp_path):
    """The PID was reused: a live process, but not a forkwsgi arbiter."""
    path = tmp_path / "app.pid"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path.write_text(f"{other.pid}\n")
        server = serve(APP, "-p", str(path))
        assert int(path.read_text()) == server.pid
        assert f"replacing stale pidfile {path}: pid {other.pid}" in server.log()
        assert other.poll() is None  # left alone
    finally:
        other.kill()
        other.wait()


def test_a_pidfile_naming_a_worker_of_another_server_is_replaced(serve, tmp_path):
    other = serve(APP)
    worker = wait_until(lambda: [w for w in other.workers()
                                 if "forkwsgi: worker" in " ".join(w.cmdline())],
                        what="a titled worker")[0]
    path = tmp_path / "app.pid"
    path.write_text(f"{worker.pid}\n")
    server = serve(APP, "-p", str(path))
    assert int(path.read_text()) == server.pid
    assert worker.is_running()


# --- unix sockets: mode and group ------------------------------------------------------------


@pytest.fixture
def sock_dir():
    """A short (sun_path holds 108 bytes), world-traversable directory for sockets."""
    with tempfile.TemporaryDirectory(prefix="fw-") as directory:
        os.chmod(directory, 0o755)
        yield Path(directory)


def serve_unix(serve, path: Path, *args: str):
    server = serve(APP, "-b", f"unix:{path}", *args, bind=False, wait=False)

    def accepting() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"forkwsgi exited early:\n{server.log()}")
        with socket.socket(socket.AF_UNIX) as sock:
            return sock.connect_ex(str(path)) == 0

    wait_until(accepting, what="the unix socket to accept")
    server.wait_workers(1)
    return server


def get_unix(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(REQUEST)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_a_unix_socket_is_connectable_by_all_by_default(serve, sock_dir):
    path = sock_dir / "app.sock"
    serve_unix(serve, path)
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o666
    assert get_unix(path).startswith(b"HTTP/1.1 200")


def test_socket_mode_sets_the_unix_socket_permissions(serve, sock_dir):
    path = sock_dir / "app.sock"
    serve_unix(serve, path, "--socket-mode", "660")
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == os.getegid()


@needs_root
@pytest.mark.parametrize("by", ["name", "gid"])
def test_socket_group_sets_the_unix_socket_group(serve, sock_dir, by):
    group = grp.getgrnam("daemon")
    path = sock_dir / "app.sock"
    serve_unix(serve, path, "--socket-mode", "660", "--socket-group",
               group.gr_name if by == "name" else str(group.gr_gid))
    info = path.stat()
    assert info.st_gid == group.gr_gid != os.getegid()
    assert stat.S_IMODE(info.st_mode) == 0o660


def test_the_umask_does_not_change_the_socket_mode(serve, sock_dir):
    path = sock_dir / "app.sock"
    serve_unix(serve, path, "--umask", "077", "--socket-mode", "640")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def connect_as_nobody(path: Path) -> str:
    """The status line a ``nobody`` process gets through ``path``, or its errno name."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                out = get_unix(path).split(b"\r\n", 1)[0]
            except OSError as exc:
                out = errno.errorcode.get(exc.errno or 0, str(exc)).encode()
            os.write(write_end, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        result = reader.read().decode()
    os.waitpid(pid, 0)
    return result


@needs_root
def test_another_user_connects_by_default_and_not_with_mode_600(serve, sock_dir):
    open_path = sock_dir / "open.sock"
    serve_unix(serve, open_path)
    assert connect_as_nobody(open_path) == "HTTP/1.1 200 OK"
    private_path = sock_dir / "private.sock"
    serve_unix(serve, private_path, "--socket-mode", "600")
    assert connect_as_nobody(private_path) == "EACCES"
    assert get_unix(private_path).startswith(b"HTTP/1.1 200")  # the owner still can


def test_a_usr2_successor_keeps_the_inherited_socket_mode(serve, sock_dir):
    """The socket file belongs to whoever created it: the new arbiter adopts, never chmods."""
    path = sock_dir / "app.sock"
    server = serve_unix(serve, path)
    os.chmod(path, 0o600)
    old = server.process
    successors = []
    try:
        server.signal(signal.SIGUSR2)

        def successor():
            for child in old.children():
                with contextlib.suppress(psutil.Error):
                    if "arbiter" in " ".join(child.cmdline()) and [
                            w for w in child.children() if w.status() != psutil.STATUS_ZOMBIE]:
                        return child
            return None

        successors.append(wait_until(successor, what="the new arbiter and its worker"))
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert get_unix(path).startswith(b"HTTP/1.1 200")
    finally:
        for proc in successors:
            kill_tree(proc.pid)


@pytest.mark.parametrize("args, message", [
    (["--socket-mode", "0999"], "invalid value for setting 'socket_mode': expected an octal "
                                "mode such as 660, got '0999'"),
    (["--socket-mode", "1777"], "invalid value for setting 'socket_mode': must be between 000 "
                                "and 777, got 0o1777"),
    (["--socket-group", "no-such-group-xyz"], "invalid value for setting 'socket_group': no "
                                              "such group 'no-such-group-xyz'"),
])
def test_bad_socket_settings_are_one_line_and_exit_2(args, message):
    result = run_cli(*args, "--check-config", APP)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"forkwsgi: error: {message}"]


def test_tcp_listeners_set_nodelay_once_for_every_connection_they_accept(tmp_path):
    """TCP_NODELAY goes on the listening socket, which Linux copies to each accepted
    connection: the worker then makes no setsockopt call per connection."""
    from forkwsgi.listeners import close_listeners, open_listeners

    listeners = open_listeners(["127.0.0.1:0", f"unix:{tmp_path / 'app.sock'}"], 16)
    try:
        tcp, unix = listeners
        assert tcp.nodelay and not unix.nodelay
        with socket.create_connection(tcp.sock.getsockname()) as client:
            client.sendall(b"x")  # deferred accept hands it over once bytes are here
            wait_until(lambda: _acceptable(tcp.sock), what="the connection to be accepted")
            accepted, _ = tcp.sock.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        close_listeners(listeners)


def _acceptable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])
