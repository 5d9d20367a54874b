"""TLS on HTTP listeners: the server's SSLContext, and the socket a TLS connection is.

Owns: building the SSLContext from the TLS settings (``certfile``, ``keyfile``,
``ca_certs``, ``cert_reqs``, ``ciphers``; TLS 1.2 at least, ALPN ``http/1.1``,
no renegotiation), with one ``TLSSettingError`` naming the setting for each
way a file can be wrong; and ``TLSSocket``, the ``ssl.SSLSocket`` every TLS
connection is wrapped in.

The context is built where the settings are resolved (settings.make_config),
so a missing file, a key that does not match its certificate or an unknown
``cert_reqs`` is a one-line error at start, at ``--check-config`` and at a
``HUP`` (which then keeps the running configuration). The arbiter that
resolved it forks every worker of its generation with it, as it does with the
listening sockets: the key is read once, with the arbiter's rights (a worker
that has dropped privileges may not be able to; nginx's master reads its keys
too), a worker that
replaces a dead one serves the certificate of its generation whatever is on
disk now, and all workers share the session ticket keys, so a client resumes
its session on any of them. A ``HUP`` re-reads the files into a new context,
for the new generation.

``TLSSocket`` makes a TLS connection look like a non-blocking plain socket to
the code that reads and writes it (connection.py, netio.py, request_body.py):
OpenSSL's "want read" and "want write" come out as ``BlockingIOError``, an
end of stream without ``close_notify`` as ``b""``, and a clean close sends
``close_notify`` (a client reading a response delimited by the close can tell
it whole from cut). What differs stays in the few places that must know:
the handshake (connection.py's HANDSHAKE state), ``sendmsg`` (an SSL socket
has none: netio joins the parts), ``sendfile`` (the kernel would send
plaintext: response.py iterates the file) and the bytes OpenSSL has
decrypted but nobody has read, which epoll cannot see (connection.py reads
them).

Must never: block (every socket call here is non-blocking and the handshake
is stepped by the worker's event loop), be imported when no TLS is
configured (the ``ssl`` module costs start-up time every worker would pay),
or send a byte of plaintext on a TLS connection.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
             "required": ssl.CERT_REQUIRED}
ALPN = ["http/1.1"]  # RFC 7301; no h2: forkwsgi speaks HTTP/1.1 only
_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TLSSettingError(ValueError):
    """A TLS setting that cannot serve; ``str()`` is the one-line why, ``setting`` names
    it (settings.py turns it into its SettingError)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class TLSSocket(ssl.SSLSocket):
    """An SSL socket that reads, writes and closes like a non-blocking plain socket.

    Would-block is ``BlockingIOError`` in both directions (the callers wait for
    readable or writable and try again, with the same bytes: CPython sets
    ``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER``, and renegotiation, the one reason a
    write would have to wait for a read, is off).
    """

    def handshake_step(self) -> int:
        """One step of the server handshake: the poll events to wait for before the next
        (POLLIN, or POLLOUT while OpenSSL's flight does not fit the socket buffer), 0 once
        it is done; an OSError (ssl.SSLError) when it failed. (``do_handshake`` would also
        ask the kernel for the peer's name and reset the socket's timeout: two system
        calls a step.)"""
        sslobj = self._sslobj
        if sslobj is None:  # the peer was gone before the socket could be wrapped
            raise ConnectionAbortedError(errno.ENOTCONN, "closed before the TLS handshake")
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return select.POLLIN
        except ssl.SSLWantWriteError:
            return select.POLLOUT
        return 0

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        sslobj = self._sslobj
        if sslobj is None:  # after shutdown(): a lingering close reads and drops raw bytes
            return socket.socket.recv(self, buflen, flags)
        try:
            return sslobj.read(buflen)
        except _WOULD_BLOCK:
            raise BlockingIOError(errno.EAGAIN, "TLS record incomplete") from None
        except ssl.SSLEOFError:
            return b""  # closed without close_notify: for a request, an end like any

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        sslobj = self._sslobj
        if sslobj is None:
            return socket.socket.recv_into(self, buffer, nbytes, flags)
        try:
            return sslobj.read(nbytes or len(buffer), buffer)
        except _WOULD_BLOCK:
            raise BlockingIOError(errno.EAGAIN, "TLS record incomplete") from None
        except ssl.SSLEOFError:
            return 0

    def send(self, data, flags: int = 0) -> int:
        sslobj = self._sslobj
        if sslobj is None:  # shut down: never fall back to the plain socket
            raise BrokenPipeError(errno.EPIPE, "TLS connection shut down")
        try:
            return sslobj.write(data)
        except _WOULD_BLOCK:
            raise BlockingIOError(errno.EAGAIN, "TLS write must wait") from None

    def shutdown(self, how: int) -> None:
        self.notify_close()
        super().shutdown(how)  # forgets the TLS state: lingering reads drop raw bytes

    def close(self) -> None:
        self.notify_close()
        super().close()

    def notify_close(self) -> None:
        """Send ``close_notify``, best effort (OpenSSL sends none before the handshake is
        done or after a fatal error), without waiting for the peer's: a server closing its
        side need not read it (RFC 8446 section 6.1)."""
        sslobj = self._sslobj
        if sslobj is not None:
            with contextlib.suppress(OSError, ValueError):
                sslobj.shutdown()  # sends ours, then "wants to read" the peer's: done

    def forget(self) -> None:
        """Drop the TLS state without ``close_notify``: the connection is being reset
        because its response was cut, and a close_notify would tell the client the
        response ended where it stopped."""
        self._sslobj = None


def _readable(name: str, path: str) -> None:
    if not os.path.isfile(path):
        raise TLSSettingError(name, f"no such file {path!r}")
    if not os.access(path, os.R_OK):
        raise TLSSettingError(name, f"cannot read {path!r}: permission denied")


def _encrypted_key() -> bytes:
    raise TLSSettingError("keyfile", "the private key is encrypted; give it unencrypted, "
                                     "readable by root alone (the arbiter reads it)")


def build_context(certfile: str, keyfile: str | None = None, ca_certs: str | None = None,
                  cert_reqs: str = "none", ciphers: str | None = None) -> ssl.SSLContext:
    """The server's SSLContext; ``TLSSettingError`` naming the setting at fault."""
    for name, path in (("certfile", certfile), ("keyfile", keyfile), ("ca_certs", ca_certs)):
        if path is not None:
            _readable(name, path)
    # Check the certificate on its own first: load_cert_chain says "PEM lib" for a bad
    # certificate and for a bad key alike.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=certfile)
    except (ssl.SSLError, ValueError):
        raise TLSSettingError("certfile", f"no PEM certificate in {certfile!r}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslsocket_class = TLSSocket
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Client-initiated renegotiation costs the server a handshake per request of the
    # client's choosing, and is the one case in which a write would wait for a read.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(certfile, keyfile, password=_encrypted_key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSSettingError("keyfile" if keyfile else "certfile",
                                  f"the private key does not match the certificate in "
                                  f"{certfile!r}") from None
        if keyfile is None:
            raise TLSSettingError("certfile", f"no PEM private key in {certfile!r} (give "
                                              f"the key there, or in keyfile)") from None
        raise TLSSettingError("keyfile", f"no PEM private key in {keyfile!r}") from None
    if ca_certs is not None:
        try:
            context.load_verify_locations(cafile=ca_certs)
        except (ssl.SSLError, ValueError):
            raise TLSSettingError("ca_certs", f"no PEM certificate in {ca_certs!r}") from None
    context.verify_mode = CERT_REQS[cert_reqs]
    if ciphers is not None:
        try:
            context.set_ciphers(ciphers)  # TLS 1.2's; TLS 1.3's suites are OpenSSL's own
        except ssl.SSLError:
            raise TLSSettingError("ciphers",
                                  f"OpenSSL selects no cipher from {ciphers!r}") from None
    return context


def refusing_context() -> ssl.SSLContext:
    """A context without a certificate, on which every handshake fails: for an https://
    listener whose configuration lost its certfile in a reload (never plaintext there)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslsocket_class = TLSSocket
    return context
