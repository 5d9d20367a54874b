"""The wire formats a listener may speak, behind one seam.

Owns: the ``Protocol`` contract and the registry of protocols by the scheme a
bind spec names (``-b uwsgi://127.0.0.1:3031``, ``-b scgi://unix:/run/app.sock``;
no scheme, or ``http://``, is HTTP/1.1). A protocol is sans-I/O: it turns
bytes into a request head, says how the body is framed, maps the head to the
environ, and says how the response's status line is written. The worker's
connection state machine (connection.py) and the dispatcher call nothing
else of it, so a new wire format is a new module here and a row below.

Must never: touch a socket, keep state between calls (one Protocol object
serves every connection of its listeners), or call the application.
"""

from __future__ import annotations

from forkwsgi.protocols import ajp, fastcgi, gateway, http, proxy
from forkwsgi.protocols.base import Control, Framer, Protocol, cgi_status_line, frame_whole

__all__ = ["BY_SCHEME", "Control", "Framer", "Protocol", "cgi_status_line", "frame_whole",
           "split_scheme"]

BY_SCHEME: dict[str, Protocol] = {
    "http": http.HTTP,
    "uwsgi": gateway.UWSGI,
    "scgi": gateway.SCGI,
    "fastcgi": fastcgi.FASTCGI,
    "proxy+http": proxy.PROXY_HTTP,
    "ajp": ajp.AJP,
}


def split_scheme(spec: str) -> tuple[str, str]:
    """``("uwsgi", "127.0.0.1:3031")`` for ``uwsgi://127.0.0.1:3031``; ``("http", spec)``
    for a spec without a protocol scheme (``tcp://``, ``unix:`` and ``fd://`` are
    addresses, not protocols)."""
    scheme, sep, rest = spec.partition("://")
    if sep and scheme in BY_SCHEME:
        return scheme, rest
    return "http", spec
