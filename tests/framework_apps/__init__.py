"""Real framework applications (Flask, Django, Falcon) and wsgiref-validated apps
that the integration tests serve through the forkwsgi CLI.

Every framework app offers the same routes, so one test body covers all three:

    GET  /hello                 plain text (also the HEAD target)
    POST /upload                multipart field "file" -> {"filename", "size", "sha256"}
    GET  /stream?n=N&gate=PATH  N chunks "chunk I\\n"; after the first it waits for
                                PATH to exist, so the client proves it got chunk 0
                                while the generator was still running
    GET  /download?path=P       the file at P, through wsgi.file_wrapper (sendfile)
    GET  /session/set?user=U    stores U in the framework's session (cookie)
    GET  /session/get           {"user": U or null}
    GET  /redirect              302 -> /hello
    GET  /error                 raises; the framework renders its own 500
    GET  /propagate/error       raises with the framework's propagation on: forkwsgi's 500
    POST /json                  {"numbers": [...]} -> {"received": ..., "sum": ...}
    GET  /whoami                {"remote_port": REMOTE_PORT, "pid": worker pid}
"""

from __future__ import annotations

import os
import time

GATE_TIMEOUT = 10.0


def wait_for_gate(path: str | None) -> None:
    """Block the streaming generator until the test creates ``path`` (or give up)."""
    if not path:
        return
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def stream_chunks(count: int, gate: str | None):
    """The body every framework streams: ``chunk 0`` first, the rest after the gate opens."""
    for index in range(count):
        if index == 1:
            wait_for_gate(gate)
        yield f"chunk {index}\n".encode()


def error_message(framework: str, route: str) -> str:
    """A marker unique to one failing route, searched for in the log and the body."""
    return f"{framework} {route} failed on purpose (marker-{framework}-{route})"
