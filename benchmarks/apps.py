"""The one WSGI app every Python server in the benchmark runs.

It owns the three request handlers the scenarios hit and nothing else: no
framework, no logging, no per-request allocation beyond what PEP 3333 needs, so
the numbers measure the server and not the app. Every server loads the same
callable, ``apps:app``, which routes on PATH_INFO with one dict lookup.

    /        hello: 13 bytes
    /64k     body64k: 65,536 bytes
    /upload  upload: reads wsgi.input to the end, answers the byte count
"""

from collections.abc import Callable, Iterable

StartResponse = Callable[..., object]

HELLO = b"Hello, world!"
BODY_64K = b"x" * 65536
CHUNK = 65536


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


def upload(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    # PEP 3333: an app must not read past CONTENT_LENGTH, so count down from it.
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    received = 0
    while remaining > 0:
        chunk = stream.read(min(CHUNK, remaining))
        if not chunk:
            break
        received += len(chunk)
        remaining -= len(chunk)
    body = str(received).encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


def not_found(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


ROUTES = {"/": hello, "/64k": body64k, "/upload": upload}


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    return ROUTES.get(environ.get("PATH_INFO", ""), not_found)(environ, start_response)
