"""Request head + connection -> PEP 3333 environ.

Owns: the mapping from a parsed request (any protocol's: HTTP today,
uwsgi/FastCGI/SCGI later) to the environ dict: CGI variables, HTTP_* keys,
``wsgi.*`` keys, and the forwarded-header rules that decide whether a peer
may rewrite REMOTE_ADDR, wsgi.url_scheme and HTTP_HOST.

Built in three layers, so each request copies a dict instead of building one:
``base_environ`` once per worker and listener (server name and port, wsgi.*
constants), ``connection_environ`` once per connection (the peer's address),
``build_environ`` per request (the head's keys, then the forwarded rules).

Must never: read from a socket, call the application, or consult settings
per request (the worker binds what it needs once, into the base environ).
"""

from __future__ import annotations

import ipaddress
import sys
from urllib.parse import unquote_to_bytes

from forkwsgi.http.parser import RequestHead

# Request headers whose environ key is not HTTP_*  (PEP 3333, CGI RFC 3875 section 4.1).
_CGI_KEYS = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}
_key_cache: dict[str, str | None] = {}


def environ_key(name: str) -> str | None:
    """``X-Foo`` -> ``HTTP_X_FOO``; None for names with "_" (dropped).

    A name with an underscore would collide with its dashed twin after the
    CGI mapping (``X_Forwarded_For`` vs ``X-Forwarded-For``) and let a client
    spoof a header a proxy set; nginx and gunicorn drop them too.
    """
    key = _key_cache.get(name)
    if key is None and name not in _key_cache:
        upper = name.upper()
        key = None if "_" in name else _CGI_KEYS.get(upper) or "HTTP_" + upper.replace("-", "_")
        if len(_key_cache) < 1024:  # bounded: header names are client-chosen
            _key_cache[name] = key
    return key


class TrustedPeers:
    """``--forwarded-allow-ips``: addresses and networks allowed to set forwarded headers."""

    def __init__(self, entries: list[str]) -> None:
        self.everyone = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
        # Asked once per connection, mostly about the same few front-ends: parsing the
        # address each time showed in profiles of one-request connections (uwsgi, SCGI).
        self._known: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        known = self._known.get(address)
        if known is None:
            known = self._check(address)
            if len(self._known) < 1024:  # bounded: addresses are the clients' to choose
                self._known[address] = known
        return known

    def _check(self, address: str) -> bool:
        if self.everyone:
            return True
        if not address:  # unix socket peers are local: as trusted as loopback
            return any(net.version == 4 and ipaddress.ip_address("127.0.0.1") in net
                       for net in self.networks)
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def _forwarded_element(value: str) -> dict[str, str]:
    """The last element of an RFC 7239 Forwarded value: the one our trusted peer added."""
    element = _last_member(value)
    pairs = {}
    for pair in element.split(";"):
        key, sep, val = pair.strip().partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                val = val[1:-1].replace('\\"', '"')
            pairs[key.strip().lower()] = val
    return pairs


def _last_member(value: str) -> str:
    """The right-most non-empty member of a list value; RFC 9110 section 5.6.1: "a
    recipient MUST accept empty list elements" and ignore them."""
    for member in reversed(value.split(",")):
        member = member.strip(" \t")
        if member:
            return member
    return ""


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _strip_port(node: str) -> str:
    """RFC 7239 node: ``"[2001:db8::1]:4711"`` / ``192.0.2.1:80`` -> the address."""
    if node.startswith("["):
        return node[1:].split("]", 1)[0]
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node


def trusted_keys(headers: list[str]) -> frozenset[str]:
    """``--forwarded-headers`` names -> the environ keys a trusted peer may set."""
    return frozenset("HTTP_" + name.upper().replace("-", "_") for name in headers)


def apply_forwarded(environ: dict, trusted: frozenset[str]) -> None:
    """Rewrite REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST from a trusted proxy's headers.

    Only the headers named in ``trusted`` count: a proxy passes on, untouched,
    every header it does not set itself, so trusting one it does not
    overwrite lets the client spoof it. RFC 7239 ``Forwarded``, when trusted,
    wins over the X-Forwarded-* family. For lists, the right-most entry is
    the one the trusted peer itself appended; anything left of it is the
    client's.
    """
    forwarded = environ.get("HTTP_FORWARDED") if "HTTP_FORWARDED" in trusted else None
    if forwarded:
        element = _forwarded_element(forwarded)
        node = _strip_port(element.get("for", ""))
        if _is_address(node):  # RFC 7239 section 6: "unknown" and "_hidden" are not
            environ["REMOTE_ADDR"] = node
        proto = element.get("proto", "").lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
        if element.get("host"):
            environ["HTTP_HOST"] = element["host"]
        return
    xff = environ.get("HTTP_X_FORWARDED_FOR") if "HTTP_X_FORWARDED_FOR" in trusted else None
    if xff:
        address = _last_member(xff)
        if _is_address(address):  # "unknown" or garbage: keep the peer's own address
            environ["REMOTE_ADDR"] = address
    proto = environ.get("HTTP_X_FORWARDED_PROTO") if "HTTP_X_FORWARDED_PROTO" in trusted \
        else None
    if proto:
        proto = _last_member(proto).lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
    host = environ.get("HTTP_X_FORWARDED_HOST") if "HTTP_X_FORWARDED_HOST" in trusted else None
    if host:
        host = _last_member(host)
        if host:
            environ["HTTP_HOST"] = host


def base_environ(server_name: str, server_port: str, multiprocess: bool,
                 script_name: str = "") -> dict:
    """The keys that are the same for every request of one listener in one worker."""
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": script_name,
        "SERVER_SOFTWARE": "forkwsgi",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def connection_environ(base: dict, peer: object) -> dict:
    """Per connection: base plus REMOTE_ADDR/PORT (unix peers have no address)."""
    environ = base.copy()
    if isinstance(peer, tuple):
        environ["REMOTE_ADDR"] = peer[0]
        environ["REMOTE_PORT"] = str(peer[1])
    else:
        environ["REMOTE_ADDR"] = ""
        environ["REMOTE_PORT"] = ""
    return environ


def forward(environ: dict, trusted: frozenset[str]) -> None:
    """``apply_forwarded``, when the peer sent any of the forwarded keys it may set."""
    for key in trusted:
        if key in environ:
            apply_forwarded(environ, trusted)
            return


def decoded_path(path: str) -> str:
    """A percent-encoded path as PATH_INFO: decoded, its bytes as latin-1 (PEP 3333)."""
    return unquote_to_bytes(path).decode("latin-1") if "%" in path else path


def under_mount(path: str, mount: str) -> bool:
    """Whether ``path`` lies under the mount ``mount``, on a segment boundary: with
    ``/app``, ``/app`` and ``/app/x`` do, ``/application`` does not."""
    return path.startswith(mount) and path[len(mount):len(mount) + 1] in ("", "/")


def add_fields(environ: dict, fields: list[tuple[str, str]]) -> None:
    """Request header fields as HTTP_* keys (and CONTENT_TYPE, CONTENT_LENGTH)."""
    get = environ.get
    for name, value in fields:
        key = _key_cache.get(name) or environ_key(name)
        if key is None:
            continue
        old = get(key)
        if old is not None:
            # RFC 9110 section 5.3: repeated fields combine with ", "; cookies with "; "
            # (RFC 6265 section 5.4), or the cookie parser would split wrongly.
            value = old + ("; " if key == "HTTP_COOKIE" else ", ") + value
        environ[key] = value


def build_environ(head: RequestHead, conn_environ: dict, trusted: frozenset[str]) -> dict:
    """The environ for one request: a copy of the connection's plus the request's keys.

    ``trusted``: the forwarded-header keys this connection's peer may set (empty for
    an untrusted peer).
    """
    environ = conn_environ.copy()
    path = head.path
    script_name = environ["SCRIPT_NAME"]
    if script_name:
        # The mount is cut from the raw path, on a segment boundary and before decoding:
        # with SCRIPT_NAME=/app, /app/x gives PATH_INFO=/x, while neither /application nor
        # /app%2Fx is under the mount. A path outside the mount gets an empty SCRIPT_NAME,
        # so SCRIPT_NAME + PATH_INFO is still the path requested (PEP 3333 URL
        # reconstruction).
        if under_mount(path, script_name):
            path = path[len(script_name):]
        else:
            environ["SCRIPT_NAME"] = ""
    environ["REQUEST_METHOD"] = head.method
    # PEP 3333: PATH_INFO is the percent-decoded path, as latin-1 "bytes in a str".
    environ["PATH_INFO"] = decoded_path(path)
    environ["QUERY_STRING"] = head.query
    environ["RAW_URI"] = head.target
    environ["REQUEST_URI"] = head.target
    environ["SERVER_PROTOCOL"] = head.version
    add_fields(environ, head.headers)
    if head.host is not None:
        environ["HTTP_HOST"] = head.host  # absolute-form target overrides Host (RFC 9112 3.2.2)
    if trusted:
        forward(environ, trusted)
    return environ
