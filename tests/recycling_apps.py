"""Apps for the recycling tests, each loaded at import time as the test needs."""

from __future__ import annotations

import os

# 200 MB of read-only data, made at import: with --preload, in the arbiter, so every worker
# shares its pages copy-on-write (their RSS counts it, their USS does not).
SHARED = b"s" * (200 * 1024 * 1024) if os.environ.get("RECYCLING_SHARED") else b""


def shared(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(SHARED)).encode()]


# Broken while this file exists: code deployed that no longer imports.
BROKEN_FLAG = os.environ.get("RECYCLING_BROKEN_FLAG", "")
if BROKEN_FLAG and os.path.exists(BROKEN_FLAG):
    raise ImportError("the deployed code is broken (flag file present)")


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
