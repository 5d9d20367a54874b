"""forkwsgi against ``wsgiref.validate``, the PEP 3333 oracle.

Every app in tests/framework_apps/validated.py is wrapped in the validator;
it raises AssertionError (or warns WSGIWarning) the moment the server hands
over a bad environ, misuses ``wsgi.input``/``write()``, or fails to close the
iterable. Each test checks the response and then that the server log holds
no complaint from the validator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from tests.framework_apps import validated
from tests.http_client import Reader, exchange

APP = "tests.framework_apps.validated:app"
VALIDATOR_COMPLAINTS = ("AssertionError", "WSGIWarning", "garbage collected without being closed")

# A body whose lines straddle any chunk or buffer boundary: growing lines, an empty
# line, a long one (bigger than the server's 64 KiB reads) and no newline at the end.
BODY = (b"".join(b"line %d %s\n" % (i, b"x" * (i * 37 % 3001)) for i in range(200))
        + b"\n" + b"y" * 70000 + b"\n" + b"no newline at the end")


@pytest.fixture
def server(serve):
    """One worker (so a later request proves the earlier one is fully finished), stopped
    with SIGQUIT so the arbiter reaps its own worker before conftest's kill-tree."""
    running = serve(APP)
    yield running
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        running.signal(signal.SIGQUIT)
        running.wait_exit(10)


def settled_log(server) -> str:
    """The log once every earlier request is done, its iterable closed and collected:
    the single worker has moved on to a new request."""
    assert exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").status == 200
    return server.log()


def assert_validator_happy(server) -> str:
    log = settled_log(server)
    for complaint in VALIDATOR_COMPLAINTS:
        assert complaint not in log, f"wsgiref.validate complained:\n{log}"
    return log


def get(path: str, version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: localhost\r\n\r\n".encode()


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in chunks of ``size`` (RFC 9112 section 7.1), one with an extension."""
    parts = []
    for index, start in enumerate(range(0, len(body), size)):
        piece = body[start:start + size]
        extension = b";note=x" if index == 1 else b""
        parts.append(b"%x%s\r\n%s\r\n" % (len(piece), extension, piece))
    return b"".join(parts) + b"0\r\n\r\n"


# --- responses ---------------------------------------------------------------------------------


def test_hello(server):
    reply = exchange(server, get("/hello"))
    assert (reply.status, reply.body, reply.framing) == (200, b"Hello, world!", "length")
    assert_validator_happy(server)


def test_app_supplied_date_and_server_are_not_duplicated(server):
    """Date and Server are singletons (RFC 9110 sections 6.6.1, 10.2.4): a sender MUST NOT
    generate a second field line (section 5.3). The server adds them only when missing."""
    reply = exchange(server, get("/own-headers"))
    assert reply.status == 200
    names = [name.lower() for name, _ in reply.headers]
    assert names.count("date") == 1, reply.raw_head
    assert names.count("server") == 1, reply.raw_head
    assert reply.header("Date") == validated.APP_DATE
    assert reply.header("Server") == validated.APP_SERVER
    assert_validator_happy(server)


def test_write_callable_then_iterable(server):
    reply = exchange(server, get("/write"))
    assert reply.status == 200
    assert reply.framing == "chunked"  # HTTP/1.1 and no Content-Length
    assert reply.body == b"written by write() then returned"
    assert_validator_happy(server)


def test_write_callable_on_http10_is_close_delimited(server):
    raw = server.request(get("/write", "HTTP/1.0"))  # reads until the server closes
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()  # RFC 9112 section 6.1: not for 1.0
    assert body == b"written by write() then returned"
    assert_validator_happy(server)


def test_generator_body(server):
    with server.connect() as sock:
        sock.sendall(get("/generator") + get("/hello"))  # pipelined behind it
        reader = Reader(sock)
        reply = reader.read()
        assert reply.framing == "chunked"
        assert reply.body == b"".join(b"line %03d\n" % i for i in range(100))
        assert reader.read().body == b"Hello, world!"
    assert_validator_happy(server)


def request_until_reset(server, raw: bytes) -> bytes:
    """What the server sent before it reset the connection (an app failed mid-response)."""
    data = b""
    with server.connect() as sock, pytest.raises(ConnectionResetError):
        sock.sendall(raw)
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_generator_failing_mid_body_resets_the_connection(server):
    raw = request_until_reset(server, get("/generator-fails"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body.startswith(b"c\r\nfirst piece\n\r\n")
    assert not body.endswith(b"0\r\n\r\n")  # no last-chunk: the client sees it truncated
    log = assert_validator_happy(server)  # the validator checks close() was called
    assert "marker-generator-fails" in log


def test_client_gone_mid_body_still_closes_the_iterable(server):
    with server.connect() as sock:
        sock.sendall(get("/endless"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Close with a reset (SO_LINGER 0), so the worker's next send fails at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert_validator_happy(server)


def test_file_wrapper_over_a_real_file(server):
    expected = Path(validated.SERVED_FILE).read_bytes()
    with server.connect() as sock:
        sock.sendall(get("/file"))
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 200
        assert reply.header("Content-Length") == str(len(expected))
        assert reply.body == expected
        sock.sendall(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n")
        head = reader.read(head_request=True)
        assert head.header("Content-Length") == str(len(expected))
        sock.sendall(get("/hello"))  # no stray file bytes after the HEAD
        assert reader.read().body == b"Hello, world!"
    assert_validator_happy(server)


def test_wsgi_errors_goes_to_the_log(server):
    reply = exchange(server, get("/errors"))
    assert reply.status == 204
    assert reply.body == b""
    log = assert_validator_happy(server)
    assert "marker-wsgi-errors write\n" in log
    assert "marker-wsgi-errors writelines\n" in log


# --- wsgi.input --------------------------------------------------------------------------------


def expected_summary(route: str) -> dict:
    summary = {"length": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest()}
    lines = BODY.splitlines(keepends=True)
    if route in ("/readline", "/readlines", "/iterate"):
        summary["lines"] = len(lines)
    elif route == "/readline-sized":
        summary["pieces"] = sum(-(-len(line) // 7) for line in lines)
    return summary


READERS = ["/read", "/readline", "/readline-sized", "/readlines", "/iterate"]


@pytest.mark.parametrize("route", READERS)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_reading_wsgi_input(server, route, framing):
    if framing == "content-length":
        request = (f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
                   f"\r\nContent-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    else:
        request = (f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
                   f"\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunked(BODY, 1000)
    with server.connect() as sock:
        sock.sendall(request + get("/hello"))  # the next request right behind the body
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 200, reply.body[:2000]
        summary = json.loads(reply.body)
        assert summary.pop("reads", None) != 1  # read(1000) really was called repeatedly
        assert summary == expected_summary(route)
        assert reader.read().body == b"Hello, world!"
    assert_validator_happy(server)


def test_reading_wsgi_input_after_100_continue(server):
    with server.connect() as sock:
        sock.sendall((f"POST /readline HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                      f"Content-Length: {len(BODY)}\r\n\r\n").encode())
        reader = Reader(sock)
        interim = reader.read()
        assert interim.status == 100  # sent when the app first reads wsgi.input
        sock.sendall(BODY)
        reply = reader.read()
        assert reply.status == 200
        assert json.loads(reply.body) == expected_summary("/readline")
    assert_validator_happy(server)


# --- start_response with exc_info ----------------------------------------------------------------


def test_exc_info_before_headers_replaces_the_response(server):
    with server.connect() as sock:
        sock.sendall(get("/error-before-headers") + get("/hello"))
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 500
        assert reply.body == b"recovered: the app's own error page\n"
        assert reply.header("Content-Type") == "text/plain"
        # The app handled its error: a complete response, so the connection lives on.
        assert reader.read().body == b"Hello, world!"
    log = assert_validator_happy(server)
    assert "Traceback" not in log


def test_exc_info_after_headers_reraises_and_resets_the_connection(server):
    raw = request_until_reset(server, get("/error-after-headers"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"13\r\npartial body, then \r\n")
    assert not body.endswith(b"0\r\n\r\n")  # RFC 9112 section 7.1: no last-chunk on a failure
    assert b"never sent" not in body
    log = assert_validator_happy(server)
    assert "marker-after-headers" in log


# --- every well-behaved app of tests/apps.py, validated ----------------------------------------

POST = b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"


@pytest.mark.parametrize("raw, status", [
    (get("/echo/x?a=1"), 200),
    (POST % (b"/echo/", 5, b"hello"), 200),
    (get("/hello/"), 200),
    (get("/pid/"), 200),
    (get("/loaded_in/"), 200),
    (get("/slow/?seconds=0"), 200),
    (get("/application/"), 200),
    (get("/stream/"), 200),
    (get("/writer/"), 200),
    (get("/status/200"), 200),
    (get("/status/404"), 404),
    (get("/closing/"), 200),
    (get("/sendfile/"), 200),
    (get("/sendfile/bytesio"), 200),
    (POST % (b"/reject_upload/", 3, b"abc"), 413),
    (POST % (b"/read_lines/", 6, b"a\nb\nc\n"), 200),
    (POST % (b"/body_error/", 4, b"data"), 200),
], ids=lambda value: value.split(b" ")[1].decode() if isinstance(value, bytes) else None)
def test_every_well_behaved_test_app_passes_the_validator(serve, raw, status):
    server = serve("tests.validated_apps:app")
    assert exchange(server, raw).status == status
    assert_validator_happy(server)
