"""AJP13, the Apache JServ Protocol (Apache ``mod_proxy_ajp``).

Everything on an AJP connection is a packet: from the web server, ``0x12 0x34``
and a 16-bit big-endian length; from us (the container), ``A B`` and the
length; then that many bytes, most starting with a one-byte type.

- A request is one FORWARD_REQUEST packet (type 2): the method as a code, the
  protocol, the request URI (percent-encoded, without the query), the client's
  address and host name, the server's name and port, whether the client came
  over TLS, the header fields (common names coded as ``0xA0xx``), then optional
  attributes (query string, remote user, auth type, TLS details, and
  ``(name, value)`` request attributes such as ``AJP_REMOTE_PORT``), ended by
  0xFF. Strings are a 16-bit length, the bytes, a NUL; length 0xFFFF is null.
- The body comes in data packets (no type byte: a 16-bit length, the bytes).
  With a Content-Length the web server sends the first one unasked, right after
  the request; every further one is sent when we ask with GET_BODY_CHUNK
  (type 6). A body without a length (the client sent it chunked) is asked for
  from the first packet on, and ends with an empty one.
- The response is SEND_HEADERS (type 4: status, reason, header fields),
  SEND_BODY_CHUNK packets (type 3: a length, the bytes, a NUL), then
  END_RESPONSE (type 5) whose byte says whether the connection is reused.
  Connections are kept and reused (mod_proxy_ajp pools them); a CPING (type
  10, ``ProxyPass ... ping=``) between requests is answered CPONG (type 9).

Decisions:
- The body is framed by packets, as a chunked body is by its chunks, so a head
  with a body says ``chunked`` and the event loop always receives it
  (``buffers_body``); the decoder asks for each packet by setting ``reply``.
- The request URI is percent-decoded into PATH_INFO and kept, with the query,
  as REQUEST_URI; strings are bytes read as latin-1 (PEP 3333), so a UTF-8
  path arrives byte for byte.
- What only the web server can know about the client (its address and port,
  REMOTE_USER, AUTH_TYPE, TLS, a SCRIPT_NAME request attribute) counts only
  from a trusted peer (``forwarded_allow_ips``), as forwarded headers do over
  HTTP. The ``secret`` attribute is read and not checked: trust is the peer's
  address, as for every other protocol.
- Errors are answered as AJP packets (SEND_HEADERS, the body, END_RESPONSE
  without reuse): the web server then relays the status to its client.

Owns: the packet format, the request head, the body decoder (and its
GET_BODY_CHUNK requests), the response framer and the environ of an AJP
request. Must never: touch a socket, or keep state between calls outside a
head or a decoder.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from forkwsgi.environ import add_fields, decoded_path, forward, under_mount
from forkwsgi.http.errors import (
    BadRequest,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    HTTPError,
    URITooLong,
)
from forkwsgi.http.parser import Limits, RequestHead, parse_content_length
from forkwsgi.protocols.base import Control, FramedBody, Framer, Protocol, frame_whole

_PACKET = struct.Struct(">HH")  # signature, payload length
_U16 = struct.Struct(">H")
SERVER_SIGNATURE = 0x1234  # web server -> container
CONTAINER_SIGNATURE = b"AB"  # container -> web server
FORWARD_REQUEST, SEND_BODY_CHUNK, SEND_HEADERS, END_RESPONSE = 2, 3, 4, 5
GET_BODY_CHUNK, CPONG, CPING = 6, 9, 10
NULL_STRING = 0xFFFF
# mod_proxy_ajp's packets are 8 KiB unless ProxyIOBufferSize says more (at most 64 KiB);
# ours stay within 8 KiB, which every web server accepts.
MAX_PACKET = 8192
# SEND_BODY_CHUNK: the 4-byte packet header, the type, the 2-byte length and a trailing NUL.
MAX_BODY_CHUNK = MAX_PACKET - 8
# What GET_BODY_CHUNK asks for: a data packet of MAX_PACKET bytes holds this much.
_ASK_SIZE = MAX_PACKET - 6
_MAX_PAYLOAD = 65536 - 4  # the largest packet a web server reads (ProxyIOBufferSize 64 KiB)
CPONG_PACKET = CONTAINER_SIGNATURE + b"\x00\x01" + bytes([CPONG])

# Method codes 1..27 (SC_M_*); 0xFF: the method is in the stored_method attribute.
_METHODS = (None, "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "PROPFIND",
            "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "ACL", "REPORT",
            "VERSION-CONTROL", "CHECKIN", "CHECKOUT", "UNCHECKOUT", "SEARCH", "MKWORKSPACE",
            "UPDATE", "LABEL", "MERGE", "BASELINE-CONTROL", "MKACTIVITY")
STORED_METHOD = 0xFF
# Request header names coded 0xA001..0xA00E.
_REQUEST_HEADERS = ("Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language",
                    "Authorization", "Connection", "Content-Type", "Content-Length", "Cookie",
                    "Cookie2", "Host", "Pragma", "Referer", "User-Agent")
# Response header names coded 0xA001..0xA00B, by lower-case name.
_RESPONSE_CODES = {name.lower().encode("latin-1"): 0xA001 + index for index, name in enumerate((
    "Content-Type", "Content-Language", "Content-Length", "Date", "Last-Modified", "Location",
    "Set-Cookie", "Set-Cookie2", "Servlet-Engine", "Status", "WWW-Authenticate"))}
# Attribute codes; 10 (a name/value pair) and 11 (a 16-bit number) read differently.
_ATTRIBUTES = {1: "context", 2: "servlet_path", 3: "remote_user", 4: "auth_type",
               5: "query_string", 6: "route", 7: "ssl_cert", 8: "ssl_cipher", 9: "ssl_session",
               12: "secret", 13: "stored_method"}
REQUEST_ATTRIBUTE, SSL_KEY_SIZE, ARE_DONE = 10, 11, 0xFF
# TLS attributes as mod_ssl names them in a CGI environment.
_SSL_KEYS = (("ssl_cert", "SSL_CLIENT_CERT"), ("ssl_cipher", "SSL_CIPHER"),
             ("ssl_session", "SSL_SESSION_ID"), ("ssl_key_size", "SSL_CIPHER_USEKEYSIZE"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch


@dataclass(slots=True)
class AjpHead(RequestHead):
    remote_addr: str = ""
    remote_host: str | None = None
    server_name: str = ""
    server_port: int = 0
    is_ssl: bool = False
    attributes: dict[str, str] = field(default_factory=dict)  # coded ones, by name
    request_attributes: dict[str, str] = field(default_factory=dict)  # (name, value) pairs


# --- requests ---------------------------------------------------------------------------------


_PONG = Control(reply=CPONG_PACKET)


def parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[AjpHead | Control, int] | None:
    """One FORWARD_REQUEST (or CPING) packet from the start of ``buf``; None until whole."""
    try:
        if len(buf) < 4:
            if buf[:2] != b"\x12\x34"[:len(buf)]:
                raise BadRequest("not an AJP13 packet (no 0x1234 signature)")
            return None
        signature, size = _PACKET.unpack_from(buf)
        if signature != SERVER_SIGNATURE:
            raise BadRequest("not an AJP13 packet (no 0x1234 signature)")
        if size + 4 > limits.head:
            raise HeaderFieldsTooLarge(f"AJP13 request packet over {limits.head} bytes")
        end = 4 + size
        if len(buf) < end:
            return None
        kind = buf[4] if size else None
        if kind == CPING:
            return _PONG, end
        if kind != FORWARD_REQUEST:
            raise BadRequest(f"AJP13 packet of type {kind} where a request was expected")
        return _forward_request(buf, end, limits), end
    except HTTPError as error:
        raise _as_packets(error) from None


def _forward_request(buf: bytes | bytearray, end: int, limits: Limits) -> AjpHead:
    method_code = buf[5] if end > 5 else 0
    at = 6
    version, at = _string(buf, at, end)
    uri, at = _string(buf, at, end)
    remote_addr, at = _string(buf, at, end)
    remote_host, at = _string(buf, at, end)
    server_name, at = _string(buf, at, end)
    if at + 5 > end:
        raise BadRequest("AJP13 request packet cut short")
    (server_port,) = _U16.unpack_from(buf, at)
    is_ssl = buf[at + 2] != 0
    (count,) = _U16.unpack_from(buf, at + 3)
    at += 5
    if count > limits.fields:
        raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
    headers: list[tuple[str, str]] = []
    for _ in range(count):
        if at + 2 > end:
            raise BadRequest("AJP13 request packet cut short")
        (code,) = _U16.unpack_from(buf, at)
        if code >> 8 == 0xA0:
            index = (code & 0xFF) - 1
            if not 0 <= index < len(_REQUEST_HEADERS):
                raise BadRequest(f"unknown AJP13 header code {code:#06x}")
            name = _REQUEST_HEADERS[index]
            at += 2
        else:
            name, at = _string(buf, at, end)
            if not name:
                raise BadRequest("AJP13 header field without a name")
        value, at = _string(buf, at, end)
        value = value or ""
        if len(name) + len(value) + 2 > limits.field_size:
            raise HeaderFieldsTooLarge(f"a header field over {limits.field_size} bytes")
        headers.append((name, value))
    attributes: dict[str, str] = {}
    request_attributes: dict[str, str] = {}
    while True:
        if at >= end:
            raise BadRequest("AJP13 request packet without its terminator")
        code = buf[at]
        at += 1
        if code == ARE_DONE:
            break
        if code == REQUEST_ATTRIBUTE:
            name, at = _string(buf, at, end)
            value, at = _string(buf, at, end)
            if name:
                request_attributes[name] = value or ""
        elif code == SSL_KEY_SIZE:
            if at + 2 > end:
                raise BadRequest("AJP13 request packet cut short")
            attributes["ssl_key_size"] = str(_U16.unpack_from(buf, at)[0])
            at += 2
        elif code in _ATTRIBUTES:
            value, at = _string(buf, at, end)
            if value is not None:
                attributes[_ATTRIBUTES[code]] = value
        else:
            raise BadRequest(f"unknown AJP13 attribute code {code:#04x}")
    if at != end:
        raise BadRequest("bytes after the AJP13 request terminator")

    if method_code == STORED_METHOD:
        method = attributes.get("stored_method", "")
    else:
        method = _METHODS[method_code] if method_code < len(_METHODS) else None
    if not method or not _TOKEN(method):
        raise BadRequest(f"no valid method in the AJP13 request (code {method_code})")
    if not uri or uri[0] != "/" and uri != "*":
        raise BadRequest("AJP13 request URI is not a path")
    query = attributes.get("query_string", "")
    if len(uri) + len(query) > limits.request_line:
        raise URITooLong(f"request URI over {limits.request_line} bytes")
    content_length = None
    chunked = False
    host = None
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            if content_length is not None:
                raise BadRequest("more than one Content-Length field")
            content_length = parse_content_length(value, limits)
        elif lower == "transfer-encoding":
            # The web server took the client's chunked body apart; its packets frame it now.
            if value.rpartition(",")[2].strip(" \t").lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {value!r}")
            chunked = True
        elif lower == "host":
            host = value
    if chunked:
        content_length = None
    elif content_length:
        chunked = True  # framed by data packets, whatever its length
    return AjpHead(method, uri + "?" + query if query else uri, uri, query,
                   version or "HTTP/1.1", headers, host, content_length or None, chunked, True,
                   False, remote_addr or "", remote_host, server_name or "", server_port,
                   is_ssl, attributes, request_attributes)


def _string(buf: bytes | bytearray, at: int, end: int) -> tuple[str | None, int]:
    """A string at ``at``: (its text, or None for the null string; where the next field is)."""
    if at + 2 > end:
        raise BadRequest("AJP13 request packet cut short")
    (length,) = _U16.unpack_from(buf, at)
    at += 2
    if length == NULL_STRING:
        return None, at
    stop = at + length
    if stop >= end or buf[stop] != 0:
        raise BadRequest("AJP13 string not ended by NUL within its packet")
    return bytes(buf[at:stop]).decode("latin-1"), stop + 1


def _as_packets(error: HTTPError) -> HTTPError:
    """``error`` answered as AJP packets, the connection not to be reused."""
    if error.wire is None:
        error.wire = frame_whole(FRAMER, error.response(), keep=False)
    return error


# --- the body ---------------------------------------------------------------------------------


def get_body_chunk(size: int = _ASK_SIZE) -> bytes:
    """The GET_BODY_CHUNK packet asking for up to ``size`` bytes of body."""
    return CONTAINER_SIGNATURE + b"\x00\x03" + bytes([GET_BODY_CHUNK]) + _U16.pack(size)


_ASK = get_body_chunk()


class BodyDecoder(FramedBody):
    """A body in data packets, fed in pieces of any size; asks for each next packet.

    With a Content-Length the body ends at that many bytes; without one, at the
    first empty data packet. ``reply`` is a GET_BODY_CHUNK to send whenever the
    packets received so far are all consumed and more body is due (at once, for
    a body without a length: the web server sends none of it unasked).
    """

    __slots__ = ("trailers", "_buf", "_left", "_total", "_limit")

    def __init__(self, length: int | None, limits: Limits) -> None:
        super().__init__()
        self.trailers: list[tuple[str, str]] = []
        self._buf = b""
        self._left = length  # None: until the empty packet
        self._total = 0
        self._limit = limits.body
        self.reply = b"" if length else _ASK

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.unused += data
            return b""
        buf = self._buf + data if self._buf else data
        at = 0
        size = len(buf)
        out: list[bytes] = []
        try:
            while size - at >= 4:
                signature, length = _PACKET.unpack_from(buf, at)
                if signature != SERVER_SIGNATURE:
                    raise BadRequest("request body packet without the 0x1234 signature")
                if size - at - 4 < length:
                    break  # the rest of this packet is on its way
                start = at + 4
                at = start + length
                # An empty packet is the empty chunk, bare (length 0) or with its length
                # (length 2, chunk 0).
                chunk = _U16.unpack_from(buf, start)[0] if length >= 2 else 0
                if length == 1 or chunk > length - 2 >= 0:
                    raise BadRequest("request body packet with a bad chunk length")
                if not chunk:
                    if self._left:
                        raise BadRequest(f"request body ended {self._left} bytes short of "
                                         f"its Content-Length")
                    self._finish(buf, at)
                    break
                out.append(buf[start + 2:start + 2 + chunk])
                self._total += chunk
                if self._left is not None:
                    self._left -= chunk
                    if self._left < 0:
                        raise BadRequest("request body longer than its Content-Length")
                    if not self._left:
                        self._finish(buf, at)
                        break
                elif self._limit and self._total > self._limit:
                    raise ContentTooLarge(f"request body over {self._limit} bytes")
            if not self.done:
                self._buf = buf[at:]
                if out and not self._buf:
                    # Everything asked for is here: the web server sends nothing more unasked.
                    self.reply = _ASK
        except HTTPError as error:
            raise _as_packets(error) from None
        return b"".join(out) if len(out) != 1 else out[0]

    def _finish(self, buf: bytes, at: int) -> None:
        self.done = True
        self.reply = b""
        self._buf = b""
        self.unused = buf[at:]


def body_decoder(head: AjpHead, limits: Limits) -> BodyDecoder:
    return BodyDecoder(head.content_length, limits)


# --- responses --------------------------------------------------------------------------------


class AjpFramer(Framer):
    """A response as SEND_HEADERS, SEND_BODY_CHUNK packets and END_RESPONSE (stateless:
    one serves every response)."""

    __slots__ = ()

    def head(self, head: bytes) -> bytes:
        if len(head) > _MAX_PAYLOAD:
            _head_too_large(len(head))
        lines = head.split(b"\r\n")
        status = lines[0]  # "HTTP/1.1 200 OK": the code at 9, the reason after it
        parts = [bytes([SEND_HEADERS]), _U16.pack(int(status[9:12])), _bstring(status[13:])]
        fields = [line for line in lines[1:] if line]
        parts.append(_U16.pack(len(fields)))
        for line in fields:
            name, _, value = line.partition(b":")
            code = _RESPONSE_CODES.get(name.lower())
            parts.append(_U16.pack(code) if code else _bstring(name))
            parts.append(_bstring(value.strip(b" \t")))
        payload = b"".join(parts)
        if len(payload) > _MAX_PAYLOAD:
            _head_too_large(len(payload))
        return _packet(payload)

    def body(self, data: bytes) -> bytes:
        if len(data) <= MAX_BODY_CHUNK:
            return _body_packet(data)
        return b"".join([_body_packet(data[at:at + MAX_BODY_CHUNK])
                         for at in range(0, len(data), MAX_BODY_CHUNK)])

    def end(self, keep: bool) -> bytes:
        return _END_REUSE if keep else _END_CLOSE


def _head_too_large(size: int) -> None:
    # A response head is one packet: no web server could read a longer one.
    raise ValueError(f"response head of {size} bytes: over the {_MAX_PAYLOAD} bytes one "
                     f"AJP13 packet holds")


def _bstring(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value + b"\0"


def _packet(payload: bytes) -> bytes:
    return CONTAINER_SIGNATURE + _U16.pack(len(payload)) + payload


def _body_packet(data: bytes) -> bytes:
    return b"".join((CONTAINER_SIGNATURE, _U16.pack(len(data) + 4), _BODY_CHUNK_TYPE,
                     _U16.pack(len(data)), data, b"\0"))


_BODY_CHUNK_TYPE = bytes([SEND_BODY_CHUNK])
_END_REUSE = _packet(bytes([END_RESPONSE, 1]))
_END_CLOSE = _packet(bytes([END_RESPONSE, 0]))
FRAMER = AjpFramer()


def framer(head: AjpHead) -> AjpFramer:
    return FRAMER


# --- the environ ------------------------------------------------------------------------------


def ajp_environ(head: AjpHead, conn_environ: dict, trusted: frozenset[str]) -> dict:
    """The environ of an AJP request: the connection's, then what the packet says."""
    environ = conn_environ.copy()
    environ["REQUEST_METHOD"] = head.method
    environ["SERVER_PROTOCOL"] = head.version
    environ["QUERY_STRING"] = head.query
    environ["RAW_URI"] = environ["REQUEST_URI"] = head.target
    if head.server_name:
        environ["SERVER_NAME"] = head.server_name
        environ["SERVER_PORT"] = str(head.server_port)
    add_fields(environ, head.headers)
    environ.pop("CONTENT_LENGTH", None)  # the body's length is the packets' (below)
    if head.content_length is not None:
        environ["CONTENT_LENGTH"] = str(head.content_length)
    path_info = decoded_path(head.path)
    script_name = environ["SCRIPT_NAME"]
    if trusted:
        if head.remote_addr:
            environ["REMOTE_ADDR"] = head.remote_addr
            # Never the web server's own port beside the client's address.
            environ["REMOTE_PORT"] = head.request_attributes.get("AJP_REMOTE_PORT", "")
        if head.remote_host:
            environ["REMOTE_HOST"] = head.remote_host
        attributes = head.attributes
        if "remote_user" in attributes:
            environ["REMOTE_USER"] = attributes["remote_user"]
        if "auth_type" in attributes:
            environ["AUTH_TYPE"] = attributes["auth_type"]
        if head.is_ssl:
            environ["wsgi.url_scheme"] = "https"
            environ["HTTPS"] = "on"
            for name, key in _SSL_KEYS:
                if name in attributes:
                    environ[key] = attributes[name]
        # The mount, when the web server names it (SetEnv AJP_SCRIPT_NAME /app).
        script_name = head.request_attributes.get("SCRIPT_NAME") or script_name
        forward(environ, trusted)
    if script_name:
        # Cut on a segment boundary; a path outside the mount leaves SCRIPT_NAME empty.
        if under_mount(path_info, script_name):
            path_info = path_info[len(script_name):]
        else:
            script_name = ""
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    return environ


def refuse(response: bytes, head: AjpHead | None) -> bytes:
    """The server's own error answer (a 408 at a deadline) as AJP packets, without reuse."""
    return frame_whole(FRAMER, response, keep=False)


AJP = Protocol("ajp", parse_head, body_decoder, ajp_environ, framer=framer, buffers_body=True,
               refuse=refuse)
