"""The gateway protocols: uwsgi and SCGI, parsed in-process and served behind real front-ends.

The in-process tests build packets byte by byte and check the parser's answer
for whole, split and broken input. The front-end tests start forkwsgi with a
``uwsgi://`` or ``scgi://`` bind and a real nginx (``uwsgi_pass``,
``scgi_pass``) or Apache (``mod_proxy_uwsgi``, ``mod_proxy_scgi``) in front,
then send the same requests as over plain HTTP and compare what the app saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess

import pytest

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols import BY_SCHEME, split_scheme
from forkwsgi.protocols.gateway import gateway_environ, parse_scgi, parse_uwsgi
from tests.conftest import FORKWSGI, REPO, kill_tree, wait_until
from tests.frontends import fetch, saw, serve_on

LIMITS = Limits(body=1 << 30)


def uwsgi_packet(variables: dict[str, str], modifier1: int = 0) -> bytes:
    data = b"".join(struct.pack("<H", len(k.encode("latin-1"))) + k.encode("latin-1")
                    + struct.pack("<H", len(v.encode("latin-1"))) + v.encode("latin-1")
                    for k, v in variables.items())
    return struct.pack("<BHB", modifier1, len(data), 0) + data


def scgi_packet(variables: dict[str, str]) -> bytes:
    data = b"".join(k.encode("latin-1") + b"\0" + v.encode("latin-1") + b"\0"
                    for k, v in variables.items())
    return b"%d:%s," % (len(data), data)


REQUEST = {"CONTENT_LENGTH": "5", "SCGI": "1", "REQUEST_METHOD": "POST",
           "REQUEST_URI": "/caf%C3%A9/x?a=1", "QUERY_STRING": "a=1",
           "PATH_INFO": "/caf\xc3\xa9/x", "SERVER_PROTOCOL": "HTTP/1.1",
           "SERVER_NAME": "app.example", "SERVER_PORT": "443", "HTTPS": "on",
           "REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "5555", "HTTP_HOST": "app.example",
           "HTTP_USER_AGENT": "test", "CONTENT_TYPE": "text/plain"}
PACKETS = {"uwsgi": (parse_uwsgi, uwsgi_packet), "scgi": (parse_scgi, scgi_packet)}


# --- the parsers, in-process ------------------------------------------------------------------


@pytest.mark.parametrize("name", PACKETS)
def test_a_whole_packet_is_one_head_and_the_body_follows(name):
    parse, packet = PACKETS[name]
    raw = packet(REQUEST)
    head, consumed = parse(raw + b"hello", LIMITS)
    assert consumed == len(raw)
    assert (head.method, head.target, head.path, head.query) == \
        ("POST", "/caf%C3%A9/x?a=1", "/caf%C3%A9/x", "a=1")
    assert head.content_length == 5 and not head.chunked and not head.keep_alive
    assert head.variables["HTTP_USER_AGENT"] == "test"


@pytest.mark.parametrize("name", PACKETS)
def test_a_packet_split_anywhere_wants_more_until_whole(name):
    parse, packet = PACKETS[name]
    raw = packet(REQUEST)
    for end in range(len(raw)):
        assert parse(raw[:end], LIMITS) is None, end
    assert parse(raw, LIMITS) is not None


@pytest.mark.parametrize("name", PACKETS)
def test_the_environ_takes_the_front_ends_variables_from_a_trusted_peer(name):
    parse, packet = PACKETS[name]
    head, _ = parse(packet(REQUEST), LIMITS)
    conn = {"SCRIPT_NAME": "", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "3031", "wsgi.url_scheme": "http"}
    trusted = gateway_environ(head, conn, frozenset({"HTTP_X_FORWARDED_FOR"}))
    assert trusted["PATH_INFO"] == "/caf\xc3\xa9/x"  # latin-1 "bytes", intact (PEP 3333)
    assert (trusted["REMOTE_ADDR"], trusted["wsgi.url_scheme"]) == ("203.0.113.9", "https")
    assert (trusted["SERVER_NAME"], trusted["SERVER_PORT"]) == ("app.example", "443")
    assert trusted["CONTENT_LENGTH"] == "5" and trusted["CONTENT_TYPE"] == "text/plain"
    untrusted = gateway_environ(head, conn, frozenset())
    assert (untrusted["REMOTE_ADDR"], untrusted["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_script_name_from_a_trusted_front_end_is_cut_from_path_info():
    head, _ = parse_uwsgi(uwsgi_packet({**REQUEST, "SCRIPT_NAME": "/caf\xc3\xa9"}), LIMITS)
    environ = gateway_environ(head, {"SCRIPT_NAME": ""}, frozenset({"HTTP_X_FORWARDED_FOR"}))
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/caf\xc3\xa9", "/x")


def test_apaches_whole_path_in_script_name_becomes_path_info():
    # mod_proxy_scgi and mod_proxy_uwsgi send SCRIPT_NAME=<the path>, PATH_INFO="".
    variables = {**REQUEST, "SCRIPT_NAME": "/caf\xc3\xa9/x", "PATH_INFO": ""}
    head, _ = parse_scgi(scgi_packet(variables), LIMITS)
    environ = gateway_environ(head, {"SCRIPT_NAME": ""}, frozenset({"HTTP_X_FORWARDED_FOR"}))
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/caf\xc3\xa9/x")
    mounted = gateway_environ(head, {"SCRIPT_NAME": "/caf\xc3\xa9"}, frozenset({"X"}))
    assert (mounted["SCRIPT_NAME"], mounted["PATH_INFO"]) == ("/caf\xc3\xa9", "/x")


def test_path_info_is_derived_from_request_uri_when_not_sent():
    variables = {k: v for k, v in REQUEST.items() if k != "PATH_INFO"}
    head, _ = parse_uwsgi(uwsgi_packet(variables), LIMITS)
    assert gateway_environ(head, {"SCRIPT_NAME": ""}, frozenset())["PATH_INFO"] == \
        "/caf\xc3\xa9/x"


@pytest.mark.parametrize(("raw", "status"), [
    (uwsgi_packet(REQUEST, modifier1=5), 400),  # not a WSGI request
    (uwsgi_packet({"QUERY_STRING": ""}), 400),  # no REQUEST_METHOD
    (struct.pack("<BHB", 0, 10, 0) + b"\x05\x00ab" + b"\0" * 6, 400),  # cut short
    (uwsgi_packet({**REQUEST, "CONTENT_LENGTH": "-1"}), 400),
    (uwsgi_packet({**REQUEST, "CONTENT_LENGTH": "2000000000"}), 413),
])
def test_broken_uwsgi_packets(raw, status):
    with pytest.raises(HTTPError) as info:
        parse_uwsgi(raw, LIMITS)
    assert info.value.status == status


@pytest.mark.parametrize(("raw", "status"), [
    (b"x1:", 400),
    (b"12345678901234567890", 400),  # no colon where a length ends
    (b"3:a\0b,", 400),  # not NUL-terminated pairs
    (b"4:a\0b\0,", 400),  # CONTENT_LENGTH is not first
    (scgi_packet({"CONTENT_LENGTH": "0", "REQUEST_METHOD": "GET"}), 400),  # no SCGI=1
    (scgi_packet(REQUEST)[:-1] + b";", 400),  # netstring not ended by ','
    (b"70000:", 431),
])
def test_broken_scgi_packets(raw, status):
    with pytest.raises(HTTPError) as info:
        parse_scgi(raw, LIMITS)
    assert info.value.status == status


def test_bind_schemes():
    assert split_scheme("uwsgi://127.0.0.1:3031") == ("uwsgi", "127.0.0.1:3031")
    assert split_scheme("scgi://unix:/run/app.sock") == ("scgi", "unix:/run/app.sock")
    assert split_scheme("http://[::1]:80") == ("http", "[::1]:80")
    assert split_scheme("tcp://127.0.0.1:80") == ("http", "tcp://127.0.0.1:80")
    assert split_scheme("fd://3") == ("http", "fd://3")
    assert set(BY_SCHEME) >= {"http", "uwsgi", "scgi"}


# --- behind nginx -------------------------------------------------------------------------------

PARAMS = {
    "uwsgi": "uwsgi_pass {upstream}; uwsgi_param HTTP_HOST $host;",
    "scgi": "scgi_pass {upstream}; scgi_param HTTP_HOST $host;",
    "http": "proxy_pass http://{upstream}; proxy_set_header Host $host; "
            "proxy_set_header X-Forwarded-For $remote_addr; "
            "proxy_set_header X-Forwarded-Proto $scheme;",
}
# nginx's own uwsgi_params and scgi_params (as Debian ships them).
CGI_PARAMS = {
    "uwsgi": """
    uwsgi_param QUERY_STRING $query_string; uwsgi_param REQUEST_METHOD $request_method;
    uwsgi_param CONTENT_TYPE $content_type; uwsgi_param CONTENT_LENGTH $content_length;
    uwsgi_param REQUEST_URI $request_uri; uwsgi_param PATH_INFO $document_uri;
    uwsgi_param DOCUMENT_ROOT $document_root;
    uwsgi_param SERVER_PROTOCOL $server_protocol; uwsgi_param REQUEST_SCHEME $scheme;
    uwsgi_param HTTPS $https if_not_empty; uwsgi_param REMOTE_ADDR $remote_addr;
    uwsgi_param REMOTE_PORT $remote_port; uwsgi_param SERVER_PORT $server_port;
    uwsgi_param SERVER_NAME $server_name;
""",
    "scgi": """
    scgi_param REQUEST_METHOD $request_method; scgi_param REQUEST_URI $request_uri;
    scgi_param QUERY_STRING $query_string; scgi_param CONTENT_TYPE $content_type;
    scgi_param DOCUMENT_URI $document_uri; scgi_param DOCUMENT_ROOT $document_root;
    scgi_param SCGI 1; scgi_param SERVER_PROTOCOL $server_protocol;
    scgi_param REQUEST_SCHEME $scheme; scgi_param HTTPS $https if_not_empty;
    scgi_param REMOTE_ADDR $remote_addr; scgi_param REMOTE_PORT $remote_port;
    scgi_param SERVER_PORT $server_port; scgi_param SERVER_NAME $server_name;
""",
    "http": "",
}
NGINX_HTTP = """\
    server {{
        listen 127.0.0.1:{port};
        server_name app.example;
        location / {{ {params} {pass_} }}
    }}
"""


@pytest.fixture
def gateway(serve, frontends):
    """``gateway(protocol) -> front-end port``: forkwsgi on ``PROTOCOL://127.0.0.1:PORT``
    (``-w 2``) behind a fresh nginx speaking that protocol to it."""

    def start(protocol: str) -> int:
        server = serve_on(serve, f"{protocol}://", workers=2)
        upstream = f"127.0.0.1:{server.port}"
        return frontends.nginx(NGINX_HTTP, params=CGI_PARAMS[protocol],
                               pass_=PARAMS[protocol].format(upstream=upstream)).port

    return start


# What the app sees behind nginx over plain HTTP and over a gateway protocol: the same,
# but for what the transport carries (REMOTE_PORT, the server's own address) and what the
# gateway adds (the front-end's SERVER_NAME/PORT, REQUEST_SCHEME).
COMPARED = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "SCRIPT_NAME",
            "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_HOST", "HTTP_USER_AGENT", "REMOTE_ADDR",
            "wsgi.url_scheme", "body")


@pytest.mark.parametrize("protocol", ["uwsgi", "scgi"])
def test_behind_nginx_the_app_sees_what_it_sees_over_http(gateway, protocol):
    ours, plain = gateway(protocol), gateway("http")
    requests = [
        ("GET", "/search?q=caf%C3%A9&x=1", None, {}),
        ("GET", "/caf%C3%A9/na%C3%AFve", None, {}),  # non-ASCII path: intact bytes
        ("POST", "/upload", os.urandom(1 << 20).hex().encode()[:1 << 20],
         {"Content-Type": "application/octet-stream"}),
        ("POST", "/chunked", iter([b"a" * 1000, b"b" * 5000]),  # chunked from the client
         {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}),
    ]
    for method, path, body, headers in requests:
        if isinstance(body, type(iter([]))):
            body_ours, body_plain = iter([b"a" * 1000, b"b" * 5000]), \
                iter([b"a" * 1000, b"b" * 5000])
        else:
            body_ours = body_plain = body
        via_gateway = saw(ours, method, path, body_ours, headers)
        via_http = saw(plain, method, path, body_plain, headers)
        for key in COMPARED:
            assert via_gateway.get(key) == via_http.get(key), (path, key)
    assert via_gateway["SERVER_PROTOCOL"] == "HTTP/1.1"


@pytest.mark.parametrize("protocol", ["uwsgi", "scgi"])
def test_behind_nginx_streams_204_and_head(gateway, protocol):
    port = gateway(protocol)
    status, _, body = fetch(port, "GET", "/stream")
    assert (status, body) == (200, b"".join(b"part %d\n" % i for i in range(5)))
    status, headers, body = fetch(port, "GET", "/status/204")
    assert (status, body) == (204, b"")
    status, headers, body = fetch(port, "HEAD", "/anything")
    assert (status, body) == (200, b"")
    assert headers.get("Content-Type") == "application/json"


# --- behind Apache --------------------------------------------------------------------------------

APACHE_MODULES = {"uwsgi": ("proxy_uwsgi_module", "mod_proxy_uwsgi.so"),
                  "scgi": ("proxy_scgi_module", "mod_proxy_scgi.so")}


@pytest.fixture
def apache_gateway(serve, frontends):
    """``apache_gateway(protocol) -> httpd's port``, in front of forkwsgi on that protocol."""

    def start(protocol: str) -> int:
        module, so = APACHE_MODULES[protocol]
        server = serve_on(serve, f"{protocol}://")
        return frontends.httpd({"proxy_module": "mod_proxy.so", module: so},
                               "ProxyPass / {protocol}://127.0.0.1:{upstream}/",
                               protocol=protocol, upstream=server.port).port

    return start


@pytest.mark.parametrize("protocol", ["uwsgi", "scgi"])
def test_behind_apache(apache_gateway, protocol):
    port = apache_gateway(protocol)
    seen = saw(port, "GET", "/caf%C3%A9/x?q=1&r=%20")
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/caf\xc3\xa9/x", "q=1&r=%20")
    assert seen["REQUEST_METHOD"] == "GET" and seen["REMOTE_ADDR"] == "127.0.0.1"
    body = b"x" * (1 << 20)
    seen = saw(port, "POST", "/upload", body, {"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(body)) and seen["body"] == body.decode()
    status, _, streamed = fetch(port, "GET", "/stream")
    assert (status, streamed) == (200, b"".join(b"part %d\n" % i for i in range(5)))
    status, _, empty = fetch(port, "GET", "/status/204")
    assert (status, empty) == (204, b"")
    # mod_proxy_uwsgi and mod_proxy_scgi need a Content-Length: httpd itself answers a
    # chunked upload with 411 (documented in docs/gateways.md); forkwsgi never sees it.
    status, _, _ = fetch(port, "POST", "/chunked", iter([b"a" * 1000, b"b" * 5000]),
                         {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
    assert status == 411
    status, headers, body = fetch(port, "HEAD", "/anything")
    assert (status, body, headers.get("Content-Type")) == (200, b"", "application/json")


@pytest.mark.process
def test_an_inherited_socket_speaks_the_protocol_its_bind_names(tmp_path):
    # Socket activation and USR2 hand over descriptors: fd://N takes a scheme like any
    # address, so a systemd socket for uwsgi is -b uwsgi://fd://3.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    with open(tmp_path / "fd.log", "wb") as log:
        proc = subprocess.Popen([*FORKWSGI, "-b", f"uwsgi://fd://{fd}", "tests.gateway_apps:app"],
                                cwd=REPO, env=env, pass_fds=[fd], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    listener.close()
    try:
        def answer() -> bytes | None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                          2) as sock:
                sock.sendall(uwsgi_packet({"REQUEST_METHOD": "GET", "REQUEST_URI": "/x?y=1",
                                           "QUERY_STRING": "y=1", "PATH_INFO": "/x"}))
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                return data or None
            return None

        reply = wait_until(answer, what="the inherited socket to answer uwsgi")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(body)["QUERY_STRING"] == "y=1"
    finally:
        kill_tree(proc.pid)


def test_an_scgi_head_that_stops_gets_a_cgi_408(serve):
    port = serve_on(serve, "scgi://", "tests.gateway_apps:app", "--header-timeout", "1").port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(scgi_packet(REQUEST)[:20])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"Status: 408 Request Timeout\r\n")
