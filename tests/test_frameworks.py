"""Real Flask, Django and Falcon applications served through the forkwsgi CLI.

Each test runs once per framework against the same route set
(tests/framework_apps/__init__.py), with two workers, through real clients:
``requests`` for what a browser-like client does (cookies, redirects,
keep-alive pools), ``http.client`` and raw sockets where the framing itself
is the thing under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import socket
import threading

import pytest
import requests

from tests.framework_apps import error_message
from tests.http_client import Reader

FRAMEWORKS = {
    "flask": "tests.framework_apps.flask_app:app",
    "django": "tests.framework_apps.django_app:application",
    "falcon": "tests.framework_apps.falcon_app:app",
}
# Django's DEBUG_PROPAGATE_EXCEPTIONS is project-wide: the propagation test starts its
# Django server with this set (see django_app.py).
PROPAGATE_ENV = {"django": {"TEST_DJANGO_PROPAGATE_EXCEPTIONS": "1"}}
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(params=sorted(FRAMEWORKS))
def framework(request) -> str:
    return request.param


@pytest.fixture
def start(serve):
    """``serve`` under the name these tests use (conftest stops and reaps every server)."""
    return serve


@pytest.fixture
def app_server(start, framework):
    return start(FRAMEWORKS[framework], workers=2)


# --- raw HTTP/1.1 reading, for the tests that check framing ----------------------------------


def read_head(stream) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of one response from a socket file."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        assert line.endswith(b"\r\n"), f"truncated head: {line!r}"
        if line == b"\r\n":
            return int(status_line.split()[1]), headers
        name, _, value = line.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"duplicate {name} header"
        headers[name.lower()] = value.strip()


def read_chunk(stream) -> bytes:
    """One chunk (RFC 9112 section 7.1): ``size CRLF data CRLF``; b"" is the last chunk."""
    size_line = stream.readline()
    assert size_line.endswith(b"\r\n"), f"bad chunk-size line {size_line!r}"
    size = int(size_line.split(b";", 1)[0], 16)
    data = stream.read(size)
    assert len(data) == size, "connection closed inside a chunk"
    if size == 0:
        assert stream.readline() == b"\r\n", "trailer section not ended by CRLF"
        return b""
    assert stream.read(2) == b"\r\n", "chunk data not followed by CRLF"
    return data


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


# --- request bodies ----------------------------------------------------------------------------


def test_multipart_upload_checksum(app_server):
    data = random.Random(20240601).randbytes(300 * 1024)
    response = requests.post(f"{app_server.url}/upload", timeout=10,
                             files={"file": ("blob.bin", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json() == {"filename": "blob.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}


def test_chunked_multipart_upload_flask(start):
    """A chunked request body (no Content-Length): werkzeug reads to the end because
    forkwsgi sets wsgi.input_terminated. (Django and Falcon read CONTENT_LENGTH bytes
    only, so they do not take chunked uploads at all: a framework limit, not tested.)"""
    server = start(FRAMEWORKS["flask"])
    data = random.Random(3).randbytes(250 * 1024)
    prepared = requests.Request("POST", f"{server.url}/upload", files={
        "file": ("chunked.bin", data, "application/octet-stream")}).prepare()
    body = prepared.body
    pieces = (body[i:i + 7001] for i in range(0, len(body), 7001))
    response = requests.post(f"{server.url}/upload", data=pieces, timeout=10,
                             headers={"Content-Type": prepared.headers["Content-Type"]})
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert response.json() == {"filename": "chunked.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}


def test_json_post(app_server):
    payload = {"numbers": [1, 2, 3.5], "name": "z\u00fcrich \u2603"}
    response = requests.post(f"{app_server.url}/json", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"received": payload, "sum": 6.5}


def test_multipart_upload_with_expect_100_continue(app_server):
    """The client holds the body back until the server's interim 100 (RFC 9110 10.1.1),
    which forkwsgi sends when the framework first reads wsgi.input."""
    data = random.Random(7).randbytes(200 * 1024)
    prepared = requests.Request("POST", f"{app_server.url}/upload", files={
        "file": ("cont.bin", data, "application/octet-stream")}).prepare()
    head = ("POST /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            f"Content-Type: {prepared.headers['Content-Type']}\r\n"
            f"Content-Length: {len(prepared.body)}\r\n\r\n").encode()
    with app_server.connect(timeout=5) as sock:
        sock.sendall(head)
        reader = Reader(sock)
        assert reader.read().status == 100
        sock.sendall(prepared.body)
        reply = reader.read()
    assert reply.status == 200, reply.body
    assert json.loads(reply.body) == {"filename": "cont.bin", "size": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()}


# --- responses ---------------------------------------------------------------------------------


def test_file_download_through_file_wrapper(app_server, tmp_path):
    """All three hand a real file to wsgi.file_wrapper (forkwsgi's sendfile path)."""
    path = tmp_path / "download.bin"
    data = random.Random(99).randbytes(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    url = f"{app_server.url}/download?path={path}"
    with requests.Session() as client:
        before = client.get(f"{app_server.url}/whoami", timeout=10).json()
        response = client.get(url, timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(data))
        assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()
        head = client.head(url, timeout=10)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["Content-Length"] == str(len(data))
        assert client.get(f"{app_server.url}/whoami", timeout=10).json() == before


def test_no_duplicate_singleton_headers(app_server, tmp_path):
    """requests folds repeated fields; http.client shows each field line. Date, Server,
    Content-Type and Content-Length are singletons: one line each (RFC 9110 section 5.3),
    also when the framework set one itself (werkzeug's send_file sets Date)."""
    path = tmp_path / "small.bin"
    path.write_bytes(b"0123456789" * 100)
    conn = http.client.HTTPConnection(app_server.host, app_server.port, timeout=10)
    try:
        for target in ("/hello", f"/download?path={path}"):
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            names = [name.lower() for name, _ in response.getheaders()]
            for singleton in ("date", "server", "content-type", "content-length"):
                assert names.count(singleton) == 1, (target, response.getheaders())
    finally:
        conn.close()


def test_streaming_response_is_chunked_and_incremental(app_server, tmp_path):
    """The first chunk arrives while the generator is still blocked (on a gate file the
    test creates), the framing is valid chunked, and the connection is reusable after."""
    gate = tmp_path / "gate"
    with app_server.connect(timeout=5) as sock, sock.makefile("rb") as stream:
        sock.sendall(get(f"/stream?n=5&gate={gate}"))
        status, headers = read_head(stream)
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers  # RFC 9112 section 6.2: never both
        assert read_chunk(stream) == b"chunk 0\n"  # times out if the server buffers the body
        gate.touch()
        chunks = []
        while chunk := read_chunk(stream):
            chunks.append(chunk)
        assert b"".join(chunks) == b"".join(b"chunk %d\n" % i for i in range(1, 5))

        sock.sendall(get("/hello"))
        status, headers = read_head(stream)
        assert status == 200
        assert stream.read(int(headers["content-length"])).startswith(b"hello from")


def test_streaming_response_through_http_client(app_server):
    conn = http.client.HTTPConnection(app_server.host, app_server.port, timeout=10)
    try:
        conn.request("GET", "/stream?n=50")
        response = conn.getresponse()
        assert response.status == 200
        assert response.chunked
        lines = list(iter(response.readline, b""))
        assert lines == [b"chunk %d\n" % i for i in range(50)]
    finally:
        conn.close()


def test_head_has_no_body_and_the_get_headers(app_server):
    conn = http.client.HTTPConnection(app_server.host, app_server.port, timeout=10)
    try:
        conn.request("GET", "/hello")
        got = conn.getresponse()
        get_body = got.read()
        conn.request("HEAD", "/hello")
        head = conn.getresponse()
        assert head.read() == b""
        # The same connection must still be in sync: no stray body bytes after the HEAD.
        conn.request("GET", "/hello")
        again = conn.getresponse()
        assert again.read() == get_body
    finally:
        conn.close()
    assert head.status == got.status == 200
    assert get_body.startswith(b"hello from")

    def comparable(response):
        return sorted((k.lower(), v) for k, v in response.getheaders() if k.lower() != "date")

    # RFC 9110 section 9.3.2: HEAD gets the header fields GET would have.
    assert comparable(head) == comparable(got)
    assert int(head.getheader("Content-Length")) == len(get_body)


def test_session_cookie_round_trip(app_server):
    with requests.Session() as client:
        response = client.get(f"{app_server.url}/session/set?user=alice", timeout=10)
        assert response.status_code == 200
        assert "Set-Cookie" in response.headers
        assert client.cookies  # the jar took it
        assert client.get(f"{app_server.url}/session/get", timeout=10).json() == {"user": "alice"}
    fresh = requests.get(f"{app_server.url}/session/get", timeout=10)
    assert fresh.json() == {"user": None}


def test_redirect_is_followed(app_server):
    response = requests.get(f"{app_server.url}/redirect", timeout=10)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [302]
    assert response.history[0].headers["Location"] in ("/hello", f"{app_server.url}/hello")
    assert response.url == f"{app_server.url}/hello"
    assert response.text.startswith("hello from")


def test_unknown_route_is_404(app_server):
    with requests.Session() as client:
        first = client.get(f"{app_server.url}/whoami", timeout=10).json()
        response = client.get(f"{app_server.url}/no/such/route", timeout=10)
        assert response.status_code == 404
        assert "Connection" not in response.headers  # a 404 is no reason to close
        assert client.get(f"{app_server.url}/whoami", timeout=10).json() == first


# --- errors ------------------------------------------------------------------------------------


def test_app_error_rendered_by_the_framework(app_server, framework):
    """The framework catches the exception: its own 500 page, the traceback in the log
    (through wsgi.errors or logging to stderr), and the connection stays usable."""
    marker = error_message(framework, "error")
    with requests.Session() as client:
        before = client.get(f"{app_server.url}/whoami", timeout=10).json()
        response = client.get(f"{app_server.url}/error", timeout=10)
        assert response.status_code == 500
        assert marker not in response.text
        assert TRACEBACK not in response.text
        assert client.get(f"{app_server.url}/whoami", timeout=10).json() == before
    log = app_server.wait_log(marker)
    assert TRACEBACK in log


def test_propagated_error_gets_forkwsgi_500(start, framework):
    """With the framework's propagation on, the exception reaches forkwsgi: a 500 with
    ``Connection: close`` and no traceback in the body; the traceback goes to the log."""
    server = start(FRAMEWORKS[framework], workers=2, env=PROPAGATE_ENV.get(framework))
    marker = error_message(framework, "propagate")
    raw = server.request(get("/propagate/error"))  # reads until the server closes
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status_line.startswith("HTTP/1.1 500 "), raw
    assert headers["connection"].lower() == "close"
    assert int(headers["content-length"]) == len(body)
    assert marker.encode() not in body
    assert TRACEBACK.encode() not in body
    log = server.wait_log(marker)
    assert TRACEBACK in log
    assert "/propagate/error" in log


# --- connections -------------------------------------------------------------------------------


def test_unread_large_body_does_not_reset_the_connection(start):
    """The app answers without reading a 4 MiB body (a 404 here). The server may close
    rather than drain it, but RFC 9112 section 9.6 says to close in stages (half-close,
    then read and discard a while), so the client reads the whole response and a clean
    end-of-stream, not a TCP reset (which a client still uploading gets before it can
    read the response; behind nginx it becomes a 502, see test_nginx.py)."""
    server = start(FRAMEWORKS["flask"])
    body = b"x" * (4 * 1024 * 1024)
    head = b"POST /no/such/route HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with server.connect(timeout=10) as sock:
        # The first MiB synchronously (it fits the socket buffers): when the server closes,
        # body bytes it never read are certainly waiting in its receive queue.
        sock.sendall(head + body[:1024 * 1024])
        sender = threading.Thread(target=_send_ignoring_errors,
                                  args=(sock, body[1024 * 1024:]))
        sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pytest.fail(f"connection reset after {len(received)} response bytes "
                        f"({received[:40]!r}...) instead of a clean close")
        finally:
            sender.join(10)
    assert received.startswith(b"HTTP/1.1 404 ")


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_keep_alive_reuses_one_connection(app_server):
    with requests.Session() as client:
        seen = [client.get(f"{app_server.url}/whoami", timeout=10).json() for _ in range(6)]
        # A POST with a body in the middle must not break the connection's framing.
        posted = client.post(f"{app_server.url}/json", json={"numbers": [1]}, timeout=10)
        assert posted.status_code == 200
        seen.append(client.get(f"{app_server.url}/whoami", timeout=10).json())
    assert len({entry["remote_port"] for entry in seen}) == 1, seen
    assert len({entry["pid"] for entry in seen}) == 1, seen


def test_pipelined_requests_on_a_raw_socket(app_server):
    with app_server.connect(timeout=5) as sock, sock.makefile("rb") as stream:
        local_port = sock.getsockname()[1]
        sock.sendall(get("/whoami") + get("/hello") + get("/whoami"))
        bodies = []
        for _ in range(3):
            status, headers = read_head(stream)
            assert status == 200
            bodies.append(stream.read(int(headers["content-length"])))
    first, hello, last = bodies
    assert hello.startswith(b"hello from")
    assert json.loads(first) == json.loads(last)
    assert json.loads(first)["remote_port"] == str(local_port)

