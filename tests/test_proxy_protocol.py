"""The PROXY protocol in front of HTTP (``proxy+http://``), parsed in-process and served.

The in-process tests build version 1 lines and version 2 headers byte by byte
and check the parser's answer for whole, split and broken preambles. The
process tests send preambles over raw sockets to a real forkwsgi, then put a
real HAProxy (``send-proxy-v2``) and a real nginx (stream module,
``proxy_protocol on``) in front and check that the app sees the client's
address, not the relay's: the client connects from 127.0.0.2 (loopback on
Linux) while the relay connects from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import subprocess

import pytest

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols import BY_SCHEME, split_scheme
from forkwsgi.protocols.http import HTTP
from forkwsgi.protocols.proxy import PROXY_HTTP, V1_MAX, V2_SIGNATURE, parse_preamble
from forkwsgi.settings import to_peers
from tests.conftest import FORKWSGI, REPO
from tests.frontends import CLIENT_ADDR, serve_on
from tests.http_client import Reader

LIMITS = Limits()
REQUEST = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


def v1(family: str, source: str = "", dest: str = "", sport: int = 0, dport: int = 0) -> bytes:
    if family == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return f"PROXY {family} {source} {dest} {sport} {dport}\r\n".encode()


def v2(command: int = 1, family: int = 1, transport: int = 1, source: str = "",
       dest: str = "", sport: int = 0, dport: int = 0, tlvs: bytes = b"",
       length: int | None = None, version: int = 2) -> bytes:
    """A version 2 header: command 0 LOCAL, 1 PROXY; family 0 UNSPEC, 1 INET, 2 INET6,
    3 UNIX; transport 1 STREAM, 2 DGRAM. ``length`` overrides the computed one."""
    if family in (1, 2):
        any_address = "0.0.0.0" if family == 1 else "::"
        source, dest = source or any_address, dest or any_address
    if family == 1:
        block = socket.inet_aton(source) + socket.inet_aton(dest) + struct.pack(">HH", sport,
                                                                               dport)
    elif family == 2:
        block = (socket.inet_pton(socket.AF_INET6, source)
                 + socket.inet_pton(socket.AF_INET6, dest) + struct.pack(">HH", sport, dport))
    elif family == 3:
        block = source.encode().ljust(108, b"\0") + dest.encode().ljust(108, b"\0")
    else:
        block = b""
    block += tlvs
    size = len(block) if length is None else length
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack(">H", size) + block)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(value)) + value


# HAProxy's extensions: ALPN, the authority (SNI), a unique ID, and the SSL one with its
# version and cipher inside; then padding.
TLVS = (tlv(0x01, b"h2") + tlv(0x02, b"app.example") + tlv(0x05, b"id-1")
        + tlv(0x20, b"\x01" + b"\0\0\0\0" + tlv(0x21, b"TLSv1.3")
              + tlv(0x23, b"TLS_AES_128_GCM_SHA256"))
        + tlv(0x04, b"\0\0\0"))


def parsed(raw: bytes):
    """``(peer, consumed)`` for a whole preamble followed by a request."""
    control, consumed = parse_preamble(raw + REQUEST, LIMITS)
    assert control.protocol is HTTP and not control.reply and not control.close
    return control.peer, consumed


def refused(raw: bytes, limits: Limits = LIMITS) -> int:
    with pytest.raises(HTTPError) as info:
        parse_preamble(raw, limits)
    return info.value.status


# --- version 1, in-process --------------------------------------------------------------------


def test_v1_tcp4_gives_the_source_as_the_peer_and_hands_over_to_http():
    line = v1("TCP4", "192.168.0.1", "192.168.0.11", 56324, 443)
    assert parsed(line) == (("192.168.0.1", "56324"), len(line))


def test_v1_tcp6_addresses_come_out_as_the_kernel_writes_them():
    line = v1("TCP6", "2001:DB8:0:0:0:0:0:1", "::1", 65535, 8080)
    assert parsed(line) == (("2001:db8::1", "65535"), len(line))
    mapped = v1("TCP6", "::ffff:192.0.2.1", "::ffff:192.0.2.2", 0, 80)
    assert parsed(mapped) == (("::ffff:192.0.2.1", "0"), len(mapped))


def test_v1_unknown_keeps_the_sockets_peer_and_ignores_the_rest_of_the_line():
    assert parsed(b"PROXY UNKNOWN\r\n") == (None, 15)
    longest = b"PROXY UNKNOWN " + b" ".join([b"ffff:" * 7 + b"ffff"] * 2) + b" 65535 65535\r\n"
    assert len(longest) == V1_MAX
    assert parsed(longest) == (None, V1_MAX)


def test_the_longest_tcp6_line_is_accepted():
    full = ":".join(["ffff"] * 8)
    line = v1("TCP6", full, full, 65535, 65535)
    assert len(line) == 104
    assert parsed(line) == ((full, "65535"), 104)


def test_a_v1_line_split_anywhere_wants_more_until_whole():
    line = v1("TCP4", "203.0.113.7", "10.0.0.1", 40000, 80)
    for end in range(1, len(line)):
        assert parse_preamble(line[:end], LIMITS) is None, end
    assert parsed(line)[0] == ("203.0.113.7", "40000")


def test_a_v1_line_without_crlf_in_107_bytes_is_refused():
    unended = b"PROXY UNKNOWN " + b"f" * (V1_MAX - 14)
    assert len(unended) == V1_MAX
    assert parse_preamble(unended[:-1], LIMITS) is None  # still room for the CRLF
    assert refused(unended) == 400
    assert refused(unended + b"\r\n") == 400


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",  # no preamble: refused at its first byte
    b"G",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # the keyword is upper case
    b"PROXY\r\n",
    b"PROXY \r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # one too many
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # a heading zero (octal?)
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.999 1 2\r\n",  # the destination is checked too
    b"PROXY TCP4 ::1 ::1 1 2\r\n",  # IPv6 under TCP4
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",  # IPv4 under TCP6
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # a zone is no canonical address
    b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",  # a heading zero in a port
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # a bare LF
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",  # a CR without its LF
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n",  # a non-ASCII digit
    b"PROXY TCP4 1.2.3.4\xff 5.6.7.8 1 2\r\n",
])
def test_broken_v1_lines_are_refused(raw):
    assert refused(raw) == 400


# --- version 2, in-process --------------------------------------------------------------------


def test_v2_tcp_over_ipv4():
    header = v2(source="203.0.113.9", dest="10.0.0.1", sport=51000, dport=80)
    assert len(header) == 28
    assert parsed(header) == (("203.0.113.9", "51000"), 28)


def test_v2_tcp_over_ipv6():
    header = v2(family=2, source="2001:db8::7", dest="2001:db8::1", sport=443, dport=8000)
    assert parsed(header) == (("2001:db8::7", "443"), 16 + 36)


def test_v2_unix_stream_has_no_address_as_forkwsgis_own_unix_peers():
    header = v2(family=3, source="/run/client.sock", dest="/run/haproxy.sock")
    assert parsed(header) == (("", ""), 16 + 216)


def test_v2_extensions_are_skipped():
    header = v2(source="198.51.100.4", dest="10.0.0.1", sport=1, dport=2, tlvs=TLVS)
    assert parsed(header) == (("198.51.100.4", "1"), len(header))


@pytest.mark.parametrize("header", [
    v2(command=0, family=0, transport=0),  # HAProxy's health check
    v2(command=0, source="192.0.2.1", dest="192.0.2.2", sport=1, dport=2),  # addresses ignored
    v2(command=0, family=0, transport=0, tlvs=b"anything at all"),
    v2(command=0, family=0xF, transport=0xF),  # a LOCAL block is not read, its family neither
    v2(family=0, transport=0),  # PROXY for an unspecified family
    v2(family=0, transport=0, tlvs=b"\x01\x02\x03\x04"),
    v2(family=1, transport=0, source="192.0.2.1", dest="192.0.2.2"),
    v2(transport=2, source="192.0.2.1", dest="192.0.2.2", sport=1, dport=2),  # a UDP flow
])
def test_v2_local_and_unspecified_keep_the_sockets_peer(header):
    assert parsed(header) == (None, len(header))


@pytest.mark.parametrize("header", [
    v2(source="203.0.113.9", dest="10.0.0.1", sport=51000, dport=80),
    v2(family=2, source="2001:db8::7", dest="::1", sport=1, dport=2, tlvs=TLVS),
    v2(family=3, source="/a", dest="/b"),
    v2(command=0, family=0, transport=0, tlvs=b"xyz"),
])
def test_a_v2_header_split_anywhere_wants_more_until_whole(header):
    for end in range(1, len(header)):
        assert parse_preamble(header[:end], LIMITS) is None, end
    assert parse_preamble(header + REQUEST, LIMITS)[1] == len(header)


@pytest.mark.parametrize(("raw", "status"), [
    (V2_SIGNATURE[:5] + b"X", 400),  # the signature breaks off
    (V2_SIGNATURE[:-1] + b"\r", 400),
    (v2(version=1)[:13], 400),  # refused as soon as the version is in
    (v2(version=3), 400),
    (v2(command=2), 400),
    (v2(command=0xF), 400),
    (v2(family=4, tlvs=b"x" * 12), 400),  # undefined families and transports
    (v2(transport=3, source="1.2.3.4", dest="1.2.3.4"), 400),
    (v2(source="1.2.3.4", dest="1.2.3.4", length=11)[:16], 400),  # too short for IPv4
    (v2(family=2, source="::1", dest="::1", length=35)[:16], 400),
    (v2(family=3, source="/a", dest="/b", length=215)[:16], 400),
    (v2(source="1.2.3.4", dest="1.2.3.4", tlvs=b"\x01\x00"), 400),  # an extension cut short
    (v2(source="1.2.3.4", dest="1.2.3.4", tlvs=tlv(1, b"ab")[:-1]), 400),  # overruns
    (v2(source="1.2.3.4", dest="1.2.3.4", tlvs=tlv(1, b"ab") + b"\x04"), 400),
    (v2(command=0, family=0, transport=0, length=0xFFFF)[:16], 431),  # over the head limit
])
def test_broken_v2_headers_are_refused(raw, status):
    assert refused(raw) == status


def test_the_v2_header_is_bounded_by_the_head_limit():
    header = v2(source="1.2.3.4", dest="5.6.7.8", tlvs=tlv(0x04, b"\0" * 500))
    assert refused(header, Limits(head=len(header) - 1)) == 431
    assert parse_preamble(header, Limits(head=len(header)))[1] == len(header)


def test_the_scheme_and_the_setting():
    assert split_scheme("proxy+http://127.0.0.1:8001") == ("proxy+http", "127.0.0.1:8001")
    assert split_scheme("proxy+http://unix:/run/app.sock") == ("proxy+http", "unix:/run/app.sock")
    assert split_scheme("proxy+http://fd://3") == ("proxy+http", "fd://3")
    assert split_scheme("proxy+http://[::1]:80") == ("proxy+http", "[::1]:80")
    assert BY_SCHEME["proxy+http"] is PROXY_HTTP
    assert to_peers("10.0.0.1, 192.168.0.0/16,::1") == ["10.0.0.1", "192.168.0.0/16", "::1"]
    assert to_peers(["*"]) == ["*"]
    with pytest.raises(ValueError, match="not an address"):
        to_peers("haproxy.internal")


# --- forkwsgi with raw sockets ------------------------------------------------------------------


def proxy_server(serve, app: str = "tests.apps:echo", *args: str, workers: int = 1,
                 spec: str = "proxy+http://"):
    """forkwsgi serving ``app`` on ``proxy+http://127.0.0.1:PORT`` (or ``spec``)."""
    return serve_on(serve, spec, app, *args, workers=workers)


def exchange(sock: socket.socket, reader: Reader, raw: bytes) -> dict:
    sock.sendall(raw)
    reply = reader.read()
    assert reply.status == 200, reply
    return json.loads(reply.body)


PREAMBLES = {
    "v1": (v1("TCP4", "203.0.113.7", "10.0.0.1", 40123, 443), ("203.0.113.7", "40123")),
    "v1-tcp6": (v1("TCP6", "2001:db8::7", "2001:db8::1", 40124, 443), ("2001:db8::7", "40124")),
    "v2": (v2(source="198.51.100.4", dest="10.0.0.1", sport=40125, dport=443, tlvs=TLVS),
           ("198.51.100.4", "40125")),
    "v2-ipv6": (v2(family=2, source="2001:db8::9", dest="::1", sport=40126, dport=443),
                ("2001:db8::9", "40126")),
}


@pytest.mark.process
@pytest.mark.parametrize("version", PREAMBLES)
def test_every_request_on_the_connection_has_the_preambles_address(serve, version):
    preamble, (addr, port) = PREAMBLES[version]
    server = proxy_server(serve)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = Reader(sock)
        first = exchange(sock, reader, preamble + b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (first["REMOTE_ADDR"], first["REMOTE_PORT"]) == (addr, port)
        assert (first["PATH_INFO"], first["QUERY_STRING"]) == ("/a", "x=1")
        second = exchange(sock, reader, b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5"
                                        b"\r\n\r\nhello")
        assert (second["REMOTE_ADDR"], second["REMOTE_PORT"], second["body"]) == \
            (addr, port, "hello")
        assert second["pid"] == first["pid"]  # the same connection, kept alive


@pytest.mark.process
def test_a_preamble_in_pieces_and_local_health_checks(serve):
    server = proxy_server(serve)
    preamble = v2(source="192.0.2.33", dest="10.0.0.1", sport=5555, dport=80)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = Reader(sock)
        for piece in (preamble[:7], preamble[7:20]):  # each read wants more
            sock.sendall(piece)
        echoed = exchange(sock, reader, preamble[20:] + REQUEST)
        assert (echoed["REMOTE_ADDR"], echoed["REMOTE_PORT"]) == ("192.0.2.33", "5555")
    for local in (v2(command=0, family=0, transport=0), b"PROXY UNKNOWN\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            echoed = exchange(sock, Reader(sock), local + REQUEST)
            assert (echoed["REMOTE_ADDR"], echoed["REMOTE_PORT"]) == \
                ("127.0.0.1", str(sock.getsockname()[1]))  # the socket's own peer


@pytest.mark.process
@pytest.mark.parametrize("raw", [
    REQUEST,  # plain HTTP on a PROXY listener
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + REQUEST,
    v2(command=3) + REQUEST,
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
])
def test_no_preamble_or_a_broken_one_is_a_400_and_the_worker_keeps_serving(serve, raw):
    server = proxy_server(serve)
    reply = server.request(raw)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert b"Connection: close" in reply
    good = v1("TCP4", "203.0.113.1", "10.0.0.1", 1000, 80)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert exchange(sock, Reader(sock), good + REQUEST)["REMOTE_ADDR"] == "203.0.113.1"
    assert "rejected a request from 127.0.0.1:" in server.log()


@pytest.mark.process
def test_a_peer_not_in_proxy_allow_from_is_refused_at_accept(serve, tmp_path):
    sock_path = tmp_path / "proxy.sock"
    server = proxy_server(serve, "tests.apps:echo", "--proxy-allow-from", "10.0.0.1",
                          "-b", f"proxy+http://unix:{sock_path}")
    preamble = v1("TCP4", "203.0.113.7", "10.0.0.1", 40123, 443)
    for family, address in ((socket.AF_INET, ("127.0.0.1", server.port)),
                            (socket.AF_UNIX, str(sock_path))):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(address)
            with contextlib.suppress(OSError):
                sock.sendall(preamble + REQUEST)
            assert Reader(sock).closed(), family
    # One line for both: client errors are logged at most once a second.
    log = server.wait_log("not in proxy_allow_from")
    assert "refused a connection from 127.0.0.1:" in log
    assert "Traceback" not in log


@pytest.mark.process
def test_unix_peers_are_allowed_by_default(serve, tmp_path):
    sock_path = tmp_path / "proxy.sock"
    proxy_server(serve, spec=f"proxy+http://unix:{sock_path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(sock_path))
        echoed = exchange(sock, Reader(sock),
                          v2(family=2, source="2001:db8::5", dest="::1", sport=7, dport=80)
                          + REQUEST)
        assert (echoed["REMOTE_ADDR"], echoed["REMOTE_PORT"]) == ("2001:db8::5", "7")


@pytest.mark.process
def test_a_bad_proxy_allow_from_is_a_one_line_error(tmp_path):
    result = subprocess.run([*FORKWSGI, "--proxy-allow-from", "10.0.0.1,nope", "tests.apps:echo"],
                            capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"})
    assert result.returncode == 2
    assert result.stderr.startswith("forkwsgi: error: ")
    assert "proxy_allow_from" in result.stderr and "'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.process
def test_forwarded_headers_are_trusted_by_the_preambles_address(serve):
    """The preamble's client is the peer in every respect: X-Forwarded-For it sends counts
    only when that client is in forwarded_allow_ips, whatever the relay's address."""
    server = proxy_server(serve)
    spoof = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.66\r\n" \
            b"X-Forwarded-Proto: https\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        echoed = exchange(sock, Reader(sock),
                          v1("TCP4", "203.0.113.7", "10.0.0.1", 1, 80) + spoof)
        assert (echoed["REMOTE_ADDR"], echoed["wsgi.url_scheme"]) == ("203.0.113.7", "http")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # a client that is itself a trusted proxy (loopback, the default)
        echoed = exchange(sock, Reader(sock), v1("TCP4", "127.0.0.1", "127.0.0.1", 1, 80) + spoof)
        assert (echoed["REMOTE_ADDR"], echoed["wsgi.url_scheme"]) == ("192.0.2.66", "https")


@pytest.mark.process
def test_a_proxied_connection_stays_with_its_worker_while_it_is_busy(serve):
    """Handoff moves a busy worker's idle connections to a free one with their bytes only:
    one past its preamble stays, so its next request still has the preamble's address."""
    server = proxy_server(serve, "tests.apps:echo", "--mount", "/s=tests.apps:slow", workers=2)
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=20)
             for _ in range(6)]
    try:
        readers = {sock: Reader(sock) for sock in socks}
        by_worker: dict[int, list[socket.socket]] = {}
        for n, sock in enumerate(socks):
            echoed = exchange(sock, readers[sock],
                              v1("TCP4", f"203.0.113.{n + 1}", "10.0.0.1", 1000 + n, 80) + REQUEST)
            by_worker.setdefault(echoed["pid"], []).append(sock)
        pid, (a, b) = next((pid, held[:2]) for pid, held in by_worker.items() if len(held) > 1)
        b_addr = f"203.0.113.{socks.index(b) + 1}"
        a.sendall(b"GET /s?seconds=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")  # a's worker busy
        assert readers[a].read().body == b"slept 0.500\n"
        echoed = exchange(b, readers[b], REQUEST)
        assert (echoed["REMOTE_ADDR"], echoed["pid"]) == (b_addr, pid)
    finally:
        for sock in socks:
            sock.close()


# --- behind HAProxy and nginx -------------------------------------------------------------------

STREAM_MODULE = next((p for p in ("/usr/lib/nginx/modules/ngx_stream_module.so",
                                  "/usr/lib64/nginx/modules/ngx_stream_module.so")
                      if os.path.exists(p)), None)

HAPROXY_CONF = """\
global
    maxconn 64
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server s1 127.0.0.1:{upstream} send-proxy-v2
"""
NGINX_STREAM = """\
load_module {module};
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream};
        proxy_protocol on;
    }}
}}
"""


@pytest.fixture
def relay(serve, frontends):
    """``relay(kind) -> front port``: forkwsgi on ``proxy+http://`` (``-w 2``) behind a
    fresh HAProxy (``haproxy-tcp``, ``haproxy-http``) or nginx stream (``nginx``)."""

    def start(kind: str) -> int:
        if kind == "nginx" and STREAM_MODULE is None:
            pytest.skip("nginx with the stream module is not installed")
        server = proxy_server(serve, workers=2)
        if kind == "nginx":
            front = frontends.nginx(top=NGINX_STREAM, module=STREAM_MODULE, upstream=server.port)
        else:
            front = frontends.haproxy(HAPROXY_CONF, mode=kind.split("-")[1], upstream=server.port)
        return front.port

    return start


def through(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[dict, int]:
    """One request from CLIENT_ADDR through the relay: what the app saw, and the client's
    own port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20,
                                      source_address=(CLIENT_ADDR, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": "app.example", **(headers or {})})
        client_port = conn.sock.getsockname()[1]
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200, payload[:2000]
        return json.loads(payload), client_port
    finally:
        conn.close()


@pytest.mark.process
@pytest.mark.parametrize("kind", ["haproxy-tcp", "haproxy-http", "nginx"])
def test_behind_a_relay_the_app_sees_the_client(relay, kind):
    port = relay(kind)
    seen, client_port = through(port, "GET", "/search?q=caf%C3%A9&x=1")
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == (CLIENT_ADDR, str(client_port))
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/search", "q=caf%C3%A9&x=1")
    seen, _ = through(port, "GET", "/caf%C3%A9/na%C3%AFve")
    assert seen["PATH_INFO"] == "/caf\xc3\xa9/na\xc3\xafve"  # the UTF-8 bytes, as latin-1
    assert seen["REQUEST_URI"] == "/caf%C3%A9/na%C3%AFve"
    body = os.urandom(1 << 19).hex().encode()
    assert len(body) == 1 << 20
    seen, client_port = through(port, "POST", "/upload", body,
                                {"Content-Type": "application/octet-stream"})
    assert (seen["CONTENT_LENGTH"], seen["body"]) == (str(1 << 20), body.decode())
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == (CLIENT_ADDR, str(client_port))
    # The client is not a trusted proxy, so what it says of itself is not believed.
    seen, _ = through(port, "GET", "/", headers={"X-Forwarded-For": "192.0.2.66"})
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR
