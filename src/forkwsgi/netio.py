"""Blocking-with-deadline I/O on non-blocking sockets.

Owns: sending everything and receiving "some" bytes on a connection whose
socket stays in non-blocking mode, waiting with poll() only when the kernel
says EAGAIN. The try-first order matters: a socket with a Python timeout
polls before *every* recv/send, which costs a syscall per call on the hot
path; here the common case is exactly one recv or one send.

A TLS connection's socket (forkwsgi.tls.TLSSocket) reads and writes like a
plain non-blocking one, would-block included, so nothing here branches on
TLS per call; what differs is taken where it shows: ``pending_bytes`` counts
what OpenSSL holds decrypted, and ``send_parts`` joins the parts, an SSL
socket having no ``sendmsg``.

Must never: parse HTTP or know about WSGI.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import termios

_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT


def accepter(listening: socket.socket):
    """``listening.accept`` for a loop that takes many connections: socket.accept()
    converts the listener's family and type to enums on every call (a few hundred
    instructions per connection); here they are read once."""
    raw_accept = listening._accept
    family, kind, proto = int(listening.family), int(listening.type), listening.proto
    new = socket.socket

    def accept() -> tuple[socket.socket, object]:
        fd, peer = raw_accept()
        try:
            return new(family, kind, proto, fd), peer
        except OSError:
            os.close(fd)
            raise

    return accept


class ClientTimeout(OSError):
    """The peer sent or accepted nothing for the whole inactivity timeout."""


class ClientDisconnected(OSError):
    """The peer closed or reset the connection."""


def wait(sock: socket.socket, events: int, timeout: float) -> None:
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    if not poller.poll(timeout * 1000.0 if timeout > 0 else None):
        raise ClientTimeout(f"client inactive for {timeout:g}s")


def unread_bytes(fd: int) -> int:
    """Bytes the kernel holds for descriptor ``fd`` (FIONREAD); 0 when it will not say."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]


def pending_bytes(sock: socket.socket) -> int:
    """Bytes received and not yet read; on a TLS connection, those still encrypted in the
    kernel plus those OpenSSL has decrypted and holds, which no poll reports."""
    decrypted = getattr(sock, "pending", None)  # off the hot path: deadlines, closes
    unread = unread_bytes(sock.fileno())
    return unread + decrypted() if decrypted is not None else unread


def recv_some(sock: socket.socket, size: int, timeout: float) -> bytes:
    """At least one byte (b"" only at EOF), waiting up to ``timeout`` for it."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            wait(sock, _POLLIN, timeout)
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientDisconnected(str(exc)) from None


def recv_into_some(sock: socket.socket, view: memoryview, timeout: float) -> int:
    while True:
        try:
            return sock.recv_into(view)
        except BlockingIOError:
            wait(sock, _POLLIN, timeout)
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientDisconnected(str(exc)) from None


def send_all(sock: socket.socket, data: bytes | memoryview, timeout: float) -> None:
    """Send every byte; one send() when the socket buffer has room (the usual case)."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
        raise ClientDisconnected(str(exc)) from None
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        wait(sock, _POLLOUT, timeout)
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientDisconnected(str(exc)) from None
        view = view[sent:]


def send_parts(sock: socket.socket, parts: list[bytes], timeout: float) -> None:
    """Gather-write several buffers (writev) without joining them first."""
    total = sum(map(len, parts))
    try:
        sent = sock.sendmsg(parts)
    except BlockingIOError:
        sent = 0
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
        raise ClientDisconnected(str(exc)) from None
    except NotImplementedError:
        # An SSL socket has no sendmsg. Joined, the parts go out as one TLS record rather
        # than one per part, and a write that must wait is retried with the same bytes,
        # as OpenSSL requires.
        send_all(sock, b"".join(parts), timeout)
        return
    if sent == total:
        return
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
            continue
        send_all(sock, memoryview(part)[sent:], timeout)
        sent = 0


def send_file(sock: socket.socket, fd: int, offset: int, count: int, timeout: float) -> None:
    """os.sendfile ``count`` bytes from ``fd`` at ``offset``; the file may shrink under us."""
    while count > 0:
        try:
            sent = os.sendfile(sock.fileno(), fd, offset, count)
        except BlockingIOError:
            wait(sock, _POLLOUT, timeout)
            continue
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ClientDisconnected(str(exc)) from None
        if sent == 0:
            raise ClientDisconnected("file ended before its announced length")
        offset += sent
        count -= sent
