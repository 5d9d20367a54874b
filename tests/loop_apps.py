"""WSGI applications for tests/test_event_loop.py (the worker's event loop and request bodies).

Each is served through the real CLI, e.g. ``tests.loop_apps:digest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import parse_qs


def _query(environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _lines_of(stream, size_hint: int | None) -> list[bytes]:
    lines = []
    while True:
        line = stream.readline() if size_hint is None else stream.readline(size_hint)
        if not line:
            return lines
        lines.append(line)


def digest(environ, start_response):
    """The request body's length and sha256 back as JSON, read the way the path says:

    ``/read`` sized reads, ``/readall`` one read() with no size, ``/lines`` iteration,
    ``/readline`` readline() calls (``?hint=N`` passes a size), ``/noread`` does not read it.
    """
    stream = environ["wsgi.input"]
    path = environ.get("PATH_INFO", "")
    query = _query(environ)
    lines = None
    if path == "/noread":
        data = None
    elif path == "/readall":
        data = stream.read()
    elif path == "/lines":
        lines = list(stream)
        data = b"".join(lines)
    elif path == "/readline":
        hint = int(query["hint"]) if "hint" in query else None
        lines = _lines_of(stream, hint)
        data = b"".join(lines)
    else:
        data = b"".join(iter(lambda: stream.read(65536), b""))
    result = {"pid": os.getpid(), "path": path}
    if data is not None:
        result.update(length=len(data), sha256=hashlib.sha256(data).hexdigest())
    if lines is not None:
        result["lines"] = len(lines)
        result["longest"] = max(map(len, lines), default=0)
    payload = json.dumps(result).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


def pids(environ, start_response):
    """``pid=<worker pid> n=<?n>``; ``/slow?marker=PATH&seconds=S`` first creates PATH (so a
    test sees the request is inside the app) and then sleeps S seconds (default 1.5)."""
    query = _query(environ)
    if environ.get("PATH_INFO") == "/slow":
        marker = query.get("marker")
        if marker:
            with open(marker, "w") as fh:
                fh.write(str(os.getpid()))
        time.sleep(float(query.get("seconds", "1.5")))
    body = f"pid={os.getpid()} n={query.get('n', '')} path={environ.get('PATH_INFO')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    """A factory (``tests.loop_apps:flask_app()``): a tiny Flask app wrapped so that every
    call of the WSGI application appends a line to the file named by $LOOP_CALLED_MARKER,
    before Flask sees the request. A test tells from that file whether the app was called."""
    from flask import Flask, jsonify, request

    app = Flask(__name__)

    @app.post("/upload")
    def upload():
        data = request.get_data()
        return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    @app.get("/hello")
    def hello():
        return "hello\n"

    marker = os.environ["LOOP_CALLED_MARKER"]
    wsgi_app = app.wsgi_app

    def marking(environ, start_response):
        with open(marker, "a") as fh:
            fh.write(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO')}\n")
        return wsgi_app(environ, start_response)

    app.wsgi_app = marking
    return app
