"""FastCGI: records byte by byte in-process, a raw FastCGI client against the real
server, and real nginx (fastcgi_pass, fastcgi_keep_conn) and Apache (mod_proxy_fcgi)
in front."""

from __future__ import annotations

import socket
import struct

import pytest

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits
from forkwsgi.protocols import Control
from forkwsgi.protocols.fastcgi import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    CANT_MPX_CONN,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    PARAMS,
    STDIN,
    STDOUT,
    UNKNOWN_ROLE,
    UNKNOWN_TYPE,
    ResponseFramer,
    StdinDecoder,
    decode_pairs,
    encode_pairs,
    parse_head,
    record,
)
from tests.frontends import fetch, saw, serve_on
from tests.test_gateways import COMPARED, gateway  # noqa: F401 (a fixture)

LIMITS = Limits(body=1 << 30)
VARIABLES = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/caf%C3%A9?a=1", "QUERY_STRING": "a=1",
             "CONTENT_LENGTH": "5", "SCRIPT_NAME": "/caf\xc3\xa9", "HTTP_HOST": "app.example",
             "SERVER_PROTOCOL": "HTTP/1.1", "LONG": "x" * 300}


def begin(request_id: int = 1, keep: bool = True, role: int = 1) -> bytes:
    return record(BEGIN_REQUEST, request_id, struct.pack(">HB5x", role, int(keep)))


def fcgi_request(variables=VARIABLES, body: bytes = b"hello", request_id: int = 1,
            keep: bool = True) -> bytes:
    params = encode_pairs(variables)
    stdin = (record(STDIN, request_id, body) if body else b"") + record(STDIN, request_id)
    return (begin(request_id, keep) + record(PARAMS, request_id, params[:50])
            + record(PARAMS, request_id, params[50:]) + record(PARAMS, request_id) + stdin)


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    out, at = [], 0
    while at + 8 <= len(data):
        _, kind, rid, length, padding = struct.unpack_from(">BBHHBx", data, at)
        out.append((kind, rid, data[at + 8:at + 8 + length]))
        at += 8 + length + padding
    return out


# --- in-process ----------------------------------------------------------------------------------


def test_pairs_round_trip_short_and_long():
    pairs = {"A": "", "B" * 200: "c" * 70000, "é": "\xff"}
    decoded: dict[str, str] = {}
    decode_pairs(encode_pairs(pairs), decoded, 10)
    assert decoded == pairs


def test_a_request_head_then_its_body_by_stdin_records():
    raw = fcgi_request()
    head, consumed = parse_head(raw, LIMITS)
    assert (head.method, head.target, head.content_length, head.request_id) == \
        ("POST", "/caf%C3%A9?a=1", 5, 1)
    assert head.chunked and head.keep_alive  # framed by STDIN records; FCGI_KEEP_CONN
    decoder = StdinDecoder(head, LIMITS)
    body = b"".join(decoder.feed(raw[at:at + 1]) for at in range(consumed, len(raw)))
    assert body == b"hello" and decoder.done and decoder.unused == b""


def test_split_anywhere_wants_more():
    raw = fcgi_request({**VARIABLES, "REQUEST_METHOD": "GET", "CONTENT_LENGTH": ""}, body=b"")
    head_end = len(raw) - 8  # the empty STDIN record comes with the head: taken too
    for end in range(head_end):
        assert parse_head(raw[:end], LIMITS) is None, end
    head, consumed = parse_head(raw, LIMITS)
    assert consumed == len(raw) and not head.chunked  # no body phase at all


def test_management_records_and_roles():
    asked = record(GET_VALUES, 0, encode_pairs({"FCGI_MPXS_CONNS": "", "FCGI_NOPE": ""}))
    control, consumed = parse_head(asked, LIMITS)
    assert isinstance(control, Control) and consumed == len(asked)
    [(kind, rid, content)] = records(control.reply)
    values: dict[str, str] = {}
    decode_pairs(content, values, 10)
    assert (kind, rid, values) == (GET_VALUES_RESULT, 0, {"FCGI_MPXS_CONNS": "0"})
    control, _ = parse_head(record(42, 0, b"??"), LIMITS)
    assert records(control.reply) == [(UNKNOWN_TYPE, 0, bytes([42]) + b"\0" * 7)]
    control, _ = parse_head(begin(role=2), LIMITS)  # the authorizer role
    assert records(control.reply) == [(END_REQUEST, 1, struct.pack(">IB3x", 0, UNKNOWN_ROLE))]
    control, _ = parse_head(record(ABORT_REQUEST, 7), LIMITS)  # an inactive id: skipped
    assert isinstance(control, Control) and not control.reply


def test_multiplexing_is_refused_and_abort_ends_the_request():
    head, consumed = parse_head(fcgi_request(), LIMITS)
    decoder = StdinDecoder(head, LIMITS)
    decoder.feed(record(STDIN, 1, b"he") + begin(request_id=2))
    assert records(decoder.take_reply()) == \
        [(END_REQUEST, 2, struct.pack(">IB3x", 0, CANT_MPX_CONN))]
    with pytest.raises(HTTPError) as info:
        decoder.feed(record(ABORT_REQUEST, 1))
    assert [kind for kind, _, _ in records(info.value.wire)] == [END_REQUEST]


def test_broken_records():
    for raw in (b"\x02" + fcgi_request()[1:],  # version 2
                begin() + record(STDIN, 1, b"x"),  # STDIN before the end of PARAMS
                begin() + record(PARAMS, 1, b"\x05\x00ab") + record(PARAMS, 1)):  # cut pair
        with pytest.raises(HTTPError):
            parse_head(raw, LIMITS)


def test_the_framer_writes_a_cgi_response_in_stdout_records():
    framer = ResponseFramer(3)
    data = (framer.head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            + framer.body(b"x" * 70000) + framer.end(True))
    kinds = records(data)
    assert kinds[0] == (STDOUT, 3, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    assert b"".join(c for k, _, c in kinds[1:-2]) == b"x" * 70000  # split at 65535
    assert kinds[-2:] == [(STDOUT, 3, b""), (END_REQUEST, 3, struct.pack(">IB3x", 0, 0))]


# --- a raw FastCGI client against the real server -------------------------------------------------


def exchange(sock: socket.socket, data: bytes, request_id: int = 1) -> list[tuple]:
    """Send ``data``; the records received up to this request's END_REQUEST."""
    sock.sendall(data)
    buf = b""
    while True:
        got = records(buf)
        if any(kind == END_REQUEST and rid == request_id for kind, rid, _ in got):
            return got
        chunk = sock.recv(65536)
        assert chunk, f"closed before END_REQUEST: {got}"
        buf += chunk


@pytest.fixture
def fastcgi_server(serve):
    return serve_on(serve, "fastcgi://").port


def test_keep_conn_serves_requests_one_after_another_on_one_connection(fastcgi_server):
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        for request_id in (1, 2, 3):
            got = exchange(sock, fcgi_request(request_id=request_id), request_id)
            stdout = b"".join(c for k, rid, c in got if k == STDOUT and rid == request_id)
            assert stdout.startswith(b"Status: 200 OK\r\n")
            assert b'"body": "hello"' in stdout
            assert (STDOUT, request_id, b"") in got


def test_without_keep_conn_the_server_closes_after_end_request(fastcgi_server):
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        exchange(sock, fcgi_request(keep=False))
        assert sock.recv(100) == b""


def test_management_over_the_wire_then_a_request(fastcgi_server):
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        sock.sendall(record(GET_VALUES, 0, encode_pairs({"FCGI_MPXS_CONNS": ""})))
        reply = sock.recv(1000)
        assert records(reply)[0][0] == GET_VALUES_RESULT
        got = exchange(sock, fcgi_request(variables={**VARIABLES, "REQUEST_METHOD": "GET",
                                                "CONTENT_LENGTH": ""}, body=b""))
        assert any(k == STDOUT and c.startswith(b"Status: 200") for k, _, c in got)


def test_management_among_the_params_is_answered_before_the_response(fastcgi_server):
    params = encode_pairs({**VARIABLES, "REQUEST_METHOD": "GET", "CONTENT_LENGTH": ""})
    asked = record(GET_VALUES, 0, encode_pairs({"FCGI_MPXS_CONNS": ""}))
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        got = exchange(sock, begin() + record(PARAMS, 1, params[:40]) + asked
                       + record(PARAMS, 1, params[40:]) + record(PARAMS, 1)
                       + record(STDIN, 1))
    assert got[0] == (GET_VALUES_RESULT, 0, encode_pairs({"FCGI_MPXS_CONNS": "0"}))
    assert any(k == STDOUT and c.startswith(b"Status: 200") for k, _, c in got)


def test_a_broken_request_gets_a_400_as_cgi_output(fastcgi_server):
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        got = exchange(sock, fcgi_request(variables={"QUERY_STRING": ""}))  # no REQUEST_METHOD
        assert got[0][2].startswith(b"Status: 400 Bad Request\r\n")
    with socket.create_connection(("127.0.0.1", fastcgi_server), timeout=10) as sock:
        assert exchange(sock, fcgi_request())[-1][0] == END_REQUEST  # the worker keeps serving


# --- behind nginx and Apache --------------------------------------------------------------------

NGINX_HTTP = """\
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        server_name app.example;
        location / {{
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param DOCUMENT_ROOT $document_root;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param HTTPS $https if_not_empty;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param REDIRECT_STATUS 200;
            fastcgi_param HTTP_HOST $host;
            fastcgi_keep_conn on;
            fastcgi_pass app;
        }}
    }}
"""


@pytest.fixture
def nginx_fastcgi(serve, frontends):
    """nginx with fastcgi_keep_conn and an upstream keepalive pool, in front of forkwsgi on
    fastcgi:// with one worker; yields (nginx's port, the forkwsgi Server)."""
    server = serve_on(serve, "fastcgi://")
    front = frontends.nginx(NGINX_HTTP, upstream=server.port)
    yield front.port, server
    assert front.problems() == [], front.log()


def test_behind_nginx_as_over_http(nginx_fastcgi, request):
    port, _ = nginx_fastcgi
    plain = request.getfixturevalue("gateway")("http")  # nginx proxy_pass, for comparison
    for method, path, body, headers in [
            ("GET", "/search?q=caf%C3%A9&x=1", None, {}),
            ("GET", "/caf%C3%A9/na%C3%AFve", None, {}),
            ("POST", "/upload", b"z" * (1 << 20), {"Content-Type": "application/octet-stream"}),
            ("POST", "/chunked", [b"a" * 1000, b"b" * 5000],
             {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})]:
        ours = saw(port, method, path, iter(body) if isinstance(body, list) else body, headers)
        theirs = saw(plain, method, path, iter(body) if isinstance(body, list) else body,
                     headers)
        for key in COMPARED:
            assert ours.get(key) == theirs.get(key), (path, key)
    status, _, streamed = fetch(port, "GET", "/stream")
    assert (status, streamed) == (200, b"".join(b"part %d\n" % i for i in range(5)))
    assert fetch(port, "GET", "/status/204")[::2] == (204, b"")
    status, headers, body = fetch(port, "HEAD", "/x")
    assert (status, body, headers.get("Content-Type")) == (200, b"", "application/json")


def test_behind_nginx_keep_conn_reuses_the_connection(nginx_fastcgi):
    port, server = nginx_fastcgi
    for _ in range(5):
        saw(port, "GET", "/again")
    [worker] = server.workers()
    # One FastCGI connection from nginx's keepalive pool, kept by the worker throughout.
    established = [c for c in worker.net_connections("tcp") if c.status == "ESTABLISHED"]
    assert len(established) == 1


def test_behind_apache(serve, frontends):
    server = serve_on(serve, "fastcgi://")
    port = frontends.httpd({"proxy_module": "mod_proxy.so",
                            "proxy_fcgi_module": "mod_proxy_fcgi.so"},
                           "ProxyPass / fcgi://127.0.0.1:{upstream}/ enablereuse=on",
                           upstream=server.port).port
    seen = saw(port, "GET", "/caf%C3%A9/x?q=1")
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/caf\xc3\xa9/x", "q=1")
    body = b"y" * (1 << 20)
    seen = saw(port, "POST", "/upload", body, {"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(body)) and seen["body"] == body.decode()
    status, _, streamed = fetch(port, "GET", "/stream")
    assert (status, streamed) == (200, b"".join(b"part %d\n" % i for i in range(5)))
    assert fetch(port, "GET", "/status/204")[::2] == (204, b"")
    seen = saw(port, "POST", "/chunked", iter([b"a" * 1000, b"b" * 5000]),
               {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
    assert seen["body"] == "a" * 1000 + "b" * 5000
    status, headers, body = fetch(port, "HEAD", "/x")
    assert (status, body, headers.get("Content-Type")) == (200, b"", "application/json")


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_body_that_stops_gets_a_408_in_the_requests_records(serve):
    port = serve_on(serve, "fastcgi://", "tests.gateway_apps:app", "--body-timeout", "1").port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(fcgi_request()[:-len(record(STDIN, 1, b"hello") + record(STDIN, 1))]
                     + record(STDIN, 1, b"he"))  # 2 of the 5 bytes, then nothing
        got = records(read_until_closed(sock))
    assert got[0][:2] == (STDOUT, 1) and got[0][2].startswith(b"Status: 408 ")
    assert got[-1] == (END_REQUEST, 1, struct.pack(">IB3x", 0, 0))


def test_a_head_that_stops_is_closed_without_an_answer_it_could_not_address(serve):
    port = serve_on(serve, "fastcgi://", "tests.gateway_apps:app", "--header-timeout", "1").port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(begin())  # no PARAMS: no request to answer on, no id to answer with
        assert read_until_closed(sock) == b""


def test_an_app_that_raises_gets_a_500_in_the_requests_records(serve):
    port = serve_on(serve, "fastcgi://", "tests.apps:boom").port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        got = exchange(sock, fcgi_request())
    assert got[0][:2] == (STDOUT, 1) and got[0][2].startswith(b"Status: 500 ")
    assert got[-1] == (END_REQUEST, 1, struct.pack(">IB3x", 0, 0))
