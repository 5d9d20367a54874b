"""HTTP/1.1 and PEP 3333 behaviour of the real server, seen from raw sockets.

Framing, persistence, pipelining, 100-continue, error answers, forwarded
headers, and the app-side contract (write(), close(), file_wrapper).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from tests.http_client import Reader, exchange

GET = b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n"


def environ_of(reply) -> dict:
    assert reply.status == 200, reply
    return json.loads(reply.body)


# --- persistence and framing ------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(server):
    with server.connect() as sock:
        reader = Reader(sock)
        ports = set()
        for index in range(20):
            sock.sendall(GET % b"/n/%d" % index)
            reply = reader.read()
            env = environ_of(reply)
            assert env["PATH_INFO"] == f"/n/{index}"
            assert reply.header("Connection") is None
            ports.add(env["REMOTE_PORT"])
        assert len(ports) == 1


def test_pipelined_requests_are_answered_in_order(server):
    with server.connect() as sock:
        sock.sendall(b"".join(GET % f"/p{i}".encode() for i in range(10))
                     + b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                     + GET % b"/last")
        reader = Reader(sock)
        paths = [environ_of(reader.read())["PATH_INFO"] for _ in range(10)]
        assert paths == [f"/p{i}" for i in range(10)]
        post = environ_of(reader.read())
        assert (post["PATH_INFO"], post["body"]) == ("/post", "hello")
        assert environ_of(reader.read())["PATH_INFO"] == "/last"


def test_a_repeated_head_gets_a_fresh_environ_every_time(serve):
    """A keep-alive client repeating its head skips the parse and the environ build: the
    app must still get a fresh environ each time, untouched by what it did to the last."""
    server = serve("tests.apps:meddler")
    with server.connect() as sock:
        reader = Reader(sock)
        for _ in range(4):
            sock.sendall(GET % b"/same?q=1")
            env = environ_of(reader.read())
            assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_HOST"]) == \
                ("/same", "q=1", "test")
            assert "forkwsgi.test.meddled" not in env


def test_heads_that_change_between_repeats_are_parsed_again(server):
    heads = [b"GET /a HTTP/1.1\r\nHost: one\r\n\r\n"] * 3 + [
        b"GET /a HTTP/1.1\r\nHost: one\r\nX-More: 1\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: two\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: one\r\n\r\n",
        b"\r\nGET /a HTTP/1.1\r\nHost: one\r\n\r\n",  # a leading empty line is ignored
    ]
    with server.connect() as sock:
        reader = Reader(sock)
        for raw in heads:
            sock.sendall(raw)
            env = environ_of(reader.read())
            assert env["PATH_INFO"] == raw.split(b" ")[1].decode()
            assert env["HTTP_HOST"] == raw.split(b"Host: ")[1].split(b"\r")[0].decode()
            assert ("HTTP_X_MORE" in env) == (b"X-More" in raw)
        # repeated heads pipelined in one send, with bodies that differ under the same head
        post = b"POST /p HTTP/1.1\r\nHost: one\r\nContent-Length: 3\r\n\r\n"
        sock.sendall(post + b"abc" + post + b"xyz" + post + b"123")
        assert [environ_of(reader.read())["body"] for _ in range(3)] == ["abc", "xyz", "123"]


def test_connection_close_from_the_client_is_honoured(server):
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.header("Connection") == "close"
        assert reader.closed()


def test_http10_closes_unless_keep_alive_is_asked_for(server):
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        env = environ_of(reader.read())
        assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert reader.closed()
    with server.connect() as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            reply = reader.read()
            assert reply.header("Connection") == "keep-alive"


def test_unknown_length_is_chunked_on_11_and_close_delimited_on_10(serve):
    server = serve("tests.apps:stream")
    reply = exchange(server, GET % b"/")
    assert reply.framing == "chunked"
    assert reply.body == b"".join(b"part %d\n" % i for i in range(5))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = Reader(sock).read()
        assert reply.framing == "close"
        assert reply.header("Connection") == "close"
        assert reply.body.endswith(b"part 4\n")


def test_head_and_bodyless_statuses_send_no_body(serve):
    server = serve("tests.apps:status")
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD /200 HTTP/1.1\r\nHost: t\r\n\r\n")
        head = reader.read(head_request=True)
        assert head.status == 200 and head.header("Content-Length") == "6"
        for code in (204, 304):
            sock.sendall(GET % f"/{code}".encode())
            reply = reader.read()
            assert reply.status == code
            assert reply.header("Content-Length") is None
            assert reply.header("Transfer-Encoding") is None
        # nothing stray was sent: the next response parses cleanly on the same connection
        sock.sendall(GET % b"/200")
        assert reader.read().body == b"a body"


def test_no_content_length_on_a_204_even_when_the_app_sets_one(serve):
    """RFC 9110 section 8.6: a server MUST NOT send Content-Length in a 204. On a 304 it
    may (the length a 200 would have had)."""
    server = serve("tests.apps:with_length")
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/204")
        reply = reader.read()
        assert (reply.status, reply.header("Content-Length"), reply.body) == (204, None, b"")
        sock.sendall(GET % b"/304")
        assert reader.read().header("Content-Length") == "5"
        sock.sendall(GET % b"/200")
        assert reader.read().body == b"hello"


def test_head_without_a_body_from_the_app_announces_no_false_length(serve):
    server = serve("tests.apps:head_aware")
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = reader.read(head_request=True)
        assert head.status == 200
        assert head.header("Content-Length") is None  # not 0: the GET sends 18 bytes
        assert head.header("Transfer-Encoding") is None
        sock.sendall(GET % b"/")
        assert reader.read().body == b"part one, part two"


def test_a_status_without_reason_keeps_the_space_after_the_code(serve):
    server = serve("tests.apps:no_reason")
    raw = server.request(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 \r\n")  # RFC 9112 section 4


def test_date_and_server_headers_and_turning_server_off(serve):
    reply = exchange(serve("tests.apps:hello"), GET % b"/")
    assert reply.header("Server") == "forkwsgi"
    assert reply.header("Date").endswith(" GMT")
    quiet = exchange(serve("tests.apps:hello", "--no-server-header"), GET % b"/")
    assert quiet.header("Server") is None


def test_write_callable_then_iterable(serve):
    reply = exchange(serve("tests.apps:writer"), GET % b"/")
    assert reply.body == b"written returned"


def test_file_wrapper_sends_real_files_and_falls_back_for_others(serve):
    server = serve("tests.apps:sendfile")
    expected = (Path(__file__).parent / "apps.py").read_bytes()
    reply = exchange(server, GET % b"/file")
    assert reply.body == expected
    assert reply.header("Content-Length") == str(len(expected))
    fallback = exchange(server, GET % b"/bytesio")
    assert fallback.body == b"0123456789" * 1000


def _traced(pid: int, out, calls: str):
    """strace attached to ``pid`` (children too), writing ``calls`` to ``out``; waits until
    the kernel says the process is traced."""
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(out),
                               "-p", str(pid)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def traced():
        status = open(f"/proc/{pid}/status").read()
        return "TracerPid:\t0\n" not in status

    wait_until(traced, what="strace to attach")
    return tracer


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_file_wrapper_uses_sendfile_for_a_real_file_only(serve, tmp_path):
    """The kernel copies a real file to the socket (os.sendfile); a BytesIO is iterated."""
    server = serve("tests.apps:sendfile")
    worker = server.wait_workers(1)[0]
    size = (Path(__file__).parent / "apps.py").stat().st_size
    for path, expect_sendfile in ((b"/file", True), (b"/bytesio", False)):
        out = tmp_path / f"strace{path.decode().replace('/', '-')}.txt"
        tracer = _traced(worker.pid, out, "sendfile")
        try:
            assert exchange(server, GET % path).status == 200
        finally:
            tracer.terminate()
            tracer.wait(10)
        calls = [line for line in out.read_text().splitlines() if "sendfile(" in line]
        if expect_sendfile:
            assert calls and sum(int(line.rsplit("= ", 1)[1]) for line in calls) == size
        else:
            assert not calls


# --- the app misbehaves -----------------------------------------------------------------------


def test_app_exception_is_a_500_with_traceback_in_the_log_only(serve):
    server = serve("tests.apps:boom")
    reply = exchange(server, GET % b"/")
    assert reply.status == 500
    assert reply.header("Connection") == "close"
    assert b"boom" not in reply.body and b"Traceback" not in reply.body
    log = server.wait_log("RuntimeError: boom")
    assert "Traceback" in log
    assert exchange(server, GET % b"/again").status == 500  # the worker lives on
    assert len(server.workers()) == 1


def test_debug_shows_the_traceback(serve):
    reply = exchange(serve("tests.apps:boom", "--debug"), GET % b"/")
    assert reply.status == 500 and b"RuntimeError: boom" in reply.body


def read_until_cut(sock) -> tuple[bytes, bool]:
    """Everything the server sent, and whether the connection ended in a reset."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, True
    return data, False


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"GET / HTTP/1.0"])
def test_failure_after_headers_resets_the_connection(serve, request_line):
    # HTTP/1.0 without Content-Length is close-delimited: a clean close would pass the
    # first part off as the whole body. The reset is how any client can tell.
    server = serve("tests.apps:fail_after_headers")
    pid = server.wait_workers(1)[0].pid
    with server.connect() as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        data, reset = read_until_cut(sock)
    assert reset
    assert data.startswith(b"HTTP/1.1 200 ")
    assert not data.endswith(b"0\r\n\r\n")  # a chunked body was cut, not ended
    server.wait_log("failed mid-body on purpose")
    assert [w.pid for w in server.workers()] == [pid]


def test_failure_after_headers_under_http_client_is_an_error(serve):
    server = serve("tests.apps:fail_after_headers")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        response.read()
    conn.close()


def test_a_repeated_content_type_is_refused_before_the_app(serve):
    server = serve("tests.apps:echo")
    reply = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert reply.status == 400 and reply.header("Connection") == "close"
    assert exchange(server, GET % b"/").status == 200  # the worker keeps serving


def test_the_apps_connection_close_is_honoured(serve):
    server = serve("tests.apps:closes_connection")
    with server.connect() as sock:
        sock.sendall(GET % b"/" + GET % b"/pipelined")
        data, reset = read_until_cut(sock)
    assert not reset
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.count(b"Connection:") == 1 and b"\r\nConnection: close" in head
    assert body == b"bye"  # one response: the connection closed after it


def test_other_hop_by_hop_headers_from_the_app_are_dropped(serve):
    server = serve("tests.apps:hop_by_hop")
    for _ in range(2):
        reply = exchange(server, GET % b"/")
        assert reply.status == 200 and reply.body == b"framed by the server"
        assert reply.header("X-Kept") == "yes"
        for name in ("Keep-Alive", "Upgrade"):
            assert reply.header(name) is None
        assert reply.header("Connection") is None  # kept alive: HTTP/1.1 needs no field
    log = server.wait_log("hop-by-hop header")
    assert log.count("hop-by-hop header 'Keep-Alive'") == 1  # once per name and worker


def test_invalid_response_headers_are_a_500(serve):
    server = serve("tests.apps:bad_header")
    reply = exchange(server, GET % b"/")
    assert reply.status == 500
    assert b"Set-Cookie: stolen" not in reply.raw_head
    assert reply.header("X-Evil") is None


def test_close_is_called_when_the_client_disconnects(serve, tmp_path):
    server = serve("tests.apps:closing")
    marker = tmp_path / "closed"
    with server.connect() as sock:
        sock.sendall(GET % f"/?marker={marker}".encode())
        sock.recv(1000)  # the response has started
    wait_until(marker.exists, what="close() to be called")
    assert len(server.workers()) == 1


# --- request bodies ---------------------------------------------------------------------------


STREAMING = "--no-request-buffering"  # the app reads the body from the socket itself


def test_chunked_request_body_is_decoded(server):
    """Buffered (the default), the whole body is here before the app runs: its length is
    known, so CONTENT_LENGTH is set and the transfer coding is gone, as behind nginx."""
    raw = (b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
    env = environ_of(exchange(server, raw))
    assert env["body"] == "hello world"
    assert env["CONTENT_LENGTH"] == "11"
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert env["wsgi.input_terminated"] is True


def test_chunked_request_body_is_decoded_while_streaming(serve):
    server = serve("tests.apps:echo", STREAMING)
    raw = (b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
    env = environ_of(exchange(server, raw))
    assert env["body"] == "hello world"
    assert "CONTENT_LENGTH" not in env
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_readline_iteration_over_the_body(serve):
    server = serve("tests.apps:read_lines")
    body = b"one\ntwo\nthree"
    raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert exchange(server, raw).body == b"3 lines, 13 bytes"


def test_100_continue_is_sent_only_when_the_app_reads(serve):
    server = serve("tests.apps:echo", STREAMING)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        interim = reader.read()
        assert interim.status == 100
        sock.sendall(b"data")
        assert environ_of(reader.read())["body"] == "data"


def test_an_app_that_rejects_never_asks_for_the_upload(serve):
    server = serve("tests.apps:reject_upload", STREAMING)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 413
        assert b"100 Continue" not in reply.raw_head
        # the body never came, so the connection cannot be reused: it is closed
        assert reply.header("Connection") == "close"
        assert reader.closed()


def test_unread_small_body_is_drained_and_the_connection_kept(serve):
    server = serve("tests.apps:hello")
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
        assert reader.read().status == 200
        sock.sendall(GET % b"/")
        assert reader.read().status == 200


def test_body_over_the_limit_is_413(serve):
    server = serve("tests.apps:echo", "--limit-request-body", "100")
    reply = exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n")
    assert reply.status == 413
    assert reply.header("Connection") == "close"


def test_body_timeout_gives_the_app_an_error_and_the_worker_lives(serve):
    server = serve("tests.apps:body_error", "--body-timeout", "1", STREAMING)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        reply = Reader(sock).read()
        assert reply.body.startswith(b"error: ")
    assert exchange(server, GET % b"/").status == 200


def test_a_buffered_body_that_stalls_is_a_408_and_the_app_never_runs(serve):
    server = serve("tests.apps:body_error", "--body-timeout", "1")
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 408
        assert reply.header("Connection") == "close"
        assert reader.closed()
    assert exchange(server, GET % b"/").status == 200


def test_a_bad_chunk_in_a_buffered_body_is_a_400_and_the_app_never_runs(serve):
    server = serve("tests.apps:body_error")
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\n{\"a\":\r\nZZ\r\n")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 400
        assert reply.header("Connection") == "close"
        with contextlib.suppress(OSError):
            sock.sendall(b"0\r\n\r\n" + GET % b"/smuggled")
        assert reader.closed()
    assert exchange(server, GET % b"/").status == 200


def test_a_body_error_the_app_swallows_still_closes_the_connection(serve):
    """The app catches the broken-chunk error and answers: the framing is lost all the
    same, so the connection closes and the bytes after the bad chunk are never a request."""
    server = serve("tests.apps:body_error", STREAMING)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\n{\"a\":\r\nZZ\r\n")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.body == b"error: BodyError"
        assert reply.header("Connection") == "close"
        with contextlib.suppress(OSError):
            sock.sendall(b"0\r\n\r\n" + GET % b"/smuggled")
        assert reader.closed()
    assert exchange(server, GET % b"/").status == 200


def test_closing_with_a_pipelined_request_unread_loses_no_response_byte(serve):
    """The client sends a request with Connection: close and, behind it, another one. The
    server must not close with those bytes unread: the kernel would answer with a RST
    and the client would lose the end of a large response (RFC 9112 section 9.6)."""
    server = serve("tests.apps:echo")
    body = b"x" * 3_000_000
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                     + GET % b"/never-served")
        # Read nothing until the worker is done with the connection (the whole response
        # is in the kernel's buffers and the worker has closed its side, or it all).
        wait_until(lambda: _holder_state(server, sock) != psutil.CONN_ESTABLISHED,
                   timeout=30, what="the worker to close its side")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 200
        assert len(reply.body) == int(reply.header("Content-Length"))
        assert json.loads(reply.body)["body"] == body.decode()
        assert reader.closed()


def _holder_state(server, client: socket.socket) -> str | None:
    """The TCP state of the worker's end of ``client``'s connection, None once gone."""
    port = client.getsockname()[1]
    for worker in server.workers():
        with contextlib.suppress(psutil.Error):
            for conn in worker.net_connections("tcp"):
                if conn.raddr and conn.raddr[1] == port:
                    return conn.status
    return None


def test_an_unread_chunked_body_says_close_before_closing(serve):
    """The app answers without reading a chunked body whose end has not arrived: the
    response says Connection: close, since the worker will not wait for the rest."""
    server = serve("tests.apps:reject_upload", STREAMING)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 413
        assert reply.header("Connection") == "close"
    # a whole chunked body that came with the head is drained and the connection kept
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n")
        reader = Reader(sock)
        assert reader.read().header("Connection") is None
        sock.sendall(GET % b"/")
        assert reader.read().status == 413


def test_a_body_dribbled_after_the_response_does_not_pin_the_worker(serve):
    """The app answers without reading a body the client sends a byte at a time: the
    worker closes that connection instead of waiting for the rest, and serves others."""
    server = serve("tests.apps:status", STREAMING)
    stop = threading.Event()
    with server.connect() as slow:
        slow.sendall(b"POST /200 HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\nabc")

        def dribble():
            with contextlib.suppress(OSError):
                while not stop.wait(0.2):
                    slow.sendall(b"x")

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        try:
            reply = Reader(slow).read()
            assert reply.status == 200
            assert reply.header("Connection") == "close"
            for _ in range(3):
                assert exchange(server, GET % b"/200").status == 200
        finally:
            stop.set()
            thread.join(5)


def test_sigterm_during_a_request_puts_close_on_its_response(serve):
    server = serve("tests.apps:term_self")
    with server.connect() as sock:
        sock.sendall(GET % b"/")
        reader = Reader(sock)
        reply = reader.read()
        assert (reply.status, reply.body) == (200, b"done")
        assert reply.header("Connection") == "close"
        assert reader.closed()


def test_a_1xx_final_status_from_the_app_is_a_500(serve):
    server = serve("tests.apps:status")
    reply = exchange(server, GET % b"/103")
    assert reply.status == 500
    assert "is not a final response" in server.wait_log("is not a final response")
    assert exchange(server, GET % b"/200").status == 200


def test_script_name_is_cut_on_a_segment_boundary(serve):
    server = serve("tests.apps:echo", env={"SCRIPT_NAME": "/app"})
    assert environ_of(exchange(server, GET % b"/app/x"))["PATH_INFO"] == "/x"
    assert environ_of(exchange(server, GET % b"/app"))["PATH_INFO"] == ""
    # outside the mount: SCRIPT_NAME + PATH_INFO is still the path requested
    env = environ_of(exchange(server, GET % b"/application"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/application")
    env = environ_of(exchange(server, GET % b"/app%2Fx"))  # %2F is no segment boundary
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/app/x")
    env = environ_of(exchange(server, GET % b"/app/a%2Fb"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/a/b")


# --- slow and idle clients --------------------------------------------------------------------


def test_header_timeout_answers_408(serve):
    server = serve("tests.apps:hello", "--header-timeout", "1")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # never finishes the head
        reader = Reader(sock)
        reply = reader.read()
        assert reply.status == 408
        assert reply.header("Connection") == "close"
    with server.connect() as silent:
        assert Reader(silent).read().status == 408


def test_idle_keep_alive_connection_is_closed_quietly(serve):
    server = serve("tests.apps:hello", "--keep-alive", "1")
    with server.connect() as sock:
        sock.sendall(GET % b"/")
        reader = Reader(sock)
        assert reader.read().status == 200
        assert reader.closed(timeout=15)
        assert reader.buf == b""


def test_newcomer_is_served_while_keep_alive_clients_hammer_one_worker(serve):
    """50 persistent clients keep one worker busy; a newcomer is still answered, and the
    50 are all still connected and being served when it is."""
    server = serve("tests.apps:hello", workers=1)
    clients = []
    for _ in range(50):
        sock = server.connect()
        clients.append((sock, Reader(sock)))
    newcomer_answered = False
    rounds = 0
    newcomer = None
    while not newcomer_answered and rounds < 200:
        rounds += 1
        for sock, _reader in clients:
            sock.sendall(GET % b"/")
        if newcomer is None:
            newcomer = server.connect()
            newcomer.sendall(b"GET /new HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            newcomer_reader = Reader(newcomer)
            newcomer.settimeout(0.0)
        for _sock, reader in clients:
            assert reader.read().status == 200
        try:
            newcomer_answered = newcomer_reader.read().status == 200
        except (BlockingIOError, EOFError):
            pass
    assert newcomer_answered and rounds <= 3, f"the newcomer waited {rounds} rounds"
    for sock, _ in clients:
        sock.close()
    newcomer.close()


def test_slowloris_does_not_pin_the_worker(serve):
    """500 connections dribbling a head; normal clients on the same 1 worker still succeed."""
    server = serve("tests.apps:hello", "--header-timeout", "30", workers=1)
    loris = []
    for index in range(500):
        sock = server.connect()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-%d: " % index)
        loris.append(sock)
    ok = 0
    latencies = []
    for _ in range(100):
        start = time.monotonic()
        try:
            reply = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            ok += reply.status == 200
        except OSError:
            pass
        latencies.append(time.monotonic() - start)
        for sock in loris[:50]:
            sock.sendall(b"a")  # keep dribbling
    for sock in loris:
        sock.close()
    assert ok >= 95
    latencies.sort()
    print(f"slowloris: {ok}/100 ok, p99 {latencies[98] * 1000:.1f} ms")


# --- environ ----------------------------------------------------------------------------------


def test_environ_basics(server):
    raw = (b"GET /caf%C3%A9/x%2Fy?q=1&r=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
           b"Content-Type: text/plain\r\nX-Dup: a\r\nX-Dup: b\r\nCookie: a=1\r\nCookie: b=2\r\n"
           b"X_Spoof: 1\r\n\r\n")
    env = environ_of(exchange(server, raw))
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/caf\xc3\xa9/x/y"  # latin-1 "bytes in a str" (PEP 3333)
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["RAW_URI"] == "/caf%C3%A9/x%2Fy?q=1&r=%20"
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["HTTP_X_DUP"] == "a, b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOF" not in env
    assert env["SCRIPT_NAME"] == ""
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)


def test_absolute_form_target_sets_the_host(server):
    raw = b"GET http://other.example/abs?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n"
    env = environ_of(exchange(server, raw))
    assert (env["HTTP_HOST"], env["PATH_INFO"], env["QUERY_STRING"]) == \
        ("other.example", "/abs", "x=1")


FORWARDED = (b"GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 6.6.6.6, 10.0.0.7\r\n"
             b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\n\r\n")


def test_forwarded_headers_from_a_trusted_peer(server):
    env = environ_of(exchange(server, FORWARDED))
    assert env["REMOTE_ADDR"] == "10.0.0.7"  # the right-most: what the proxy itself saw
    assert env["wsgi.url_scheme"] == "https"
    # X-Forwarded-Host is not trusted unless asked for: proxies that do not set it pass the
    # client's on untouched
    assert env["HTTP_HOST"] == "inner"


@pytest.mark.parametrize("header, remote", [
    (b"X-Forwarded-For: 1.2.3.4, ", "1.2.3.4"),  # empty list members are ignored
    (b"X-Forwarded-For: ,,2001:db8::1", "2001:db8::1"),
    (b"X-Forwarded-For: unknown", "127.0.0.1"),  # not an address: the peer's own stays
    (b"Forwarded: for=_hidden", "127.0.0.1"),  # RFC 7239 obfuscated identifier
    (b"Forwarded: for=1.2.3.4;proto=https, ", "1.2.3.4"),
])
def test_forwarded_lists_with_empty_or_odd_members(serve, header, remote):
    server = serve("tests.apps:echo", "--forwarded-headers", "forwarded,x-forwarded-for")
    env = environ_of(exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % header))
    assert env["REMOTE_ADDR"] == remote


def test_only_the_forwarded_headers_named_are_trusted(serve):
    server = serve("tests.apps:echo", "--forwarded-headers", "forwarded,x-forwarded-host")
    env = environ_of(exchange(server, FORWARDED))
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == \
        ("127.0.0.1", "http", "shop.example")
    rfc7239 = (b"GET / HTTP/1.1\r\nHost: inner\r\n"
               b'Forwarded: for=6.6.6.6, for="[2001:db8::1]:4711";proto=https;host=a.example'
               b"\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n")
    env = environ_of(exchange(server, rfc7239))
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == \
        ("2001:db8::1", "https", "a.example")


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(serve):
    server = serve("tests.apps:echo", "--forwarded-allow-ips", "10.1.2.3")
    env = environ_of(exchange(server, FORWARDED))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "inner"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 10.0.0.7"


def test_ipv6_and_unix_listeners(serve, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = serve("tests.apps:echo", host="::1")
    env = environ_of(exchange(server, GET % b"/"))
    assert env["REMOTE_ADDR"] == "::1"
    path = tmp_path / "fw.sock"
    unix = serve("tests.apps:echo", "-b", f"unix:{path}", bind=False, wait=False)
    wait_until(path.exists, what="the unix socket")
    with socket.socket(socket.AF_UNIX) as sock:
        wait_until(lambda: sock.connect_ex(str(path)) == 0, what="the unix listener")
        sock.sendall(GET % b"/unix")
        env = environ_of(Reader(sock).read())
        assert env["PATH_INFO"] == "/unix" and env["REMOTE_ADDR"] == ""
        # PEP 3333: never empty, even without an address
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    unix.signal(15)
    assert unix.wait_exit(30) == 0
    assert not path.exists()


def test_bad_request_gets_400_and_the_worker_keeps_serving(server):
    for raw in (b"GET / HTTP/1.1\r\n\r\n",  # no Host
                b"GET / HTTP/1.1\nHost: t\n\n",  # bare LF
                b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"):
        reply = exchange(server, raw)
        assert reply.status == 400, raw
        assert reply.header("Connection") == "close"
        assert reply.header("Date")  # RFC 9110 section 6.6.1: on every 4xx too
    assert environ_of(exchange(server, GET % b"/")).get("PATH_INFO") == "/"


def test_rejected_requests_are_logged_at_the_default_level_without_flooding(server):
    exchange(server, b"GET / HTTP/1.1\r\n\r\n")  # no Host
    log = server.wait_log("rejected a request from 127.0.0.1")
    assert "[INFO]" in log and "400 HTTP/1.1 request without Host" in log
    for _ in range(200):
        exchange(server, b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n")
    exchange(server, GET % b"/")
    # One line a second at most: 200 bad requests do not make 200 lines.
    assert server.log().count("rejected a request") < 100


def test_a_retiring_worker_says_close_on_its_last_response(serve):
    """Past --max-requests the worker serves on until its replacement is up; then the next
    request on a kept-alive connection is answered with Connection: close."""
    server = serve("tests.apps:hello", "--max-requests", "3")
    with server.connect() as sock:
        reader = Reader(sock)
        replies = []

        def closing():
            sock.sendall(GET % b"/")
            replies.append(reader.read())
            return replies[-1].header("Connection") == "close"

        wait_until(closing, what="a response with Connection: close")
        assert len(replies) >= 3
        assert all(r.status == 200 for r in replies)
        assert reader.closed()
    server.wait_workers(1)
    assert exchange(server, GET % b"/").status == 200
