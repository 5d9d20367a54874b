"""AJP13: packets parsed and framed in-process, then forkwsgi behind a real Apache.

The in-process tests build FORWARD_REQUEST and data packets byte by byte (as
mod_proxy_ajp writes them) and check the parser's answer for whole, split and
broken input, the body decoder's GET_BODY_CHUNK requests, and the framer's
packets read back. The front-end tests start forkwsgi with an ``ajp://`` bind
and Apache (``mod_proxy_ajp``) in front of it, and send requests through.
"""

from __future__ import annotations

import functools
import os
import struct

import psutil
import pytest

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols import BY_SCHEME, Control, frame_whole, split_scheme
from forkwsgi.protocols.ajp import (
    CPONG_PACKET,
    FRAMER,
    MAX_BODY_CHUNK,
    ajp_environ,
    body_decoder,
    get_body_chunk,
    parse_head,
)
from tests.conftest import wait_until
from tests.frontends import CLIENT_ADDR, serve_on
from tests.frontends import fetch as fetch_from
from tests.frontends import saw as saw_from

LIMITS = Limits(body=1 << 30)
HEADER_CODES = {"accept": 0xA001, "content-type": 0xA007, "content-length": 0xA008,
                "cookie": 0xA009, "host": 0xA00B, "user-agent": 0xA00E}
METHOD_CODES = {"GET": 2, "HEAD": 3, "POST": 4}


def string(value: str | None) -> bytes:
    if value is None:
        return b"\xff\xff"
    raw = value.encode("latin-1")
    return struct.pack(">H", len(raw)) + raw + b"\0"


def packet(payload: bytes) -> bytes:
    return b"\x12\x34" + struct.pack(">H", len(payload)) + payload


def forward_request(method: str = "GET", uri: str = "/", headers=(), attributes: bytes = b"",
                    remote_addr: str = "203.0.113.9", server_name: str = "app.example",
                    server_port: int = 443, is_ssl: bool = False, protocol: str = "HTTP/1.1"
                    ) -> bytes:
    """A FORWARD_REQUEST packet; ``attributes`` are encoded ones, without the terminator."""
    code = METHOD_CODES.get(method, 0xFF)
    body = bytes([2, code]) + string(protocol) + string(uri) + string(remote_addr) \
        + string(None) + string(server_name) + struct.pack(">HBH", server_port, is_ssl,
                                                           len(headers))
    for name, value in headers:
        coded = HEADER_CODES.get(name.lower())
        body += struct.pack(">H", coded) if coded else string(name)
        body += string(value)
    if code == 0xFF:
        attributes += b"\x0d" + string(method)
    return packet(body + attributes + b"\xff")


def attribute(code: int, value: str) -> bytes:
    return bytes([code]) + string(value)


def request_attribute(name: str, value: str) -> bytes:
    return b"\x0a" + string(name) + string(value)


def data_packet(data: bytes) -> bytes:
    return packet(struct.pack(">H", len(data)) + data)


END_OF_BODY = data_packet(b"")

REQUEST = forward_request(
    "POST", "/caf%C3%A9/x",
    [("Host", "app.example"), ("User-Agent", "test"), ("Content-Type", "text/plain"),
     ("Content-Length", "5"), ("X-Custom", "one"), ("X-Custom", "two"), ("Cookie", "a=1"),
     ("Cookie", "b=2")],
    attribute(5, "q=caf%C3%A9&x=1") + attribute(3, "alice") + attribute(4, "Basic")
    + request_attribute("AJP_REMOTE_PORT", "5555")
    + request_attribute("AJP_LOCAL_ADDR", "127.0.0.1"))
CONN = {"SCRIPT_NAME": "", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8009", "wsgi.url_scheme": "http"}
TRUSTED = frozenset({"HTTP_X_FORWARDED_FOR"})


def container_packets(data: bytes) -> list[tuple[int, bytes]]:
    """Container -> web server packets as (type, payload after the type); all of ``data``."""
    packets = []
    while data:
        assert data[:2] == b"AB", data[:16]
        (length,) = struct.unpack(">H", data[2:4])
        payload = data[4:4 + length]
        assert len(payload) == length
        packets.append((payload[0], payload[1:]))
        data = data[4 + length:]
    return packets


def read_string(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">H", data, at)
    assert data[at + 2 + length] == 0  # NUL-terminated
    return data[at + 2:at + 2 + length], at + 3 + length


def read_response(data: bytes) -> tuple[int, bytes, list[tuple[object, bytes]], bytes, int]:
    """(status, reason, headers with coded names as ints, body, reuse) from a framed answer."""
    packets = container_packets(data)
    kind, payload = packets[0]
    assert kind == 4  # SEND_HEADERS
    (status,) = struct.unpack_from(">H", payload)
    reason, at = read_string(payload, 2)
    (count,) = struct.unpack_from(">H", payload, at)
    at += 2
    headers = []
    for _ in range(count):
        (code,) = struct.unpack_from(">H", payload, at)
        if code >> 8 == 0xA0:
            name: object = code
            at += 2
        else:
            name, at = read_string(payload, at)
        value, at = read_string(payload, at)
        headers.append((name, value))
    assert at == len(payload)
    body = b""
    for kind, chunk in packets[1:-1]:
        assert kind == 3  # SEND_BODY_CHUNK: length, bytes, NUL
        (length,) = struct.unpack_from(">H", chunk)
        assert len(chunk) == length + 3 and chunk[-1] == 0
        body += chunk[2:2 + length]
    kind, end = packets[-1]
    assert kind == 5 and len(end) == 1  # END_RESPONSE, its reuse byte
    return status, reason, headers, body, end[0]


# --- requests, in-process ---------------------------------------------------------------------


def test_a_whole_forward_request_is_one_head_and_the_body_packet_follows():
    body = data_packet(b"hello")
    head, consumed = parse_head(REQUEST + body, LIMITS)
    assert consumed == len(REQUEST)
    assert (head.method, head.target, head.path, head.query, head.version) == \
        ("POST", "/caf%C3%A9/x?q=caf%C3%A9&x=1", "/caf%C3%A9/x", "q=caf%C3%A9&x=1", "HTTP/1.1")
    assert head.content_length == 5 and head.chunked and head.keep_alive
    assert head.host == "app.example" and not head.expect_continue
    assert ("X-Custom", "two") in head.headers and ("User-Agent", "test") in head.headers
    assert head.request_attributes["AJP_REMOTE_PORT"] == "5555"


def test_a_packet_split_anywhere_wants_more_until_whole():
    for end in range(len(REQUEST)):
        assert parse_head(REQUEST[:end], LIMITS) is None, end
    assert parse_head(REQUEST, LIMITS) is not None


def test_cping_is_answered_cpong_and_is_no_request():
    message, consumed = parse_head(b"\x12\x34\x00\x01\x0a" + REQUEST, LIMITS)
    assert message.__class__ is Control and consumed == 5
    assert message.reply == CPONG_PACKET == b"AB\x00\x01\x09"
    assert not message.close and message.peer is None and message.protocol is None


def test_a_request_without_a_body_and_a_stored_method():
    head, _ = parse_head(forward_request("GET", "/"), LIMITS)
    assert (head.method, head.content_length, head.chunked) == ("GET", None, False)
    head, _ = parse_head(forward_request("PATCH", "/x", [("Content-Length", "0")]), LIMITS)
    assert (head.method, head.content_length, head.chunked) == ("PATCH", None, False)
    head, _ = parse_head(forward_request("PUT", "/x", [("Transfer-Encoding", "chunked")]),
                         LIMITS)
    assert (head.content_length, head.chunked) == (None, True)  # until the empty packet


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # not AJP
    (b"\x12\x35", 400),  # a wrong signature, proved early
    (packet(b"\x07"), 400),  # SHUTDOWN: no request
    (packet(b""), 400),
    (forward_request()[:-1] + b"\x01", 400),  # the terminator is missing
    (packet(forward_request()[4:] + b"\0"), 400),  # bytes after the terminator
    (packet(bytes([2, 99]) + forward_request()[6:]), 400),  # unknown method code
    (forward_request(headers=[("Content-Length", "x")]), 400),
    (forward_request(headers=[("Content-Length", "1"), ("Content-Length", "1")]), 400),
    (forward_request(headers=[("Transfer-Encoding", "gzip")]), 400),
    (forward_request(uri="relative"), 400),
    (forward_request(headers=[("Content-Length", "2000000000")]), 413),
    (forward_request(headers=[("X-A", "b")] * 101), 431),
    (forward_request(headers=[("X-A", "b" * 9000)]), 431),
    (forward_request(uri="/" + "a" * 9000), 414),
    (packet(forward_request()[4:-1] + b"\x42" + string("x") + b"\xff"), 400),  # attribute code
    (packet(bytes([2, 2]) + string("HTTP/1.1") + b"\x00\x05/abc"), 400),  # string cut short
])
def test_broken_packets(raw, status):
    with pytest.raises(HTTPError) as info:
        parse_head(raw, LIMITS)
    assert info.value.status == status
    # The answer is AJP packets too: the web server relays the status, then drops the link.
    answer_status, _, _, body, reuse = read_response(info.value.wire)
    assert (answer_status, reuse) == (status, 0)
    assert body.startswith(str(status).encode())


def test_a_packet_over_the_head_limit_is_refused_from_its_length():
    with pytest.raises(HTTPError) as info:
        parse_head(REQUEST[:4], Limits(head=64))
    assert info.value.status == 431


def test_unknown_coded_header_and_header_without_name():
    bad_code = packet(bytes([2, 2]) + string("HTTP/1.1") + string("/") + string("a")
                      + string(None) + string("s") + struct.pack(">HBH", 80, 0, 1)
                      + b"\xa0\x63" + string("v") + b"\xff")
    no_name = bad_code.replace(b"\xa0\x63", string(""))
    for raw in (bad_code, no_name):
        with pytest.raises(HTTPError) as info:
            parse_head(raw, LIMITS)
        assert info.value.status == 400


# --- the environ ------------------------------------------------------------------------------


def test_the_environ_takes_the_web_servers_word_from_a_trusted_peer():
    head, _ = parse_head(REQUEST, LIMITS)
    environ = ajp_environ(head, CONN, TRUSTED)
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/x"  # latin-1 "bytes", intact (PEP 3333)
    assert environ["QUERY_STRING"] == "q=caf%C3%A9&x=1"
    assert environ["REQUEST_URI"] == environ["RAW_URI"] == "/caf%C3%A9/x?q=caf%C3%A9&x=1"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.9", "5555")
    assert (environ["REMOTE_USER"], environ["AUTH_TYPE"]) == ("alice", "Basic")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("app.example", "443")
    assert (environ["CONTENT_LENGTH"], environ["CONTENT_TYPE"]) == ("5", "text/plain")
    assert "HTTP_CONTENT_LENGTH" not in environ and "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_X_CUSTOM"] == "one, two" and environ["HTTP_COOKIE"] == "a=1; b=2"
    assert (environ["REQUEST_METHOD"], environ["SERVER_PROTOCOL"]) == ("POST", "HTTP/1.1")
    assert environ["wsgi.url_scheme"] == "http" and environ["SCRIPT_NAME"] == ""

    untrusted = ajp_environ(head, CONN, frozenset())
    assert (untrusted["REMOTE_ADDR"], untrusted["REMOTE_PORT"]) == ("127.0.0.1", "40000")
    assert "REMOTE_USER" not in untrusted and "AUTH_TYPE" not in untrusted
    assert untrusted["PATH_INFO"] == "/caf\xc3\xa9/x"


def test_tls_and_its_attributes_from_a_trusted_peer():
    raw = forward_request("GET", "/", is_ssl=True, attributes=attribute(8, "TLS_AES_256")
                          + b"\x0b" + struct.pack(">H", 256) + attribute(9, "abcd"))
    head, _ = parse_head(raw, LIMITS)
    environ = ajp_environ(head, CONN, TRUSTED)
    assert (environ["wsgi.url_scheme"], environ["HTTPS"]) == ("https", "on")
    assert (environ["SSL_CIPHER"], environ["SSL_CIPHER_USEKEYSIZE"], environ["SSL_SESSION_ID"]) \
        == ("TLS_AES_256", "256", "abcd")
    untrusted = ajp_environ(head, CONN, frozenset())
    assert untrusted["wsgi.url_scheme"] == "http" and "HTTPS" not in untrusted


def test_the_mount_from_the_setting_or_a_trusted_script_name_attribute():
    head, _ = parse_head(forward_request("GET", "/app/x%20y"), LIMITS)
    mounted = ajp_environ(head, {**CONN, "SCRIPT_NAME": "/app"}, frozenset())
    assert (mounted["SCRIPT_NAME"], mounted["PATH_INFO"]) == ("/app", "/x y")
    outside = ajp_environ(head, {**CONN, "SCRIPT_NAME": "/ap"}, frozenset())
    assert (outside["SCRIPT_NAME"], outside["PATH_INFO"]) == ("", "/app/x y")
    raw = forward_request("GET", "/app/x", attributes=request_attribute("SCRIPT_NAME", "/app"))
    head, _ = parse_head(raw, LIMITS)
    assert ajp_environ(head, CONN, TRUSTED)["SCRIPT_NAME"] == "/app"
    assert ajp_environ(head, CONN, TRUSTED)["PATH_INFO"] == "/x"
    assert ajp_environ(head, CONN, frozenset())["PATH_INFO"] == "/app/x"


# --- the body ---------------------------------------------------------------------------------


def _head(length: int | None):
    headers = [("Content-Length", str(length))] if length is not None else \
        [("Transfer-Encoding", "chunked")]
    return parse_head(forward_request("POST", "/", headers), LIMITS)[0]


def test_a_body_with_a_length_asks_for_each_next_packet():
    decoder = body_decoder(_head(10), LIMITS)
    assert not decoder.reply  # the first packet comes unasked
    assert decoder.feed(data_packet(b"abcd")[:3]) == b""
    assert not decoder.reply  # a packet partly here: its rest is on its way
    assert decoder.feed(data_packet(b"abcd")[3:]) == b"abcd"
    assert decoder.take_reply() == get_body_chunk() and not decoder.reply
    assert get_body_chunk()[:5] == b"AB\x00\x03\x06"
    assert decoder.feed(data_packet(b"efghij") + b"\x12\x34next") == b"efghij"
    assert decoder.done and not decoder.reply and decoder.unused == b"\x12\x34next"


def test_a_body_without_a_length_is_asked_for_at_once_and_ends_with_an_empty_packet():
    decoder = body_decoder(_head(None), LIMITS)
    assert decoder.take_reply() == get_body_chunk()
    assert decoder.feed(data_packet(b"x" * 100)) == b"x" * 100
    assert decoder.take_reply()
    assert decoder.feed(END_OF_BODY) == b"" and decoder.done and decoder.unused == b""


def test_the_body_decodes_the_same_however_it_is_split():
    wire = b"".join(data_packet(bytes([65 + i]) * (i * 37)) for i in range(1, 12)) + END_OF_BODY
    expected = b"".join(bytes([65 + i]) * (i * 37) for i in range(1, 12))
    for step in (1, 2, 3, 7, 64, len(wire)):
        decoder = body_decoder(_head(None), LIMITS)
        got = b"".join(decoder.feed(wire[at:at + step]) for at in range(0, len(wire), step))
        assert got == expected and decoder.done, step


@pytest.mark.parametrize(("length", "wire", "status"), [
    (10, data_packet(b"abc") + END_OF_BODY, 400),  # ended short of its length
    (2, data_packet(b"abc"), 400),  # longer than its length
    (None, b"\x41\x42\x00\x02\x00\x00", 400),  # not a web server's packet
    (None, packet(b"\x00\x09abc"), 400),  # chunk length over the packet
    (None, data_packet(b"x" * 600), 413),  # over limits.body
])
def test_broken_bodies(length, wire, status):
    decoder = body_decoder(_head(length), Limits(body=500))
    with pytest.raises(HTTPError) as info:
        decoder.feed(wire)
    assert info.value.status == status
    assert read_response(info.value.wire)[0] == status


# --- responses --------------------------------------------------------------------------------


def test_the_framer_writes_send_headers_body_chunks_and_end_response():
    head = (b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
            b"X-Thing: caf\xc3\xa9\r\nContent-Length: 20000\r\n\r\n")
    body = os.urandom(20000)
    wire = FRAMER.head(head) + FRAMER.body(body) + FRAMER.end(True)
    status, reason, headers, got, reuse = read_response(wire)
    assert (status, reason, reuse) == (201, b"Created", 1)
    assert headers == [(0xA001, b"text/plain"), (0xA007, b"a=1"),
                       (b"X-Thing", b"caf\xc3\xa9"), (0xA003, b"20000")]
    assert got == body
    # No packet is over 8 KiB, the size every web server reads by default.
    sizes = [len(payload) + 5 for _, payload in container_packets(wire)]
    assert max(sizes) == 8192 and MAX_BODY_CHUNK == 8184
    assert FRAMER.end(False) == b"AB\x00\x02\x05\x00"


def test_a_response_head_over_one_packet_is_an_error():
    with pytest.raises(ValueError, match="one AJP13 packet"):
        FRAMER.head(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n")


def test_an_error_answer_framed_whole():
    wire = frame_whole(FRAMER, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n"
                               b"Connection: close\r\n\r\nboom")
    status, reason, headers, body, reuse = read_response(wire)
    assert (status, reason, headers, body, reuse) == \
        (500, b"Internal Server Error", [(0xA003, b"4")], b"boom", 0)


def test_the_ajp_scheme():
    assert split_scheme("ajp://127.0.0.1:8009") == ("ajp", "127.0.0.1:8009")
    protocol = BY_SCHEME["ajp"]
    assert protocol.buffers_body and protocol.framer is not None


# --- behind Apache (mod_proxy_ajp) ------------------------------------------------------------

MODULES = {"env_module": "mod_env.so", "proxy_module": "mod_proxy.so",
           "proxy_ajp_module": "mod_proxy_ajp.so"}
PROXY = """\
LogLevel warn {log_level}
ProxyPass / ajp://127.0.0.1:{upstream}/ {params}
<Location /mounted/>
    SetEnv AJP_SCRIPT_NAME /mounted
</Location>
"""


@pytest.fixture
def apache_ajp(serve, frontends):
    """``apache_ajp(params="", *forkwsgi_args, log_level="") -> (httpd's port, forkwsgi's
    AJP port, httpd's error log path)``."""
    started = []

    def start(params: str = "", *args: str, log_level: str = "") -> tuple[int, int, object]:
        server = serve_on(serve, "ajp://", "tests.gateway_apps:app", *args)
        front = frontends.httpd(MODULES, PROXY, upstream=server.port, params=params,
                                log_level=log_level)
        started.append(front)
        return front.port, server.port, front.directory / "error.log"

    yield start
    for front in started:
        # Whatever Apache's proxy thought of our packets, it said so at "error" level.
        assert front.problems() == [], front.log()


# Every request comes from CLIENT_ADDR, the client's address as Apache vouches for it.
fetch = functools.partial(fetch_from, source=CLIENT_ADDR)
saw = functools.partial(saw_from, source=CLIENT_ADDR)


def test_behind_apache(apache_ajp):
    port, _, _ = apache_ajp()
    seen = saw(port, "GET", "/search?q=caf%C3%A9&x=%20")
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/search", "q=caf%C3%A9&x=%20")
    assert seen["REQUEST_URI"] == "/search?q=caf%C3%A9&x=%20"
    assert (seen["REQUEST_METHOD"], seen["SERVER_PROTOCOL"]) == ("GET", "HTTP/1.1")
    # The client's address as Apache vouches for it, not the AJP connection's.
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR and seen["REMOTE_PORT"].isdigit()
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"]) == ("app.example", "app.example")
    assert seen["SERVER_PORT"] == str(port) and seen["wsgi.url_scheme"] == "http"

    seen = saw(port, "GET", "/caf%C3%A9/na%C3%AFve")  # non-ASCII path: intact bytes
    assert seen["PATH_INFO"] == "/caf\xc3\xa9/na\xc3\xafve"
    assert seen["REQUEST_URI"] == "/caf%C3%A9/na%C3%AFve"

    body = os.urandom(1 << 20)  # many GET_BODY_CHUNK round trips
    seen = saw(port, "POST", "/upload", body, {"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(body))
    assert seen["CONTENT_TYPE"] == "application/octet-stream"
    assert seen["body"].encode("latin-1") == body

    pieces = [b"first,", b"second,", os.urandom(70000)]
    seen = saw(port, "POST", "/chunked", iter(pieces),  # Apache asks for none of it unasked
               {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
    assert seen["body"].encode("latin-1") == b"".join(pieces)
    assert seen["CONTENT_LENGTH"] == str(len(b"".join(pieces)))
    assert "HTTP_TRANSFER_ENCODING" not in seen

    status, _, streamed = fetch(port, "GET", "/stream")
    assert (status, streamed) == (200, b"".join(b"part %d\n" % i for i in range(5)))
    status, _, empty = fetch(port, "GET", "/status/204")
    assert (status, empty) == (204, b"")
    status, headers, empty = fetch(port, "HEAD", "/anything")
    assert (status, empty) == (200, b"")
    assert headers.get("Content-Type") == "application/json"

    seen = saw(port, "GET", "/mounted/x")  # SetEnv AJP_SCRIPT_NAME /mounted
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/mounted", "/x")


def _ajp_peers(upstream: int) -> list[tuple[int, str]]:
    """The AJP connections to forkwsgi's port: (Apache's end's port, TCP state)."""
    return sorted((c.raddr.port, c.status) for c in psutil.net_connections("tcp4")
                  if c.laddr and c.laddr.port == upstream and c.raddr)


def test_one_ajp_connection_carries_request_after_request_with_cping(apache_ajp):
    # ping=1: Apache sends CPING and waits for CPONG before each request it forwards.
    port, upstream, error_log = apache_ajp("ping=1", log_level="proxy_ajp:trace8")
    first = saw(port, "GET", "/one")
    peers = _ajp_peers(upstream)
    assert [state for _, state in peers] == ["ESTABLISHED"], peers
    second = saw(port, "POST", "/two", b"x" * 20000)
    assert second["body"] == "x" * 20000
    assert first["pid"] == second["pid"]
    # END_RESPONSE said "reuse": the same connection, nothing closed in between.
    assert _ajp_peers(upstream) == peers
    assert error_log.read_text().count("ajp_handle_cping_cpong: Done") == 2


def test_errors_reach_the_client_through_apache(apache_ajp):
    port, _, _ = apache_ajp("", "--limit-request-body", "1000")
    status, _, body = fetch(port, "POST", "/big", b"x" * 5000)
    assert (status, body) == (413, b"413 Content Too Large\n")
    status, _, body = fetch(port, "POST", "/big", iter([b"x" * 3000]),
                            {"Transfer-Encoding": "chunked"})
    assert status == 413
    seen = saw(port, "GET", "/after")  # a fresh AJP connection serves the next request
    assert seen["PATH_INFO"] == "/after"


def test_apache_replaces_an_ajp_connection_closed_by_the_keep_alive_timeout(apache_ajp):
    port, upstream, _ = apache_ajp("", "--keep-alive", "1")
    assert saw(port, "GET", "/first")["PATH_INFO"] == "/first"
    # forkwsgi closes the idle connection; Apache notices before reusing it.
    wait_until(lambda: all(state != "ESTABLISHED" for _, state in _ajp_peers(upstream)),
               what="the idle AJP connection to be closed")
    assert saw(port, "GET", "/second")["PATH_INFO"] == "/second"


def test_a_head_that_stops_gets_a_408_as_ajp_packets(serve):
    import socket

    port = serve_on(serve, "ajp://", "tests.gateway_apps:app", "--header-timeout", "1").port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(forward_request()[:10])  # a request cut short
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, _, body, reuse = read_response(data)
    assert (status, reuse) == (408, 0) and body.startswith(b"408 ")
