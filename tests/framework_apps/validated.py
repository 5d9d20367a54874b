"""Small WSGI apps, each wrapped in ``wsgiref.validate.validator``, behind one router.

The validator checks both sides of PEP 3333 on every request: the environ and
``wsgi.input``/``wsgi.errors`` forkwsgi hands over, and that forkwsgi iterates
and closes the result properly (an unclosed iterator is reported from
``__del__``). Its complaints are AssertionErrors (and WSGIWarnings) that end
up in the server log, which the tests search.

The router itself is not validated (so it cannot hide a problem): it only
picks the validated app for PATH_INFO.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from wsgiref.validate import validator

# A real file for wsgi.file_wrapper: this module's own source.
SERVED_FILE = os.path.abspath(__file__)


def _json(start_response, data: dict, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(data, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


APP_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"
APP_SERVER = "validated-app/1.0"


def own_headers(environ, start_response):
    """The app sends its own Date and Server (werkzeug's send_file sets Date, for one):
    wsgiref's handler adds them only when the app did not."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"),
                              ("Date", APP_DATE), ("Server", APP_SERVER)])
    return [b"ok"]


def write_callable(environ, start_response):
    """The legacy ``write()`` path, followed by an (empty-ended) iterable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"by write() ")
    return [b"then returned"]


def generator_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        for index in range(100):
            yield b"line %03d\n" % index

    return body()


def generator_fails(environ, start_response):
    """The body generator raises after its first piece: headers are out, so the server
    can only cut the connection, and must still close() the iterable."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"first piece\n"
        raise RuntimeError("marker-generator-fails")

    return body()


def endless(environ, start_response):
    """64 KiB pieces for as long as the client reads: for the client-gone test."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body():
        piece = b"z" * 65536
        for _ in range(16384):  # 1 GiB: far more than any socket buffer holds
            yield piece

    return body()


def file_wrapper(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/x-python"),
                              ("Content-Length", str(os.path.getsize(SERVED_FILE)))])
    return environ["wsgi.file_wrapper"](open(SERVED_FILE, "rb"), 4096)


def _summary(data: bytes, **extra) -> dict:
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(), **extra}


def read_sized(environ, start_response):
    """``read(n)`` in small pieces until b"" (the body end, also for chunked: PEP 3333
    ``wsgi.input_terminated``)."""
    stream = environ["wsgi.input"]
    pieces = []
    while piece := stream.read(1000):
        pieces.append(piece)
    return _json(start_response, _summary(b"".join(pieces), reads=len(pieces)))


def read_lines(environ, start_response):
    stream = environ["wsgi.input"]
    lines = []
    while line := stream.readline():
        lines.append(line)
    return _json(start_response, _summary(b"".join(lines), lines=len(lines)))


def read_lines_sized(environ, start_response):
    """``readline(size)``: no piece longer than size, and nothing lost."""
    stream = environ["wsgi.input"]
    pieces = []
    while piece := stream.readline(7):
        if len(piece) > 7:
            raise AssertionError(f"readline(7) returned {len(piece)} bytes")
        pieces.append(piece)
    return _json(start_response, _summary(b"".join(pieces), pieces=len(pieces)))


def read_readlines(environ, start_response):
    lines = environ["wsgi.input"].readlines()
    return _json(start_response, _summary(b"".join(lines), lines=len(lines)))


def read_iterate(environ, start_response):
    lines = list(environ["wsgi.input"])
    return _json(start_response, _summary(b"".join(lines), lines=len(lines)))


def error_before_headers(environ, start_response):
    """PEP 3333: an app that fails before anything is sent may start over with exc_info."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("failed after start_response, before the body")
    except ValueError:
        body = b"recovered: the app's own error page\n"
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
                       sys.exc_info())
        return [body]


def error_after_headers(environ, start_response):
    """Too late to start over: start_response(exc_info) must re-raise (PEP 3333), and the
    server can only cut the connection."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial body, then ")
    try:
        raise ValueError("marker-after-headers")
    except ValueError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"never sent"]


def errors_stream(environ, start_response):
    """``wsgi.errors`` is a text stream with write/writelines/flush."""
    errors = environ["wsgi.errors"]
    errors.write("marker-wsgi-errors write\n")
    errors.writelines(["marker-wsgi-errors ", "writelines\n"])
    errors.flush()
    start_response("204 No Content", [])
    return []


ROUTES = {
    "/hello": hello,
    "/own-headers": own_headers,
    "/write": write_callable,
    "/generator": generator_body,
    "/generator-fails": generator_fails,
    "/endless": endless,
    "/file": file_wrapper,
    "/read": read_sized,
    "/readline": read_lines,
    "/readline-sized": read_lines_sized,
    "/readlines": read_readlines,
    "/iterate": read_iterate,
    "/error-before-headers": error_before_headers,
    "/error-after-headers": error_after_headers,
    "/errors": errors_stream,
}
VALIDATED = {path: validator(app) for path, app in ROUTES.items()}


def app(environ, start_response):
    route = VALIDATED.get(environ["PATH_INFO"])
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such route\n"]
    return route(environ, start_response)
