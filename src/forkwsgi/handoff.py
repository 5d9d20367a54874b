"""Moving connections between workers, so no request waits in a busy worker while
another worker is free.

A worker runs one request at a time, and its kept-alive connections live in
its own epoll set: while the app is slow, the next request on any of them
would wait for it even with a sibling free. So a free worker looks at its
siblings' scoreboard slots, and when a sibling's request has had it
``handoff_after`` it signals that sibling (MOVE_SIGNAL), whose connections
that wait for nothing but the worker (idle keep-alive ones, and partial
heads with the bytes already received for them) then go to a queue that
every worker's loop polls: the first worker to be free reads it all, takes
its share of the longest waiting (all of it when no sibling is free) and
sends the rest back for the next. With every worker busy, the arbiter
watches instead (``Watch``, from its own loop). Under load that makes the workers one
shared queue, as an accept queue is, instead of one queue per worker: a
request waits only while every worker is busy.

Owns: the unix datagram socket pair the arbiter makes before the first fork
(every worker holds both ends: it sends on one, and whichever free worker
epoll wakes first receives on the other; a socket pair's queue is bounded by
its send buffer, not by ``max_dgram_qlen``); the message, a batch of
descriptors (SCM_RIGHTS) with, for each, ``(listener index, state, deadline,
bytes received)``; the watch a free worker keeps on its siblings; and the
custodian, a thread in each worker asleep in sigwait() until a sibling's
signal comes. MOVE_SIGNAL is blocked in every thread of the worker, so it
never interrupts the app; and the custodian never wakes on its own, so it
never competes with a request for the GIL (a thread that woke every
millisecond to look did, and cost a fifth of the throughput of two workers
sharing a core). The custodian moves connections only while it holds the
connection set's lock, which the worker's loop takes as a request leaves the
app, so the two never touch the set at once; the loop's per-request cost is
two attribute stores and that lock.

Must never: move the connection in the app, one receiving a body,
lingering, or past a PROXY preamble (their state is more than bytes), drop
the bytes already received for a connection, or run in a leaving worker (its
siblings may be leaving too, and nobody would take the queue).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import psutil

from forkwsgi.connection import HEAD, IDLE, Connections
from forkwsgi.netio import unread_bytes

log = logging.getLogger("forkwsgi.error")

# One record per connection: listener index, state, deadline (CLOCK_MONOTONIC is the same
# clock in every process), then that many bytes received for it.
_RECORD = struct.Struct("<HBdI")
MAX_FDS = 250  # SCM_MAX_FD is 253 descriptors per message
MAX_MESSAGE = 131072  # below the socket's default send buffer (208 KiB)
MAX_DRAIN = 64  # messages one receive() reads at most
MOVE_SIGNAL = signal.SIGURG  # "move your waiting connections"; ignored by default, so one
# that reaches a process not (or no longer) a worker of ours does nothing
BUSY_LONG = 0.025  # a sibling in one request this long is asked even by a worker with work
ACTIVE_SECONDS = 0.25  # siblings seen busy this recently: look every handoff_after
QUIET_LOOK = 0.02  # else every this often
ARBITER_AFTER = 0.01  # the arbiter asks a worker this long in one request (every worker busy)
ARBITER_LOOK = 0.005  # how often the arbiter looks while workers are busy
ARBITER_QUIET_LOOK = 0.02  # and while one is idle (it watches the others itself)
_BLOCKED = (psutil.STATUS_SLEEPING, psutil.STATUS_DISK_SLEEP)


def make_pair() -> tuple[socket.socket, socket.socket]:
    """The arbiter's part: ``(send end, receive end)``, made once, before any fork."""
    send, receive = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (send, receive):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
        # Non-blocking for every worker (O_NONBLOCK belongs to the shared file description).
        # socket.send_fds and recv_fds drop their flags argument (CPython gh-107898, fixed
        # only in recent releases), so MSG_DONTWAIT alone would not do: a worker that epoll
        # woke for a batch a sibling took first would block in recv until the next batch,
        # and a custodian would block in send, holding its lock, on a full queue.
        sock.setblocking(False)
    return send, receive


class Watch:
    """Who asks a busy worker to move its waiting connections, and when: a free worker of
    its siblings (after ``handoff_after``) and, for when every worker is busy, the
    arbiter (after ARBITER_AFTER), so that the first worker to be free finds them queued
    oldest first, rather than serving its own newer requests while they wait behind a
    sleeping sibling."""

    def __init__(self, busy: Callable[[], list[tuple[int, int, float]]], after: float,
                 active_look: float | None = None, quiet_look: float = QUIET_LOOK,
                 idle: Callable[[], int] | None = None) -> None:
        self.busy = busy  # () -> [(slot, pid, request start)] of the workers to watch
        # The arbiter's: () -> how many workers are idle. While one is, it watches, and the
        # arbiter leaves the asking to it.
        self.idle_workers = idle
        self.after = after
        self.active_look = after if active_look is None else active_look
        self.quiet_look = quiet_look
        self.signaled: dict[int, float] = {}  # slot -> the request start it was asked for
        self.active_until = 0.0

    def look(self, now: float, idle: bool) -> float:
        """Ask each busy worker whose request has had it ``after`` to move its waiting
        connections (once per request); return when to look again.

        It is asked at once if that request waits (the process sleeps: on a database, a
        remote call, a lock) or the watcher has nothing else to do (``idle``); else only
        after BUSY_LONG. On a machine with more workers than cores a worker is often "in
        the app" for a millisecond or more only because the scheduler gave its core to
        another process: moving its connections then gains nothing and costs both
        workers (the custodian wakes into the GIL of a process running Python)."""
        if self.idle_workers is not None and self.idle_workers():
            return now + self.quiet_look
        after = self.after
        soonest = now + self.quiet_look
        signaled = self.signaled
        busy = False
        for index, pid, start in self.busy():
            busy = True
            if signaled.get(index) == start:
                continue  # asked already, for this request
            due = start + after
            if due > now:
                soonest = min(soonest, due)
                continue
            if not idle and now < start + BUSY_LONG and not _sleeping(pid):
                soonest = min(soonest, now + self.active_look)
                continue
            signaled[index] = start
            with contextlib.suppress(OSError):  # gone: the arbiter frees its slot
                os.kill(pid, MOVE_SIGNAL)
        if busy:
            self.active_until = now + ACTIVE_SECONDS
        if now < self.active_until:
            soonest = min(soonest, now + self.active_look)
        return soonest


class Handoff:
    """One worker's ends of the pair, and its custodian."""

    def __init__(self, pair: tuple[socket.socket, socket.socket], conns: Connections,
                 after: float, workers: int = 2) -> None:
        self.send_sock, self.recv_sock = pair
        self.conns = conns
        self.after = after
        self.workers = max(1, workers)
        self.watch = Watch(conns.slot.busy_siblings, after)

    def fileno(self) -> int:
        return self.recv_sock.fileno()

    # --- the custodian thread -----------------------------------------------------------------

    def start(self) -> None:
        """In the worker, before its loop: MOVE_SIGNAL blocked in the main thread (and so in
        every thread the app starts later), to be taken by the custodian's sigwait alone:
        the app never sees it, no system call it makes is interrupted."""
        self.conns.lock = threading.Lock()
        signal.pthread_sigmask(signal.SIG_BLOCK, {MOVE_SIGNAL})
        threading.Thread(target=self._custodian, name="forkwsgi-handoff", daemon=True).start()

    def _custodian(self) -> None:
        """Asleep in sigwait (no GIL, no wake-up) until a sibling says this worker's
        request has had it ``handoff_after``; then, if that is still so, move the waiting
        connections."""
        conns = self.conns
        half = self.after / 2
        times = conns.slot.times  # [heartbeat, start of the request in the app]
        monotonic = time.monotonic
        moved = -1  # the request (conns.seq) whose connections were moved
        while True:
            signal.sigwait({MOVE_SIGNAL})
            conn = conns.in_app
            seq = conns.seq
            if conn is None or seq == moved or not conns.worker.alive or conns.leaving:
                continue
            start = times[1]
            # A start older than the heartbeat is the previous request's: this one is not
            # marked busy yet (busy() stores the start, then the heartbeat), so it has only
            # just begun; and one that began since the sibling looked is not long yet.
            if start < times[0] or monotonic() - start < half:
                continue
            with conns.lock:  # type: ignore[union-attr]
                if conns.in_app is conn and conns.seq == seq:
                    try:
                        self._move(conn)
                    except Exception:  # a thread's exception would only be printed
                        log.exception("handoff: moving connections failed")
            moved = seq

    # --- sending (custodian, under the lock) --------------------------------------------------

    def _waiting_since(self, state: int, deadline: float) -> float:
        """When a connection began to wait: its deadline less the wait it was given."""
        conns = self.conns
        return deadline - (conns.keep_alive if state == IDLE else conns.header_timeout)

    def _move(self, in_app) -> None:
        set_ = self.conns
        # The longest waiting first: if the queue fills, the youngest are the ones that
        # stay here. (Whoever takes the queue sorts it all again: receive().)
        # A connection whose protocol changed (HTTP after a PROXY preamble) stays: its peer
        # and protocol are more than the record carries.
        protocols = set_.protocols
        movable = sorted((c for c in set_.conns.values()
                          if c is not in_app and (c.state == IDLE or c.state == HEAD)
                          and c.protocol is protocols[c.listener]),
                         key=lambda c: self._waiting_since(c.state, c.deadline))
        items = [(c.fd, c.listener, c.state, c.deadline, c.buf) for c in movable]
        sent = self._send(items)
        for conn in movable[:sent]:
            # Unregister first: the descriptor in flight keeps the socket open, and epoll
            # forgets a socket only once every descriptor of it is closed.
            with contextlib.suppress(OSError):
                set_.epoll.unregister(conn.fd)
            set_.conns.pop(conn.fd, None)
            conn.sock.close()
        if sent:
            log.debug("worker busy in the app: moved %d connection(s) to the handoff queue",
                      sent)

    def _send(self, items: list[tuple]) -> int:
        """Queue ``(fd, listener, state, deadline, bytes)`` records, in order, in as few
        messages as fit; how many of the first went (a full queue keeps the rest here). The
        caller closes its descriptors of those."""
        sent = 0
        while sent < len(items):
            batch: list[tuple] = []
            size = 0
            for item in items[sent:]:
                need = _RECORD.size + len(item[4])
                if batch and (len(batch) == MAX_FDS or size + need > MAX_MESSAGE):
                    break
                batch.append(item)
                size += need
            payload = b"".join(_RECORD.pack(listener, state, deadline, len(buf)) + buf
                               for _, listener, state, deadline, buf in batch)
            try:
                socket.send_fds(self.send_sock, [payload], [item[0] for item in batch])
            except OSError as exc:  # the queue is full: the rest stay here
                log.debug("handoff: could not send %d connection(s): %s", len(batch), exc)
                break
            sent += len(batch)
        return sent

    # --- receiving (the loop) -----------------------------------------------------------------

    def _take(self) -> list[tuple]:
        """Every record waiting in the queue (up to MAX_DRAIN messages), without adopting
        them: ``(fd, listener, state, deadline, bytes)``."""
        items: list[tuple] = []
        for _ in range(MAX_DRAIN):
            try:
                payload, fds, flags, _ = socket.recv_fds(self.recv_sock, MAX_MESSAGE + 4096,
                                                         MAX_FDS)
            except (BlockingIOError, InterruptedError):
                break  # empty, or a sibling took it first
            if flags & socket.MSG_CTRUNC:
                log.warning("handoff: descriptors lost in transit (open-file limit?)")
            offset = 0
            for fd in fds:
                if offset + _RECORD.size > len(payload):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    continue
                index, state, deadline, length = _RECORD.unpack_from(payload, offset)
                offset += _RECORD.size
                items.append((fd, index, state, deadline, payload[offset:offset + length]))
                offset += length
        return items

    def _adopt(self, items: list[tuple]) -> list:
        """Records' connections, added to this worker's set, in their order."""
        set_ = self.conns
        adopted = []
        for fd, index, state, deadline, buf in items:
            sock = socket.socket(fileno=fd)
            try:
                peer = sock.getpeername()
            except OSError:  # the client left in transit
                sock.close()
                continue
            conn = set_.add(sock, peer, index, state, deadline)
            conn.buf = buf
            adopted.append(conn)
        return adopted

    def takers(self) -> int:
        """How many workers share the queue now: this one and its idle siblings. A sibling
        in the app takes nothing until it is out, so dealing it a share would keep those
        requests waiting behind this worker's newer ones (its own connections' next
        requests, which epoll hands it first): with every sibling busy, this worker takes
        the whole queue and serves it oldest first, as one accept queue would."""
        idle_siblings = self.conns.slot.workers_idle() - 1  # this worker is idle: in its loop
        return 1 + max(0, min(idle_siblings, self.workers - 1))

    def receive(self, everything: bool = False) -> None:
        """Take what waits in the queue, keep the longest-waiting share of it (all, when
        ``everything``: a leaving worker), send the rest back, and serve what was kept.

        The whole queue is read and sorted by how long each connection has waited, not
        taken batch by batch: a batch is queued behind every batch moved before it, so a
        connection sent back from a busy worker (the rest of a batch when one of its
        requests was slow) would otherwise wait behind the whole queue again, as often as
        that happens (measured: 6 and 7 slow requests' worth at 50 connections, against 5
        for one shared accept queue). And a share, not all: a sibling that frees up a
        moment later takes the next share, so both serve the waiting requests at once,
        where one worker holding all would serve them one after another."""
        items = self._take()
        if not items:
            return
        items.sort(key=lambda item: self._waiting_since(item[2], item[3]))
        if everything:
            mine, rest = items, []
        else:
            # Only the connections with a request waiting are shared out: an idle one (a
            # proxy's pooled upstream connection, say) has waited long for nothing, and
            # counted among the oldest it would fill a share with no work in it. This
            # worker keeps the idle ones; of the others, every n-th from the oldest (n: the
            # workers free to take), as n workers taking turns at one queue would: the share a sibling
            # takes next is as old as this one, not all younger.
            waiting, idle = [], []
            for item in items:
                (waiting if item[4] or unread_bytes(item[0]) else idle).append(item)
            share = self.takers()
            mine = waiting[::share] + idle
            rest = [item for i, item in enumerate(waiting) if i % share]
        sent = self._send(rest) if rest else 0
        for item in rest[:sent]:
            with contextlib.suppress(OSError):
                os.close(item[0])
        log.debug("handoff: took %d connection(s), sent %d back", len(items) - sent, sent)
        adopted = self._adopt(mine + rest[sent:])
        # They have waited longest (a busy worker held them, then the queue): serve what
        # they sent before this worker's own newer requests, oldest first.
        conns = self.conns.conns
        set_ = self.conns
        for conn in adopted:
            if conns.get(conn.fd) is conn:  # not closed or moved on by an app call since
                set_.readable(conn)



def _sleeping(pid: int) -> bool:
    """Whether process ``pid``'s main thread is blocked (sleeping, or in disk wait), rather
    than running or waiting for a core."""
    try:
        return psutil.Process(pid).status() in _BLOCKED
    except psutil.Error:
        return False
