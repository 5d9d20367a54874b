"""HTTP errors that carry their own status.

Owns: one exception class per status the server itself answers with, and the
renderer that turns any of them into a small, complete response that closes
the connection.

Must never: decide *when* an error happens (the parser and the worker do), or
echo client input into the response body unescaped.
"""

from __future__ import annotations


class HTTPError(Exception):
    """An error in the client's request. The server answers ``status`` and closes.

    ``detail`` is for the error log; clients only ever see the reason phrase.
    """

    status = 400
    reason = "Bad Request"
    wire: bytes | None = None  # a protocol's own answer, sent instead of ``response()``

    def __init__(self, detail: str = "", wire: bytes | None = None) -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason
        if wire is not None:
            self.wire = wire

    def response(self, fields: bytes = b"") -> bytes:
        """The whole response: status line, ``fields`` (the server's Date and Server lines,
        CRLF-terminated), framing, a one-line text body."""
        body = f"{self.status} {self.reason}\n".encode("ascii")
        return (
            f"HTTP/1.1 {self.status} {self.reason}\r\n".encode("ascii")
            + fields
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            + b"Connection: close\r\n\r\n"
            + body
        )


class BadRequest(HTTPError):
    status, reason = 400, "Bad Request"


class RequestTimeout(HTTPError):
    status, reason = 408, "Request Timeout"


class ContentTooLarge(HTTPError):
    status, reason = 413, "Content Too Large"


class URITooLong(HTTPError):
    status, reason = 414, "URI Too Long"


class ExpectationFailed(HTTPError):
    status, reason = 417, "Expectation Failed"


class HeaderFieldsTooLarge(HTTPError):
    status, reason = 431, "Request Header Fields Too Large"


class VersionNotSupported(HTTPError):
    status, reason = 505, "HTTP Version Not Supported"
