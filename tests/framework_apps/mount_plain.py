"""Plain WSGI applications for the mount tests: each says who it is and what it got.

``make(name)`` is a factory, so one module gives as many distinct applications
as a test mounts; ``LOADS`` records every call, so a test sees each mounted
application loaded once per process, and ``LOADED_IN`` which process that was
(the arbiter with --preload).
"""

from __future__ import annotations

import json
import os

LOADED_IN = os.getpid()
LOADS: list[str] = []


def make(name: str):
    LOADS.append(name)

    def app(environ, start_response):
        payload = json.dumps({
            "app": name, "script_name": environ["SCRIPT_NAME"],
            "path_info": environ["PATH_INFO"], "pid": os.getpid(),
            "loaded_in": LOADED_IN, "loads": LOADS,
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]

    return app
