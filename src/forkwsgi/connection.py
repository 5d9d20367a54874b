"""The connection state machine: one client connection's life in a worker.

    state    waiting for                 leaves for
    HEAD     the rest of a request head  BODY (a body to receive), APP, LINGER (bad head, 408)
    BODY     the rest of the body        APP (body whole), LINGER (bad framing, 413, 408)
    APP      the app (the one blocking   IDLE (kept alive), HEAD (a pipelined head is
             call in the worker)           partly here), LINGER, closed (reset when the
                                           app failed mid-response)
    IDLE     the next request            HEAD (its first bytes), closed (keep-alive timeout)
    LINGER   the client's last bytes,    closed (end of file, or LINGER_SECONDS)
             read and dropped
    HANDSHAKE  the TLS handshake (a TLS  HEAD (done: the request is read at once),
             listener's connections      closed (failed, or not done by the head's
             start here)                   deadline: header_timeout)

Owns: the states above and every transition between them; the bytes received
for a connection and not yet consumed (a partial head, or the requests
pipelined behind the one in hand, kept in ``Connection.buf`` and nowhere
else); the one decision whether a connection is kept after a request; every
deadline (head, body inactivity, body data rate, keep-alive, linger); and
the connection cap: shedding the oldest idle and slowest connections so a
newcomer gets in, and pausing accepts when descriptors run out.

Every wait but the app's own is here, in the event loop: a slow client costs
a connection slot and never the worker. With ``request_buffering`` (the
default) the body is received here too, into a spool, before the app runs.
The TLS handshake too is stepped here, on the connection's readable and
writable events (forkwsgi.tls has the socket, docs/tls.md the design).

Must never: parse or frame bytes (the connection's protocol does, chosen by
its listener: ``parse_head`` and ``body_decoder`` of forkwsgi.protocols), touch
the app except through the dispatcher, or block on a client.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import struct
import threading
import time

from forkwsgi.dispatch import ABORT, CLOSE, KEEP
from forkwsgi.environ import TrustedPeers, connection_environ
from forkwsgi.http.errors import HTTPError, RequestTimeout
from forkwsgi.logs import Throttled
from forkwsgi.netio import accepter, pending_bytes
from forkwsgi.protocols import BY_SCHEME, Control, Protocol
from forkwsgi.protocols.http import HTTPS
from forkwsgi.protocols.proxy import PROXIED
from forkwsgi.request_body import CONTINUE, BodySpool
from forkwsgi.scoreboard import LEAVING_MAX_REQUESTS

log = logging.getLogger("forkwsgi.error")

HEAD, BODY, APP, IDLE, LINGER, HANDSHAKE = range(6)
STATE_NAMES = ("head", "body", "app", "idle", "linger", "handshake")
_READING = (HEAD, BODY, IDLE)  # TLS: states in which bytes OpenSSL holds are read at once

RECV_SIZE = 16384  # a request head (and what is pipelined behind it)
BODY_RECV_SIZE = 65536  # a body being received: larger reads, fewer wake-ups
_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}: close sends RST
LINGER_SECONDS = 2.0  # how long a closing client's remaining bytes are read and dropped
RETIRE_GRACE = 1.0  # a leaving worker's idle keep-alive connections: time for a last request
ACCEPT_PAUSE = 1.0  # out of descriptors: seconds before the listeners are polled again
FD_WARNING_INTERVAL = 10.0  # at most one "out of descriptors" line per this many seconds
CLIENT_ERROR_INTERVAL = 1.0  # at most one "rejected a request" line per second
REJECTED_LINES = 20  # access-log lines a second, at most, for requests the server refuses
ACCEPT_BURST = 16  # connections one wake-up accepts at most, when no sibling is idle
SHED_FRACTION = 16  # a full worker frees 1/16 of its cap at once, not one slot per accept
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)  # one sleeping worker woken, not all


class Connection:
    """A client connection while the worker holds it."""

    __slots__ = ("sock", "fd", "state", "buf", "deadline", "environ", "trusted", "client",
                 "listener", "protocol", "head", "decoder", "spool", "body_start", "received",
                 "last_raw", "last_head", "last_environ", "last_request", "events")

    def __init__(self, sock: socket.socket, environ: dict, trusted: frozenset, client: str,
                 listener: int, protocol: Protocol, state: int, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = state
        self.buf = b""  # received, not yet consumed: a partial head or pipelined requests
        self.deadline = deadline
        self.environ = environ
        self.trusted = trusted
        self.client = client
        self.listener = listener  # index in the worker's listener list
        self.protocol = protocol  # the listener's wire format
        self.head = None  # BODY: the request whose body is arriving
        self.decoder = None  # BODY: the protocol's decoder for that body's framing
        self.spool: BodySpool | None = None  # BODY and APP: where the body goes
        self.body_start = 0.0
        self.received = 0  # BODY: bytes received on the wire, framing included
        # The previous request head on this connection, as bytes and parsed: a keep-alive
        # client often repeats its head exactly (pollers, health checks, load generators),
        # and one comparison then stands in for the parse (a head is never mutated).
        self.last_raw: bytes | None = None
        self.last_head = None
        # The dispatcher's environ for last_head, kept pristine once the head repeats
        # (False: seen once; None: seen twice, keep the next one built).
        self.last_environ: dict | bool | None = False
        self.last_request = b""  # last_head as the scoreboard stores it, kept with the environ


class Connections:
    """The worker's connections: the state machine's transitions, and the cap."""

    def __init__(self, worker, dispatcher, epoll, cfg, bases: list[tuple[object, dict]],
                 trusted_peers, forwarded: frozenset) -> None:
        self.worker = worker  # alive, requests_left
        self.slot = worker.slot  # the scoreboard: counters and gauges
        self.leaving_flag = worker.slot.leaving  # set when this worker is being replaced
        self.dispatcher = dispatcher
        self.access = dispatcher.access  # the access log, for requests the server refuses
        self.rejected_since = 0.0
        self.rejected_lines = 0
        self.serve = dispatcher.serve
        self.error_response = dispatcher.error_response
        self.limits = dispatcher.limits
        self.epoll = epoll
        self.bases = bases  # per listener: (listener, base environ)
        self.accepts = [accepter(listener.sock) for listener, _ in bases]
        self.protocols = [BY_SCHEME[listener.protocol] for listener, _ in bases]
        # Per listener: its connections have TCP_NODELAY from it (listeners.py).
        self.nodelay = [listener.nodelay for listener, _ in bases]
        # Per listener: the SSLContext its connections are wrapped in, or None (plain).
        self.tls = self.serve_tls(cfg)
        self.listening = {listener.fileno(): index  # listener fd -> its index in bases
                          for index, (listener, _) in enumerate(bases)}
        self.trusted_peers = trusted_peers
        self.forwarded = forwarded
        # Per listener: who may connect (proxy_allow_from) to one whose connections open
        # with a PROXY preamble, since the preamble names the peer; None for the others.
        allowed = TrustedPeers(cfg.proxy_allow_from) \
            if PROXIED.intersection(self.protocols) else None
        self.preamble_from = [allowed if protocol in PROXIED else None
                              for protocol in self.protocols]
        self.header_timeout = cfg.header_timeout or 3600.0
        self.keep_alive = cfg.keep_alive
        self.body_timeout = cfg.body_timeout or 3600.0
        self.buffering = cfg.request_buffering
        self.spool_memory = cfg.body_buffer_size
        self.min_rate = cfg.body_min_rate
        self.rate_grace = cfg.body_rate_grace
        self.max = cfg.max_connections
        self.siblings = cfg.workers > 1  # accept() takes bursts only when they are all busy
        self.conns: dict[int, Connection] = {}
        # Read by the handoff custodian thread: which connection is in the app, for which
        # request (seq). Its lock (made when the custodian starts; None without one) is
        # held while it moves connections, and by the loop as a request leaves the app, so
        # the two never touch the set at once.
        self.in_app: Connection | None = None
        self.seq = 0
        self.lock: threading.Lock | None = None
        self.accepting = True
        self.leaving = False  # retire() has run: the worker exits once its connections are done
        # Connections taken from the listeners' queues as the worker let go of them, not yet
        # served: (socket, peer, listener index). See close_listeners.
        self.drained: list[tuple[socket.socket, object, int]] = []
        self.paused_until = 0.0  # out of descriptors: listeners rest until then
        self.log_fd_shortage = Throttled(log, logging.WARNING, FD_WARNING_INTERVAL)
        self.log_shed = Throttled(log, logging.WARNING, FD_WARNING_INTERVAL)
        # Bad requests and aborted uploads: a client can make them at will.
        self.log_client_error = Throttled(log, logging.INFO, CLIENT_ERROR_INTERVAL)
        self.registered = False  # the listeners are in the epoll set

    # --- arrivals ---------------------------------------------------------------------------

    def accept(self, index: int) -> None:
        """Connections from listener ``index``: one per wake-up while a sibling is idle (a
        busy worker leaves the next newcomer to an idle one, which EPOLLEXCLUSIVE wakes
        instead), up to ACCEPT_BURST while none is: then nobody else would take them, and
        they have waited longer than anything this worker's own connections sent since."""
        conns = self.conns
        accept = self.accepts[index]
        for _ in range(ACCEPT_BURST):
            if len(conns) >= self.max and not self.make_room():
                self.stop_listening()
                return
            try:
                sock, peer = accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self.out_of_descriptors(exc)
                return
            self.take(sock, peer, index)
            if not self.siblings or not self.registered or self.slot.workers_idle() > 1:
                return

    def take(self, sock: socket.socket, peer, index: int) -> None:
        """A connection accepted from listener ``index`` (by accept(), or by a leaving
        worker from the listener's queue), and the first read of its request."""
        allowed = self.preamble_from[index]
        if allowed is not None and (peer[0] if isinstance(peer, tuple) else "") not in allowed:
            self.log_client_error("refused a connection from %s: not in proxy_allow_from",
                                  f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix")
            sock.close()
            return
        self.slot.accepted()
        if self.tls[index] is not None:
            # Registered at once: a handshake always waits for the client at least once.
            self.handshake(self.add(sock, peer, index, HANDSHAKE,
                                    time.monotonic() + self.header_timeout))
            return
        conn = self.add(sock, peer, index, HEAD, time.monotonic() + self.header_timeout,
                        register=False)
        # Most clients send the request right behind the handshake (and deferred accept
        # waits for it): read it now and save an epoll round trip. Into the epoll set only
        # if it is still open then: a connection that carried one request and closed (a
        # gateway's, Connection: close) never needs the two epoll_ctl calls.
        self.readable(conn)
        if self.conns.get(conn.fd) is conn:
            self.epoll.register(conn.fd, _EPOLLIN)

    def add(self, sock: socket.socket, peer, index: int, state: int, deadline: float,
            register: bool = True) -> Connection:
        sock.setblocking(False)
        if peer.__class__ is tuple:  # TCP (a unix peer is a str or bytes)
            if not self.nodelay[index]:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = f"{peer[0]}:{peer[1]}"
            trusted = self.forwarded if peer[0] in self.trusted_peers else frozenset()
        else:
            client = "unix"
            trusted = self.forwarded if "" in self.trusted_peers else frozenset()
        conn = Connection(sock, connection_environ(self.bases[index][1], peer), trusted,
                          client, index, self.protocols[index], state, deadline)
        if self.tls[index] is not None:
            # TLS, whoever brought the connection (accept, a leaving worker's drained
            # queue): the handshake first, from the TLS listener's own protocol object.
            conn.state = HANDSHAKE
            conn.protocol = HTTPS
            conn.events = _EPOLLIN if register else 0
        self.conns[conn.fd] = conn
        if register:
            self.epoll.register(conn.fd, _EPOLLIN)
        return conn

    # --- TLS (only where a listener serves it) ----------------------------------------------

    def serve_tls(self, cfg) -> list:
        """Per listener, its SSLContext or None; and, if any listener has one, the TLS
        reader in place of ``readable``, so a worker without TLS runs not one instruction
        more per request. An https:// listener left without a certificate by a reload that
        dropped certfile gets a context that fails every handshake: never plaintext there."""
        context = getattr(cfg, "tls_context", None)
        contexts = []
        for listener, base in self.bases:
            if not listener.serves_tls(context is not None):
                contexts.append(None)
                continue
            if context is None:
                log.error("%s asks for TLS, but the configuration has no certfile since "
                          "the reload: its handshakes fail until it has one again", listener)
                from forkwsgi.tls import refusing_context

                contexts.append(refusing_context())
                continue
            base["wsgi.url_scheme"] = "https"  # PEP 3333: the scheme the client used
            contexts.append(context)
        if any(context is not None for context in contexts):
            self.readable = self.readable_tls  # type: ignore[method-assign]
        return contexts

    def readable_tls(self, conn: Connection) -> None:
        """``readable`` in a worker that serves TLS: steps a handshake, and reads what
        OpenSSL holds decrypted, which no epoll event announces (an app that read its
        body in small pieces can leave the next pipelined request there)."""
        if conn.state == HANDSHAKE:
            self.handshake(conn)
            return
        Connections.readable(self, conn)
        if conn.protocol is HTTPS:
            sock = conn.sock
            while self.conns.get(conn.fd) is conn and conn.state in _READING \
                    and sock.pending():
                Connections.readable(self, conn)

    def handshake(self, conn: Connection) -> None:
        """One step of a TLS handshake, on any event of a HANDSHAKE connection: wait for
        the socket the way OpenSSL asks (readable, or writable while its flight does not
        fit the socket buffer), then read the request at once (it often comes with the
        client's Finished). A failure costs the connection alone: closed, without an
        answer, which could not be read (a plaintext request, no shared cipher, a
        client certificate missing or not signed by ca_certs)."""
        sock = conn.sock
        try:
            if sock.__class__ is socket.socket:
                # The first step wraps: here, where a failure closes one connection.
                sock = conn.sock = self.tls[conn.listener].wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False)
            want = sock.handshake_step()
        except (OSError, ValueError) as exc:
            self.log_client_error("TLS handshake with %s failed: %s", conn.client,
                                  getattr(exc, "reason", None) or exc)
            self.close(conn)
            return
        if want != conn.events and (want or conn.events != _EPOLLIN):
            events = want or _EPOLLIN
            if conn.events:
                self.epoll.modify(conn.fd, events)
            else:
                self.epoll.register(conn.fd, events)
            conn.events = events
        if want:
            return
        conn.state = HEAD  # the deadline set at accept bounds the handshake and the head
        self.readable_tls(conn)

    # --- the transitions --------------------------------------------------------------------

    def readable(self, conn: Connection) -> None:
        state = conn.state
        try:
            data = conn.sock.recv(BODY_RECV_SIZE if state == BODY else RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            if state == BODY:
                self.log_client_error("client %s went away before the end of its request body",
                                      conn.client)
            self.close(conn)
        elif state == BODY:
            rest = self.body_data(conn, data)
            if rest is not None:
                self.head_data(conn, rest)
        elif state != LINGER:  # lingering: read and dropped
            self.head_data(conn, conn.buf + data if conn.buf else data)

    def head_data(self, conn: Connection, buf: bytes) -> None:
        """Serve every complete request in ``buf``; keep a partial head for later."""
        while buf:
            last = conn.last_raw
            if last is not None and buf.startswith(last):
                head = conn.last_head
                consumed = len(last)
            else:
                try:
                    parsed = conn.protocol.parse_head(buf, self.limits)
                except HTTPError as error:
                    self.reject(conn, error)
                    return
                if parsed is None:
                    if conn.state != HEAD:  # a new head has started
                        conn.state = HEAD
                        conn.deadline = time.monotonic() + self.header_timeout
                    conn.buf = buf
                    return
                head, consumed = parsed
                if head.__class__ is Control:
                    buf = self.control(conn, head, buf[consumed:])
                    if buf is None:
                        return
                    continue
                conn.last_raw = buf[:consumed]
                conn.last_head = head
                conn.last_environ = False  # the dispatcher keeps one once it repeats
            if (head.content_length or head.chunked) and (
                    self.buffering or conn.protocol.buffers_body):
                buf = self.begin_body(conn, head, buf[consumed:])
            else:
                buf = self.run(conn, head, buf[consumed:], None)
            if buf is None:  # the body is on its way, or the connection is closing
                return
        conn.buf = b""
        conn.state = IDLE
        conn.deadline = time.monotonic() + self.keep_alive

    def control(self, conn: Connection, message: Control, buf: bytes) -> bytes | None:
        """A protocol message that is no request (see protocols.base.Control); the bytes
        after it, or None when the connection is closing."""
        if message.reply:
            try:
                conn.sock.sendall(message.reply)  # small: a pong, a management answer
            except OSError:
                self.close(conn)
                return None
        if message.close:
            self.linger(conn)
            return None
        if message.peer is not None:
            addr, port = message.peer
            conn.environ = {**conn.environ, "REMOTE_ADDR": addr, "REMOTE_PORT": port}
            conn.client = f"{addr}:{port}" if port else addr or "unix"
            # The front-end's client is the peer in every respect: a TCP relay passes the
            # client's own header fields, so whether they may say X-Forwarded-* is the
            # client's trust, not the relay's.
            conn.trusted = self.forwarded if addr in self.trusted_peers else frozenset()
        if message.protocol is not None:
            conn.protocol = message.protocol
        return buf

    def begin_body(self, conn: Connection, head, buf: bytes) -> bytes | None:
        conn.state = BODY
        conn.head = head
        conn.decoder = conn.protocol.body_decoder(head, self.limits)
        conn.spool = BodySpool(self.spool_memory)
        conn.received = 0
        conn.buf = b""
        conn.body_start = now = time.monotonic()
        conn.deadline = now + self.body_timeout
        if head.expect_continue and not buf:
            # The server asks for the body itself, as nginx does when it buffers: the app
            # runs once the body is here. (A body over the limit was refused with the head.)
            with contextlib.suppress(OSError):
                conn.sock.send(CONTINUE)
        # A decoder with a reply already asks before any body byte (AJP13 sends a body of
        # unknown length only on request): body_data sends it.
        return self.body_data(conn, buf) if buf or conn.decoder.reply else None

    def body_data(self, conn: Connection, data: bytes) -> bytes | None:
        """Body bytes arrived. Once the body is whole, run the app; return what follows it
        (None while the body is incomplete, or when the connection is closing)."""
        decoder = conn.decoder
        try:
            decoded = decoder.feed(data)
        except HTTPError as error:  # bad chunked framing, or over the body limit
            self.reject(conn, error)
            return None
        if decoded:
            conn.spool.write(decoded)
        conn.received += len(data)
        if decoder.reply:  # the protocol asks for more of the body (AJP13), or answers
            try:           # a record beside it (FastCGI)
                conn.sock.sendall(decoder.take_reply())
            except OSError:
                self.close(conn)
                return None
        if not decoder.done:
            conn.deadline = time.monotonic() + self.body_timeout
            return None
        head = conn.head
        conn.head = conn.decoder = None
        return self.run(conn, head, decoder.unused, conn.spool.stream())

    def run(self, conn: Connection, head, buf: bytes, received) -> bytes | None:
        """The app's turn; then keep the connection (return the bytes after the request) or
        close it (None). The dispatcher decides from the request, the response and the
        body whether the connection may be kept; nothing else does."""
        worker = self.worker
        if worker.requests_left:
            worker.requests_left -= 1
            if worker.requests_left == 0:
                # It serves on until the arbiter has its replacement up (no dip in
                # capacity), then leaves as a retiring worker does. SIGCHLD wakes the
                # arbiter at once: its loop looks at every slot after any signal.
                log.info("worker %s reached max_requests (%d requests); asking for its "
                         "replacement", worker.pid, self.slot.requests + 1)
                self.slot.leaving[0] = LEAVING_MAX_REQUESTS
                self.dispatcher.keep_alive = False  # see leaving_marked
                with contextlib.suppress(OSError):
                    os.kill(worker.arbiter_pid, signal.SIGCHLD)
        conn.state = APP
        self.seq += 1
        self.in_app = conn
        after, rest = self.serve(conn, head, buf, received)  # the app's exceptions end there
        lock = self.lock
        if lock is None:
            self.in_app = None
        else:
            with lock:
                self.in_app = None
        if conn.spool is not None:
            conn.spool.close()
            conn.spool = None
        if after is KEEP and worker.alive:
            return rest
        if after is CLOSE:
            self.close(conn)
        elif after is ABORT:
            self.abort(conn)
        else:  # LINGER, or a worker leaving: the next request may be on its way
            self.linger(conn)
        return None

    def reject(self, conn: Connection, error: HTTPError) -> None:
        """The server's own error answer (400, 408, 413...), then a lingering close."""
        self.log_client_error("rejected a request from %s: %s %s", conn.client, error.status,
                              error.detail)
        self.slot.rejected(error.status)
        if self.access is not None:
            self.log_rejected(conn, error)
        try:
            conn.sock.send(self.answer(conn, error))
        except OSError:
            self.close(conn)
            return
        self.linger(conn)

    def log_rejected(self, conn: Connection, error: HTTPError) -> None:
        """An access-log line for a request the app never saw, at most REJECTED_LINES a
        second: a flood of bad requests must not fill the disk (the metrics count all)."""
        now = time.monotonic()
        if now - self.rejected_since >= 1.0:
            self.rejected_since, self.rejected_lines = now, 0
        self.rejected_lines += 1
        if self.rejected_lines > REJECTED_LINES:
            return
        head = conn.head
        environ = dict(conn.environ)
        environ["REQUEST_METHOD"] = getattr(head, "method", "-")
        environ["RAW_URI"] = getattr(head, "target", "-")
        environ["SERVER_PROTOCOL"] = getattr(head, "version", "-")
        self.access(environ, f"{error.status} {error.reason}", [],  # type: ignore[misc]
                    len(f"{error.status} {error.reason}\n"), 0.0)

    def answer(self, conn: Connection, error: HTTPError) -> bytes:
        """The server's own answer to ``error``, as the connection's protocol writes one."""
        if error.wire is not None:
            return error.wire  # the protocol's own answer (a FastCGI END_REQUEST, say)
        data = self.error_response(error)
        refuse = conn.protocol.refuse
        return data if refuse is None else refuse(data, conn.head)

    def linger(self, conn: Connection) -> None:
        """Lingering close, as Apache and nginx do: closing with the client's bytes still
        unread makes the kernel send a RST, which can destroy our last reply in the client's
        receive buffer. Shut our side, read and drop what still comes for a moment, then
        close. The connection keeps its slot (and counts against the cap) until then."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        self.release_body(conn)
        conn.state = LINGER
        conn.buf = b""
        conn.deadline = time.monotonic() + LINGER_SECONDS

    def abort(self, conn: Connection) -> None:
        """Close with a RST (SO_LINGER 0): the app failed after its response began. A
        clean close would end a close-delimited body as if it were whole; a reset is the
        one signal every client reads as "the response was cut" (RFC 9112 section 8).
        Over TLS, without close_notify, which would say the opposite."""
        if conn.protocol is HTTPS:
            conn.sock.forget()
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.close(conn)

    def close(self, conn: Connection) -> None:
        if self.conns.get(conn.fd) is conn:  # never another connection's, on a reused fd
            del self.conns[conn.fd]
        self.release_body(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()  # closing the fd also drops it from the epoll set

    @staticmethod
    def release_body(conn: Connection) -> None:
        if conn.spool is not None:
            conn.spool.close()
            conn.spool = None
        conn.head = conn.decoder = None

    # --- time -------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Deadlines and the body data rate; called once a tick."""
        min_rate = self.min_rate
        grace = self.rate_grace
        conns = self.conns
        for conn in list(conns.values()):
            if conns.get(conn.fd) is not conn:
                continue  # closed or moved by an earlier turn of this loop (an app call)
            state = conn.state
            if state == BODY and min_rate:
                elapsed = now - conn.body_start
                if elapsed > grace and conn.received < min_rate * elapsed \
                        and not pending_bytes(conn.sock):
                    self.reject(conn, RequestTimeout(
                        f"request body slower than {min_rate} bytes/s"))
                    continue
            if conn.deadline > now:
                continue
            if state == HANDSHAKE:
                # No 408: a client whose handshake is not done could not read it.
                self.log_client_error("TLS handshake with %s not done in %gs: closed",
                                      conn.client, self.header_timeout)
                self.close(conn)
                continue
            if state != LINGER and pending_bytes(conn.sock):
                # Its bytes are here, unread only because the app had the worker (or epoll
                # never said so): read them now rather than time out a client that was on time.
                conn.deadline = now + 1.0
                if state == IDLE or state == HEAD:
                    log.debug("connection from %s had unread bytes at its deadline",
                              conn.client)
                    self.readable(conn)
            elif state == HEAD:
                self.reject(conn, RequestTimeout("no complete request head in time"))
            elif state == BODY:
                self.reject(conn, RequestTimeout(
                    f"no request body data for {self.body_timeout:g}s"))
            elif state != APP:
                self.close(conn)  # keep-alive timeout (quietly, like nginx), or linger done

    def leaving_marked(self) -> None:
        """The worker is being replaced (its budget spent, the arbiter recycles it, a
        reload or an upgrade has begun): from now on every response says Connection:
        close, so when the TERM comes no client is about to send a request on a
        connection the worker then closes. A TERM that comes with no warning (a stop, TTOU) can still meet
        a response that said keep-alive; then the close follows the response at once. The
        worker looks at the mark before each batch of events, not before each request.
        (The arbiter may take the word back, a reload that cannot load the app or an
        upgrade whose exec failed: publish() restores keep-alive once a tick.)"""
        self.dispatcher.keep_alive = False

    def publish(self) -> None:
        """The counters and the connection gauges (head, body, idle, lingering) in the
        scoreboard; once a tick, not per request: they are a view for operators."""
        self.slot.publish()
        counts = [0] * len(STATE_NAMES)
        for conn in self.conns.values():
            counts[conn.state] += 1
        gauges = self.slot.gauges
        gauges[0], gauges[1], gauges[2], gauges[3] = (counts[HEAD], counts[BODY], counts[IDLE],
                                                      counts[LINGER])
        if not self.leaving_flag[0] and self.keep_alive > 0 and self.worker.alive:
            self.dispatcher.keep_alive = True  # a leaving mark taken back (leaving_marked)

    # --- the cap ----------------------------------------------------------------------------

    def make_room(self) -> int:
        """The worker is full: close the connections that cost least to lose, lingering
        ones first, then the oldest idle keep-alive ones, then the slowest partial heads
        (408), so that a client with a real request gets in. Returns how many."""
        want = max(1, self.max // SHED_FRACTION)
        victims: list[Connection] = []
        for state in (LINGER, IDLE, HANDSHAKE, HEAD):
            if len(victims) >= want:
                break
            group = [c for c in self.conns.values() if c.state == state]
            group.sort(key=_deadline)  # within a state, the earliest deadline is the oldest
            victims.extend(group[:want - len(victims)])
        for conn in victims:
            if conn.state == HEAD:
                self.slot.rejected(408)
                with contextlib.suppress(OSError):
                    conn.sock.send(self.answer(conn, RequestTimeout("shed: the worker is full")))
            self.close(conn)
        if victims:
            self.log_shed("worker %s full (%d connections): shed %d of them, oldest idle "
                          "first", self.worker.pid, self.max, len(victims))
        return len(victims)

    def out_of_descriptors(self, exc: OSError) -> None:
        """EMFILE/ENFILE on accept: the pending connection stays in the kernel's queue and
        the listener stays readable, so polling it again at once would spin. Free what can
        be freed, rest the listeners for a moment, and say so once in a while."""
        now = time.monotonic()
        freed = self.make_room()
        if not freed:
            self.paused_until = now + ACCEPT_PAUSE
            self.stop_listening()
        self.log_fd_shortage("worker %s: accept failed: %s (%d connections open); %s",
                             self.worker.pid, exc.strerror, len(self.conns),
                             f"shed {freed}" if freed else
                             f"accepts paused for {ACCEPT_PAUSE:g}s")

    def stop_listening(self) -> None:
        if self.registered:
            self.registered = False
            for fd in self.listening:
                with contextlib.suppress(OSError):
                    self.epoll.unregister(fd)

    def listen(self, now: float) -> None:
        """At start, and once a loop turn while not listening: (re)register the listeners
        when there is room. EPOLLEXCLUSIVE: one sleeping worker is woken per newcomer."""
        if self.accepting and now >= self.paused_until and len(self.conns) < self.max:
            self.registered = True
            for fd in self.listening:
                self.epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)

    # --- leaving ----------------------------------------------------------------------------

    def close_listeners(self) -> None:
        """The worker is leaving: take the connections queued on the listeners, then close
        this process's descriptors of them. Idempotent; never raises.

        A listening socket stays open while any process holds a descriptor of it, and the
        kernel goes on completing handshakes for it all that time: a connection queued
        then is reset when the last descriptor closes. So each process of a stopping server
        lets go of the listeners at once, and a newcomer is refused (ECONNREFUSED, which a
        load balancer retries on another server) rather than queued and reset. What is
        queued already is a client that has sent its request (TCP_DEFER_ACCEPT): it is
        accepted, until EAGAIN, before the close, and served by retire(). Only accepts
        here, no read and no app call, so the TERM handler may run this while the app has
        the worker: a busy worker lets go of the listeners at once, not after its request.
        A client whose handshake is done but whose first bytes have not arrived is not in
        the queue yet (deferred accept): the close forgets it, and its request is answered
        with a reset (docs/signals.md)."""
        self.accepting = False
        self.stop_listening()
        for index in self.listening.values():
            listener = self.bases[index][0].sock
            while True:
                try:
                    sock, peer = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # out of descriptors: what is left is lost at close
                    self.log_fd_shortage("worker %s: could not take the queued connections "
                                         "before closing the listener: %s", self.worker.pid,
                                         exc.strerror)
                    break
                self.drained.append((sock, peer, index))
            with contextlib.suppress(OSError):
                listener.close()
        # In place: the loop holds this dict, and a listener's descriptor number may now be
        # a client connection's.
        self.listening.clear()

    def retire(self) -> None:
        """The worker is leaving: no more accepts. Serve the connections taken from the
        listeners' queues, then each request already here on an idle connection; give an
        idle connection with nothing yet a short grace for its next request (answered
        with Connection: close), then close it quietly. Closing at once races a client
        that is sending that request right now: it sees its connection dropped, and most
        clients do not retry. Connections with a head or body in progress keep their
        deadlines."""
        self.close_listeners()
        self.leaving = True
        drained, self.drained = self.drained, []
        for sock, peer, index in drained:
            self.take(sock, peer, index)
        conns = self.conns
        for conn in [c for c in conns.values() if c.state == IDLE]:
            if conns.get(conn.fd) is not conn:
                continue  # closed by an earlier turn of this loop
            try:
                data = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                conn.deadline = min(conn.deadline, time.monotonic() + RETIRE_GRACE)
                continue
            except OSError:
                self.close(conn)
                continue
            if data:
                self.head_data(conn, data)
            else:
                self.close(conn)


def _deadline(conn: Connection) -> float:
    return conn.deadline

