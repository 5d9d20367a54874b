"""The Protocol contract: what one wire format gives the worker.

Owns: ``Protocol`` (the functions a wire format provides), ``FramedBody`` (the
base of a decoder that may talk back), ``Control`` (what
``parse_head`` returns for a message that is not a request: a PROXY preamble,
a FastCGI management record, an AJP ping), the ``Framer`` interface (how a
protocol wraps a response that the dispatcher writes as HTTP: FastCGI
records, AJP packets) and the helpers to frame a whole response.

Must never: import a protocol module (they import this one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Protocol:
    """One wire format's functions; see each attribute."""

    __slots__ = ("name", "parse_head", "body_decoder", "environ", "framer", "buffers_body",
                 "refuse")

    def __init__(self, name: str, parse_head: Callable[..., Any],
                 body_decoder: Callable[..., Any], environ: Callable[..., dict],
                 framer: Callable[..., Any] | None = None,
                 buffers_body: bool = False,
                 refuse: Callable[[bytes, Any], bytes] | None = None) -> None:
        self.name = name
        # parse_head(buf, limits) -> (head, consumed) | None; raises HTTPError (its status
        # is the answer). ``head`` has RequestHead's fields (http/parser.py).
        self.parse_head = parse_head
        # body_decoder(head, limits) -> a decoder: feed(bytes) -> body bytes; done; unused
        # (the bytes after the body); reply (truthy when the protocol must ask the client
        # for more, as AJP13's GET_BODY_CHUNK; take_reply() returns and clears it).
        self.body_decoder = body_decoder
        # environ(head, connection environ, trusted keys) -> the request's environ.
        self.environ = environ
        # framer(head) -> a Framer for this request's response, when the protocol wraps
        # responses in its own messages (FastCGI, AJP13) or rewrites the head (SCGI's CGI
        # response: "Status: 200 OK"); None: the response goes out as HTTP writes it (HTTP,
        # and uwsgi, whose front-ends read an HTTP status line).
        self.framer = framer
        # The body is framed by the protocol's own messages, so the event loop always
        # receives it (request_buffering off cannot stream it to the app from the socket).
        self.buffers_body = buffers_body
        # refuse(response, head or None) -> bytes: the server's own error answer (a 408 at
        # a deadline, a 400 for a bad body, a 500 for a failed app), written as HTTP, in
        # this protocol's form; for the request in hand, or None between requests. None:
        # sent as written. An HTTPError carrying ``wire`` bytes skips it.
        self.refuse = refuse


class FramedBody:
    """What a body decoder of a protocol that frames bodies in its own messages shares:
    ``done``, ``unused`` (what came after the body) and ``reply`` (bytes the connection
    must send the client, asking for more or answering a message beside the body)."""

    __slots__ = ("done", "unused", "reply")

    def __init__(self) -> None:
        self.done = False
        self.unused = b""
        self.reply = b""

    def take_reply(self) -> bytes:
        reply, self.reply = self.reply, b""
        return reply


class Control:
    """A message that is not a request, as ``parse_head`` returns it in place of a head.

    The connection sends ``reply`` (if any); then, with ``peer``, the client's
    address as the front-end vouches for it (``(addr, port)``) replaces the
    socket's; with ``protocol``, the connection speaks that one from here on (a
    PROXY preamble, then HTTP); with ``close``, it closes once ``reply`` is sent.
    """

    __slots__ = ("reply", "peer", "protocol", "close")

    def __init__(self, reply: bytes = b"", peer: tuple[str, str] | None = None,
                 protocol: Protocol | None = None, close: bool = False) -> None:
        self.reply = reply
        self.peer = peer
        self.protocol = protocol
        self.close = close


class Framer:
    """How one response is wrapped on the wire (FastCGI records, AJP packets, a CGI head).

    The dispatcher writes a response as HTTP would be written, without chunking
    and without a Connection field: ``head`` gets the head (status line and
    fields, through the blank line), ``body`` each piece of the body, and
    ``end`` marks the end, saying whether the connection stays open for the
    next request. Each returns the bytes to send.
    """

    def head(self, head: bytes) -> bytes:
        raise NotImplementedError

    def body(self, data: bytes) -> bytes:
        raise NotImplementedError

    def end(self, keep: bool) -> bytes:
        raise NotImplementedError


def frame_whole(framer: Framer, response: bytes, keep: bool = False) -> bytes:
    """A complete HTTP-form response (an error answer) as ``framer`` sends it."""
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    wrapped = framer.head(b"\r\n".join(lines) + sep)
    return wrapped + (framer.body(body) if body else b"") + framer.end(keep)


def cgi_status_line(response: bytes) -> bytes:
    """An HTTP response's head rewritten for a CGI reader: ``HTTP/1.1 200 OK`` becomes
    ``Status: 200 OK`` (RFC 3875 section 6.3.3)."""
    return b"Status: " + response[9:] if response.startswith(b"HTTP/1.1 ") else response
