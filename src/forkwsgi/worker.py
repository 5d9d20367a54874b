"""The worker process: accept, keep-alive, one request at a time.

Owns: everything a worker does after the fork: dropping privileges,
loading the app, its signal handlers, and the connection loop. The loop
multiplexes the listeners, idle keep-alive connections and half-received
heads in one epoll set, and hands a connection to the blocking dispatcher
only once a whole request head is in memory. So a newcomer is accepted on
the next turn of the loop even while many keep-alive clients are busy,
and a slow client (slowloris) costs a dict entry, not the worker.

Must never: be constructed in the arbiter (it is built after fork), or
make a syscall per request that the loop can avoid (liveness goes to the
scoreboard in shared memory).
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import logging
import os
import select
import signal
import socket
import sys
import time

from forkwsgi import scoreboard
from forkwsgi.accesslog import make_access_logger
from forkwsgi.dispatch import CLOSE, KEEP, Dispatcher
from forkwsgi.environ import TrustedPeers, base_environ, connection_environ, trusted_keys
from forkwsgi.http.errors import HTTPError, RequestTimeout
from forkwsgi.http.parser import parse_head
from forkwsgi.response import FileWrapper

log = logging.getLogger("forkwsgi.error")

BOOT_ERROR = 3  # exit status: the app could not be loaded; the arbiter must not respawn
RECV_SIZE = 16384  # a request head (and what is pipelined behind it); bodies are read apart
# One accept per wake-up: a busy worker leaves the next newcomer to an idle one, which
# EPOLLEXCLUSIVE wakes instead (the listener stays readable while connections wait).
ACCEPT_BATCH = 1
TICK = 1.0  # seconds between deadline scans and heartbeats while idle (less if --timeout is)
LINGER_SECONDS = 2.0  # how long a closing client's remaining bytes are read and dropped
RETIRE_GRACE = 1.0  # a leaving worker's idle keep-alive connections: time for a last request
DUMP_SIGNAL = signal.SIGUSR2  # the arbiter asks a hung worker for its stacks with this
# The arbiter blocks these around fork(); the worker unblocks them once its own handlers
# are in place. A signal sent to a worker in between would otherwise be lost on the
# arbiter's handlers, or written into the arbiter's wake-up pipe as if sent to the arbiter.
FORK_SIGNALS = frozenset({signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM,
                          signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                          signal.SIGWINCH, signal.SIGCHLD})

_EPOLLIN = select.EPOLLIN
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class Connection:
    """A client connection while it lives in the worker's epoll set."""

    __slots__ = ("sock", "fd", "buf", "environ", "trusted", "client", "deadline", "fresh")

    def __init__(self, sock: socket.socket, environ: dict, trusted: frozenset, client: str,
                 deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""  # bytes of a request head not yet complete
        self.environ = environ
        self.trusted = trusted
        self.client = client
        self.deadline = deadline
        self.fresh = True  # no request yet: header timeout, not keep-alive timeout


class Worker:
    """Built in the child right after fork; ``run()`` never returns (it exits)."""

    def __init__(self, cfg, listeners, board, slot_index: int, generation: int,
                 arbiter_pid: int, app=None) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.slot = scoreboard.SlotWriter(board, slot_index)
        self.slot_index = slot_index
        self.generation = generation
        self.arbiter_pid = arbiter_pid
        self.pid = os.getpid()
        self.app = app
        self.alive = True
        self.reopen_logs = False
        self.conns: dict[int, Connection] = {}
        self.requests_left = 0
        self.booted = False  # reached the connection loop

    # --- process setup ------------------------------------------------------------------------

    def run(self) -> None:
        status = 0
        try:
            self._setup_process()
            if not self._load_app():
                status = BOOT_ERROR
                return
            self._loop()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            log.exception("worker %s crashed", self.pid)
            status = 1
        finally:
            self._exit(status)

    def _setup_process(self) -> None:
        from forkwsgi import proctitle

        proctitle.set_title("worker", self.cfg)
        self._install_signals()
        _drop_privileges(self.cfg.user, self.cfg.group)

    def _install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        # faulthandler writes from its C handler, so the stacks come out even when the
        # app is stuck in C code and no Python signal handler would ever run.
        faulthandler.register(DUMP_SIGNAL, file=_error_stream(), all_threads=True, chain=False)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)  # what came meanwhile, now

    def _on_term(self, signum, frame) -> None:
        self.alive = False  # graceful: finish the request in hand, then leave

    def _on_quit(self, signum, frame) -> None:
        raise SystemExit(0)

    def _on_usr1(self, signum, frame) -> None:
        self.reopen_logs = True

    def _load_app(self) -> bool:
        if self.app is None:
            from forkwsgi.loader import AppLoadError, load_app

            try:
                self.app = load_app(self.cfg.app)
            except AppLoadError as exc:
                log.error("worker %s failed to load the application: %s", self.pid, exc)
                return False
            except Exception:
                log.exception("worker %s failed to load the application", self.pid)
                return False
        self._call_hook("post_worker_init", self)
        return True

    def _call_hook(self, name: str, *args) -> None:
        hook = getattr(self.cfg, name, None)
        if hook is not None:
            try:
                hook(*args)
            except Exception:
                log.exception("%s hook failed", name)

    def _exit(self, status: int) -> None:
        self._call_hook("worker_exit", self)
        if self.booted:  # one that never reached its loop stays BOOTING: the arbiter stops
            with contextlib.suppress(Exception):
                self.slot.set_state(scoreboard.RETIRING)
        for handler in logging.getLogger("forkwsgi").handlers + logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)

    # --- the connection loop ------------------------------------------------------------------

    def _loop(self) -> None:
        cfg = self.cfg
        dispatcher = Dispatcher(self.app, cfg, self.slot, self, make_access_logger(cfg))
        serve = dispatcher.serve
        limits = dispatcher.limits
        header_timeout = cfg.header_timeout or 3600.0
        keep_alive = cfg.keep_alive
        max_conns = cfg.max_connections
        self.requests_left = _request_budget(cfg.max_requests, cfg.max_requests_jitter)
        trusted_peers = TrustedPeers(cfg.forwarded_allow_ips)
        forwarded = trusted_keys(cfg.forwarded_headers)
        untrusted: frozenset[str] = frozenset()
        script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        multiprocess = cfg.workers > 1
        bases = {}
        for listener in self.listeners:
            base = base_environ(listener.server_name, listener.server_port, multiprocess,
                                script_name)
            base["wsgi.file_wrapper"] = FileWrapper
            base["wsgi.errors"] = sys.stderr
            bases[listener.fileno()] = (listener, base)

        epoll = select.epoll()
        self.epoll = epoll
        # EPOLLEXCLUSIVE: one sleeping worker is woken per new connection, not all of them.
        for fd in bases:
            epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)
        epoll.register(self._wake_r, _EPOLLIN)
        accepting = True
        conns = self.conns
        slot = self.slot
        monotonic = time.monotonic
        wake_r = self._wake_r
        next_tick = 0.0
        # Heartbeats come once a tick while idle: several per --timeout, so an idle worker
        # is never mistaken for a hung one, however short the timeout.
        tick = min(TICK, cfg.timeout / 4) if cfg.timeout else TICK
        self.booted = True
        slot.set_state(scoreboard.IDLE)
        log.info("Worker %s booted (generation %s)", self.pid, self.generation)

        def close(conn: Connection) -> None:
            del conns[conn.fd]
            with contextlib.suppress(OSError):
                conn.sock.close()  # closing the fd also drops it from the epoll set

        lingering: dict[int, tuple[socket.socket, float]] = {}

        def reject(conn: Connection, error: HTTPError) -> None:
            log.debug("rejected a request from %s: %s %s", conn.client, error.status,
                      error.detail)
            try:
                conn.sock.send(dispatcher.error_response(error))
            except OSError:
                close(conn)
                return
            linger_close(conn)

        def linger_close(conn: Connection) -> None:
            """Lingering close, as Apache and nginx do: closing with the client's bytes
            still unread makes the kernel send a RST, which can destroy our last reply in
            the client's receive buffer. Shut our side, discard what still comes for a
            moment, then close."""
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                close(conn)
                return
            del conns[conn.fd]
            lingering[conn.fd] = (conn.sock, monotonic() + LINGER_SECONDS)

        def linger(fd: int) -> None:
            sock, _deadline = lingering[fd]
            try:
                if sock.recv(RECV_SIZE):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            del lingering[fd]
            sock.close()

        def on_data(conn: Connection, buf: bytes) -> None:
            """Parse and serve every complete request in ``buf``; keep the rest."""
            while True:
                try:
                    parsed = parse_head(buf, limits)
                except HTTPError as error:
                    reject(conn, error)
                    return
                if parsed is None:
                    if buf and not conn.buf:
                        conn.deadline = monotonic() + header_timeout  # a new head started
                    conn.buf = buf
                    return
                head, consumed = parsed
                conn.fresh = False
                if self.requests_left:
                    self.requests_left -= 1
                    if self.requests_left == 0:
                        # before serving: the last response must say Connection: close
                        log.info("worker %s reached max_requests; retiring", self.pid)
                        self.alive = False
                after, buf = serve(conn, head, buf[consumed:])
                if after is not KEEP or not self.alive:
                    if after is CLOSE:
                        close(conn)
                    else:  # LINGER, or a worker leaving: the next request may be on its way
                        linger_close(conn)
                    return
                if not buf:
                    conn.buf = b""
                    conn.deadline = monotonic() + keep_alive
                    return

        def drain_idle(conn: Connection) -> None:
            """Leaving: serve a request already here; else give the idle connection a short
            grace for its next one (answered with Connection: close), then close it quietly.
            Closing it at once races a client that is sending that request right now: it
            sees its connection dropped, and most clients do not retry. A fresh connection
            is left open: its first request is in flight."""
            try:
                data = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                conn.deadline = min(conn.deadline, monotonic() + RETIRE_GRACE)
                return
            except OSError:
                close(conn)
                return
            if data:
                on_data(conn, data)
            else:
                close(conn)

        def accept(listener_fd: int) -> None:
            listener, base = bases[listener_fd]
            lsock = listener.sock
            for _ in range(ACCEPT_BATCH):
                if len(conns) >= max_conns:
                    return
                try:
                    sock, peer = lsock.accept()
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("accept failed: %s", exc)
                    return
                sock.setblocking(False)
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client = f"{peer[0]}:{peer[1]}"
                    trusted = forwarded if peer[0] in trusted_peers else untrusted
                else:
                    client = "unix"
                    trusted = forwarded if "" in trusted_peers else untrusted
                conn = Connection(sock, connection_environ(base, peer), trusted, client,
                                  monotonic() + header_timeout)
                conns[conn.fd] = conn
                # Most clients send the request right behind the handshake: try it now and
                # save an epoll round trip; register only if it has not arrived yet.
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    epoll.register(conn.fd, _EPOLLIN)
                    continue
                except OSError:
                    close(conn)
                    continue
                if not data:
                    close(conn)
                    continue
                epoll.register(conn.fd, _EPOLLIN)
                on_data(conn, data)
                if not self.alive:
                    return

        while True:
            if not self.alive:
                if accepting:
                    accepting = False
                    self._stop_accepting(epoll, bases)
                    for conn in list(conns.values()):
                        if not conn.buf and not conn.fresh:
                            drain_idle(conn)
                if not conns and not lingering:
                    return
            try:
                events = epoll.poll(tick)
            except InterruptedError:
                events = []
            if self.reopen_logs:
                # Before this batch's requests: the handler has run by the time poll returns,
                # so nothing that arrived after USR1 is logged to the old file.
                self._reopen_logs()
            for fd, _mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    try:
                        data = conn.sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        close(conn)
                        continue
                    if not data:
                        close(conn)
                        continue
                    on_data(conn, conn.buf + data if conn.buf else data)
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                elif fd in bases:
                    if accepting:
                        accept(fd)
                elif fd in lingering:
                    linger(fd)
            now = monotonic()
            if now >= next_tick:
                next_tick = now + tick
                slot.heartbeat(now)
                if os.getppid() != self.arbiter_pid:
                    log.warning("worker %s: the arbiter is gone; exiting", self.pid)
                    self.alive = False
                for fd in [fd for fd, (_, deadline) in lingering.items() if deadline <= now]:
                    lingering.pop(fd)[0].close()
                for conn in [c for c in conns.values() if c.deadline <= now]:
                    if conn.buf or conn.fresh:
                        reject(conn, RequestTimeout("no complete request head in time"))
                    else:
                        close(conn)  # keep-alive timeout: close quietly, like nginx
            if accepting and len(conns) >= max_conns:
                accepting = False
                self._stop_accepting(epoll, bases)
            elif not accepting and self.alive and len(conns) < max_conns:
                accepting = True
                for fd in bases:
                    epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)

    def _stop_accepting(self, epoll, bases) -> None:
        for fd in bases:
            with contextlib.suppress(OSError):
                epoll.unregister(fd)

    def _reopen_logs(self) -> None:
        self.reopen_logs = False
        from forkwsgi import logs

        logs.reopen_files()
        faulthandler.register(DUMP_SIGNAL, file=_error_stream(), all_threads=True, chain=False)


def _request_budget(max_requests: int, jitter: int) -> int:
    if max_requests <= 0:
        return 0
    if jitter > 0:
        import random

        return max_requests + random.randint(0, jitter)
    return max_requests


def _error_stream():
    """The file faulthandler writes stacks to: the error log file, else stderr."""
    for handler in logging.getLogger("forkwsgi.error").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                stream.fileno()
                return stream
            except (OSError, ValueError):
                continue
    return sys.stderr


def _drop_privileges(user: str | None, group: str | None) -> None:
    if group:
        import grp

        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        os.setgroups([])
        os.setgid(gid)
    if user:
        import pwd

        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        if not group:
            os.setgroups([])
            os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
