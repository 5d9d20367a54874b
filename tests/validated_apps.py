"""tests/apps.py's well-behaved applications, each wrapped in ``wsgiref.validate``.

The router (not validated, so it cannot hide a problem) picks the app named by the
first path segment and moves that segment to SCRIPT_NAME, as a mount would.

Left out, because breaking PEP 3333 or the process is what they are for: boom, crash,
bad_header, hop_by_hop, fail_after_headers, spawn_orphan, exit_with, term_self.
"""

from __future__ import annotations

from wsgiref.validate import validator

from tests import apps

WELL_BEHAVED = ("echo", "hello", "pid", "loaded_in", "slow", "application", "stream",
                "writer", "status", "closing", "sendfile", "reject_upload", "read_lines",
                "body_error")
VALIDATED = {name: validator(getattr(apps, name)) for name in WELL_BEHAVED}


def app(environ, start_response):
    name, _, rest = environ["PATH_INFO"][1:].partition("/")
    environ["SCRIPT_NAME"] += "/" + name
    environ["PATH_INFO"] = "/" + rest if rest else ""
    return VALIDATED[name](environ, start_response)
