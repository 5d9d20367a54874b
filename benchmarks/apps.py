"""The one WSGI app every Python server in the benchmarks runs.

It owns the request handlers the scenarios hit and nothing else: no framework,
no logging, no per-request allocation beyond what PEP 3333 needs, so the numbers
measure the server and not the app. Every server loads the same callable,
``apps:app``, which routes on PATH_INFO with one dict lookup. It must never
touch the network itself or keep state between requests.

    /        hello: 13 bytes (run.py)
    /64k     body64k: 65,536 bytes (run.py)
    /upload  upload: reads wsgi.input to the end, answers the byte count (run.py)
    /fast    hello (mixed.py)
    /slow    sleeps 0.1 s, then hello: a request that holds its worker (mixed.py)
    /read    upload: read(64 KiB) to the end (body.py)
    /readall one read() with no size; 501 where the body has no Content-Length
             and the server does not set wsgi.input_terminated (body.py)
    /lines   ``for line in wsgi.input`` to the end (body.py)

The body handlers answer the byte count they received, so the client can check
that every byte arrived. With Content-Length they stop at it (PEP 3333: an app
must not read past it); without one (chunked) they read until b"", which a
server setting wsgi.input_terminated ends at the body's end.
"""

import time
from collections.abc import Callable, Iterable

StartResponse = Callable[..., object]

HELLO = b"Hello, world!"
BODY_64K = b"x" * 65536
CHUNK = 65536
SLOW_SECONDS = 0.1


def hello(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
    )
    return [HELLO]


def body64k(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY_64K)))],
    )
    return [BODY_64K]


def slow(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    time.sleep(SLOW_SECONDS)
    return hello(environ, start_response)


def count(start_response: StartResponse, received: int,
          status: str = "200 OK") -> Iterable[bytes]:
    body = str(received).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def upload(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    # PEP 3333: an app must not read past CONTENT_LENGTH, so count down from it;
    # without one (chunked) read until the server's input says b"".
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length else -1
    stream = environ["wsgi.input"]
    received = 0
    while remaining:
        chunk = stream.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
        if not chunk:
            break
        received += len(chunk)
        if remaining > 0:
            remaining -= len(chunk)
    return count(start_response, received)


def readall(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    if not environ.get("CONTENT_LENGTH") and not environ.get("wsgi.input_terminated"):
        return count(start_response, 0, "501 Not Implemented")
    return count(start_response, len(environ["wsgi.input"].read()))


def lines(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    received = 0
    for line in environ["wsgi.input"]:
        received += len(line)
    return count(start_response, received)


def not_found(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


ROUTES = {"/": hello, "/64k": body64k, "/upload": upload, "/fast": hello, "/slow": slow,
          "/read": upload, "/readall": readall, "/lines": lines}


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    return ROUTES.get(environ.get("PATH_INFO", ""), not_found)(environ, start_response)
