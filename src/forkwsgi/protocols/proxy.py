"""The PROXY protocol (HAProxy's, versions 1 and 2) in front of HTTP: ``proxy+http://``.

A TCP relay (HAProxy ``send-proxy``/``send-proxy-v2``, nginx stream
``proxy_protocol on``, a cloud load balancer) opens each connection with a
preamble saying whose connection it relays, then passes the client's bytes
untouched. The listener expects that preamble, always: the specification
forbids guessing whether one is there, or any client could claim any address.

- Version 1: one line of US-ASCII, at most 107 bytes with its CRLF:
  ``PROXY TCP4 SRC DST SPORT DPORT``, ``PROXY TCP6 ...`` or ``PROXY UNKNOWN``
  (anything after UNKNOWN is ignored).
- Version 2: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, a version (2)
  and command byte (LOCAL or PROXY), a family and transport byte, a 16-bit
  big-endian length, then that many bytes: the addresses (IPv4, IPv6 or two
  108-byte AF_UNIX paths) and Type-Length-Value extensions, which are
  checked for shape and skipped.

The preamble is parsed whole and answered with a ``Control``: the source
address and port as the connection's peer (AF_UNIX: no address, as for
forkwsgi's own unix peers), and HTTP as the protocol from there on, so every
request on the connection has them. LOCAL (a proxy's own health check),
UNKNOWN, and a version 2 family or transport it cannot express (unspecified,
datagram) keep the socket's peer, as the specification says. A partial
preamble waits for more (under ``header_timeout``, like a partial head);
anything else is a 400 and the connection closes.

Owns: both preamble formats and the ``proxy+http`` Protocol. Which peers may
send a preamble (``proxy_allow_from``) is decided at accept, on the socket's
address, before a byte is read (connection.py).

Must never: touch a socket, guess that a connection has no preamble, or
believe an address that is not in canonical form.
"""

from __future__ import annotations

import socket

from forkwsgi.environ import build_environ
from forkwsgi.http.errors import BadRequest, HeaderFieldsTooLarge
from forkwsgi.http.parser import Limits, body_decoder
from forkwsgi.protocols.base import Control, Protocol
from forkwsgi.protocols.http import HTTP

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest line, "PROXY UNKNOWN" with two full IPv6 addresses, and CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/transport, length
LOCAL, PROXY = 0x0, 0x1  # version 2 commands
UNSPEC, INET, INET6, UNIX = range(4)  # version 2 address families
STREAM, DGRAM = 0x1, 0x2  # version 2 transports
# Bytes of addresses (and ports) for each family; the rest of the block is TLVs.
_ADDRESS_BYTES = {INET: 12, INET6: 36, UNIX: 216}
_TLV_HEADER = 3  # type, 16-bit length

_SOCKET_PEER = Control(protocol=HTTP)  # the socket's own peer stands


def parse_preamble(buf: bytes | bytearray, limits: Limits) -> tuple[Control, int] | None:
    """The PROXY preamble at the start of ``buf``: ``(Control, its length)``; None until
    it is whole. Raises BadRequest as soon as the bytes cannot be one."""
    if buf[:1] == b"\r":  # version 2's signature; version 1 starts with "P"
        return _parse_v2(buf, limits)
    return _parse_v1(buf)


# --- version 1 --------------------------------------------------------------------------------


def _parse_v1(buf: bytes | bytearray) -> tuple[Control, int] | None:
    start = bytes(buf[:len(V1_PREFIX)])
    if not V1_PREFIX.startswith(start):
        raise BadRequest("no PROXY protocol preamble")
    lf = buf.find(b"\n", 0, V1_MAX)
    if lf < 0:
        cr = buf.find(b"\r", 0, V1_MAX)
        if 0 <= cr < len(buf) - 1:
            raise BadRequest("PROXY line has a CR not followed by LF")
        if len(buf) >= V1_MAX:
            raise BadRequest(f"PROXY line without CRLF in its first {V1_MAX} bytes")
        return None
    if buf[lf - 1:lf] != b"\r":
        raise BadRequest("PROXY line ended by a bare LF")
    line = bytes(buf[:lf - 1])
    if b"\r" in line:  # refused whole as it is in pieces (above), UNKNOWN's included
        raise BadRequest("PROXY line has a CR not followed by LF")
    fields = line.split(b" ")
    family = fields[1]
    if family == b"UNKNOWN":
        return _SOCKET_PEER, lf + 1
    if family == b"TCP4":
        af = socket.AF_INET
    elif family == b"TCP6":
        af = socket.AF_INET6
    else:
        raise BadRequest("PROXY line's protocol is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise BadRequest("PROXY line is not PROXY, protocol, two addresses, two ports")
    source = _v1_address(af, fields[2])
    _v1_address(af, fields[3])
    port = _v1_port(fields[4])
    _v1_port(fields[5])
    return Control(peer=(source, port), protocol=HTTP), lf + 1


def _v1_address(af: int, field: bytes) -> str:
    """The address as the kernel writes it (inet_pton is strict: no leading zeros in
    IPv4, no zone in IPv6), or BadRequest."""
    try:
        return socket.inet_ntop(af, socket.inet_pton(af, field.decode("ascii")))
    except (UnicodeDecodeError, OSError, ValueError):
        raise BadRequest("PROXY line has an invalid address") from None


def _v1_port(field: bytes) -> str:
    if not field.isdigit() or len(field) > 5 or (field[:1] == b"0" and len(field) > 1) \
            or int(field) > 65535:
        raise BadRequest("PROXY line has an invalid port")
    return field.decode("ascii")


# --- version 2 --------------------------------------------------------------------------------


def _parse_v2(buf: bytes | bytearray, limits: Limits) -> tuple[Control, int] | None:
    start = bytes(buf[:len(V2_SIGNATURE)])
    if not V2_SIGNATURE.startswith(start):
        raise BadRequest("no PROXY protocol preamble")
    if len(buf) > 12 and buf[12] >> 4 != 2:
        raise BadRequest(f"PROXY protocol version {buf[12] >> 4}, not 2")
    if len(buf) < V2_HEADER:
        return None
    command = buf[12] & 0xF
    if command != LOCAL and command != PROXY:
        raise BadRequest(f"PROXY v2 command {command} is neither LOCAL nor PROXY")
    family, transport = buf[13] >> 4, buf[13] & 0xF
    total = V2_HEADER + int.from_bytes(buf[14:16], "big")
    if total > limits.head:
        raise HeaderFieldsTooLarge(f"PROXY v2 header over {limits.head} bytes")
    if command == LOCAL:  # the proxy's own connection: its block is skipped unread
        return (_SOCKET_PEER, total) if len(buf) >= total else None
    if family > UNIX or transport > DGRAM:
        raise BadRequest(f"PROXY v2 family/transport 0x{buf[13]:02x} is not defined")
    if family == UNSPEC or transport == UNSPEC:
        return (_SOCKET_PEER, total) if len(buf) >= total else None
    addresses = V2_HEADER + _ADDRESS_BYTES[family]
    if total < addresses:
        raise BadRequest("PROXY v2 header too short for its addresses")
    if len(buf) < total:
        return None
    _check_tlvs(buf, addresses, total)
    if transport != STREAM:  # a datagram flow's addresses say nothing of this connection
        return _SOCKET_PEER, total
    if family == INET:
        source = socket.inet_ntop(socket.AF_INET, bytes(buf[16:20]))
        port = int.from_bytes(buf[24:26], "big")
    elif family == INET6:
        source = socket.inet_ntop(socket.AF_INET6, bytes(buf[16:32]))
        port = int.from_bytes(buf[48:50], "big")
    else:  # AF_UNIX: a local client of the proxy, which has no address, as ours have none
        return Control(peer=("", ""), protocol=HTTP), total
    return Control(peer=(source, str(port)), protocol=HTTP), total


def _check_tlvs(buf: bytes | bytearray, at: int, end: int) -> None:
    """The extensions after the addresses must tile the rest of the block exactly; none is
    needed here (a CRC32C one is not verified: support for it is optional)."""
    while at < end:
        if at + _TLV_HEADER > end:
            raise BadRequest("PROXY v2 extension cut short")
        at += _TLV_HEADER + int.from_bytes(buf[at + 1:at + 3], "big")
    if at != end:
        raise BadRequest("PROXY v2 extension overruns the header")


# The preamble's protocol: body_decoder and environ are HTTP's, never called before the
# preamble hands the connection over to HTTP itself.
PROXY_HTTP = Protocol("proxy+http", parse_preamble, body_decoder, build_environ)
# The protocols that read a PROXY preamble first: their listeners accept connections only
# from the peers allowed to send one.
PROXIED = frozenset((PROXY_HTTP,))
