"""WSGI applications the integration tests serve through the real CLI."""

from __future__ import annotations

import json
import os
import time


def echo(environ, start_response):
    """The environ's plain values and the request body back, as JSON."""
    body = environ["wsgi.input"].read()
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
