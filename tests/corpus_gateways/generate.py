"""Writes the gateway fuzz corpus: one ``NAME.bin`` per case in CASES below, the
protocol-selector byte of tests/fuzz_gateways.py followed by the packet.

Owns: the seed cases, a handful of valid and broken packets per protocol, each
with what parse_head must answer ("head", "control" or the error status),
built byte by byte by the small writers below. Run
``python tests/corpus_gateways/generate.py`` after editing it (``--check``
only compares, as tests/test_gateway_properties.py does).

Must never: import forkwsgi, or compute an expectation with its parsers: the
packets are written from the wire formats' specifications, and the
expectations by hand.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: what the corpus tools share
from fuzzing import generator_main, write_corpus  # noqa: E402

# The selector byte: the protocol's index in fuzz_gateways.PROTOCOLS.
UWSGI, SCGI, FASTCGI, AJP, PROXY = range(5)
CASES: list[tuple[str, int, bytes, str | int]] = []


def case(name: str, selector: int, raw: bytes, expected: str | int) -> None:
    CASES.append((name, selector, raw, expected))


# --- uwsgi and SCGI ---------------------------------------------------------------------------


def uwsgi(pairs: list[tuple[bytes, bytes]], modifier1: int = 0) -> bytes:
    block = b"".join(struct.pack("<H", len(name)) + name + struct.pack("<H", len(value)) + value
                     for name, value in pairs)
    return struct.pack("<BHB", modifier1, len(block), 0) + block


def scgi(pairs: list[tuple[bytes, bytes]]) -> bytes:
    block = b"".join(name + b"\0" + value + b"\0" for name, value in pairs)
    return b"%d:%s," % (len(block), block)


GET = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/caf%C3%A9?a=1"),
       (b"QUERY_STRING", b"a=1"), (b"PATH_INFO", b"/caf\xc3\xa9"),
       (b"HTTP_HOST", b"app.example"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
POST = [(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/form"),
        (b"CONTENT_TYPE", b"text/plain"), (b"HTTP_HOST", b"app.example")]

case("uwsgi_get", UWSGI, uwsgi([(b"CONTENT_LENGTH", b""), *GET]), "head")
case("uwsgi_post", UWSGI, uwsgi([(b"CONTENT_LENGTH", b"5"), *POST]) + b"hello", "head")
case("uwsgi_no_request_uri", UWSGI, uwsgi([(b"REQUEST_METHOD", b"GET"),
                                           (b"SCRIPT_NAME", b"/app"),
                                           (b"PATH_INFO", b"/\xff ?#%")]), "head")
case("uwsgi_bad_modifier", UWSGI, uwsgi(GET, modifier1=5), 400)
case("uwsgi_cut_short", UWSGI, struct.pack("<BHB", 0, 10, 0) + b"\x05\x00ab" + b"\0" * 6, 400)
case("uwsgi_bad_content_length", UWSGI, uwsgi([(b"CONTENT_LENGTH", b"-1"), *POST]), 400)

case("scgi_get", SCGI, scgi([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), *GET]), "head")
case("scgi_post", SCGI, scgi([(b"CONTENT_LENGTH", b"5"), (b"SCGI", b"1"), *POST]) + b"hello",
     "head")
case("scgi_without_scgi_1", SCGI, scgi([(b"CONTENT_LENGTH", b"0"), *GET]), 400)
case("scgi_content_length_not_first", SCGI, scgi([*GET, (b"CONTENT_LENGTH", b"0"),
                                                  (b"SCGI", b"1")]), 400)
case("scgi_leading_zero_length", SCGI, b"0" + scgi([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"),
                                                    *GET]), 400)
case("scgi_no_comma", SCGI, scgi([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), *GET])[:-1] + b";",
     400)


# --- FastCGI ----------------------------------------------------------------------------------


def record(kind: int, request_id: int, content: bytes = b"", padding: int = 0) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), padding) + content \
        + b"\0" * padding


def pairs(items: list[tuple[bytes, bytes]]) -> bytes:
    def size(data: bytes) -> bytes:
        return bytes([len(data)]) if len(data) < 128 else struct.pack(">I", len(data) | 1 << 31)
    return b"".join(size(name) + size(value) + name + value for name, value in items)


def begin(request_id: int = 1, role: int = 1, keep: bool = True) -> bytes:
    return record(1, request_id, struct.pack(">HB5x", role, keep))


def params(items: list[tuple[bytes, bytes]], request_id: int = 1) -> bytes:
    data = pairs(items)
    return record(4, request_id, data[:20], padding=3) + record(4, request_id, data[20:]) \
        + record(4, request_id)


case("fastcgi_get", FASTCGI, begin() + params([(b"CONTENT_LENGTH", b""), *GET])
     + record(5, 1), "head")
case("fastcgi_post", FASTCGI, begin(request_id=7) + params(
    [(b"CONTENT_LENGTH", b"5"), *POST, (b"LONG", b"x" * 200)], request_id=7)
    + record(5, 7, b"he", padding=6) + record(9, 0, pairs([(b"FCGI_MPXS_CONNS", b"")]))
    + record(5, 7, b"llo") + record(5, 7), "head")
case("fastcgi_get_values", FASTCGI, record(9, 0, pairs([(b"FCGI_MPXS_CONNS", b""),
                                                        (b"FCGI_MAX_REQS", b"")])), "control")
case("fastcgi_unknown_role", FASTCGI, begin(role=2) + params(GET), "control")
case("fastcgi_abort_during_params", FASTCGI, begin() + record(4, 1, pairs(GET))
     + record(2, 1), "control")
case("fastcgi_version_2", FASTCGI, b"\x02" + begin()[1:] + params(GET), 400)
case("fastcgi_stdin_before_params_end", FASTCGI, begin() + record(5, 1, b"x"), 400)
case("fastcgi_pair_cut_short", FASTCGI, begin() + record(4, 1, b"\x05\x00ab") + record(4, 1),
     400)


# --- AJP13 ------------------------------------------------------------------------------------


def string(value: bytes | None) -> bytes:
    return b"\xff\xff" if value is None else struct.pack(">H", len(value)) + value + b"\0"


def packet(payload: bytes) -> bytes:
    return b"\x12\x34" + struct.pack(">H", len(payload)) + payload


def forward(method_code: int, uri: bytes, headers: bytes, count: int,
            attributes: bytes = b"", terminator: bytes = b"\xff") -> bytes:
    return packet(bytes([2, method_code]) + string(b"HTTP/1.1") + string(uri)
                  + string(b"203.0.113.9") + string(None) + string(b"app.example")
                  + struct.pack(">HBH", 443, 1, count) + headers + attributes + terminator)


def data_packet(chunk: bytes) -> bytes:
    return packet(struct.pack(">H", len(chunk)) + chunk)


HOST = b"\xa0\x0b" + string(b"app.example")
case("ajp_forward", AJP, forward(2, b"/caf%C3%A9", HOST + string(b"X-Name") + string(b"\xe9"), 2,
                                 b"\x05" + string(b"a=1") + b"\x0a" + string(b"AJP_REMOTE_PORT")
                                 + string(b"5555")), "head")
case("ajp_post", AJP, forward(4, b"/form", HOST + b"\xa0\x08" + string(b"5"), 2)
     + data_packet(b"hel") + data_packet(b"lo"), "head")
case("ajp_chunked", AJP, forward(5, b"/up", string(b"Transfer-Encoding") + string(b"chunked"),
                                 1) + data_packet(b"abc") + data_packet(b""), "head")
case("ajp_stored_method", AJP, forward(0xFF, b"/", b"", 0, b"\x0d" + string(b"PURGE")), "head")
case("ajp_cping", AJP, packet(b"\x0a"), "control")
case("ajp_bad_signature", AJP, b"\x12\x35" + forward(2, b"/", b"", 0)[2:], 400)
case("ajp_unknown_attribute", AJP, forward(2, b"/", b"", 0, b"\x42" + string(b"x")), 400)
case("ajp_no_terminator", AJP, forward(2, b"/", b"", 0, terminator=b""), 400)


# --- PROXY ------------------------------------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def v2(command: int, family_transport: int, block: bytes, version: int = 2) -> bytes:
    return V2_SIGNATURE + bytes([version << 4 | command, family_transport]) \
        + struct.pack(">H", len(block)) + block


INET_BLOCK = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 56324, 443)
TLVS = b"\x01\x00\x02h2" + b"\x04\x00\x03\0\0\0"

case("proxy_v1_tcp4", PROXY, b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n" + HTTP_REQUEST,
     "control")
case("proxy_v1_tcp6", PROXY, b"PROXY TCP6 2001:db8::1 2001:0db8:0:0:0:0:0:2 1 65535\r\n"
     + HTTP_REQUEST, "control")
case("proxy_v1_unknown", PROXY, b"PROXY UNKNOWN anything at all\r\n" + HTTP_REQUEST, "control")
case("proxy_v2", PROXY, v2(1, 0x11, INET_BLOCK + TLVS) + HTTP_REQUEST, "control")
case("proxy_v2_local", PROXY, v2(0, 0x00, b"") + HTTP_REQUEST, "control")
case("proxy_v2_unix", PROXY, v2(1, 0x31, b"/run/a".ljust(108, b"\0") * 2) + HTTP_REQUEST,
     "control")
case("proxy_v1_bare_lf", PROXY, b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n", 400)
case("proxy_v1_leading_zero", PROXY, b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n", 400)
case("proxy_v2_version_1", PROXY, v2(1, 0x11, INET_BLOCK, version=1), 400)
case("proxy_v2_tlv_overrun", PROXY, v2(1, 0x11, INET_BLOCK + b"\x01\x00\x09h2"), 400)


def write(check: bool = False) -> list[str]:
    """Write (or, with check, compare) every case's file; return the names that differ."""
    return write_corpus({HERE / f"{name}.bin": bytes([selector]) + raw
                         for name, selector, raw, _ in CASES}, check)


if __name__ == "__main__":
    generator_main(write, len(CASES), __file__)
