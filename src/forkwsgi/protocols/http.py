"""HTTP/1.1 as a Protocol: the parser in forkwsgi.http and the environ builder, as they are.

``HTTPS`` is the same functions on a TLS connection: a Protocol object of its
own, never a listener's (a listener has HTTP, and the worker's TLS wraps its
connections), so a TLS connection never reads as speaking its listener's
protocol. That is what handoff.py checks before it moves a connection to a
sibling worker as a descriptor and a few bytes: the TLS state (keys,
sequence numbers, OpenSSL's buffers) cannot travel with them.

Must never: add a layer on the per-request path: the Protocol holds the very
functions the worker called before there was a seam.
"""

from __future__ import annotations

from forkwsgi.environ import build_environ
from forkwsgi.http.parser import body_decoder, parse_head
from forkwsgi.protocols.base import Protocol

HTTP = Protocol("http", parse_head, body_decoder, build_environ)
HTTPS = Protocol("https", parse_head, body_decoder, build_environ)
