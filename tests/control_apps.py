"""Apps for the control endpoint's tests: a few routes whose effects the tests count."""

from __future__ import annotations

import os
import time

_LEAK: list[bytes] = []


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = environ.get("QUERY_STRING", "")
    value = query.split("=", 1)[1] if "=" in query else ""
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"nothing here\n"]
    if path == "/boom":
        raise RuntimeError("boom: the app failed on purpose")
    if path == "/sleep":
        time.sleep(float(value or 1))
    elif path == "/upload":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(body)).encode()]
    elif path == "/leak":
        # Memory only this worker holds: written pages, not shared with the arbiter. The
        # pause keeps the leak's pace below the arbiter's sampling.
        _LEAK.append(os.urandom(int(float(value or 1) * 1024 * 1024)))
        time.sleep(0.01)
    size = int(value) if path == "/bytes" else 2
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x" * size]
