"""The control endpoint: a small HTTP server inside the arbiter's own loop.

Owns: where the control socket lives (``--control-bind``, else a unix
socket next to the pidfile or in the runtime directory, mode 0600), its
non-blocking listening socket and the few connections on it, and the HTTP
around the answers: one ``GET`` (or ``HEAD``) per connection, answered with
``Connection: close``. The arbiter gives the routes (``/livez``,
``/readyz``, ``/metrics``, ``/status``) as a function of the path; this
module only moves bytes. Because the arbiter serves it between signals and
deadlines, it answers while every worker is busy or hung.

Must never: block the arbiter (every socket here is non-blocking, a client
gets ``CLIENT_TIMEOUT`` seconds to send its request and read the answer),
hold more than ``MAX_CLIENTS`` connections, or be reachable beyond the
address configured: the default is a unix socket only its owner can open.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable

from forkwsgi.listeners import ListenerError, parse_bind

log = logging.getLogger("forkwsgi.error")

CLIENT_TIMEOUT = 5.0  # seconds a control client has to send its request and read the answer
MAX_REQUEST = 8192  # bytes of a control request head
MAX_CLIENTS = 32
SOCKET_MODE = 0o600
SUFFIX = ".control.sock"
DISABLED = ("", "none", "off")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}

# What the arbiter answers: (status, content type, body) for a method and a path (with
# its query string).
Routes = Callable[[str, str], tuple[int, str, bytes]]


def runtime_dir() -> str:
    """Where a control socket goes when there is no pidfile to put it next to."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        base = "/run" if os.geteuid() == 0 and os.access("/run", os.W_OK) else \
            tempfile.gettempdir()
    return os.path.join(base, f"forkwsgi-{os.geteuid()}" if base == tempfile.gettempdir()
                        else "forkwsgi")


def default_path(pidfile: str | None, pid: int) -> str:
    """The control socket's path when --control-bind is not given."""
    if pidfile:
        stem, ext = os.path.splitext(os.path.abspath(pidfile))
        return (stem if ext == ".pid" else stem + ext) + SUFFIX
    return os.path.join(runtime_dir(), f"{pid}{SUFFIX}")


def address(setting: str | None, pidfile: str | None, pid: int) -> str | None:
    """The bind address (``unix:PATH`` or ``HOST:PORT``), or None when turned off."""
    if setting is None:
        return "unix:" + default_path(pidfile, pid)
    if setting.strip().lower() in DISABLED:
        return None
    return setting


class ControlServer:
    """The arbiter's end: ``read_fds``/``write_fds`` for its select, ``ready`` for events."""

    def __init__(self, bind: str, routes: Routes) -> None:
        self.bind = bind
        self.routes = routes
        self.sock: socket.socket | None = None
        self.path: str | None = None
        self.inode = 0
        self.clients: dict[int, _Client] = {}

    def open(self) -> None:
        """Bind and listen; raises ListenerError (with the setting's name) on failure."""
        kind, where = parse_bind(self.bind)
        if kind == "fd":
            raise ListenerError(f"control_bind '{self.bind}': use unix:PATH or HOST:PORT")
        if kind == "unix":
            sock = self._unix(str(where))
        else:
            host, port = where  # type: ignore[misc]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise ListenerError(f"control_bind '{self.bind}': {exc.strerror}") from None
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock

    def _unix(self, path: str) -> socket.socket:
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ListenerError(f"control_bind 'unix:{path}': {exc.strerror}") from None
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ListenerError(f"control_bind 'unix:{path}': a file that is not a "
                                    "socket is in the way")
            # A stale socket, or the one of the arbiter this one takes over from (USR2): the
            # newest arbiter answers; the old one keeps its descriptor until it leaves.
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~SOCKET_MODE)  # no moment in which others could connect
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ListenerError(f"control_bind 'unix:{path}': {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        self.path = path
        self.inode = os.stat(path).st_ino
        return sock

    def close_inherited(self) -> None:
        """In a forked worker: let go of the arbiter's sockets (the file stays)."""
        for client in self.clients.values():
            client.sock.close()
        self.clients = {}
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.path = None

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.path:
            # Only our own file: after USR2 the path may be the new arbiter's socket.
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
            self.path = None

    # --- the arbiter's loop -----------------------------------------------------------------

    def read_fds(self) -> list[int]:
        if self.sock is None:
            return []
        fds = [fd for fd, c in self.clients.items() if not c.out]
        if len(self.clients) < MAX_CLIENTS:
            fds.append(self.sock.fileno())
        return fds

    def write_fds(self) -> list[int]:
        return [fd for fd, c in self.clients.items() if c.out]

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.clients.values()), default=None)

    def ready(self, readable: list[int], writable: list[int]) -> None:
        """Handle what select reported; then drop clients past their time."""
        listening = self.sock.fileno() if self.sock is not None else -1
        for fd in readable:
            if fd == listening:
                self._accept()
            elif fd in self.clients:
                self._read(self.clients[fd])
        for fd in writable:
            if fd in self.clients:
                self._write(self.clients[fd])
        now = time.monotonic()
        for client in [c for c in self.clients.values() if c.deadline <= now]:
            self._drop(client)

    def _accept(self) -> None:
        try:
            sock, _ = self.sock.accept()  # type: ignore[union-attr]
        except OSError:
            return
        sock.setblocking(False)
        client = _Client(sock, time.monotonic() + CLIENT_TIMEOUT)
        self.clients[sock.fileno()] = client

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        client.buf += data
        end = client.buf.find(b"\r\n\r\n")
        if end < 0:
            end = client.buf.find(b"\n\n")
        if end < 0:
            if len(client.buf) > MAX_REQUEST:
                client.out = _response(400, "text/plain", b"request head too large\n", False)
                self._write(client)
            return
        line = client.buf.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            client.out = _response(400, "text/plain", b"bad request line\n", False)
        elif line[0] not in ("GET", "HEAD"):
            client.out = _response(405, "text/plain", b"GET or HEAD only\n", False)
        else:
            try:
                status, content_type, body = self.routes(line[0], line[1])
            except Exception:
                log.exception("control endpoint: %s %s failed", line[0], line[1])
                status, content_type, body = 500, "text/plain", b"internal error\n"
            client.out = _response(status, content_type, body, line[0] == "HEAD")
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(OSError):
            client.sock.close()


class _Client:
    __slots__ = ("sock", "deadline", "buf", "out")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.out = b""


def _response(status: int, content_type: str, body: bytes, head_only: bool) -> bytes:
    reason = _REASONS.get(status, "Internal Server Error")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


# --- the client side: forkwsgi status / reload / stop / scale -----------------------------


def fetch(where: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``path`` from a control endpoint (``unix:PATH`` or ``HOST:PORT``)."""
    kind, target = parse_bind(where)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET,
                             socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: forkwsgi\r\n"
                     "Connection: close\r\n\r\n".encode())
        raw = b""
        length = None
        while length is None or len(raw) < length:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
            end = raw.find(b"\r\n\r\n")
            if length is None and end >= 0:
                for line in raw[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = end + 4 + int(value)
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(errno.EPROTO, f"not an HTTP answer from {where}") from None
    return status, body
