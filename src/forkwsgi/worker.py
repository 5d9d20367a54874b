"""The worker process: one epoll loop, one request at a time.

Owns: everything a worker does after the fork: dropping privileges,
loading the app, its signal handlers, and the loop. The loop waits on the
listeners, every connection the worker holds, its wake-up pipe and the
handoff socket, and turns each event into one call: accept, a connection's
bytes (connection.py decides what they mean), a signal, or connections a
busy sibling hands over. Once a tick it beats the heartbeat and expires
deadlines. Every wait but the app's own happens here, so a slow client
costs a connection slot, never the worker.

Must never: be constructed in the arbiter (it is built after fork), or
make a syscall per request that the loop can avoid (liveness goes to the
scoreboard in shared memory).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import select
import signal
import sys
import time

from forkwsgi import scoreboard
from forkwsgi.accesslog import make_access_logger
from forkwsgi.connection import Connections
from forkwsgi.dispatch import Dispatcher
from forkwsgi.environ import TrustedPeers, base_environ, trusted_keys
from forkwsgi.handoff import Handoff
from forkwsgi.response import FileWrapper

log = logging.getLogger("forkwsgi.error")

BOOT_ERROR = 3  # exit status: the app could not be loaded; the arbiter must not respawn
TICK = 1.0  # seconds between deadline scans and heartbeats while idle (less if --timeout is)
HANDOFF_BATCHES_PER_WORKER = 2  # a leaving worker takes at most this many per worker running
DUMP_SIGNAL = signal.SIGUSR2  # the arbiter asks a hung worker for its stacks with this
# The arbiter blocks these around fork(); the worker unblocks them once its own handlers
# are in place. A signal sent to a worker in between would otherwise be lost on the
# arbiter's handlers, or written into the arbiter's wake-up pipe as if sent to the arbiter.
FORK_SIGNALS = frozenset({signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM,
                          signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                          signal.SIGWINCH, signal.SIGCHLD})

_EPOLLIN = select.EPOLLIN
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class Worker:
    """Built in the child right after fork; ``run()`` never returns (it exits)."""

    def __init__(self, cfg, listeners, board, slot_index: int, generation: int,
                 arbiter_pid: int, app=None, handoff_pair=None) -> None:
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
        self.handoff_pair = handoff_pair  # (send, receive) unix sockets shared by all workers
        self.requests_left = 0
        self.booted = False  # reached the connection loop
        self.pool = None  # its Connections, once the loop runs: the TERM handler reaches them

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
        pool = self.pool
        if pool is not None and pool.in_app is not None:
            # The loop will not run again before the app returns, however long it takes:
            # let go of the listeners now (their queue first), so the server's listening
            # sockets close at once and a newcomer is refused, not queued. Only while the
            # app runs: the loop itself may be in the middle of the listeners.
            try:
                pool.close_listeners()
            except Exception:  # raised here, it would surface in the app's code
                log.exception("worker %s: closing the listeners failed", self.pid)

    def _on_quit(self, signum, frame) -> None:
        raise SystemExit(0)

    def _on_usr1(self, signum, frame) -> None:
        self.reopen_logs = True

    def _load_app(self) -> bool:
        if self.app is None:
            from forkwsgi.loader import AppLoadError, load_from_config

            try:
                self.app = load_from_config(self.cfg)
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
                self.slot.publish()  # its last counts, which the arbiter folds in
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
        self.requests_left = _request_budget(cfg.max_requests, cfg.max_requests_jitter)
        script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        bases = []
        for listener in self.listeners:
            base = base_environ(listener.server_name, listener.server_port, cfg.workers > 1,
                                script_name)
            base["wsgi.file_wrapper"] = FileWrapper
            base["wsgi.errors"] = sys.stderr
            bases.append((listener, base))
        epoll = select.epoll()
        pool = Connections(self, dispatcher, epoll, cfg, bases,
                           TrustedPeers(cfg.forwarded_allow_ips),
                           trusted_keys(cfg.forwarded_headers))
        self.pool = pool
        conns = pool.conns
        listening = pool.listening
        pool.listen(0.0)
        epoll.register(self._wake_r, _EPOLLIN)
        handoff = None
        if self.handoff_pair is not None and cfg.handoff_after > 0 and cfg.workers > 1:
            handoff = Handoff(self.handoff_pair, pool, cfg.handoff_after, cfg.workers)
            epoll.register(handoff.fileno(), _EPOLLIN | _EPOLLEXCLUSIVE)
            handoff.start()
        handoff_fd = handoff.fileno() if handoff is not None else -1
        # With siblings: when this worker next looks at theirs (Handoff.watch).
        next_look = 0.0 if handoff is not None else float("inf")
        timeout = tick = min(TICK, cfg.timeout / 4) if cfg.timeout else TICK
        readable = pool.readable
        wake_r = self._wake_r
        slot = self.slot
        leaving = slot.leaving
        monotonic = time.monotonic
        # Heartbeats come once a tick while idle (tick, above): several per --timeout, so an
        # idle worker is never mistaken for a hung one, however short the timeout.
        next_tick = 0.0
        self.booted = True
        slot.set_state(scoreboard.IDLE)
        log.info("Worker %s booted (generation %s)", self.pid, self.generation)

        while True:
            if not self.alive and not pool.leaving:
                pool.close_listeners()  # at once; their queue is served by retire()
                if handoff is not None:
                    with contextlib.suppress(OSError):
                        epoll.unregister(handoff_fd)
                    _adopt_waiting(handoff, handoff_fd, HANDOFF_BATCHES_PER_WORKER * cfg.workers)
                pool.retire()  # the listeners' queue served, idle connections get a last chance
            if pool.leaving and not conns:
                return
            try:
                events = epoll.poll(timeout)
            except InterruptedError:
                events = []
            if leaving[0]:
                pool.leaving_marked()
            if self.reopen_logs:
                # Before this batch's requests: the handler has run by the time poll returns,
                # so nothing that arrived after USR1 is logged to the old file.
                self._reopen_logs()
            if handoff_fd >= 0 and len(events) > 1:
                # Connections a sibling handed over have waited longest: adopt and serve
                # them before this batch's own requests, which epoll may list first.
                for index, (fd, _mask) in enumerate(events):
                    if fd == handoff_fd:
                        events.insert(0, events.pop(index))
                        break
            for fd, _mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    readable(conn)
                elif fd in listening:
                    if pool.registered:
                        pool.accept(listening[fd])
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                elif fd == handoff_fd:
                    handoff.receive()  # type: ignore[union-attr]
            now = monotonic()
            if now >= next_tick:
                next_tick = now + tick
                slot.heartbeat(now)
                if os.getppid() != self.arbiter_pid:
                    log.warning("worker %s: the arbiter is gone; exiting", self.pid)
                    self.alive = False
                    slot.leaving[0] = scoreboard.LEAVING_ORPHANED
                pool.expire(now)
                pool.publish()
            if not pool.registered:
                pool.listen(now)
            if now >= next_look:
                if pool.leaving:  # it will not take what a sibling moves: someone else does
                    next_look = float("inf")
                else:
                    next_look = handoff.watch.look(now, not events)  # type: ignore[union-attr]
            # Up to the next look (or a tick): from this turn's clock, so a turn that came
            # between two looks does not carry the whole interval again.
            timeout = next_look - now if next_look - now < tick else tick

    def _reopen_logs(self) -> None:
        self.reopen_logs = False
        from forkwsgi import logs

        logs.reopen_files()
        faulthandler.register(DUMP_SIGNAL, file=_error_stream(), all_threads=True, chain=False)


def _adopt_waiting(handoff: Handoff, fd: int, most: int) -> None:
    """Take the batches waiting in the handoff queue as the worker leaves, and serve what
    their connections sent (answered with Connection: close; retire() gives the idle ones
    their grace). A busy sibling moved them there before the stop reached it; once every
    worker has left, nobody would take them, and they would be reset when the arbiter exits.
    Each worker takes the queue after its own custodian has stopped moving (it moves
    nothing once the worker is leaving), so every batch finds a taker. At most ``most``
    batches: during a reload the new generation takes the rest, and a leaving worker must
    not be kept by a queue its busy siblings go on filling."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    for _ in range(most):
        if not poller.poll(0):
            return
        handoff.receive(everything=True)


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
