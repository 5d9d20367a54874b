"""Properties of the gateway parsers (uwsgi, SCGI, FastCGI, AJP13, PROXY), with hypothesis.

Owns: generators of valid messages in each wire format (any variable names
and values the format can carry, latin-1 bytes past ASCII in values and
paths, PARAMS and STDIN records cut anywhere with padding and long-form
lengths, management and foreign records among them, AJP13 data packets with
slack after their chunk, PROXY v1 lines and v2 headers of every family with
extensions), and the properties that must hold for all of them: they
round-trip; every proper prefix wants more; a body decodes the same however
its bytes are split; random bytes, valid starts with random tails, framed
noise and mutated messages end in a result or an HTTPError (the invariants
of tests/fuzz_gateways.py), never another exception, never a hang; tiny
limits give the status of the limit. Also the fuzzer's seed corpus
(tests/corpus_gateways/): up to date, each file answered as its case says,
and replayed by the fuzz entry point in a subprocess.

Must never: take long (example counts keep the file to a few seconds), or start
a process outside the test marked ``process``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import string
import struct
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols import BY_SCHEME, Control
from forkwsgi.protocols.http import HTTP
from tests import fuzz_gateways
from tests.conftest import REPO
from tests.fuzzing import mutated, replays_both_ways

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FAST = settings(SETTINGS, max_examples=150)

NAMES = ("uwsgi", "scgi", "fastcgi", "ajp", "proxy+http")
REQUESTS = NAMES[:4]
DEFAULT = Limits()
SMALL = Limits(request_line=24, fields=3, field_size=24, head=96, body=8)
CORPUS = REPO / "tests" / "corpus_gateways"


@dataclass
class Sample:
    """A valid message and what the parser must make of it."""

    raw: bytes  # the message: every byte parse_head consumes
    expected: dict  # attribute of the head (or Control) -> its value
    head_size: int  # the bytes limits.head bounds (0: none)
    ready_at: int = -1  # the shortest prefix that parses (-1: the whole)
    after: bytes = b""  # what follows on the wire: the body's packets, an HTTP request
    body: bytes = b""  # the body the decoder must give
    reply: bytes | None = b""  # what the body decoder must answer (None: not compared)
    path_bytes: bytes | None = None  # a rebuilt target: its path, percent-decoded

    def __post_init__(self) -> None:
        if self.ready_at < 0:
            self.ready_at = len(self.raw)


def latin1(max_size: int, exclude: str = "", min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(st.characters(max_codepoint=0xFF, exclude_characters=exclude),
                   min_size=min_size, max_size=max_size)


def encoded(text: str) -> bytes:
    return text.encode("latin-1")


# --- uwsgi and SCGI ---------------------------------------------------------------------------

# Variables the head is made of: random extras must not override them.
RESERVED = {"REQUEST_METHOD", "REQUEST_URI", "QUERY_STRING", "CONTENT_LENGTH", "SCGI",
            "SCRIPT_NAME", "PATH_INFO"}


@st.composite
def cgi_variables(draw: st.DrawFn, scgi: bool = False, body: bytes = b""
                  ) -> tuple[list[tuple[str, str]], dict, bytes | None]:
    """A front-end's variables for a request with ``body``: (the pairs in order, the head's
    expected attributes, the percent-decoded path of a target the parser must rebuild).
    SCGI's: no NUL in any, CONTENT_LENGTH first, SCGI=1 among them."""
    exclude = "\0" if scgi else ""
    method = draw(st.text(string.ascii_letters, min_size=1, max_size=10))
    query = draw(latin1(30, exclude))
    if body:
        length = draw(st.sampled_from(["{}", "0{}", "000{}"])).format(len(body))
    else:
        length = draw(st.sampled_from(["", "0", "00"]))
    pairs = [("REQUEST_METHOD", method), ("QUERY_STRING", query)]
    expected = {"method": method, "query": query, "content_length": len(body) or None}
    path_bytes = None
    if draw(st.booleans()):
        uri = "/" + draw(latin1(30, exclude)) + (f"?{query}" if query else "")
        pairs.append(("REQUEST_URI", uri))
        expected.update(target=uri, path=uri.partition("?")[0])
    else:
        script_name, path_info = draw(latin1(12, exclude)), draw(latin1(30, exclude))
        pairs += [("SCRIPT_NAME", script_name), ("PATH_INFO", path_info)]
        if draw(st.booleans()):
            pairs.append(("REQUEST_URI", ""))  # empty: rebuilt, as if absent
        path_bytes = encoded(script_name + path_info)
    extras = draw(st.lists(st.tuples(latin1(16, exclude).filter(lambda n: n not in RESERVED),
                                     latin1(40, exclude)), max_size=8))
    if scgi:
        pairs = [("CONTENT_LENGTH", length), *draw(st.permutations(
            [*pairs, *extras, ("SCGI", "1")]))]
    else:
        pairs = draw(st.permutations([*pairs, *extras, ("CONTENT_LENGTH", length)]))
    expected["variables"] = dict(pairs)
    return pairs, expected, path_bytes


def uwsgi_packet(pairs: list[tuple[str, str]]) -> bytes:
    block = b"".join(struct.pack("<H", len(encoded(text))) + encoded(text)
                     for pair in pairs for text in pair)
    return struct.pack("<BHB", 0, len(block), 0) + block


def scgi_block(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(encoded(name) + b"\0" + encoded(value) + b"\0" for name, value in pairs)


@st.composite
def uwsgi_samples(draw: st.DrawFn) -> Sample:
    body = draw(st.binary(max_size=200))
    pairs, expected, path_bytes = draw(cgi_variables(body=body))
    raw = uwsgi_packet(pairs)
    expected.update(chunked=False, keep_alive=False)
    return Sample(raw, expected, len(raw), after=body, body=body, path_bytes=path_bytes)


@st.composite
def scgi_samples(draw: st.DrawFn) -> Sample:
    body = draw(st.binary(max_size=200))
    pairs, expected, path_bytes = draw(cgi_variables(scgi=True, body=body))
    block = scgi_block(pairs)
    expected.update(chunked=False, keep_alive=False)
    return Sample(b"%d:%s," % (len(block), block), expected, len(block), after=body, body=body,
                  path_bytes=path_bytes)


# --- FastCGI ----------------------------------------------------------------------------------

BEGIN, ABORT, END, PARAMS, STDIN, GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = \
    1, 2, 3, 4, 5, 9, 10, 11


def record(kind: int, request_id: int, content: bytes = b"", padding: int = 0) -> bytes:
    # Padding is not zeros, so that reading it as content cannot pass unnoticed.
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), padding) + content \
        + b"P" * padding


def end_request(request_id: int, protocol_status: int) -> bytes:
    return record(END, request_id, struct.pack(">IB3x", 0, protocol_status))


@st.composite
def name_value_pairs(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> bytes:
    """The pairs encoded, each length in one byte or, when it fits in one, in either form."""
    out = []
    for name, value in pairs:
        for text in (name, value):
            size = len(encoded(text))
            long_form = size >= 128 or draw(st.integers(0, 4)) == 0
            out.append(struct.pack(">I", size | 1 << 31) if long_form else bytes([size]))
        out.append(encoded(name) + encoded(value))
    return b"".join(out)


@st.composite
def records_of(draw: st.DrawFn, kind: int, request_id: int, data: bytes) -> list[bytes]:
    """``data`` as non-empty records cut anywhere, each with some padding."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=4))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [record(kind, request_id, piece, draw(paddings)) for piece in pieces if piece]


paddings = st.one_of(st.just(0), st.integers(0, 7), st.just(255))
management_names = st.lists(st.sampled_from(["FCGI_MPXS_CONNS", "FCGI_MAX_CONNS",
                                             "FCGI_MAX_REQS", "X"]), max_size=3, unique=True)


@st.composite
def management_records(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A management record (request id 0) and its answer."""
    if draw(st.booleans()):
        asked = draw(management_names)
        content = draw(name_value_pairs([(name, "") for name in asked]))
        answer = b"\x0f\x01FCGI_MPXS_CONNS0" if "FCGI_MPXS_CONNS" in asked else b""
        return (record(GET_VALUES, 0, content, draw(paddings)),
                record(GET_VALUES_RESULT, 0, answer))
    kind = draw(st.integers(0, 255).filter(lambda k: k != GET_VALUES))
    return (record(kind, 0, draw(st.binary(max_size=12)), draw(paddings)),
            record(UNKNOWN_TYPE, 0, bytes([kind]) + b"\0" * 7))


@st.composite
def foreign_records(draw: st.DrawFn, request_id: int) -> tuple[bytes, bytes]:
    """A record that may come while a body arrives and is not the body's, and its answer."""
    choice = draw(st.sampled_from(["management", "begin", "inactive"]))
    if choice == "management":
        return draw(management_records())
    other = draw(st.integers(1, 65535).filter(lambda rid: rid != request_id))
    if choice == "begin":  # a second request on the connection: refused, not multiplexed
        return record(BEGIN, other, struct.pack(">HB5x", 1, 0)), end_request(other, 1)
    kind = draw(st.integers(0, 255).filter(lambda k: k != BEGIN))
    return record(kind, other, draw(st.binary(max_size=12)), draw(paddings)), b""


@st.composite
def fastcgi_samples(draw: st.DrawFn) -> Sample:
    body = draw(st.binary(max_size=200))
    pairs, expected, path_bytes = draw(cgi_variables(body=body))
    request_id = draw(st.integers(1, 65535))
    keep = draw(st.booleans())
    params = draw(name_value_pairs(pairs))
    flags = keep | draw(st.sampled_from([0, 2, 0xFE]))  # bits other than KEEP_CONN: reserved
    head = [record(BEGIN, request_id, struct.pack(">HB5x", 1, flags), draw(paddings))]
    replies = []
    for params_record in draw(records_of(PARAMS, request_id, params)):
        if draw(st.integers(0, 5)) == 0:
            # Answered by the body decoder, before anything of the body.
            asked, answer = draw(management_records())
            head.append(asked)
            replies.append(answer)
        head.append(params_record)
    head.append(record(PARAMS, request_id, b"", draw(paddings)))
    stream = []
    for stdin_record in draw(records_of(STDIN, request_id, body)):
        if draw(st.integers(0, 3)) == 0:
            noise, answer = draw(foreign_records(request_id))
            stream.append(noise)
            replies.append(answer)
        stream.append(stdin_record)
    end_of_body = record(STDIN, request_id, b"", draw(paddings))
    expected.update(request_id=request_id, keep_alive=keep)
    raw = b"".join(head)
    if not stream and not body and not replies:
        # The empty STDIN right after the head is taken with it: no body phase at all.
        expected["chunked"] = False
        return Sample(raw + end_of_body, expected, len(params), ready_at=len(raw),
                      path_bytes=path_bytes)
    expected["chunked"] = True
    return Sample(raw, expected, len(params), after=b"".join(stream) + end_of_body, body=body,
                  reply=b"".join(replies), path_bytes=path_bytes)


# --- AJP13 ------------------------------------------------------------------------------------

AJP_METHODS = {1: "OPTIONS", 2: "GET", 3: "HEAD", 4: "POST", 5: "PUT", 6: "DELETE", 7: "TRACE",
               8: "PROPFIND", 27: "MKACTIVITY"}
# Request header names coded 0xA001 onwards (AJP13 specification).
AJP_HEADERS = ("Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language",
               "Authorization", "Connection", "Content-Type", "Content-Length", "Cookie",
               "Cookie2", "Host", "Pragma", "Referer", "User-Agent")
AJP_ATTRIBUTES = {1: "context", 2: "servlet_path", 3: "remote_user", 4: "auth_type",
                  5: "query_string", 6: "route", 7: "ssl_cert", 8: "ssl_cipher",
                  9: "ssl_session", 12: "secret"}
FRAMING = {"content-length", "transfer-encoding"}
TOKEN = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters


def ajp_string(value: str | None) -> bytes:
    if value is None:
        return b"\xff\xff"
    return struct.pack(">H", len(encoded(value))) + encoded(value) + b"\0"


def ajp_packet(payload: bytes) -> bytes:
    return b"\x12\x34" + struct.pack(">H", len(payload)) + payload


maybe_strings = st.one_of(st.none(), latin1(20))


@st.composite
def ajp_header(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """A header field as (its bytes, name, value), coded or named, never a framing one."""
    if draw(st.booleans()):
        index = draw(st.integers(0, len(AJP_HEADERS) - 1).filter(
            lambda i: AJP_HEADERS[i] != "Content-Length"))
        wire, name = struct.pack(">H", 0xA001 + index), AJP_HEADERS[index]
    else:
        name = draw(latin1(16, min_size=1).filter(lambda n: n.lower() not in FRAMING))
        wire = ajp_string(name)
    value = draw(maybe_strings)
    return wire + ajp_string(value), name, value or ""


@st.composite
def ajp_body(draw: st.DrawFn, body: bytes, ended: bool) -> bytes:
    """``body`` in data packets, some with slack after their chunk; an empty one after them
    when ``ended`` (a body without a length)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(body) - 1, 1)), max_size=4))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    packets = [ajp_packet(struct.pack(">H", len(chunk)) + chunk + draw(st.binary(max_size=3)))
               for chunk in chunks if chunk]
    if ended:  # the empty chunk: bare, or with its length (and padding after it)
        packets.append(ajp_packet(draw(st.one_of(
            st.just(b""), st.binary(max_size=3).map(lambda padding: b"\0\0" + padding)))))
    return b"".join(packets)


@st.composite
def ajp_samples(draw: st.DrawFn) -> Sample:
    code = draw(st.sampled_from([*AJP_METHODS, 0xFF]))
    method = AJP_METHODS.get(code) or draw(st.text(TOKEN, min_size=1, max_size=10))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", None]))
    uri = draw(st.one_of(st.just("*"), latin1(30).map(lambda path: "/" + path)))
    remote_addr, remote_host, server_name = draw(maybe_strings), draw(maybe_strings), \
        draw(maybe_strings)
    port, ssl = draw(st.integers(0, 65535)), draw(st.integers(0, 255))
    headers = draw(st.lists(ajp_header(), max_size=6))
    framing = draw(st.sampled_from(["none", "zero", "length", "chunked"]))
    body = draw(st.binary(min_size=1, max_size=200)) if framing in ("length", "chunked") else b""
    if framing in ("zero", "length"):
        name = draw(st.sampled_from(["coded", "Content-Length", "content-LENGTH"]))
        value = draw(st.sampled_from(["{}", "0{}"])).format(len(body))
        wire = struct.pack(">H", 0xA008) if name == "coded" else ajp_string(name)
        headers.insert(draw(st.integers(0, len(headers))), (
            wire + ajp_string(value), "Content-Length" if name == "coded" else name, value))
    elif framing == "chunked":
        name = draw(st.sampled_from(["Transfer-Encoding", "transfer-encoding"]))
        value = draw(st.sampled_from(["chunked", "Chunked", "gzip, chunked", "gzip,chunked \t"]))
        headers.insert(draw(st.integers(0, len(headers))),
                       (ajp_string(name) + ajp_string(value), name, value))

    attributes: dict[str, str] = {}
    request_attributes: dict[str, str] = {}
    wire_attributes = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["coded", "request", "key_size"]))
        if kind == "coded":
            attribute = draw(st.sampled_from(sorted(AJP_ATTRIBUTES)))
            value = draw(maybe_strings)
            wire_attributes.append(bytes([attribute]) + ajp_string(value))
            if value is not None:
                attributes[AJP_ATTRIBUTES[attribute]] = value
        elif kind == "request":
            name, value = draw(maybe_strings), draw(maybe_strings)
            wire_attributes.append(b"\x0a" + ajp_string(name) + ajp_string(value))
            if name:
                request_attributes[name] = value or ""
        else:
            size = draw(st.integers(0, 65535))
            wire_attributes.append(b"\x0b" + struct.pack(">H", size))
            attributes["ssl_key_size"] = str(size)
    if code == 0xFF:
        wire_attributes.append(b"\x0d" + ajp_string(method))
        attributes["stored_method"] = method
    payload = b"".join([
        bytes([2, code]), ajp_string(version), ajp_string(uri), ajp_string(remote_addr),
        ajp_string(remote_host), ajp_string(server_name),
        struct.pack(">HBH", port, ssl, len(headers)), *(wire for wire, _, _ in headers),
        *wire_attributes, b"\xff"])
    raw = ajp_packet(payload)
    query = attributes.get("query_string", "")
    hosts = [value for _, name, value in headers if name.lower() == "host"]
    expected = {
        "method": method, "target": f"{uri}?{query}" if query else uri, "path": uri,
        "query": query, "version": version or "HTTP/1.1",
        "headers": [(name, value) for _, name, value in headers],
        "host": hosts[-1] if hosts else None,
        "content_length": len(body) if framing == "length" else None,
        "chunked": bool(body), "keep_alive": True, "remote_addr": remote_addr or "",
        "remote_host": remote_host, "server_name": server_name or "", "server_port": port,
        "is_ssl": ssl != 0, "attributes": attributes, "request_attributes": request_attributes}
    after = draw(ajp_body(body, ended=framing == "chunked")) if body else b""
    return Sample(raw, expected, len(raw), after=after, body=body, reply=None)


# --- PROXY ------------------------------------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
ports = st.integers(0, 65535)


@st.composite
def proxy_v1_samples(draw: st.DrawFn) -> Sample:
    family = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if family == "UNKNOWN":
        # Anything after UNKNOWN is ignored, but a bare CR: see known_split_dependency.
        rest = draw(st.one_of(st.just(""), latin1(80, "\r\n").map(lambda r: " " + r)))
        raw = b"PROXY UNKNOWN" + encoded(rest)[:92] + b"\r\n"
        return Sample(raw, {"peer": None}, 0, after=HTTP_REQUEST)
    version, af = (4, socket.AF_INET) if family == "TCP4" else (6, socket.AF_INET6)
    source, dest = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    sport, dport = draw(ports), draw(ports)

    def written(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if version == 6 and draw(st.booleans()):
            return address.exploded  # every zero written: the peer comes back compressed
        return str(address)

    raw = f"PROXY {family} {written(source)} {written(dest)} {sport} {dport}\r\n".encode()
    peer = (socket.inet_ntop(af, source.packed), str(sport))
    return Sample(raw, {"peer": peer}, 0, after=HTTP_REQUEST)


@st.composite
def proxy_v2_samples(draw: st.DrawFn) -> Sample:
    tlvs = b"".join(bytes([kind]) + struct.pack(">H", len(value)) + value for kind, value in
                    draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=10)),
                                  max_size=3)))
    kind = draw(st.sampled_from(["local", "unspec", "inet", "inet6", "unix"]))
    peer = None
    if kind == "local":  # the proxy's own connection: anything in the rest, unread
        command, family_transport, block = 0, draw(st.integers(0, 255)), draw(st.binary(
            max_size=40))
    elif kind == "unspec":
        command, block = 1, draw(st.binary(max_size=40))
        family_transport = draw(st.sampled_from([0x00, 0x01, 0x02, 0x10, 0x20, 0x30]))
    else:
        command, transport = 1, draw(st.sampled_from([1, 2]))
        if kind == "unix":
            family, block = 3, b"".join(draw(st.binary(max_size=108)).ljust(108, b"\0")
                                        for _ in range(2))
            peer = ("", "")
        else:
            family, af, version = (1, socket.AF_INET, 4) if kind == "inet" else \
                (2, socket.AF_INET6, 6)
            source, dest = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
            sport, dport = draw(ports), draw(ports)
            block = source.packed + dest.packed + struct.pack(">HH", sport, dport)
            peer = (socket.inet_ntop(af, source.packed), str(sport))
        family_transport = family << 4 | transport
        block += tlvs
        if transport != 1:  # a datagram flow's addresses are not this connection's
            peer = None
    raw = V2_SIGNATURE + bytes([0x20 | command, family_transport]) \
        + struct.pack(">H", len(block)) + block
    return Sample(raw, {"peer": peer}, len(raw), after=HTTP_REQUEST)


def proxy_samples() -> st.SearchStrategy[Sample]:
    def handed_over(sample: Sample) -> Sample:
        sample.expected.update(protocol=HTTP, reply=b"", close=False)
        return sample

    return st.one_of(proxy_v1_samples(), proxy_v2_samples()).map(handed_over)


SAMPLES = {"uwsgi": uwsgi_samples(), "scgi": scgi_samples(), "fastcgi": fastcgi_samples(),
           "ajp": ajp_samples(), "proxy+http": proxy_samples()}


# --- the properties ---------------------------------------------------------------------------


def parse(name: str, buf: bytes, limits: Limits = DEFAULT):
    return BY_SCHEME[name].parse_head(buf, limits)


def assert_matches(message, sample: Sample) -> None:
    for attribute, value in sample.expected.items():
        assert getattr(message, attribute) == value, attribute
    if sample.path_bytes is not None:  # no REQUEST_URI: rebuilt from SCRIPT_NAME + PATH_INFO
        query = sample.expected["query"]
        assert message.path.isascii() and "?" not in message.path
        assert unquote_to_bytes(message.path) == (sample.path_bytes or b"/")
        assert message.target == message.path + (f"?{query}" if query else "")


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_valid_messages_round_trip(name: str, data: st.DataObject) -> None:
    sample = data.draw(SAMPLES[name])
    message, consumed = parse(name, sample.raw + sample.after)
    assert consumed == len(sample.raw)
    assert isinstance(message, Control) == (name == "proxy+http")
    assert_matches(message, sample)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_a_message_split_anywhere_wants_more_then_parses(name: str, data: st.DataObject
                                                         ) -> None:
    sample = data.draw(SAMPLES[name])
    raw = sample.raw
    ends = range(len(raw)) if len(raw) <= 300 else data.draw(
        st.lists(st.integers(0, len(raw) - 1), min_size=20, max_size=20))
    for end in ends:
        partial = parse(name, raw[:end])
        if end < sample.ready_at:
            assert partial is None, end
        else:  # FastCGI: the head, before the empty STDIN that would come with it
            head, consumed = partial
            assert consumed == sample.ready_at and head.chunked
            assert head.variables == sample.expected["variables"]
    message, consumed = parse(name, raw)
    assert consumed == len(raw)
    assert_matches(message, sample)


@pytest.mark.parametrize("name", REQUESTS)
@SETTINGS
@given(data=st.data())
def test_a_body_split_anywhere_decodes_the_same(name: str, data: st.DataObject) -> None:
    """Content-Length, STDIN records or data packets: the body, the bytes after it and any
    answers are the same however the wire is split (the event loop feeds each recv)."""
    sample = data.draw(SAMPLES[name])
    head, _ = parse(name, sample.raw + sample.after)
    if not (head.content_length or head.chunked):
        assert sample.body == b"" and sample.after == b""
        return
    wire = sample.after + b"NEXT"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = BY_SCHEME[name].body_decoder(head, DEFAULT)
    body = b"".join(decoder.feed(piece) for piece in pieces)
    assert decoder.done
    assert (body, decoder.unused) == (sample.body, b"NEXT")
    if sample.reply is not None:
        assert decoder.reply == sample.reply
    else:  # AJP13: nothing more is asked for once the body is whole
        assert decoder.reply == b""


def check_all_limits(name: str, buf: bytes) -> None:
    protocol = BY_SCHEME[name]
    for limits in (*fuzz_gateways.LIMITS, SMALL):
        fuzz_gateways.check(protocol, buf, limits)


def framed(name: str, payload: bytes) -> bytes:
    """``payload`` where each protocol's framing puts the bytes it interprets, the frame's
    lengths right, so that noise reaches past the framing."""
    if name == "uwsgi":
        return struct.pack("<BHB", 0, len(payload), 0) + payload
    if name == "scgi":
        return b"%d:%s," % (len(payload), payload)
    if name == "fastcgi":
        return record(BEGIN, 1, struct.pack(">HB5x", 1, 1)) + record(PARAMS, 1, payload) \
            + record(PARAMS, 1) + payload
    if name == "ajp":
        return ajp_packet(b"\x02" + payload)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(payload) + 12) + b"\0" * 12 \
        + payload


# Bytes that mean something in one format or another: lengths, signatures, terminators.
special_bytes = st.one_of(st.sampled_from(b"\x00\x01\x02\x04\x05\x09\x0a\x0d\x12\x34\x7f\x80"
                                          b"\xa0\xff:, PU"), st.integers(0, 255))


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(data=st.data())
def test_random_bytes_end_in_a_result_or_an_http_error(name: str, data: st.DataObject) -> None:
    noise = data.draw(st.binary(max_size=300))
    check_all_limits(name, noise)
    check_all_limits(name, framed(name, noise))
    sample = data.draw(SAMPLES[name])
    start = data.draw(st.integers(0, len(sample.raw)))
    check_all_limits(name, sample.raw[:start] + noise)


mutations = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                               st.integers(0, 10**6), special_bytes), min_size=1, max_size=4)


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(data=st.data(), edits=mutations)
def test_mutated_messages_end_in_a_result_or_an_http_error(name: str, data: st.DataObject,
                                                           edits: list) -> None:
    sample = data.draw(SAMPLES[name])
    check_all_limits(name, mutated(sample.raw + sample.after, edits))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_tiny_limits_give_the_limits_status(name: str, data: st.DataObject) -> None:
    sample = data.draw(SAMPLES[name])
    try:
        result = parse(name, sample.raw + sample.after, SMALL)
        status = None
    except HTTPError as error:
        result, status = None, error.status
    if sample.head_size > SMALL.head:
        assert status == 431
    elif name in ("uwsgi", "scgi", "fastcgi"):
        assert status == (413 if (sample.expected["content_length"] or 0) > SMALL.body
                          else None)
    elif name == "ajp":  # fields, a field's size, the URI, the Content-Length: any may be first
        assert status in (None, 413, 414, 431)
    else:
        assert status is None
    if result is not None and not isinstance(result[0], Control) and (
            result[0].content_length or result[0].chunked):
        decoder = BY_SCHEME[name].body_decoder(result[0], SMALL)
        try:
            assert decoder.feed(sample.after) == sample.body and len(sample.body) <= SMALL.body
        except HTTPError as error:
            assert error.status == 413 and len(sample.body) > SMALL.body
    check_all_limits(name, sample.raw + sample.after)


# --- messages that are no request -------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_fastcgi_records_before_a_request_are_answered_as_controls(data: st.DataObject) -> None:
    """A management record, a BEGIN_REQUEST of another role, a record of an inactive
    request, an ABORT_REQUEST before the PARAMS end: each a Control, consumed whole."""
    kind = data.draw(st.sampled_from(["management", "role", "inactive", "abort"]))
    request_id = data.draw(st.integers(1, 65535))
    keep = data.draw(st.booleans())
    close = False
    if kind == "management":
        raw, reply = data.draw(management_records())
    elif kind == "role":
        role = data.draw(st.integers(0, 65535).filter(lambda r: r != 1))
        raw = record(BEGIN, request_id, struct.pack(">HB5x", role, 1), data.draw(paddings))
        reply = end_request(request_id, 3)
    elif kind == "inactive":
        raw = record(data.draw(st.integers(0, 255).filter(lambda k: k != BEGIN)), request_id,
                     data.draw(st.binary(max_size=20)), data.draw(paddings))
        reply = b""
    else:
        pairs, _, _ = data.draw(cgi_variables())
        params = data.draw(name_value_pairs(pairs))
        raw = record(BEGIN, request_id, struct.pack(">HB5x", 1, keep)) \
            + b"".join(data.draw(records_of(PARAMS, request_id, params))) \
            + record(ABORT, request_id, data.draw(st.binary(max_size=8)), data.draw(paddings))
        reply, close = end_request(request_id, 0), not keep
    control, consumed = parse("fastcgi", raw + record(STDIN, 9))
    assert isinstance(control, Control) and consumed == len(raw)
    assert (control.reply, control.close, control.peer, control.protocol) == \
        (reply, close, None, None)


@SETTINGS
@given(kind=st.integers(0, 255), payload=st.binary(max_size=30))
def test_ajp_cping_is_a_control_and_other_packet_types_are_refused(kind: int, payload: bytes
                                                                   ) -> None:
    raw = ajp_packet(bytes([kind]) + payload)
    if kind == 2:  # FORWARD_REQUEST: random payloads are the other tests' business
        return
    if kind == 10:
        control, consumed = parse("ajp", raw + b"\x12\x34")
        assert consumed == len(raw) and control.reply == b"AB\x00\x01\x09"
        return
    with pytest.raises(HTTPError) as info:
        parse("ajp", raw)
    assert info.value.status == 400 and info.value.wire.startswith(b"AB")


def test_a_proxy_line_with_a_bare_cr_is_refused_however_it_is_split() -> None:
    # Refused in pieces once the CR is followed by anything but LF, so refused whole too:
    # the answer must not depend on how the bytes were split into reads.
    line = b"PROXY UNKNOWN \rx\r\n"
    with pytest.raises(HTTPError) as whole:
        parse("proxy+http", line)
    assert whole.value.status == 400
    for end in range(len(line)):
        try:
            assert parse("proxy+http", line[:end]) is None, end
        except HTTPError as error:
            assert error.status == 400


def test_a_zero_length_ajp_data_packet_ends_a_body_without_a_length() -> None:
    head, _ = parse("ajp", ajp_packet(b"\x02\x04" + ajp_string("HTTP/1.1") + ajp_string("/")
                                      + b"\xff\xff" * 3 + struct.pack(">HBH", 80, 0, 1)
                                      + ajp_string("Transfer-Encoding") + ajp_string("chunked")
                                      + b"\xff"))
    decoder = BY_SCHEME["ajp"].body_decoder(head, DEFAULT)
    assert decoder.feed(ajp_packet(b"\0\x01x") + ajp_packet(b"")) == b"x" and decoder.done


# --- the fuzz entry point and its corpus ------------------------------------------------------


def load_generator():
    spec = importlib.util.spec_from_file_location("corpus_gateways_generate",
                                                  CORPUS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    return generate


def test_the_corpus_is_generated_and_each_case_parses_as_it_says() -> None:
    generate = load_generator()
    assert generate.write(check=True) == [], "run python tests/corpus_gateways/generate.py"
    assert [protocol.name for protocol in fuzz_gateways.PROTOCOLS] == \
        ["uwsgi", "scgi", "fastcgi", "ajp", "proxy+http"]  # the selector bytes' meaning
    for name, selector, raw, expected in generate.CASES:
        try:
            message, _ = fuzz_gateways.PROTOCOLS[selector].parse_head(raw, DEFAULT)
            answer = "control" if isinstance(message, Control) else "head"
        except HTTPError as error:
            answer = error.status
        assert answer == expected, name
        fuzz_gateways.TestOneInput(bytes([selector]) + raw)


@pytest.mark.process
def test_fuzz_entry_point_replays_the_corpus():
    """The atheris entry point runs every corpus file through its invariants; the same
    script replays without atheris, so a finding saved by the fuzzer can be rerun here."""
    assert replays_both_ways(REPO / "tests" / "fuzz_gateways.py", fuzz_gateways.TestOneInput,
                             CORPUS, REPO / "src") >= 35
