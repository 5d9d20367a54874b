"""FastCGI, the responder role (nginx ``fastcgi_pass``, Apache ``mod_proxy_fcgi``).

Everything on a FastCGI connection is a record: an 8-byte header (version 1,
type, request id, content length, padding length), then the content and the
padding. A request is a BEGIN_REQUEST (role, and the FCGI_KEEP_CONN flag), its
CGI variables as name-value pairs in PARAMS records up to an empty one, and
its body in STDIN records up to an empty one; the response is STDOUT records
(a CGI response: ``Status: 200 OK``, fields, body), an empty STDOUT record,
and an END_REQUEST. The connection stays open for the next request only when
the front-end set FCGI_KEEP_CONN (nginx ``fastcgi_keep_conn on``).

Decisions:
- One request at a time per connection: GET_VALUES is answered
  FCGI_MPXS_CONNS=0, and a BEGIN_REQUEST for another id while a body arrives
  gets END_REQUEST with FCGI_CANT_MPX_CONN (nginx and Apache never multiplex).
- Records of a request id that is not active are skipped, as the
  specification asks; a management record (id 0) of an unknown type gets
  UNKNOWN_TYPE; a role other than responder gets END_REQUEST FCGI_UNKNOWN_ROLE.
  One that comes among a request's PARAMS records is answered before that
  request's response (the head carries the answer to the body decoder).
- ABORT_REQUEST while the body arrives ends the request (END_REQUEST, no app
  call). After the app has run, an ABORT for it is a record of an inactive id.
- The body is framed by STDIN records, as a chunked body is by its chunks, so
  the head says ``chunked`` and the event loop always receives it; a request
  whose empty STDIN record comes with its head has no body phase at all.
- Variables are bytes read as latin-1 and mapped to the environ as uwsgi's
  and SCGI's are (gateway.gateway_environ).

Owns: the record format, the name-value pair encoding, the request head, the
STDIN decoder and the response framer. Must never: touch a socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from forkwsgi.http.errors import BadRequest, ContentTooLarge, HeaderFieldsTooLarge, HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols.base import (
    Control,
    FramedBody,
    Framer,
    Protocol,
    cgi_status_line,
    frame_whole,
)
from forkwsgi.protocols.gateway import GatewayHead, gateway_environ, head_from_variables

_HEADER = struct.Struct(">BBHHBx")
_BEGIN = struct.Struct(">HB5x")
_END = struct.Struct(">IB3x")
VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT = 1, 2, 3, 4, 5, 6
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER, KEEP_CONN = 1, 1
REQUEST_COMPLETE, CANT_MPX_CONN, UNKNOWN_ROLE = 0, 1, 3
MAX_CONTENT = 65535
_MANAGEMENT_VALUES = {"FCGI_MPXS_CONNS": "0"}


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record; content over 65535 bytes is the caller's to split (see ``stream``)."""
    return _HEADER.pack(VERSION, kind, request_id, len(content), 0) + content


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """``data`` as records of at most MAX_CONTENT bytes each (no closing empty record)."""
    if len(data) <= MAX_CONTENT:
        return record(kind, request_id, data)
    return b"".join(record(kind, request_id, data[at:at + MAX_CONTENT])
                    for at in range(0, len(data), MAX_CONTENT))


def end_request(request_id: int, protocol_status: int = REQUEST_COMPLETE,
                app_status: int = 0) -> bytes:
    return record(END_REQUEST, request_id, _END.pack(app_status, protocol_status))


def encode_pairs(pairs: dict[str, str]) -> bytes:
    out = []
    for name, value in pairs.items():
        for text in (name, value):
            size = len(text.encode("latin-1"))
            out.append(bytes([size]) if size < 128 else struct.pack(">I", size | 0x80000000))
        out.append(name.encode("latin-1") + value.encode("latin-1"))
    return b"".join(out)


def decode_pairs(data: bytes, into: dict[str, str], most: int) -> None:
    at, end = 0, len(data)
    while at < end:
        sizes = []
        for _ in range(2):
            if at >= end:
                raise BadRequest("FastCGI name-value pair cut short")
            if data[at] < 128:
                sizes.append(data[at])
                at += 1
            else:
                if at + 4 > end:
                    raise BadRequest("FastCGI name-value pair cut short")
                sizes.append(struct.unpack_from(">I", data, at)[0] & 0x7FFFFFFF)
                at += 4
        name_size, value_size = sizes
        if at + name_size + value_size > end:
            raise BadRequest("FastCGI name-value pair cut short")
        name = data[at:at + name_size].decode("latin-1")
        at += name_size
        into[name] = data[at:at + value_size].decode("latin-1")
        at += value_size
        if len(into) > most:
            raise HeaderFieldsTooLarge(f"more than {most} FastCGI parameters")


def _records(buf: bytes | bytearray, at: int):
    """Each whole record from ``at``: (type, id, content, offset after it); stops short."""
    size = len(buf)
    while at + 8 <= size:
        version, kind, request_id, length, padding = _HEADER.unpack_from(buf, at)
        if version != VERSION:
            raise BadRequest(f"FastCGI record version {version}")
        end = at + 8 + length + padding
        if end > size:
            return
        yield kind, request_id, bytes(buf[at + 8:at + 8 + length]), end
        at = end


# What a request head may carry beside its parameters: record headers, padding, management
# records among them.
_RECORDS_SLACK = 8 * 1024


@dataclass(slots=True)
class FastCGIHead(GatewayHead):
    request_id: int = 0
    # Answers to management records that came among the PARAMS records, sent by the body
    # decoder before any body byte (the head has no reply of its own).
    replies: bytes = b""


# --- the head ----------------------------------------------------------------------------------


def parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[object, int] | None:
    """The next request's head (BEGIN_REQUEST and its PARAMS), or a Control for a record
    that is not one; None until the bytes are whole."""
    records = _records(buf, 0)
    first = next(records, None)
    if first is None:
        if len(buf) >= 8 and buf[0] != VERSION:
            raise BadRequest(f"FastCGI record version {buf[0]}")
        return None
    kind, request_id, content, end = first
    if request_id == 0:
        return _management(kind, content), end
    if kind != BEGIN_REQUEST:
        return Control(), end  # a record of an inactive request (an ABORT after the end)
    if len(content) < _BEGIN.size:
        raise BadRequest("FastCGI BEGIN_REQUEST too short")
    role, flags = _BEGIN.unpack_from(content)
    if role != RESPONDER:
        return Control(reply=end_request(request_id, UNKNOWN_ROLE)), end
    keep = bool(flags & KEEP_CONN)
    variables: dict[str, str] = {}
    params = bytearray()
    most = limits.fields + 64
    replies = b""
    for kind, rid, content, end in records:
        if rid != request_id:
            if rid == 0:
                replies += _management(kind, content).reply
                continue
            raise BadRequest("FastCGI records of two requests interleaved")
        if kind == ABORT_REQUEST:
            return Control(reply=end_request(request_id), close=not keep), end
        if kind != PARAMS:
            raise BadRequest(f"FastCGI record type {kind} before the end of PARAMS")
        if content:
            params += content
            if len(params) > limits.head:
                raise _answered_on(request_id, HeaderFieldsTooLarge(
                    f"FastCGI parameters over {limits.head} bytes"))
            continue
        if end > limits.head + _RECORDS_SLACK:
            # As the partial head below is bounded (padding, management records): else the
            # answer would depend on how the bytes were split into reads.
            raise HeaderFieldsTooLarge(f"FastCGI request head over {limits.head} bytes")
        decode_pairs(bytes(params), variables, most)
        head = _head(variables, limits, request_id, keep)
        head.replies = replies
        # Without a body, the empty STDIN record usually comes in the same packet: take it
        # with the head, and the request skips the body phase (unless the body decoder has
        # answers to send).
        after = next(_records(buf, end), None)
        if after is not None and after[0] == STDIN and after[1] == request_id and \
                not after[2] and not head.content_length and not replies:
            head.chunked = False
            return head, after[3]
        return head, end
    if len(buf) > limits.head + _RECORDS_SLACK:
        raise HeaderFieldsTooLarge(f"FastCGI request head over {limits.head} bytes")
    return None


def _head(variables: dict[str, str], limits: Limits, request_id: int, keep: bool
          ) -> FastCGIHead:
    try:
        base = head_from_variables(variables, limits)
    except HTTPError as error:
        raise _answered_on(request_id, error) from None
    head = FastCGIHead(base.method, base.target, base.path, base.query, base.version, [],
                       None, base.content_length, True, keep, False, variables, request_id)
    return head


def _management(kind: int, content: bytes) -> Control:
    if kind == GET_VALUES:
        asked: dict[str, str] = {}
        decode_pairs(content, asked, 64)
        known = {name: _MANAGEMENT_VALUES[name] for name in asked if name in _MANAGEMENT_VALUES}
        return Control(reply=record(GET_VALUES_RESULT, 0, encode_pairs(known)))
    return Control(reply=record(UNKNOWN_TYPE, 0, bytes([kind]) + b"\0" * 7))


def _answered_on(request_id: int, error: HTTPError) -> HTTPError:
    """``error``, its answer (a CGI response, then END_REQUEST) in the request's records."""
    error.wire = _in_records(request_id, error.response())
    return error


def _in_records(request_id: int, response: bytes) -> bytes:
    return frame_whole(ResponseFramer(request_id), response)


# --- the body ----------------------------------------------------------------------------------


class StdinDecoder(FramedBody):
    """The body, from the STDIN records of one request, up to its empty STDIN record."""

    __slots__ = ("request_id", "limits", "_buf", "_total")

    def __init__(self, head: FastCGIHead, limits: Limits) -> None:
        super().__init__()
        self.request_id = head.request_id
        self.reply = head.replies
        self.limits = limits
        self._buf = b""
        self._total = 0

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.unused += data
            return b""
        buf = self._buf + data if self._buf else data
        out = []
        at = 0
        for kind, request_id, content, end in _records(buf, 0):
            at = end
            if request_id == self.request_id:
                if kind == ABORT_REQUEST:
                    raise BadRequest("FastCGI request aborted by the front-end",
                                     wire=end_request(request_id))
                if kind != STDIN:
                    raise BadRequest(f"FastCGI record type {kind} in the body")
                if not content:
                    self.done = True
                    self.unused = buf[end:]
                    self._buf = b""
                    return b"".join(out)
                self._total += len(content)
                if self.limits.body and self._total > self.limits.body:
                    raise _too_large(request_id, self.limits.body)
                out.append(content)
            elif request_id == 0:
                self.reply += _management(kind, content).reply
            elif kind == BEGIN_REQUEST:
                self.reply += end_request(request_id, CANT_MPX_CONN)
            # else: a record of an inactive request, skipped
        self._buf = buf[at:]
        return b"".join(out)


def _too_large(request_id: int, limit: int) -> HTTPError:
    return _answered_on(request_id, ContentTooLarge(f"FastCGI body over {limit} bytes"))


def body_decoder(head: FastCGIHead, limits: Limits) -> StdinDecoder:
    return StdinDecoder(head, limits)


# --- the response ------------------------------------------------------------------------------


class ResponseFramer(Framer):
    """The response as STDOUT records, then the empty STDOUT and END_REQUEST."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id

    def head(self, head: bytes) -> bytes:
        # A CGI response: "Status: 200 OK" where HTTP has its status line.
        return stream(STDOUT, self.request_id, cgi_status_line(head))

    def body(self, data: bytes) -> bytes:
        return stream(STDOUT, self.request_id, data)

    def end(self, keep: bool) -> bytes:
        return record(STDOUT, self.request_id) + end_request(self.request_id)


def framer(head: FastCGIHead) -> ResponseFramer:
    return ResponseFramer(head.request_id)


def refuse(response: bytes, head: FastCGIHead | None) -> bytes:
    """The server's own error answer: as the request's records, while a request's body
    arrives; between requests there is no request id to answer on: nothing (the
    connection closes)."""
    return _in_records(head.request_id, response) if head is not None else b""


FASTCGI = Protocol("fastcgi", parse_head, body_decoder, gateway_environ, framer=framer,
                   buffers_body=True, refuse=refuse)
