"""Request heads and chunked bodies from bytes (RFC 9112 sections 2-7), sans-I/O.

Owns: recognising where a request head ends, validating the request line
and every header field, deciding the body framing (Content-Length, chunked
or none) and persistence (keep-alive) of the request, and decoding chunked
bodies. Every check cites the RFC section that asks for it; the grammar
itself lives in _abnf.py, as data.

Must never: touch a socket, a clock or a setting object, keep state between
calls of parse_head, build a WSGI environ, or be lenient about framing.
Anything that could make two parsers disagree on where a request ends is an
error here, answered with the status its exception class carries, after
which the worker closes the connection.

The hot path (a complete, valid origin-form head) does no per-character
work in Python: one ``find`` for the end of the head, one latin-1 decode, one
``split``, one ``bytes.translate`` that proves every byte legal and every CR
and LF part of a CRLF, one regex for the request line, one regex search for
a field line that does not start with ``token:``, one comprehension to split
and strip the fields, and C-level maps that lower-case the names to pick out
the five fields that matter for framing. Everything else (incomplete heads,
other target forms, errors) takes slower paths that say exactly what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from forkwsgi.http import _abnf
from forkwsgi.http.errors import (
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeaderFieldsTooLarge,
    URITooLong,
    VersionNotSupported,
)


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int = 8190  # longer -> URITooLong (414)
    fields: int = 100  # more header fields -> HeaderFieldsTooLarge (431)
    field_size: int = 8190  # one "Name: value" line longer -> 431
    head: int = 65536  # the whole head longer -> 431
    body: int = 0  # Content-Length larger -> ContentTooLarge (413); 0 = no limit


@dataclass(slots=True)
class RequestHead:
    method: str  # "GET"; a token
    target: str  # the raw request-target as sent (latin-1), e.g. "/a%20b?x=1"
    path: str  # percent-encoded path: origin-form path, absolute-form path ("/" if empty), "*"
    query: str  # after the first "?", without it; "" when absent
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]  # (name as sent, value stripped of OWS), latin-1 str, in order
    host: str | None  # authority of an absolute-form target, else the Host field, else None
    content_length: int | None  # framed by Content-Length; None when chunked or no body
    chunked: bool  # Transfer-Encoding: chunked (final coding)
    keep_alive: bool  # persistence after this request (RFC 9112 section 9.3)
    expect_continue: bool  # "Expect: 100-continue" present


_DEFAULT_LIMITS = Limits()
_HTTP11 = "HTTP/1.1"
_FRAMING = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))
# Every byte a request head may hold but CR and LF: HTAB, SP, VCHAR, obs-text (RFC 9110
# section 5.5). Deleting them from a head leaves its CRLFs and nothing else, or it is bad.
_HEAD_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# A Content-Length of more than 18 significant digits is over an exabyte: refused as too
# large whatever the body limit, so int() never sees an absurd numeral (RFC 9110 section 8.6:
# "a recipient MUST anticipate potentially large decimal numerals and prevent parsing errors
# due to integer conversion overflows").
_MAX_LENGTH_DIGITS = 18

_request_line_origin = _abnf.REQUEST_LINE_ORIGIN.fullmatch
_bad_field_start = _abnf.BAD_FIELD_START.search
_bad_percent = _abnf.BAD_PERCENT.search
_host_match = _abnf.HOST.fullmatch
_partition = str.partition
_lower = str.lower
_name = itemgetter(0)
_colons = repeat(":")


# --- request heads ----------------------------------------------------------------------------


def parse_head(buf: bytes | bytearray, limits: Limits = _DEFAULT_LIMITS
               ) -> tuple[RequestHead, int] | None:
    """Parse one request head from the start of ``buf``.

    Returns ``(head, consumed)`` where ``consumed`` is the byte length of the
    head including its final CRLF CRLF (and any empty lines before it), or
    None when more bytes are needed. Raises an HTTPError subclass (carrying
    its status) for any invalid or over-limit input, as soon as the bytes
    seen prove it.
    """
    start = 0
    if buf[:2] == b"\r\n":
        # RFC 9112 section 2.2: "a server that is expecting to receive and parse a
        # request-line SHOULD ignore at least one empty line (CRLF) received prior to the
        # request-line." Any number is ignored; they count towards limits.head.
        start = 2
        while buf[start:start + 2] == b"\r\n":
            start += 2
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _check_incomplete(buf, start, limits)
        return None

    raw = buf[start:end]
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    request_line = lines[0]
    if len(request_line) > limits.request_line:
        raise URITooLong(f"request line over {limits.request_line} bytes")
    if end + 4 > limits.head:
        raise HeaderFieldsTooLarge(f"request head over {limits.head} bytes")
    # One pass over the bytes proves there is no CTL, DEL, NUL, bare CR or bare LF anywhere:
    # deleting every allowed byte must leave exactly the CRLFs that split() found.
    if len(raw.translate(None, _HEAD_BYTES)) != 2 * len(lines) - 2:
        _diagnose(text, limits)

    match = _request_line_origin(request_line)
    if match is not None:
        method, target, path, query, version = match.groups()
        if query is None:
            query = ""
        if "%" in path and _bad_percent(path):
            raise BadRequest(_target_error(target))
        if method == "CONNECT":
            raise BadRequest("CONNECT needs an authority-form target (RFC 9112 section 3.2.3)")
        authority = None
    else:
        method, target, path, query, version, authority = _request_line(request_line)

    if len(lines) == 1:
        headers = []
        lowered = []
        framing = ()
    else:
        if _bad_field_start(text, len(request_line) + 1) is not None:
            _diagnose(text, limits)
        del lines[0]
        if len(lines) > limits.fields:
            raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
        if len(text) - len(request_line) > limits.field_size + 2 and (
                max(map(len, lines)) > limits.field_size):
            raise HeaderFieldsTooLarge(f"a header field line over {limits.field_size} bytes")
        # RFC 9112 section 5: field-line = field-name ":" OWS field-value OWS. The name is a
        # token (checked above), so the first colon ends it.
        headers = [(name, value.strip(" \t")) for name, _, value in map(_partition, lines, _colons)]
        # Only the five fields below matter to the server; find them without a Python-level
        # loop over every field.
        lowered = list(map(_lower, map(_name, headers)))
        framing = _FRAMING.intersection(lowered)
        if len(lowered) > 1 and len(set(lowered)) != len(lowered):
            _check_singletons(lowered)

    http11 = version == _HTTP11
    # RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to
    # any HTTP/1.1 request message that lacks a Host header field and to any request message
    # that contains more than one Host header field line or a Host header field with an
    # invalid field value."
    host = None
    if "host" in framing:
        if lowered.count("host") > 1:
            raise BadRequest("more than one Host field")
        host = headers[lowered.index("host")][1]
        if _host_match(host) is None or "%" in host and _bad_percent(host):
            raise BadRequest("invalid Host field value")
    elif http11:
        raise BadRequest("HTTP/1.1 request without Host")
    if authority is not None:
        # RFC 9112 section 3.2.2: the origin server "MUST ignore the received Host header
        # field (if any) and instead use the host information of the request-target."
        host = authority

    content_length = None
    chunked = False
    keep_alive = http11
    expect_continue = False
    if len(framing) > ("host" in framing):  # any framing field but Host
        length = None
        if "content-length" in framing:
            if lowered.count("content-length") > 1:
                # RFC 9110 section 8.6 lets a recipient merge identical values; we don't: a
                # duplicate means some hop concatenated or injected fields.
                raise BadRequest("more than one Content-Length field")
            length = headers[lowered.index("content-length")][1]
        if "transfer-encoding" in framing:
            # RFC 9112 section 6.1: "A server or client that receives an HTTP/1.0 message
            # containing a Transfer-Encoding header field MUST treat the message as if the
            # framing is faulty".
            if not http11:
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            # RFC 9112 section 6.3 item 3: both present "ought to be handled as an error";
            # section 6.1: "A server MAY reject a request that contains both". We do: it is
            # CL.TE / TE.CL smuggling's favourite shape.
            if length is not None:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            # RFC 9110 section 5.3: field lines of one name combine into a list, in order.
            coding = _all_values(headers, lowered, "transfer-encoding", ", ")
            # RFC 9112 section 6.1: chunked must be the final coding, applied once; "If a
            # Transfer-Encoding header field is present in a request and the chunked
            # transfer coding is not the final encoding, the message body length cannot be
            # determined reliably; the server MUST respond with the 400 (Bad Request) status
            # code and then close the connection." We decode no other coding (where RFC 9112
            # section 6.1 suggests 501 for an unknown one, a 400 closes just as well), so
            # exactly one "chunked", in any case, is the only value accepted: "gzip, chunked",
            # "chunked, chunked", "identity", empty list members, parameters are all 400.
            if coding.lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {coding!r}")
            chunked = True
        elif length is not None:
            content_length = parse_content_length(length, limits)
        if "connection" in framing:
            # RFC 9112 section 9.3: HTTP/1.1 persists unless "close" is a connection option;
            # HTTP/1.0 persists only with the "keep-alive" option (appendix C.2.2).
            options = _all_values(headers, lowered, "connection", ",").lower()
            if options == "close":
                keep_alive = False
            elif options == "keep-alive":
                keep_alive = True
            else:
                options = {option.strip(" \t") for option in options.split(",")}
                keep_alive = "close" not in options and (http11 or "keep-alive" in options)
        if "expect" in framing and http11:
            # RFC 9110 section 10.1.1: "A server that receives a 100-continue expectation in
            # an HTTP/1.0 request MUST ignore that expectation", so only HTTP/1.1 gets here.
            expect_continue = _expect_continue(_all_values(headers, lowered, "expect", ","))
    # else: RFC 9112 section 6.3 item 6: no Transfer-Encoding nor Content-Length in a request
    # means a body length of zero; and only Host, so the version decides persistence.
    if method == "CONNECT":
        # A WSGI app cannot run a tunnel; should it answer 2xx anyway, the client would start
        # sending tunnel bytes that must never be read as a next request.
        keep_alive = False

    return RequestHead(method, target, path, query, version, headers, host, content_length,
                       chunked, keep_alive, expect_continue), end + 4


# Request fields whose grammar is one value, not a list (RFC 9110 and the specs they
# cite): two lines of one of them would be joined with a comma into a value no parser
# reads the same way (which Content-Type governs the body?). Host and Content-Length
# have their own checks, with their own messages, below.
SINGLETONS = frozenset((
    "authorization", "content-location", "content-range", "content-type", "date", "from",
    "if-modified-since", "if-range", "if-unmodified-since", "max-forwards", "origin",
    "proxy-authorization", "range", "referer", "user-agent",
))


def _check_singletons(lowered: list[str]) -> None:
    seen: set[str] = set()
    for name in lowered:
        if name in seen and name in SINGLETONS:
            raise BadRequest(f"more than one {name} field")
        seen.add(name)


def _all_values(headers: list[tuple[str, str]], lowered: list[str], name: str,
                separator: str) -> str:
    """The values of every ``name`` field line, combined (RFC 9110 section 5.3)."""
    if lowered.count(name) == 1:
        return headers[lowered.index(name)][1]
    return separator.join([value for (_, value), lname in zip(headers, lowered, strict=True)
                           if lname == name])


def parse_content_length(value: str, limits: Limits) -> int:
    """A Content-Length value (or a gateway's CONTENT_LENGTH) as an int, or the error."""
    # RFC 9110 section 8.6: Content-Length = 1*DIGIT. isascii() keeps out "²" and the other
    # latin-1 characters that str.isdigit() accepts. RFC 9112 section 6.3 item 5: an invalid
    # Content-Length is an unrecoverable framing error, 400; so is "1,1" or "+1" or " 1 1".
    if not (value.isdigit() and value.isascii()):
        raise BadRequest("invalid Content-Length")
    if len(value.lstrip("0")) > _MAX_LENGTH_DIGITS:
        raise ContentTooLarge("Content-Length over 10**18")
    length = int(value)
    if limits.body and length > limits.body:
        raise ContentTooLarge(f"Content-Length over {limits.body} bytes")
    return length


def _expect_continue(expect: str) -> bool:
    # RFC 9110 section 10.1.1: "A server that receives an Expect field value containing a
    # member other than 100-continue MAY respond with a 417 (Expectation Failed)". We do.
    # Empty list members are ignored (RFC 9110 section 5.6.1).
    members = {member.strip(" \t") for member in expect.lower().split(",")}
    members.discard("")
    if members - {"100-continue"}:
        raise ExpectationFailed(f"unsupported expectation {expect!r}")
    return bool(members)


def _diagnose(text: str, limits: Limits) -> None:
    """Raise the error for the first bad line of a complete head that a fast check refused.

    In order: the request line, then per field line its length (431), the field count
    (431), its syntax (400).
    """
    lines = text.split("\r\n")
    _request_line(lines[0])
    _check_field_lines(lines[1:], limits)
    raise BadRequest("invalid request head")  # not reached: some check above fails


def _check_field_lines(lines: list[str], limits: Limits) -> None:
    for index, line in enumerate(lines):
        if len(line) > limits.field_size:
            raise HeaderFieldsTooLarge(f"a header field line over {limits.field_size} bytes")
        if index >= limits.fields:
            raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
        if _abnf.FIELD_LINE.fullmatch(line) is None:
            raise _field_error(line)


def _field_error(line: str) -> BadRequest:
    """The BadRequest saying why ``line`` (without its CRLF) is not a field line."""
    if line[:1] in (" ", "\t"):
        # RFC 9112 section 5.2: "A server that receives an obs-fold in a request message
        # [...] MUST either reject the message by sending a 400 (Bad Request)"; before the
        # first field it is whitespace after the start-line (section 2.2), rejected alike.
        return BadRequest("obs-fold (a field line starting with whitespace)")
    lone = _lone_line_end(line)
    if lone:
        return BadRequest(lone)
    name, colon, _ = line.partition(":")
    if not colon:
        return BadRequest("header field line without a colon")
    if not name:
        return BadRequest("empty header field name")
    if name[-1] in " \t":
        # RFC 9112 section 5.1: "A server MUST reject, with a response status code of 400
        # (Bad Request), any received request message that contains whitespace between a
        # header field name and colon."
        return BadRequest("whitespace between header field name and colon")
    if _abnf.FIELD_NAME.fullmatch(name) is None:
        return BadRequest("header field name is not a token")
    # RFC 9110 section 5.5: CR, LF and NUL in a value are invalid and dangerous; every other
    # CTL and DEL are refused too (see _abnf.field_vchar).
    return BadRequest("invalid character in header field value")


def _lone_line_end(text: str) -> str:
    """Which lone line-end ``text`` holds, as an error detail; "" for none.

    RFC 9112 section 2.2: a recipient MAY accept a bare LF as a line terminator, and "a
    bare CR [...] MUST either [be considered] invalid or replaced with SP". We accept
    neither: the only line terminator is CRLF, so every parser on the path agrees where
    each line, and so the head, ends.
    """
    if "\n" in text:
        return "bare LF in the request head (only CRLF ends a line)"
    if "\r" in text:
        return "bare CR in the request head"
    return ""


def _request_line(line: str) -> tuple[str, str, str, str, str, str | None]:
    """The slow path: any request line the origin-form regex refused.

    Returns (method, target, path, query, version, authority-or-None) for the other target
    forms, or raises the most specific error.
    """
    lone = _lone_line_end(line)
    if lone:
        raise BadRequest(lone)
    # RFC 9112 section 3: request-line = method SP request-target SP HTTP-version; exactly
    # one SP each. Section 3 lets a recipient split on other whitespace too, but a reading
    # that can differ from the next hop's is how smuggling starts, so we don't.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest("request line is not 'method SP request-target SP HTTP-version'")
    method, target, version = parts
    if _abnf.METHOD.fullmatch(method) is None:
        raise BadRequest("method is not a token")  # RFC 9110 section 9.1
    if _abnf.HTTP_VERSION.fullmatch(version) is None:
        raise BadRequest("malformed HTTP-version")  # RFC 9112 section 2.3: case-sensitive
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        # RFC 9110 section 15.6.6: 505 "indicates that the server does not support, or
        # refuses to support, the major version of HTTP that was used in the request". We
        # answer it to 1.2+ too rather than guess at a minor version we don't know.
        raise VersionNotSupported(f"{version} is not supported")

    if target[0] == "/":
        # RFC 9112 section 3.2.1, origin-form.
        match = _abnf.ORIGIN_FORM.fullmatch(target)
        if match is None or _bad_percent(match[1]):
            raise BadRequest(_target_error(target))
        if method == "CONNECT":
            raise BadRequest("CONNECT needs an authority-form target (RFC 9112 section 3.2.3)")
        return method, target, match[1], match[2] or "", version, None
    if target == "*":
        # RFC 9112 section 3.2.4: "The asterisk-form of request-target is only used for a
        # server-wide OPTIONS request".
        if method != "OPTIONS":
            raise BadRequest("asterisk-form target for a method other than OPTIONS")
        return method, target, "*", "", version, None
    if method == "CONNECT":
        # RFC 9112 section 3.2.3: authority-form "is only used for CONNECT requests"; and
        # CONNECT uses only it (RFC 9110 section 9.3.6). The app decides what to answer.
        match = _abnf.AUTHORITY_FORM.fullmatch(target)
        if match is None or target[0] == ":" or _bad_percent(target):
            raise BadRequest("CONNECT target is not 'host:port'")
        return method, target, "", "", version, target
    # RFC 9112 section 3.2.2: "a server MUST accept the absolute-form in requests".
    match = _abnf.ABSOLUTE_FORM.fullmatch(target)
    if match is None or _bad_percent(target.partition("?")[0]):
        raise BadRequest(_target_error(target))
    authority, uri_host, path, query = match.groups()
    if not uri_host:
        # RFC 9110 section 4.2.1: a URI with an empty host "MUST" be rejected as invalid.
        raise BadRequest("absolute-form target with an empty host")
    return method, target, path or "/", query or "", version, authority


def _target_error(target: str) -> str:
    if "#" in target:
        return "fragment in the request-target (RFC 9110 section 4.2.5)"
    if any(not "\x21" <= char <= "\x7e" for char in target):
        return "control, space or non-ASCII byte in the request-target"
    if "@" in target.partition("?")[0] and "://" in target:
        return "userinfo in the request-target (RFC 9110 section 4.2.4)"
    if "%" in target.partition("?")[0]:
        return "malformed or NUL percent-escape in the request path"
    return "malformed request-target"


def _check_incomplete(buf: bytes | bytearray, start: int, limits: Limits) -> None:
    """Raise as soon as a head without its final CRLF CRLF is proven invalid or too large.

    Every complete line is checked as parse_head would check it, and the incomplete last
    line against the prefixes its rule allows. This costs O(len(buf)) per call, so a head
    fed in k pieces costs O(k * limits.head) at worst: the header timeout bounds k.
    """
    # Past limits.head nothing can be valid: look no further, so each call is bounded.
    text = buf[start:limits.head].decode("latin-1")
    lines = text.split("\r\n")
    partial = lines.pop()
    if not lines:
        _check_partial(partial, limits.request_line, _abnf.PARTIAL_REQUEST_LINE, "request line")
    else:
        if len(lines[0]) > limits.request_line:
            raise URITooLong(f"request line over {limits.request_line} bytes")
        _request_line(lines[0])
        _check_field_lines(lines[1:], limits)
        if partial and partial != "\r":
            if len(lines) > limits.fields:
                raise HeaderFieldsTooLarge(f"more than {limits.fields} header fields")
            _check_partial(partial, limits.field_size, _abnf.PARTIAL_FIELD_LINE, "field line")
    # The head will be at least one byte longer than what is here.
    if len(buf) >= limits.head:
        raise HeaderFieldsTooLarge(f"request head over {limits.head} bytes")


def _check_partial(line: str, limit: int, prefix: re.Pattern[str], what: str) -> None:
    """Check a line whose CRLF has not arrived: its length so far, and its syntax so far."""
    length = len(line) - (line[-1:] == "\r")  # a final CR may be the start of the CRLF
    if length > limit:
        if what == "request line":
            raise URITooLong(f"request line over {limit} bytes")
        raise HeaderFieldsTooLarge(f"a header field line over {limit} bytes")
    if prefix.fullmatch(line) is None:
        if what == "request line":
            raise BadRequest(_lone_line_end(line) or "malformed request line")
        raise _field_error(line[:-1] if line.endswith("\r") else line)


# --- chunked bodies ---------------------------------------------------------------------------

# --- request bodies ---------------------------------------------------------------------------
# Both decoders share one interface, so whoever receives a body never asks how it is framed:
# ``feed(data)`` returns the body bytes in ``data``; ``done`` once the body has ended;
# ``unused`` holds what was fed past its end (the next pipelined request); ``trailers``.


def body_decoder(head: RequestHead, limits: Limits = _DEFAULT_LIMITS
                 ) -> LengthDecoder | ChunkedDecoder:
    """The decoder for ``head``'s body framing (RFC 9112 section 6.3)."""
    if head.chunked:
        return ChunkedDecoder(limits)
    return LengthDecoder(head.content_length or 0)


class LengthDecoder:
    """A body framed by Content-Length (RFC 9112 section 6.2), fed in pieces of any size.

    Returns the caller's own bytes object whenever a piece lies wholly inside the
    body, so a body received in large pieces is never copied here.
    """

    __slots__ = ("done", "trailers", "unused", "_left")
    reply = b""  # bytes to send the client to get more of the body: never, for HTTP

    def __init__(self, length: int) -> None:
        self._left = length
        self.done = length == 0
        self.trailers: list[tuple[str, str]] = []
        self.unused = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.unused += data
            return b""
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            return data
        self._left = 0
        self.done = True
        if len(data) == left:
            return data
        self.unused = data[left:]
        return data[:left]


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
# RFC 9112 section 7.1.1 puts no bound on chunk extensions; a server must. Like node
# (llhttp's kMaxChunkExtensionsSize, after CVE-2024-22019) we allow 16 KiB of them per body
# in total and answer 413 past that, so extensions are no way around limits.body.
MAX_CHUNK_EXTENSIONS = 16 * 1024


class ChunkedDecoder:
    """Decodes a chunked body (RFC 9112 section 7.1), fed in pieces of any size.

    ``feed(data)`` returns the body bytes decoded from ``data`` (possibly b"").
    Once the last chunk and the trailer section are consumed, ``done`` is
    True, ``trailers`` holds the trailer fields and ``unused`` the bytes fed
    past the end of the body (the next pipelined request). Raises BadRequest
    on any framing error, ContentTooLarge past ``limits.body`` (or past
    MAX_CHUNK_EXTENSIONS of chunk extensions), HeaderFieldsTooLarge for a
    trailer section over ``limits.fields`` / ``limits.field_size``.

    The result never depends on how the input was split.
    """

    __slots__ = ("limits", "done", "trailers", "unused", "_buf", "_left", "_state", "_total",
                 "_extensions")
    reply = b""  # bytes to send the client to get more of the body: never, for HTTP

    def __init__(self, limits: Limits = _DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.done = False
        self.trailers: list[tuple[str, str]] = []
        self.unused = b""
        self._buf = b""  # an incomplete line (or CRLF after data) carried to the next feed
        self._left = 0  # bytes of chunk data still to come
        self._state = _SIZE
        self._total = 0  # body bytes announced so far
        self._extensions = 0  # chunk-extension bytes seen so far

    def feed(self, data: bytes) -> bytes:
        if type(data) is not bytes:
            data = bytes(data)
        if self.done:
            self.unused += data
            return b""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        size = len(data)
        pos = 0
        out: list[bytes] = []
        state = self._state
        while pos < size:
            if state == _DATA:
                take = min(self._left, size - pos)
                out.append(data if take == size else data[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    state = _DATA_END
            elif state == _DATA_END:
                # RFC 9112 section 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF.
                # Exactly CRLF after the data: anything else means the size lied.
                pair = data[pos:pos + 2]
                if pair != b"\r\n"[:len(pair)]:
                    raise BadRequest("chunk data not followed by CRLF")
                if len(pair) < 2:
                    self._buf = pair
                    break
                pos += 2
                state = _SIZE
            else:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._buf = data[pos:]
                    self._check_partial_line(state, self._buf)
                    break
                if newline == pos or data[newline - 1] != 13:
                    raise BadRequest("bare LF in chunked framing (only CRLF ends a line)")
                line = data[pos:newline - 1]
                pos = newline + 1
                if state == _SIZE:
                    state = self._chunk_line(line)
                elif line:
                    self._trailer_line(line)
                else:
                    self.done = True
                    self.unused = data[pos:]
                    break
        self._state = state
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _chunk_line(self, line: bytes) -> int:
        """Parse ``chunk-size [ chunk-ext ]``; return the next state."""
        if len(line) > 16 and self._extensions + len(line) - 16 > MAX_CHUNK_EXTENSIONS:
            raise ContentTooLarge(f"over {MAX_CHUNK_EXTENSIONS} bytes of chunk extensions")
        match = _abnf.B_CHUNK_LINE.fullmatch(line)
        if match is None:
            raise BadRequest(_chunk_line_error(line))
        extensions = match.end() - match.end(1)
        if extensions:
            self._count_extensions(extensions)
        size = int(match[1], 16)
        if not size:
            return _TRAILER  # last-chunk = 1*("0") [ chunk-ext ] CRLF
        self._total += size
        if self.limits.body and self._total > self.limits.body:
            raise ContentTooLarge(f"chunked body over {self.limits.body} bytes")
        self._left = size
        return _DATA

    def _count_extensions(self, count: int) -> None:
        self._extensions += count
        if self._extensions > MAX_CHUNK_EXTENSIONS:
            raise ContentTooLarge(f"over {MAX_CHUNK_EXTENSIONS} bytes of chunk extensions")

    def _trailer_line(self, line: bytes) -> None:
        # RFC 9112 section 7.1.2: trailer-section = *( field-line CRLF ), validated and
        # bounded like the header section.
        limits = self.limits
        if len(line) > limits.field_size:
            raise HeaderFieldsTooLarge(f"a trailer field line over {limits.field_size} bytes")
        if len(self.trailers) >= limits.fields:
            raise HeaderFieldsTooLarge(f"more than {limits.fields} trailer fields")
        text = line.decode("latin-1")
        match = _abnf.FIELD_LINE.fullmatch(text)
        if match is None:
            raise _field_error(text)
        self.trailers.append((match[1], match[2]))

    def _check_partial_line(self, state: int, line: bytes) -> None:
        """A line without its LF yet: refuse it now if it can only be too long or invalid."""
        length = len(line) - (line[-1:] == b"\r")
        if b"\r" in line[:length]:
            raise BadRequest("bare CR in chunked framing")
        if state == _SIZE:
            # 16 HEXDIG at most (checked by the regex when the line is complete); the rest
            # is extensions, counted against their budget before the line is even complete.
            if length > 16 and self._extensions + length - 16 > MAX_CHUNK_EXTENSIONS:
                raise ContentTooLarge(f"over {MAX_CHUNK_EXTENSIONS} bytes of chunk extensions")
            if line[:1] and line[:1] not in b"0123456789abcdefABCDEF":
                raise BadRequest(_chunk_line_error(line))
        elif length > self.limits.field_size:
            raise HeaderFieldsTooLarge(f"a trailer field line over {self.limits.field_size} bytes")


def _chunk_line_error(line: bytes) -> str:
    size = line.split(b";", 1)[0].rstrip(b" \t")
    if not size:
        return "empty chunk-size"
    if size.lstrip(b"0123456789abcdefABCDEF"):
        return "chunk-size is not 1*HEXDIG (RFC 9112 section 7.1)"
    if len(size) > 16:
        return "chunk-size over 16 hex digits"
    return "malformed chunk extension (RFC 9112 section 7.1.1)"
