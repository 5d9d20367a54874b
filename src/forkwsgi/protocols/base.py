"""The Protocol contract: what one wire format gives the worker.

Must never: import a protocol module (they import this one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Protocol:
    """One wire format's functions; see each attribute."""

    __slots__ = ("name", "parse_head", "body_decoder", "environ", "cgi_status")

    def __init__(self, name: str, parse_head: Callable[..., Any],
                 body_decoder: Callable[..., Any], environ: Callable[..., dict],
                 cgi_status: bool = False) -> None:
        self.name = name
        # parse_head(buf, limits) -> (head, consumed) | None; raises HTTPError (its status
        # is the answer). ``head`` has RequestHead's fields (http/parser.py).
        self.parse_head = parse_head
        # body_decoder(head, limits) -> a decoder: feed(bytes) -> body bytes; done; unused.
        self.body_decoder = body_decoder
        # environ(head, connection environ, trusted keys) -> the request's environ.
        self.environ = environ
        # The response starts "Status: 200 OK" (a CGI response: SCGI) rather than
        # "HTTP/1.1 200 OK" (HTTP, and uwsgi, whose front-ends read an HTTP status line).
        self.cgi_status = cgi_status


def cgi_status_line(response: bytes) -> bytes:
    """An HTTP response's head rewritten for a CGI reader: ``HTTP/1.1 200 OK`` becomes
    ``Status: 200 OK`` (RFC 3875 section 6.3.3)."""
    return b"Status: " + response[9:] if response.startswith(b"HTTP/1.1 ") else response
