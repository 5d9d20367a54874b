"""The app the gateway tests serve: one URL space, several behaviours.

/stream        a body of unknown length (close-delimited behind a gateway)
/status/204    204 No Content
anything else  tests.apps.echo: the environ and the body as JSON
"""

from __future__ import annotations

from tests import apps


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        return apps.stream(environ, start_response)
    if path == "/status/204":
        start_response("204 No Content", [])
        return [b""]
    return apps.echo(environ, start_response)
