"""``wsgi.input``: the request body as a file-like object (PEP 3333).

Owns: the two ways a body reaches the app.

- ``BodySpool`` (the default, ``request_buffering``): the worker's event loop
  has received the whole body before the app runs; the spool keeps it in
  memory up to a threshold and in an unnamed temporary file past it, and
  hands the app a plain file (``io.BytesIO`` or the temporary file).
- ``RequestBody`` (``--no-request-buffering``, for apps that process an
  upload as it arrives): a blocking reader over the socket, reading exactly
  the body (Content-Length or chunked, never past its end), answering
  ``Expect: 100-continue`` lazily on the app's first read, with the body
  inactivity timeout, handing back the bytes that follow the body.

Every buffer here grows with the bytes received, never with the bytes a
client announces, and in amortised linear time (a 64 MB chunked body or a
64 MB "line" costs what 64 MB of Content-Length does).

Must never: parse request heads, or let the app read beyond the body.
"""

from __future__ import annotations

import io
import socket
import tempfile

from forkwsgi.http.errors import BadRequest, HTTPError, RequestTimeout
from forkwsgi.http.parser import ChunkedDecoder, Limits
from forkwsgi.netio import (
    ClientDisconnected,
    ClientTimeout,
    pending_bytes,
    recv_into_some,
    recv_some,
    send_all,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RECV_SIZE = 65536
DRAIN_LIMIT = 65536  # unread body bytes discarded to keep a connection; more -> close


class BodyError(OSError):
    """The client broke the body (bad chunking, disconnect, timeout): the app sees an OSError.

    ``http_error`` is what the server answers if the app lets it propagate.
    """

    def __init__(self, message: str, http_error: HTTPError | None = None) -> None:
        super().__init__(message)
        self.http_error = http_error or BadRequest(message)


def _read_error(exc: OSError) -> BodyError:
    if isinstance(exc, ClientTimeout):
        return BodyError(f"reading the request body: {exc}", RequestTimeout(str(exc)))
    return BodyError(f"reading the request body: {exc}")


class RequestBody:
    """A blocking reader over a non-blocking socket. One per request."""

    __slots__ = ("_sock", "_timeout", "_buf", "_remaining", "_chunked", "_continue",
                 "_eof", "_pending", "_broken", "_draining", "_length", "_decoded", "leftover",
                 "trailers")

    def __init__(self, sock: socket.socket, buffered: bytes, content_length: int | None,
                 chunked: bool, expect_continue: bool, timeout: float, limits: Limits) -> None:
        self._sock = sock
        self._timeout = timeout
        self._continue = expect_continue
        # After a BodyError the framing is lost: whatever the app does with the error, the
        # connection must close, or the rest of a broken body would be read as a request.
        self._broken = False
        self._draining = False  # drain(): take what has arrived, never wait for more
        self.trailers: list[tuple[str, str]] = []
        self.leftover = b""  # bytes past the body: the next request's, once eof
        self._decoded = 0  # chunked: body bytes decoded so far
        if chunked:
            self._chunked: ChunkedDecoder | None = ChunkedDecoder(limits)
            self._remaining = -1
            self._buf = bytearray()
            self._eof = False
            # Decoded on the first read, not here: a framing error must reach the app (or
            # the drain) as a BodyError, never escape from building the environ.
            self._pending = buffered
        else:
            self._chunked = None
            self._pending = b""
            length = content_length or 0
            self._length = length
            self._buf = bytearray(buffered[:length])
            self.leftover = buffered[length:]
            self._remaining = length - len(self._buf)  # still on the socket
            self._eof = length == 0

    # --- the source: the socket -------------------------------------------------------------

    def _send_continue(self) -> None:
        self._continue = False
        send_all(self._sock, CONTINUE, self._timeout)

    def _recv(self, size: int) -> bytes:
        if self._continue:
            self._send_continue()
        try:
            if self._draining:
                data = self._sock.recv(size)  # BlockingIOError: the drain gives up
            else:
                data = recv_some(self._sock, size, self._timeout)
        except BlockingIOError:
            raise
        except OSError as exc:
            self._broken = True
            raise _read_error(exc) from None
        if not data:
            self._broken = True
            raise BodyError("client disconnected before the end of the request body")
        return data

    def _feed(self, data: bytes) -> None:
        """Chunked only: decode ``data`` into the buffer."""
        decoder = self._chunked
        try:
            decoded = decoder.feed(data)  # type: ignore[union-attr]
        except HTTPError as exc:
            self._broken = True
            raise BodyError(f"bad chunked body: {exc.detail}", exc) from None
        if decoded:
            self._buf += decoded
            self._decoded += len(decoded)
        if decoder.done:  # type: ignore[union-attr]
            self._eof = True
            self.trailers = decoder.trailers  # type: ignore[union-attr]
            self.leftover = decoder.unused  # type: ignore[union-attr]

    def _fill(self, want: int) -> bool:
        """Get more body bytes into the buffer (at least one, at most ~want); False at end."""
        if self._chunked is not None:
            while not self._eof:
                before = len(self._buf)
                if self._pending:
                    pending, self._pending = self._pending, b""
                    self._feed(pending)
                else:
                    self._feed(self._recv(RECV_SIZE))
                if len(self._buf) > before:
                    return True
            return False
        if self._remaining <= 0:
            return False
        data = self._recv(min(max(want, 8192), self._remaining, RECV_SIZE))
        self._remaining -= len(data)
        self._buf += data
        return True

    def _read_exact_into(self, size: int) -> bytes:
        """Content-Length fast path for big reads: recv_into one preallocated buffer."""
        if self._continue:
            self._send_continue()
        have = len(self._buf)
        out = bytearray(size)
        out[:have] = self._buf
        self._buf = bytearray()
        view = memoryview(out)
        while have < size:
            try:
                got = recv_into_some(self._sock, view[have:], self._timeout)
            except OSError as exc:
                self._broken = True
                raise _read_error(exc) from None
            if not got:
                self._broken = True
                raise BodyError("client disconnected before the end of the request body")
            have += got
            self._remaining -= got
        return bytes(out)

    # --- the file-like API the app calls -----------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            if self._chunked is None:
                return self._read_exact_into(len(self._buf) + self._remaining) \
                    if self._remaining > 0 else self._take(len(self._buf))
            while self._fill(RECV_SIZE):
                pass
            return self._take(len(self._buf))
        if size == 0:
            return b""
        if self._chunked is None and size > RECV_SIZE and self._remaining > 0:
            size = min(size, len(self._buf) + self._remaining)
            if len(self._buf) < size:
                return self._read_exact_into(size)
        while len(self._buf) < size and self._fill(size - len(self._buf)):
            pass
        return self._take(size)

    def _take(self, size: int) -> bytes:
        buf = self._buf
        if size >= len(buf):
            self._buf = bytearray()
            return bytes(buf)
        out = bytes(memoryview(buf)[:size])
        del buf[:size]  # O(1): a bytearray moves its start instead of copying the rest
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else -1
        start = 0
        while True:
            index = self._buf.find(b"\n", start)
            if index >= 0:
                end = index + 1
                break
            if 0 <= limit <= len(self._buf):
                end = limit
                break
            start = len(self._buf)
            if not self._fill(RECV_SIZE):
                end = len(self._buf)
                break
        if 0 <= limit < end:
            end = limit
        return self._take(end)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    # --- the server side --------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Body bytes received from the client so far (decoded: no chunk framing)."""
        if self._chunked is not None:
            return self._decoded
        return self._length - self._remaining

    @property
    def finished(self) -> bool:
        return (self._eof or (self._chunked is None and self._remaining <= 0)) and not self._buf

    def can_drain(self, limit: int = DRAIN_LIMIT) -> bool:
        """Will ``drain(limit)`` be able to make the connection reusable? (Before the
        response head goes out, so it can say ``Connection: close`` when not.)"""
        if self._broken:
            return False
        if self.finished:
            return True
        if self._continue:
            return False
        if self._chunked is not None:
            # Its end shows only by decoding. Decode what came with the head (the app can
            # still read it: decoded bytes stay in the buffer); for the rest, close.
            if self._pending:
                pending, self._pending = self._pending, b""
                try:
                    self._feed(pending)
                except BodyError:
                    return False
            return self._eof
        # drain() takes only what has arrived (one ioctl, on this rare path only)
        return self._remaining <= limit and self._remaining <= pending_bytes(self._sock)

    def drain(self, limit: int = DRAIN_LIMIT) -> bool:
        """Discard the unread body, up to ``limit`` bytes; False if it could not be drained
        (too big, broken, not all here yet, or the client never got its 100 Continue) — then
        the worker closes, lingering.

        Only bytes that have already arrived are read: waiting here for a body the client
        sends slowly would pin the worker, so a body still on its way costs the connection
        instead (the loop's lingering close reads and drops it without blocking anyone)."""
        if self._broken:
            return False
        if self.finished:
            return True
        if self._continue:
            return False
        self._draining = True
        try:
            if self._chunked is None:
                if self._remaining > limit:
                    return False
                self._buf = bytearray()
                while self._remaining > 0:
                    self._remaining -= len(self._recv(min(self._remaining, RECV_SIZE)))
                return True
            seen = 0
            self._buf = bytearray()
            while not self._eof and seen <= limit:
                self._fill(RECV_SIZE)
                seen += len(self._buf)
                self._buf = bytearray()
            return self._eof
        except (OSError, ClientDisconnected):  # BlockingIOError included: not all here yet
            return False


class NoBody:
    """``wsgi.input`` of a request without a body: one shared, stateless instance, so the
    common GET costs no reader object."""

    __slots__ = ()
    finished = True
    received = 0
    trailers: list = []

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self):
        return iter(())

    def can_drain(self, limit: int = DRAIN_LIMIT) -> bool:
        return True

    def drain(self, limit: int = DRAIN_LIMIT) -> bool:
        return True


NO_BODY = NoBody()


class BodySpool:
    """A body the event loop receives before the app runs: in memory up to
    ``memory_limit`` bytes, then in an unnamed temporary file (nginx's client body
    buffer, then its temp file). Unnamed (O_TMPFILE or unlinked at once), so a
    killed worker leaves nothing on disk."""

    __slots__ = ("size", "_chunks", "_file", "_memory_limit")

    def __init__(self, memory_limit: int) -> None:
        self.size = 0
        self._chunks: list[bytes] = []
        self._file = None
        self._memory_limit = memory_limit

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self._memory_limit:
            self._file = tempfile.TemporaryFile()
            self._file.writelines(self._chunks)
            self._chunks = []

    def stream(self):
        """The whole body as ``wsgi.input``, positioned at its start."""
        if self._file is not None:
            self._file.seek(0)
            return self._file
        chunks = self._chunks
        # BytesIO shares a bytes object until written to: a one-piece body is not copied.
        return io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []
