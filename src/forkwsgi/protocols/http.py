"""HTTP/1.1 as a Protocol: the parser in forkwsgi.http and the environ builder, as they are.

Must never: add a layer on the per-request path: the Protocol holds the very
functions the worker called before there was a seam.
"""

from __future__ import annotations

from forkwsgi.environ import build_environ
from forkwsgi.http.parser import body_decoder, parse_head
from forkwsgi.protocols.base import Protocol

HTTP = Protocol("http", parse_head, body_decoder, build_environ)
