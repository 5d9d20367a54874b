"""forkwsgi behind Apache httpd (mod_proxy + mod_proxy_http).

A minimal, self-contained httpd.conf under tmp_path loads only the modules
it needs from the system module directory and runs one process in the
foreground (``-X``). Like test_nginx.py, the client connects from 127.0.0.2
so the client's address and the proxy's (127.0.0.1) differ. Skipped when
apache2/httpd or its proxy modules are missing.
"""

from __future__ import annotations

import os

import pytest

from tests.frontends import CLIENT_ADDR, saw

MODULES = {"headers_module": "mod_headers.so", "proxy_module": "mod_proxy.so",
           "proxy_http_module": "mod_proxy_http.so"}
PROXY = """\
ProxyPass / http://127.0.0.1:{upstream}/
ProxyPreserveHost On
RequestHeader set X-Forwarded-Proto https
"""


@pytest.fixture
def apache(serve, frontends):
    """forkwsgi serving tests.apps:echo, and httpd proxying to it; yields httpd's port."""
    server = serve("tests.apps:echo")
    front = frontends.httpd(MODULES, PROXY, upstream=server.port)
    yield front.port
    assert front.problems() == [], front.log()


def echo_via(port: int, method: str = "GET", path: str = "/", body=None,
             headers: dict[str, str] | None = None) -> dict:
    return saw(port, method, path, body, headers, host=None, source=CLIENT_ADDR)


def test_get_through_apache_with_forwarded_for(apache):
    seen = echo_via(apache, path="/a/b?c=d", headers={"X-Forwarded-For": "6.6.6.6"})
    assert seen["PATH_INFO"] == "/a/b"
    assert seen["QUERY_STRING"] == "c=d"
    # mod_proxy appends the client address: the right-most entry is what httpd vouches for.
    assert seen["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT_ADDR}"
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTP_HOST"] == f"127.0.0.1:{apache}"


def test_post_bodies_through_apache(apache):
    data = os.urandom(512 * 1024)
    seen = echo_via(apache, "POST", "/upload", data,
                    {"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["body"].encode("latin-1") == data
    pieces = [b"first,", b"second,", os.urandom(70000)]
    seen = echo_via(apache, "POST", "/chunked", iter(pieces))  # http.client sends it chunked
    assert seen["body"].encode("latin-1") == b"".join(pieces)
