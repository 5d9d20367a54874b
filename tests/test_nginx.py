"""forkwsgi behind a real nginx reverse proxy.

Each test writes a self-contained nginx.conf under tmp_path (pid, logs and
temp directories there; one process, ``daemon off; master_process off``),
proxies to forkwsgi serving tests.apps:echo over TCP or a unix socket with
an upstream keepalive pool, and reads what the app saw.

The client connects from 127.0.0.2 (any 127/8 address is loopback on Linux)
while nginx reaches forkwsgi from 127.0.0.1, so "the client's address" and
"the proxy's address" are different values the tests can tell apart.
Skipped when nginx is not installed.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import requests

from tests.frontends import CLIENT_ADDR, Frontend, saw, serve_on

PUBLIC_HOST = "app.example:8443"  # what the client asks for; nginx's $host drops the port

HTTP = """\
    upstream forkwsgi {{
        server {upstream};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://forkwsgi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
"""


@pytest.fixture
def nginx(frontends):
    """``nginx(upstream) -> Frontend``: upstream is ``127.0.0.1:PORT`` or ``unix:PATH``."""
    return lambda upstream: frontends.nginx(HTTP, upstream=upstream)


@pytest.fixture
def start_forkwsgi(serve):
    """``serve`` under the name these tests use (conftest stops and reaps every server)."""
    return serve


def echo_via(proxy: Frontend, method: str = "GET", path: str = "/", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> dict:
    """One request through nginx from CLIENT_ADDR; the environ the echo app saw."""
    return saw(proxy.port, method, path, body, headers, host=PUBLIC_HOST, source=CLIENT_ADDR)


# --- forwarded headers ---------------------------------------------------------------------------


# This nginx config sets all three X-Forwarded-* headers, so forkwsgi may trust all three.
MANAGED = ("--forwarded-headers", "x-forwarded-for,x-forwarded-proto,x-forwarded-host")


def test_trusted_proxy_sets_remote_addr_scheme_and_host(start_forkwsgi, nginx):
    server = start_forkwsgi("tests.apps:echo", *MANAGED)
    proxy = nginx(f"127.0.0.1:{server.port}")
    seen = echo_via(proxy, path="/path?q=1", headers={"X-Forwarded-For": "6.6.6.6"})
    # nginx appends the address it saw; the right-most entry is the only one it vouches for.
    assert seen["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT_ADDR}"
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTP_HOST"] == PUBLIC_HOST
    assert seen["PATH_INFO"] == "/path"
    assert seen["QUERY_STRING"] == "q=1"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"  # proxy_http_version 1.1
    assert "HTTP_CONNECTION" not in seen  # proxy_set_header Connection ""
    assert proxy.problems() == []


def test_client_sent_forwarded_header_cannot_spoof_through_nginx(start_forkwsgi, nginx):
    """nginx (configured the usual way) manages X-Forwarded-* and passes any RFC 7239
    ``Forwarded`` header from the client through untouched. The client must not be
    able to pick REMOTE_ADDR, the scheme or the host with it: what the trusted proxy
    vouches for (its X-Forwarded-* values) has to win."""
    server = start_forkwsgi("tests.apps:echo", *MANAGED)
    proxy = nginx(f"127.0.0.1:{server.port}")
    seen = echo_via(proxy, headers={"Forwarded": "for=6.6.6.6;proto=http;host=evil.example"})
    assert seen["HTTP_FORWARDED"] == "for=6.6.6.6;proto=http;host=evil.example"  # nginx kept it
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"], seen["HTTP_HOST"]) == \
        (CLIENT_ADDR, "https", PUBLIC_HOST)


def test_untrusted_proxy_headers_are_only_headers(start_forkwsgi, nginx):
    server = start_forkwsgi("tests.apps:echo", "--forwarded-allow-ips", "10.9.9.9")
    proxy = nginx(f"127.0.0.1:{server.port}")
    seen = echo_via(proxy, headers={"X-Forwarded-For": "6.6.6.6"})
    assert seen["REMOTE_ADDR"] == "127.0.0.1"  # nginx itself
    assert seen["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT_ADDR}"
    assert seen["HTTP_X_FORWARDED_PROTO"] == "https"
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["HTTP_HOST"] == PUBLIC_HOST.split(":")[0]  # nginx's $host, not X-Forwarded-Host
    assert seen["HTTP_X_FORWARDED_HOST"] == PUBLIC_HOST


# --- bodies --------------------------------------------------------------------------------------


def test_large_upload_and_download(start_forkwsgi, nginx):
    server = start_forkwsgi("tests.apps:echo")
    proxy = nginx(f"127.0.0.1:{server.port}")
    data = os.urandom(4 * 1024 * 1024)
    response = requests.post(f"{proxy.url}/upload", data=data, timeout=30,
                             headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert len(response.content) > len(data)  # the JSON echo: a large download too
    seen = response.json()
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["body"].encode("latin-1") == data
    assert proxy.problems() == []


def test_chunked_upload_is_reframed_by_nginx(start_forkwsgi, nginx):
    server = start_forkwsgi("tests.apps:echo")
    proxy = nginx(f"127.0.0.1:{server.port}")
    pieces = [os.urandom(100_000) for _ in range(10)]
    response = requests.post(f"{proxy.url}/chunked", data=iter(pieces), timeout=30)
    assert response.status_code == 200
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.json()["body"].encode("latin-1") == b"".join(pieces)
    assert proxy.problems() == []


def test_app_that_ignores_a_large_body_still_reaches_the_client(start_forkwsgi, nginx):
    """tests.apps:hello answers without reading the body. nginx sends forkwsgi the whole
    16 MiB it buffered; forkwsgi must let it (drain, or close in stages per RFC 9112
    section 9.6) so nginx can relay the app's 200, not turn a reset into a 502."""
    server = start_forkwsgi("tests.apps:hello")
    proxy = nginx(f"127.0.0.1:{server.port}")
    response = requests.post(f"{proxy.url}/", data=b"x" * (4 * 1024 * 1024), timeout=30)
    assert (response.status_code, response.content, proxy.problems()) == \
        (200, b"Hello, world!", [])


# --- connections ---------------------------------------------------------------------------------


def test_upstream_keepalive_pool_reuses_one_connection(start_forkwsgi, nginx):
    """Sequential requests ride one pooled nginx->forkwsgi connection: forkwsgi keeps it
    alive between requests, with and without bodies, and nginx never sees it cut."""
    server = start_forkwsgi("tests.apps:echo", workers=2)
    proxy = nginx(f"127.0.0.1:{server.port}")
    seen = []
    with requests.Session() as client:
        for index in range(60):
            if index % 3 == 0:
                response = client.post(f"{proxy.url}/n/{index}", data=b"x" * index, timeout=10)
            elif index % 3 == 1:
                # A HEAD in between: any body bytes forkwsgi sent would desync the pool.
                head = client.head(f"{proxy.url}/n/{index}", timeout=10)
                assert (head.status_code, head.content) == (200, b"")
                response = client.get(f"{proxy.url}/n/{index}", timeout=10)
            else:
                response = client.get(f"{proxy.url}/n/{index}", timeout=10)
            assert response.status_code == 200
            seen.append(response.json())
    assert [entry["PATH_INFO"] for entry in seen] == [f"/n/{i}" for i in range(60)]
    assert {entry["body"] for entry in seen[::3]} == {"x" * i for i in range(0, 60, 3)}
    assert len({entry["REMOTE_PORT"] for entry in seen}) == 1, "upstream connection not reused"
    assert len({entry["pid"] for entry in seen}) == 1
    assert proxy.problems() == []


def test_over_a_unix_socket(start_forkwsgi, nginx):
    # Not tmp_path: a unix socket path must fit in sun_path (108 bytes).
    with tempfile.TemporaryDirectory(prefix="fw-") as directory:
        path = os.path.join(directory, "fw.sock")
        serve_on(start_forkwsgi, f"unix:{path}", "tests.apps:echo")
        proxy = nginx(f"unix:{path}")
        first = echo_via(proxy, headers={"X-Forwarded-For": "6.6.6.6"})
        assert first["REMOTE_ADDR"] == CLIENT_ADDR  # unix peers are local, hence trusted
        assert first["wsgi.url_scheme"] == "https"
        data = os.urandom(1024 * 1024)
        assert echo_via(proxy, "POST", "/big", data)["body"].encode("latin-1") == data
        with requests.Session() as client:
            pids = {client.get(f"{proxy.url}/{i}", timeout=10).json()["pid"] for i in range(20)}
        assert len(pids) == 1
        assert proxy.problems() == []
