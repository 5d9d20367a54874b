"""WSGI applications the integration tests serve through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import time


def _read_all(stream) -> bytes:
    """The whole body, read in sized pieces: wsgi.input_terminated makes the end visible
    (wsgiref.validate refuses read() without a size)."""
    return b"".join(iter(lambda: stream.read(65536), b""))


def echo(environ, start_response):
    """The environ's plain values and the request body back, as JSON."""
    body = _read_all(environ["wsgi.input"])
    data = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
    data["wsgi.version"] = list(environ["wsgi.version"])
    data["body"] = body.decode("latin-1")
    data["pid"] = os.getpid()
    payload = json.dumps(data, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


LOADED_IN = os.getpid()  # the process that imported this module: the arbiter with --preload


def loaded_in(environ, start_response):
    body = f"{LOADED_IN} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def pid(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def slow(environ, start_response):
    """Sleeps ?seconds (default 1) then answers: for TERM and timeout tests."""
    query = environ.get("QUERY_STRING", "")
    seconds = float(query.split("=", 1)[1]) if query.startswith("seconds=") else 1.0
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept %.3f\n" % seconds]


def boom(environ, start_response):
    raise RuntimeError("boom: the app failed on purpose")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"application"]


def spawn_orphan(environ, start_response):
    """Leaves a grandchild that outlives its parent: as PID 1 the arbiter must reap it."""
    import subprocess

    subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"spawned\n"]


def crash(environ, start_response):
    """Kills its own worker mid-request (a segfault stand-in)."""
    os._exit(1)


def stream(environ, start_response):
    """A body of unknown length: chunked on HTTP/1.1, close-delimited on HTTP/1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    for index in range(5):
        yield b"part %d\n" % index


def writer(environ, start_response):
    """The legacy write() callable, then an iterable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"returned"]


def status(environ, start_response):
    """/CODE answers that status, with a body the server must drop when it has none."""
    code = environ["PATH_INFO"].strip("/") or "200"
    reasons = {"204": "No Content", "304": "Not Modified", "200": "OK", "404": "Not Found"}
    start_response(f"{code} {reasons.get(code, 'Whatever')}", [("Content-Type", "text/plain")])
    return [b"a body"]


def bad_header(environ, start_response):
    """Tries response splitting through a header value: the server must answer 500."""
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: stolen=1")])
    return [b"never sent"]


def hop_by_hop(environ, start_response):
    """Hop-by-hop fields PEP 3333 forbids: the server drops them and frames the body itself."""
    start_response("200 OK", [("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"),
                              ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
                              ("X-Kept", "yes")])
    return [b"framed by the server"]


def closes_connection(environ, start_response):
    """An app that asks for the connection to close, as gunicorn lets it (Flask apps do)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "Close")])
    return [b"bye"]


def fail_after_headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    raise RuntimeError("failed mid-body on purpose")


def _marker(environ) -> str | None:
    query = environ.get("QUERY_STRING", "")
    return query.split("=", 1)[1] if query.startswith("marker=") else None


class _ClosingBody:
    """An iterable whose close() leaves a file behind, so a test can see it was called."""

    def __init__(self, path, parts):
        self.path = path
        self.parts = parts

    def __iter__(self):
        for part in self.parts:
            time.sleep(0.05)
            yield part

    def close(self):
        if self.path:
            with open(self.path, "w") as fh:
                fh.write("closed")


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _ClosingBody(_marker(environ), [b"x" * 65536] * 200)


def sendfile(environ, start_response):
    """wsgi.file_wrapper over a real file (sendfile) or a BytesIO (iteration)."""
    import io

    if environ["PATH_INFO"] == "/bytesio":
        body = io.BytesIO(b"0123456789" * 1000)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
    else:
        body = open(__file__, "rb")  # noqa: SIM115 - the server closes it via close()
        size = os.fstat(body.fileno()).st_size
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](body, 4096)


def reject_upload(environ, start_response):
    """Answers 413 without reading the body: an Expect: 100-continue client never sends it."""
    start_response("413 Content Too Large", [("Content-Type", "text/plain"),
                                             ("Content-Length", "9")])
    return [b"too large"]


def read_lines(environ, start_response):
    """Reads wsgi.input line by line and answers the line count and total."""
    lines = list(environ["wsgi.input"])
    body = b"%d lines, %d bytes" % (len(lines), sum(map(len, lines)))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def body_error(environ, start_response):
    """Reads the body and reports the error the server raised, if any."""
    try:
        data = _read_all(environ["wsgi.input"])
        body = b"read %d" % len(data)
    except OSError as exc:
        body = f"error: {type(exc).__name__}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def exit_with(environ, start_response):
    """Raises SystemExit(?code): the worker dies and is replaced; the server stays up."""
    raise SystemExit(int(environ.get("QUERY_STRING", "").partition("=")[2] or 1))


def term_self(environ, start_response):
    """SIGTERMs its own worker mid-request, then answers (a graceful stop mid-request)."""
    os.kill(os.getpid(), signal.SIGTERM)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]


def head_aware(environ, start_response):
    """Leaves the body out for HEAD and gives no Content-Length, as Werkzeug does."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"part one, ", b"part two"]


def with_length(environ, start_response):
    """/CODE with an explicit Content-Length, as Django's CommonMiddleware adds one."""
    code = environ["PATH_INFO"].strip("/") or "200"
    start_response(f"{code} Whatever", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def no_reason(environ, start_response):
    start_response("200", [("Content-Length", "2")])
    return [b"ok"]


def meddler(environ, start_response):
    """echo, then it scribbles on the environ it was given: no later request may see that."""
    result = echo(environ, start_response)
    environ["PATH_INFO"] = "/meddled"
    environ["HTTP_HOST"] = "meddled"
    environ["forkwsgi.test.meddled"] = True
    return result


def prints(environ, start_response):
    """Writes to stdout as debugging code does, itself and through a subprocess: under CGI
    stdout is the response, and none of this may reach it."""
    import subprocess

    print("printed by the app", flush=True)
    subprocess.run(["echo", "echoed by a subprocess of the app"], check=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"answered"]
