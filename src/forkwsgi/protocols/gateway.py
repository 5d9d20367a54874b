"""The gateway protocols: uwsgi and SCGI, the front-end's CGI variables on a socket.

A front-end (nginx ``uwsgi_pass``/``scgi_pass``, Apache ``mod_proxy_uwsgi``/
``mod_proxy_scgi``) has already parsed the client's HTTP request; it sends
the result as CGI variables, then the body, framed by CONTENT_LENGTH. One
request per connection: the response ends when the connection closes (or at
its Content-Length), so neither has keep-alive or chunked responses.

- uwsgi: a 4-byte header (modifier1 = 0, a WSGI request; the size of the
  variables, 16-bit little-endian; modifier2), then each variable as a
  16-bit little-endian length and the name, then the same for the value.
  The response is an HTTP response (status line, header fields, body).
- SCGI: the variables as a netstring (``LEN:`` name NUL value NUL ... ``,``),
  CONTENT_LENGTH first, ``SCGI=1`` among them. The response is a CGI response
  (``Status: 200 OK``, header fields, body).

Owns: both wire formats, ``GatewayHead`` (RequestHead's fields, plus the
variables as sent), and the environ of a gateway request. Variables are
bytes read as latin-1, as PEP 3333 wants the environ, so a UTF-8 path arrives
byte for byte (``/café`` stays ``/caf\\xc3\\xa9`` for the app to decode).
What only the front-end can know about the client (REMOTE_ADDR,
REMOTE_PORT, REMOTE_USER, HTTPS, SCRIPT_NAME) is taken from the variables
only when the peer is trusted (``forwarded_allow_ips``), as forwarded headers
are over HTTP; otherwise the socket's peer stands.

Must never: touch a socket, or accept a body not framed by CONTENT_LENGTH.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from urllib.parse import quote

from forkwsgi.environ import decoded_path, forward, under_mount
from forkwsgi.http.errors import BadRequest, HeaderFieldsTooLarge
from forkwsgi.http.parser import LengthDecoder, Limits, RequestHead, parse_content_length
from forkwsgi.protocols.base import Framer, Protocol, cgi_status_line

_UWSGI_HEADER = struct.Struct("<BHB")
_MAX_LENGTH_DIGITS = 18  # a netstring length longer than this is no SCGI request
_EXTRA_VARIABLES = 64  # CGI variables a front-end sends beside one per header field
# Variables that are the request itself, passed to the app as they come.
_REQUEST_KEYS = frozenset(("CONTENT_TYPE", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                           "DOCUMENT_ROOT", "REQUEST_SCHEME", "PATH_TRANSLATED"))
# Variables about the client or the mount, which only a trusted front-end may set.
_TRUSTED_KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER", "AUTH_TYPE")


@dataclass(slots=True)
class GatewayHead(RequestHead):
    variables: dict[str, str] = field(default_factory=dict)  # as the front-end sent them


# --- uwsgi ------------------------------------------------------------------------------------


def parse_uwsgi(buf: bytes | bytearray, limits: Limits) -> tuple[GatewayHead, int] | None:
    """One uwsgi request packet from the start of ``buf``; None until it is whole."""
    if len(buf) < 4:
        return None
    modifier1, size, _ = _UWSGI_HEADER.unpack_from(buf)
    if modifier1 != 0:
        raise BadRequest(f"uwsgi modifier1 {modifier1} is not a WSGI request")
    if size + 4 > limits.head:
        raise HeaderFieldsTooLarge(f"uwsgi variables over {limits.head} bytes")
    end = 4 + size
    if len(buf) < end:
        return None
    # Decoded once, as latin-1 (a byte per character), so each string is one slice of it
    # with no call per string; the lengths are read from the bytes (an index is an int).
    raw = bytes(buf[4:end])
    block = raw.decode("latin-1")
    variables: dict[str, str] = {}
    at, size = 0, len(block)
    most = limits.fields + _EXTRA_VARIABLES
    # No bounds check per variable: a length cut short reads past the end (IndexError),
    # and a name or value cut short leaves ``at`` past the end, which the loop's end checks.
    try:
        while at < size:
            length = raw[at] | raw[at + 1] << 8
            name = block[at + 2:at + 2 + length]
            at += 4 + length
            length = raw[at - 2] | raw[at - 1] << 8
            variables[name] = block[at:at + length]
            at += length
    except IndexError:
        at = -1
    if at != size:
        raise BadRequest("uwsgi variables cut short")
    if len(variables) > most:  # counted once: the block's size already bounds the work
        raise HeaderFieldsTooLarge(f"more than {most} uwsgi variables")
    return head_from_variables(variables, limits), end


# --- SCGI -------------------------------------------------------------------------------------


def parse_scgi(buf: bytes | bytearray, limits: Limits) -> tuple[GatewayHead, int] | None:
    """One SCGI request's netstring of variables from the start of ``buf``."""
    colon = buf.find(b":", 0, _MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        if len(buf) > _MAX_LENGTH_DIGITS or not bytes(buf).isdigit() and buf:
            raise BadRequest("SCGI request does not start with a netstring length")
        return None
    digits = bytes(buf[:colon])
    if not digits.isdigit() or digits[:1] == b"0" and len(digits) > 1:
        raise BadRequest("invalid SCGI netstring length")
    size = int(digits)
    if size > limits.head:
        raise HeaderFieldsTooLarge(f"SCGI variables over {limits.head} bytes")
    end = colon + 1 + size
    if len(buf) < end + 1:
        return None
    if buf[end:end + 1] != b",":
        raise BadRequest("SCGI netstring not ended by ','")
    parts = bytes(buf[colon + 1:end]).decode("latin-1").split("\0")
    if size == 0 or parts.pop() != "" or len(parts) % 2:
        raise BadRequest("SCGI variables are not name/value pairs ended by NUL")
    if parts[0] != "CONTENT_LENGTH":
        raise BadRequest("SCGI variables do not start with CONTENT_LENGTH")
    most = limits.fields + _EXTRA_VARIABLES
    if len(parts) > 2 * most:
        raise HeaderFieldsTooLarge(f"more than {most} SCGI variables")
    variables = dict(zip(parts[::2], parts[1::2], strict=True))
    if variables.get("SCGI") != "1":
        raise BadRequest("SCGI variables lack SCGI=1")
    return head_from_variables(variables, limits), end + 1


# --- shared -----------------------------------------------------------------------------------


def head_from_variables(variables: dict[str, str], limits: Limits) -> GatewayHead:
    """The request a front-end's CGI variables describe (uwsgi, SCGI, FastCGI)."""
    method = variables.get("REQUEST_METHOD", "")
    if not method or not method.isascii() or not method.isalpha():
        raise BadRequest("no valid REQUEST_METHOD among the gateway variables")
    query = variables.get("QUERY_STRING", "")
    target = variables.get("REQUEST_URI")
    if not target:
        # Rebuilt from the decoded path, as a front-end that sends no REQUEST_URI would.
        path_info = variables.get("SCRIPT_NAME", "") + variables.get("PATH_INFO", "")
        target = quote(path_info.encode("latin-1"), safe="/;=,~!$&'()*+@:") or "/"
        if query:
            target += "?" + query
    path = target.partition("?")[0]
    return GatewayHead(method, target, path, query, "HTTP/1.0", [], None,
                       _content_length(variables.get("CONTENT_LENGTH", ""), limits),
                       False, False, False, variables)


def _content_length(value: str, limits: Limits) -> int | None:
    # An empty CONTENT_LENGTH is nginx's for a request without a body.
    return parse_content_length(value, limits) or None if value else None


def body_decoder(head: GatewayHead, limits: Limits) -> LengthDecoder:
    return LengthDecoder(head.content_length or 0)


def gateway_environ(head: GatewayHead, conn_environ: dict, trusted: frozenset[str]) -> dict:
    """The environ of a gateway request: the connection's, then the front-end's variables."""
    environ = conn_environ.copy()
    variables = head.variables
    for key, value in variables.items():
        if key.startswith("HTTP_"):
            if key != "HTTP_CONTENT_LENGTH" and key != "HTTP_CONTENT_TYPE":
                environ[key] = value
        elif key in _REQUEST_KEYS and value:  # nginx sends "" for what the request lacks
            environ[key] = value
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
    environ["REQUEST_METHOD"] = head.method
    environ["QUERY_STRING"] = head.query
    environ["RAW_URI"] = environ["REQUEST_URI"] = head.target
    if head.content_length is not None:
        environ["CONTENT_LENGTH"] = str(head.content_length)
    path_info = variables.get("PATH_INFO")
    sent_script_name = variables.get("SCRIPT_NAME")
    if not path_info:
        path = head.path
        decoded = decoded_path(path)
        if path_info is None or sent_script_name == decoded:
            # No PATH_INFO (nginx's scgi_params send DOCUMENT_URI instead), or Apache's
            # mod_proxy_scgi/uwsgi, which put the whole path in SCRIPT_NAME: the path is
            # the request's, and the mount is ours to cut (the SCRIPT_NAME environment).
            path_info = decoded
            sent_script_name = None
    script_name = environ["SCRIPT_NAME"]
    if trusted:
        for key in _TRUSTED_KEYS:
            if variables.get(key):  # nginx sends REMOTE_USER "" without authentication
                environ[key] = variables[key]
        if variables.get("HTTPS", "").lower() in ("on", "1") or \
                variables.get("REQUEST_SCHEME") == "https":
            environ["wsgi.url_scheme"] = "https"
        if sent_script_name is not None:
            script_name = sent_script_name
        forward(environ, trusted)
    if script_name:
        # The mount, cut from PATH_INFO on a segment boundary when the front-end passed the
        # whole path in it (nginx's $document_uri); elsewhere the app sees no mount.
        if under_mount(path_info, script_name):
            path_info = path_info[len(script_name):]
        elif sent_script_name is None or not trusted:
            script_name = ""
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    return environ


UWSGI = Protocol("uwsgi", parse_uwsgi, body_decoder, gateway_environ)
def refuse_cgi(response: bytes, head: GatewayHead | None) -> bytes:
    """The server's own error answer as a CGI response (SCGI's front-ends read one)."""
    return cgi_status_line(response)


class CGIFramer(Framer):
    """SCGI's response is a CGI response (RFC 3875 section 6): the head with ``Status:``
    for its status line, then the body as written, ended by the close (never chunked)."""

    def head(self, head: bytes) -> bytes:
        return cgi_status_line(head)

    def body(self, data: bytes) -> bytes:
        return data

    def end(self, keep: bool) -> bytes:
        return b""


_CGI_FRAMER = CGIFramer()


def cgi_framer(head: GatewayHead) -> CGIFramer:
    return _CGI_FRAMER


SCGI = Protocol("scgi", parse_scgi, body_decoder, gateway_environ, framer=cgi_framer,
                refuse=refuse_cgi)
