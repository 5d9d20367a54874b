"""sd_notify(3): what the arbiter tells its service manager, and which process may say it.

Owns: the ``NOTIFY_SOCKET`` datagram socket (a path, or an abstract socket
written ``@name``); the messages forkwsgi sends (``READY=1`` with ``MAINPID``,
``RELOADING=1`` with ``MONOTONIC_USEC``, ``STOPPING=1``, ``STATUS=``,
``WATCHDOG=1``); the pace of the watchdog (every ``WATCHDOG_USEC``/2, and only
in the process ``WATCHDOG_PID`` names) and of the status line; and the
variables systemd sets (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``,
``WATCHDOG_PID``), which it takes out of the environment at start, so that no
worker and no application can speak in the service's name, and hands on only
to the arbiter that replaces this one (USR2).

Who may speak. Under ``NotifyAccess=main`` (the default for ``Type=notify``)
systemd drops every message that does not come from the main PID, and only
the main process may move ``MAINPID`` (systemd applies ``MAINPID=`` before
``READY=1`` of the same message, and takes only a PID in the service's
cgroup). So after a forking USR2 upgrade the new arbiter, not yet main, cannot
announce itself: when its workers are up it says ``ready`` over a socket pair
the old arbiter gave it (``FORKWSGI__NOTIFY_FD``); the old arbiter sends
``MAINPID=<new>`` and ``READY=1``, answers ``main``, and says nothing more; the
new one speaks from that answer on. An in-place upgrade keeps the PID and
needs none of this. ``NotifyAccess=all`` would have let the new arbiter speak
for itself, but also every process of the service: the application's code in
the workers, and the old arbiter, whose watchdog pings would hide a hung new one.

Must never: decide when the server is ready or stopping (the arbiter decides;
this module says it), raise into the arbiter, or block it beyond a send's
short timeout and the one hand-over answer (a service manager that went away
costs a log line).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("forkwsgi.error")

SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
HANDOVER_ENV = "FORKWSGI__NOTIFY_FD"  # a USR2 successor's end of the hand-over socket pair
STATUS_EVERY = 2.0  # seconds: the status line is sent at most this often, and only if it changed
SEND_TIMEOUT = 1.0  # seconds a send may wait on a full queue before the message is dropped
HANDOVER_TIMEOUT = 5.0  # seconds a successor waits for the old arbiter to move MAINPID
READY_WORD, MAIN_WORD = b"ready", b"main"


def socket_address(value: str | None) -> str | None:
    """NOTIFY_SOCKET as an AF_UNIX address: ``@name`` is the abstract socket ``\\0name``."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%s is not a unix socket path or @name: not notifying", value)
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock of systemd's MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """The arbiter's voice to systemd; silent (every method a no-op) without NOTIFY_SOCKET."""

    def __init__(self, notify_socket: str | None = None, watchdog_usec: int = 0,
                 parent: socket.socket | None = None) -> None:
        self.notify_socket = notify_socket  # as systemd wrote it: handed on to a successor
        self.address = socket_address(notify_socket)
        self.watchdog_usec = watchdog_usec
        self.watchdog_every = watchdog_usec / 2e6  # seconds between two WATCHDOG=1
        self.next_ping = 0.0
        self.parent = parent  # a successor's line to the arbiter that started it, until main
        self.successor: socket.socket | None = None  # the old arbiter's line to its successor
        self.successor_pid = 0
        self.handed_over = False  # MAINPID names our successor: not a word more from us
        self.ready_due = True  # READY=1 is owed: at start, and after every RELOADING=1
        self.stopping_sent = False
        self.status_text = ""
        self.status_at = -STATUS_EVERY
        self.sock: socket.socket | None = None
        self.failed = False

    @classmethod
    def from_environ(cls, pid: int, environ: dict[str, str] | None = None) -> Notifier:
        """Take systemd's variables (and a USR2 parent's hand-over fd) out of ``environ``."""
        environ = os.environ if environ is None else environ  # type: ignore[assignment]
        notify_socket, usec, watchdog_pid = (environ.pop(key, None) for key in SYSTEMD_ENV)
        handover = environ.pop(HANDOVER_ENV, None)
        watchdog = 0
        if usec and usec.isdigit() and (watchdog_pid is None or watchdog_pid == str(pid)):
            watchdog = int(usec)  # sd_watchdog_enabled(3): the pings are WATCHDOG_PID's job
        parent = None
        if handover and handover.isdigit():
            try:
                parent = socket.socket(fileno=int(handover))
                parent.set_inheritable(False)
            except OSError:
                parent = None
            if parent is not None and not notify_socket:
                parent.close()  # nobody to tell: the hand-over has no point
                parent = None
        return cls(notify_socket, watchdog, parent)

    # --- what the arbiter asks --------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        """Whether systemd listens to us: we are the main PID (or it has no NOTIFY_SOCKET)."""
        return self.address is not None and self.parent is None and not self.handed_over

    def owes_ready(self) -> bool:
        """READY=1 is due as soon as the workers are up (not while a successor boots)."""
        return self.ready_due and self.address is not None and self.successor is None \
            and not self.handed_over

    def waiting(self) -> bool:
        """Whether the arbiter should look again soon (it gets no wake-up for these)."""
        return self.owes_ready() or self.successor is not None

    def deadline(self) -> float | None:
        """When the next watchdog ping is due (monotonic), or None."""
        return self.next_ping if self.watchdog_every and self.speaking else None

    def ready(self, pid: int, status: str) -> None:
        """The workers of the current generation are up: READY=1, MAINPID."""
        self.ready_due = False
        if self.parent is not None:
            self._take_over()
            return
        self._status(status, time.monotonic())
        self.send("READY=1", f"MAINPID={pid}", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload or upgrade begins; READY=1 is owed when it ends, even if it fails."""
        self.ready_due = True
        fields = ["RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}"]
        if self.watchdog_every:
            # An upgrade may exec a new image whose start takes a while: give it a full period.
            fields.append("WATCHDOG=1")
            self.next_ping = time.monotonic() + self.watchdog_every
        self.send(*fields)

    def stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.send("STOPPING=1", "STATUS=stopping")

    def tick(self, now: float, status: Callable[[], str]) -> None:
        """From every turn of the arbiter's loop: the watchdog, the status line, a successor."""
        if self.successor is not None:
            self._hear_successor()
        if not self.speaking:
            return
        fields = []
        if self.watchdog_every and now >= self.next_ping:
            fields.append("WATCHDOG=1")
            self.next_ping = now + self.watchdog_every
        if now >= self.status_at + STATUS_EVERY and not self.stopping_sent:
            text = status()
            if self._status(text, now):
                fields.append(f"STATUS={text}")
        if fields:
            self.send(*fields)

    # --- a USR2 successor (a new arbiter forked beside this one) ------------------------------

    def handover_pair(self) -> tuple[socket.socket, socket.socket] | None:
        """Before forking a successor: (ours, theirs), or None when nobody listens to us."""
        if not self.speaking:
            return None
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def successor_env(self, pid: int, theirs: socket.socket | None = None) -> dict[str, str]:
        """systemd's variables for the arbiter that will run as ``pid`` (ours, in place)."""
        if not self.speaking:
            return {}
        env = {"NOTIFY_SOCKET": self.notify_socket or ""}
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
            env["WATCHDOG_PID"] = str(pid)
        if theirs is not None:
            theirs.set_inheritable(True)
            env[HANDOVER_ENV] = str(theirs.fileno())
        return env

    def await_successor(self, pid: int, ours: socket.socket) -> None:
        """After forking a successor: listen for its word (tick() polls, without blocking)."""
        ours.setblocking(False)
        self.successor, self.successor_pid = ours, pid

    def _hear_successor(self) -> None:
        line = self.successor
        assert line is not None
        try:
            said = line.recv(16)
        except BlockingIOError:
            return
        except OSError:
            said = b""
        self.successor = None
        if said == READY_WORD:
            pid = self.successor_pid
            self.send(f"MAINPID={pid}", "READY=1", f"STATUS=handed over to arbiter {pid}")
            self.handed_over = True  # from here on the successor is the service's main PID
            self.ready_due = False
            log.info("USR2: the service manager now follows the new arbiter %s (MAINPID)", pid)
            try:
                line.setblocking(True)
                line.sendall(MAIN_WORD)  # only now: systemd has our message before any of its
            except OSError:
                pass
        line.close()  # without "ready", the successor died: we stay main, READY=1 is still owed

    def _take_over(self) -> None:
        line, self.parent = self.parent, None
        assert line is not None
        try:
            line.settimeout(HANDOVER_TIMEOUT)
            line.sendall(READY_WORD)
            answer = line.recv(16)
        except OSError:
            answer = b""
        finally:
            line.close()
        if answer != MAIN_WORD:
            self.handed_over = True  # not main, and never will be: stay silent
            log.warning("the previous arbiter did not hand the service over (MAINPID); this "
                        "arbiter will not notify the service manager")

    # --- the wire -----------------------------------------------------------------------------

    def _status(self, text: str, now: float) -> bool:
        self.status_at = now
        if text == self.status_text:
            return False
        self.status_text = text
        return True

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False if it could not be sent."""
        if not self.speaking:
            return False
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self.failed:  # once: a manager that went away must not flood the log
                self.failed = True
                log.warning("cannot notify the service manager at %s: %s",
                            self.notify_socket, exc.strerror or exc)
            return False
        self.failed = False
        return True

    def close(self) -> None:
        for sock in (self.sock, self.successor, self.parent):
            if sock is not None:
                sock.close()
        self.sock = self.successor = self.parent = None
