"""A tiny raw HTTP/1.1 response reader for tests that need to see the bytes.

http.client hides framing (and refuses to read pipelined responses from one
socket); these tests assert on framing, so they read it themselves.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"
    raw_head: bytes = field(repr=False, default=b"")

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


class Reader:
    """Reads successive responses from one socket, keeping what it over-reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data
        return data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._more()
        part, self.buf = self.buf.split(marker, 1)
        return part

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._more()
        part, self.buf = self.buf[:size], self.buf[size:]
        return part

    def read(self, head_request: bool = False) -> Reply:
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _, code, *reason = lines[0].split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        reply = Reply(int(code), reason[0] if reason else "", headers, b"", "none",
                      head + b"\r\n\r\n")
        status = reply.status
        if head_request or status < 200 or status in (204, 304):
            return reply
        if (reply.header("Transfer-Encoding") or "").lower() == "chunked":
            reply.framing = "chunked"
            body = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")  # no trailers from this server
                    break
                body.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n"
            reply.body = b"".join(body)
        elif reply.header("Content-Length") is not None:
            reply.framing = "length"
            reply.body = self._exactly(int(reply.header("Content-Length")))
        else:
            reply.framing = "close"
            try:
                while True:
                    self._more()
            except (EOFError, ConnectionResetError):
                pass
            reply.body, self.buf = self.buf, b""
        return reply

    def closed(self, timeout: float = 10.0) -> bool:
        """True once the server has closed its side (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def exchange(server, raw: bytes, head_request: bool = False) -> Reply:
    with server.connect() as sock:
        sock.sendall(raw)
        return Reader(sock).read(head_request)
