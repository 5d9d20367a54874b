"""The smallest useful WSGI application: ``forkwsgi forkwsgi.examples.hello:app``.

``/`` answers "Hello from forkwsgi!"; ``/env`` shows the WSGI environ the
server built, as plain text, which is handy when setting up a proxy in front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

HELLO = b"Hello from forkwsgi!\n"


def app(environ: dict[str, Any],
        start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/env":
        body = "".join(f"{key} = {value!r}\n" for key, value in sorted(environ.items()))
        payload = body.encode("utf-8", "backslashreplace")
    else:
        payload = HELLO
    # Content-Length lets the server keep the connection alive without chunking.
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(payload)))])
    return [payload]
