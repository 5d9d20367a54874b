"""The response side of PEP 3333: start_response, write(), framing, sendfile.

Owns: validating what the app hands us (status, header names and values,
no 1xx: it is not a final status), choosing the framing (Content-Length
when known, chunked on HTTP/1.1 otherwise, close-delimited on HTTP/1.0; no
body for HEAD, 204 and 304), adding Date/Server/Connection, and writing the
head and a small body in one send. A ``wsgi.file_wrapper`` over a regular
file goes out with sendfile(2), except over TLS, where it is read and written
through OpenSSL like any body.

Hop-by-hop fields from the app (PEP 3333 forbids them) are handled as
gunicorn does, so migrated apps keep working: ``Connection: close`` is
honoured (sent, and the connection closes after this response); every other
hop-by-hop field is dropped, with one warning per field name and process,
because the framing and the connection are the server's (docs/http.md).

Must never: read the request, call the application, or send anything the
app wrote with CR/LF in a header (that is response splitting: a 500).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import time
from email.utils import formatdate

from forkwsgi.netio import send_all, send_file, send_parts

# RFC 9110 section 5.6.2 token; section 5.5 field-value (VCHAR, obs-text, SP, HTAB).
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_VALUES = re.compile(r"[\t\x20-\x7e\x80-\xff]*").fullmatch
_STATUS = re.compile(r"[1-9][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?").fullmatch
# RFC 9110 section 7.6.1: connection-specific fields belong to the server, not the app.
# PEP 3333's list (RFC 2616's), as gunicorn's: the same fields are dropped by both.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade"})
_warned_hop_by_hop: set[str] = set()
_SMALL_BODY = 16384  # below this, joining head and body beats a gather-write

log = logging.getLogger("forkwsgi.error")

_date = [0, b""]


def date_header() -> bytes:
    """``Date: ...\\r\\n``, formatted once per second (RFC 9110 section 6.6.1)."""
    now = int(time.time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _date[1]


_head_cache: dict = {}
_HEAD_CACHE_SIZE = 512


def app_head(status: str, headers: list) -> tuple[bytes, int, int | None, bytes]:
    """``(status line + app headers as bytes, status code, app's Content-Length,
    server_fields)``; ``server_fields`` says which of Date and Server the app set itself
    (RFC 9110 section 5.3: each may appear once, so then we add none of our own), as
    ``b"d"`` and ``b"s"``, and ``b"c"`` when the app asked for ``Connection: close``.

    Validation is the costly part of a small response, and most apps send the
    same few heads again and again, so validated heads are kept in a small
    cache keyed by the exact status and header pairs (str objects hash once).
    """
    try:
        key = (status, *headers)
        cached = _head_cache.get(key)
    except TypeError:  # unhashable parts: validate (and most likely reject) uncached
        key = cached = None
    if cached is not None:
        return cached
    result = _validate_app_head(status, headers)
    if key is not None:
        if len(_head_cache) >= _HEAD_CACHE_SIZE:
            _head_cache.clear()  # per-request values (cookies, ETags) would churn it
        _head_cache[key] = result
    return result


def _validate_app_head(status: str, headers: list) -> tuple[bytes, int, int | None, bytes]:
    try:
        names = [name for name, _ in headers]
        values = [value for _, value in headers]
        if names and (not all(names) or not _TOKENS("".join(names))):
            raise AppError(f"invalid response header name in {names!r}")
        if not _VALUES("".join(values)):
            raise AppError(f"invalid character (CR, LF or control) in a header value "
                           f"among {headers!r}")
    except (TypeError, ValueError) as exc:
        raise AppError(f"response headers must be (str, str) pairs: {exc}") from None
    length = None
    own = b""
    for index, name in enumerate(names):
        lower = name.lower()
        if lower == "date" or lower == "server":
            own += lower[0].encode()
        elif lower == "content-length":
            value = values[index]
            if not value.isdigit() or length is not None:
                raise AppError(f"invalid Content-Length {value!r} from the app")
            length = int(value)
        elif lower in HOP_BY_HOP:
            if lower == "connection" and "close" in {
                    option.strip(" \t").lower() for option in values[index].split(",")}:
                own += b"c"
            elif lower not in _warned_hop_by_hop:
                _warned_hop_by_hop.add(lower)
                log.warning("the app sent the hop-by-hop header %r: dropped, the server "
                            "frames the response and owns the connection (PEP 3333); "
                            "this warning is not repeated", name)
    code = int(status[:3])
    if code < 200:
        # A 1xx is interim (RFC 9110 section 15.2): the client would wait for a final
        # response that never comes. PEP 3333 gives apps no way to send one; 100 Continue
        # is the server's, sent when the app reads wsgi.input.
        raise AppError(f"status {status!r} is not a final response")
    if code == 204 and length is not None:
        # RFC 9110 section 8.6: "A server MUST NOT send a Content-Length header field in
        # any response with a status code of [...] 204 (No Content)." (Django adds one.)
        headers = [(name, value) for name, value in headers
                   if name.lower() != "content-length"]
        length = None
    # RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ];
    # the second SP stays when the app gave no reason.
    lines = [f"HTTP/1.1 {status}\r\n" if len(status) > 3 else f"HTTP/1.1 {status} \r\n"]
    lines.extend([f"{name}: {value}\r\n" for name, value in headers
                  if name.lower() not in HOP_BY_HOP])
    return "".join(lines).encode("latin-1"), code, length, own


class AppError(Exception):
    """The application broke PEP 3333 (bad status or header, double start_response...)."""


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; the server may sendfile() it."""

    def __init__(self, filelike, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data

    def sendfile_span(self) -> tuple[int, int, int] | None:
        """``(fd, offset, size)`` when this wraps a regular file we can sendfile()."""
        try:
            fd = self.filelike.fileno()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            offset = self.filelike.tell()
        except (AttributeError, OSError):
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        return fd, offset, max(0, st.st_size - offset)


class Response:
    """One response on one connection. ``start_response`` is handed to the app."""

    __slots__ = ("sock", "timeout", "http11", "head_only", "keep_alive", "server_header",
                 "status", "headers", "head_sent", "length", "chunked", "sent", "no_body",
                 "body", "owner", "framer")

    def __init__(self, sock: socket.socket, timeout: float, http11: bool, head_only: bool,
                 keep_alive: bool, server_header: bytes, body=None, owner=None,
                 framer=None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.http11 = http11
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.server_header = server_header
        self.status: str | None = None
        self.headers: list = []
        self.head_sent = False
        self.length: int | None = None  # Content-Length the app announced
        self.chunked = False
        self.sent = 0  # body bytes sent (before chunk framing)
        self.body = body  # the request body: unread and not drainable means we must close
        # Anything with an ``alive`` flag (the worker): a SIGTERM that arrives while the
        # app runs still puts Connection: close on this response.
        self.owner = owner
        # A protocol that wraps responses in its own messages (FastCGI, AJP) or rewrites
        # the head (SCGI): see protocols.base.Framer. Its messages (or the close) end the
        # body, so nothing is chunked.
        self.framer = framer

    # --- PEP 3333 callables ---------------------------------------------------------------

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle through the traceback
        elif self.status is not None:
            raise AppError("start_response() called a second time without exc_info")
        if type(status) is not str or not _STATUS(status):
            raise AppError(f"invalid status {status!r}: want a str like '200 OK'")
        if type(headers) is not list:
            raise AppError(f"response headers must be a list, got {type(headers).__name__}")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AppError("write() before start_response()")
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise AppError(f"the app must give bytes, got {type(data).__name__}")
            data = bytes(data)
        if not self.head_sent:
            self._send_head(data, None)
        else:
            self._send_body(data)

    # --- framing ----------------------------------------------------------------------------

    def _compile_head(self, body_length: int | None) -> bytes:
        """The head as bytes: the app's validated part, then framing and our fields."""
        prefix, code, length, own = app_head(self.status, self.headers)
        # HEAD, 204, 304: head only, whatever the app returns. Set here only: nothing reads
        # it before the head is compiled (``complete`` looks at it once a length is set).
        self.no_body = self.head_only or code == 204 or code == 304
        if own:
            extra = (b"" if b"d" in own else date_header()) + \
                (b"" if b"s" in own else self.server_header)
        else:
            extra = date_header() + self.server_header
        if length is not None:
            self.length = length
        elif code == 204 or code == 304:
            pass  # RFC 9110 sections 8.6, 15.3.5, 15.4.5: no body, no length
        elif body_length is not None:
            # HEAD gets the length a GET would have had (RFC 9110 section 9.3.2)
            extra += b"Content-Length: %d\r\n" % body_length
            self.length = body_length
        elif self.head_only or self.framer is not None:
            pass
        elif self.http11:
            self.chunked = True
            extra += b"Transfer-Encoding: chunked\r\n"
        else:
            self.keep_alive = False  # HTTP/1.0 and unknown length: the close ends the body
        if self.keep_alive and (self.owner is not None and not self.owner.alive
                                or self.body is not None and not self.body.can_drain()
                                or b"c" in own):
            self.keep_alive = False
        if self.framer is not None:
            # A gateway's front-end owns the client's connection: no Connection field.
            return prefix + extra + b"\r\n"
        if not self.keep_alive:
            extra += b"Connection: close\r\n"
        elif not self.http11:
            extra += b"Connection: keep-alive\r\n"
        return prefix + extra + b"\r\n"

    def _send_head(self, body: bytes, body_length: int | None, last: bool = False) -> None:
        """The head, with ``body`` (and, with ``last``, the end of the response) in one send."""
        head = self._compile_head(body_length)
        self.head_sent = True
        framer = self.framer
        if framer is not None:
            if self.no_body:
                body = b""
            elif self.length is not None and self.sent + len(body) > self.length:
                body = body[:self.length - self.sent]
            data = framer.head(head) + (framer.body(body) if body else b"")
            if last:
                data += framer.end(self.keep_alive)
            send_all(self.sock, data, self.timeout)
            self.sent += len(body)
            return
        if self.no_body:
            send_all(self.sock, head, self.timeout)
            return
        if self.chunked:
            if body:
                send_parts(self.sock, [head, b"%x\r\n" % len(body), body, b"\r\n"], self.timeout)
                self.sent += len(body)
            else:
                send_all(self.sock, head, self.timeout)
            return
        if self.length is not None and self.sent + len(body) > self.length:
            body = body[:self.length - self.sent]
        if len(body) < _SMALL_BODY:
            send_all(self.sock, head + body, self.timeout)
        else:
            send_parts(self.sock, [head, body], self.timeout)
        self.sent += len(body)

    def _send_body(self, data: bytes) -> None:
        if not data or self.no_body:
            return
        if self.framer is not None:
            if self.length is not None and self.sent + len(data) > self.length:
                data = data[:self.length - self.sent]
                if not data:
                    return
            send_all(self.sock, self.framer.body(data), self.timeout)
        elif self.chunked:
            send_parts(self.sock, [b"%x\r\n" % len(data), data, b"\r\n"], self.timeout)
        else:
            if self.length is not None and self.sent + len(data) > self.length:
                data = data[:self.length - self.sent]  # never send past Content-Length
                if not data:
                    return
            send_all(self.sock, data, self.timeout)
        self.sent += len(data)

    # --- what the dispatcher calls ----------------------------------------------------------

    def send_whole(self, body: bytes) -> None:
        """The app's body in one piece (a one-item list): one send for head and body."""
        if self.status is None:
            raise AppError("the app returned without calling start_response()")
        if not self.head_sent:
            # An empty body for HEAD says nothing of the GET's length: announce none
            # rather than a false 0 (RFC 9110 section 8.6).
            self._send_head(body, len(body) if body or not self.head_only else None, True)
            return
        self._send_body(body)
        if self.chunked:
            send_all(self.sock, b"0\r\n\r\n", self.timeout)
        elif self.framer is not None:
            self._end_frames()

    def _end_frames(self) -> None:
        end = self.framer.end(self.keep_alive)
        if end:  # SCGI's ends with the close
            send_all(self.sock, end, self.timeout)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """sendfile() a regular file; False if it must be iterated instead."""
        if self.head_sent or self.status is None or self.framer is not None:
            return False  # a framed response wraps every piece: iterate the file
        if self.sock.__class__ is not socket.socket:
            return False  # TLS: sendfile(2) would write the file's plaintext to the socket
        span = wrapper.sendfile_span()
        if span is None:
            return False
        fd, offset, size = span
        head = self._compile_head(size)
        count = size if self.length is None else min(size, self.length)
        self.head_sent = True
        send_all(self.sock, head, self.timeout)
        if not self.no_body and count:
            send_file(self.sock, fd, offset, count, self.timeout)
            self.sent = count
        return True

    def finish(self) -> None:
        """The iterable is exhausted: send the head if nothing was sent, end the framing."""
        if self.status is None:
            raise AppError("the app returned without calling start_response()")
        if not self.head_sent:
            self._send_head(b"", None if self.head_only else 0, True)  # HEAD: see send_whole
        elif self.chunked:
            send_all(self.sock, b"0\r\n\r\n", self.timeout)
        elif self.framer is not None:
            self._end_frames()

    @property
    def complete(self) -> bool:
        """The body sent matches its framing, so the connection may carry another request."""
        if self.length is None or self.no_body:
            return True
        return self.sent == self.length
