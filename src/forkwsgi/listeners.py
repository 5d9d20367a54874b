"""Listening sockets: bind specs in, bound sockets out.

Owns: parsing ``-b`` values (``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT``,
``PORT``, ``HOST``, each with an optional ``tcp://``; ``unix:PATH``,
``fd://N``), each optionally behind a protocol scheme (``uwsgi://``,
``scgi://``: the wire format its connections speak, kept on the Listener
for the workers) or behind ``https://`` (TLS asked for) or ``http://``
(TLS refused), binding them, adopting sockets inherited from a previous
arbiter (USR2 upgrade, ``FORKWSGI__FDS``) or from systemd (``LISTEN_FDS``),
giving the unix socket files this process creates their mode and group
(``socket_mode``, ``socket_group``), and removing them on exit.

Which listeners serve TLS: an ``https://`` one always; one bound without a
scheme when ``certfile`` is set (gunicorn's rule, so ``-b :443 --certfile``
works as there); never an ``http://`` one (a plain port beside a TLS one, for
a local front-end or a health check), a gateway (``uwsgi://`` ...: its
front-end has terminated TLS) or ``proxy+http://`` (the PROXY preamble comes
before any TLS, and HAProxy terminates TLS itself when it sends one).
``Listener.serves_tls`` decides it; the worker wraps the connections.

Must never: accept connections (workers do), know a wire format beyond its name, or
touch TLS beyond knowing which listeners want it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass, field

from forkwsgi.protocols import split_scheme

INHERITED_FDS_ENV = "FORKWSGI__FDS"  # set by an arbiter for its USR2 successor
SD_LISTEN_FDS_START = 3
DEFER_ACCEPT_SECONDS = 1
DEFAULT_SOCKET_MODE = 0o666  # connectable by every local user, like gunicorn's sockets


class ListenerError(Exception):
    """A bind spec that cannot be parsed or bound; str() is a one-line message."""


@dataclass
class Listener:
    sock: socket.socket
    spec: str  # as the user wrote it (or fd://N)
    unix_path: str | None = None  # a unix socket file we may have to remove
    owned_path: bool = False  # we created the file (so we remove it on exit)
    server_name: str = field(default="")
    server_port: str = field(default="")
    protocol: str = "http"  # the wire format: a scheme of forkwsgi.protocols.BY_SCHEME
    tls: bool | None = None  # https:// (True), http:// (False), else as certfile says (None)
    nodelay: bool = False  # TCP_NODELAY set here, so accepted connections have it already

    def fileno(self) -> int:
        return self.sock.fileno()

    def serves_tls(self, certfile_given: bool) -> bool:
        """Whether this listener's connections speak TLS (see the module docstring)."""
        if self.tls is not None:
            return self.tls
        return certfile_given and self.protocol == "http"

    def __str__(self) -> str:
        return self.url()

    def url(self, certfile_given: bool = False) -> str:
        """Where it listens, as a URL whose scheme is its protocol (https with TLS)."""
        scheme = "https" if self.serves_tls(certfile_given) else self.protocol
        if self.unix_path:
            where = f"unix:{self.unix_path}"
            return where if scheme == "http" else f"{scheme}://{where}"
        address = self.sock.getsockname()
        if self.sock.family == socket.AF_INET6:
            return f"{scheme}://[{address[0]}]:{address[1]}"
        if self.sock.family == socket.AF_INET:
            return f"{scheme}://{address[0]}:{address[1]}"
        return self.spec


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "8000"


def split_tls(spec: str) -> tuple[bool | None, str]:
    """``(True, "0.0.0.0:443")`` for ``https://0.0.0.0:443``, ``(False, ...)`` for
    ``http://...``, ``(None, spec)`` for anything else; raises ListenerError for TLS in
    front of another protocol's scheme."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if spec.startswith(scheme):
            rest = spec[len(scheme):]
            if split_scheme(rest)[0] != "http" or rest.startswith(("http://", "https://")):
                raise ListenerError(f"bind '{spec}': {scheme} takes an address, not another "
                                    f"protocol")
            return tls, rest
    return None, spec


def parse_bind(spec: str) -> tuple[str, object]:
    """``(kind, address)`` where kind is tcp, unix or fd; raises ListenerError.

    gunicorn's forms read as gunicorn reads them: ``tcp://`` is optional, a
    host alone is port 8000, ``:PORT`` is every IPv4 interface (0.0.0.0, an
    empty host to bind()) and ``unix://PATH`` is ``unix:PATH``. A number alone
    is a port on 127.0.0.1, the default host: gunicorn would take ``8000`` for a
    host name, which is never what was meant, and every interface must be asked
    for (``:PORT``), not implied.
    """
    if spec.startswith("unix:"):
        path = spec[5:]
        if path.startswith("//"):
            path = path[2:]  # unix:///run/app.sock, as gunicorn also takes it
        if not path:
            raise ListenerError(f"bind '{spec}': empty unix socket path")
        return "unix", path
    if spec.startswith("fd://"):
        try:
            return "fd", int(spec[5:])
        except ValueError:
            raise ListenerError(f"bind '{spec}': fd://N needs a file descriptor number") from None
    address = spec[len("tcp://"):] if spec.startswith("tcp://") else spec
    if address.isdigit():
        host, port = DEFAULT_HOST, address
    elif address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ListenerError(f"bind '{spec}': expected [IPV6]:PORT")
        port = rest[1:] or DEFAULT_PORT
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, DEFAULT_PORT
        if ":" in host:
            raise ListenerError(f"bind '{spec}': write IPv6 addresses as [ADDRESS]:PORT")
    try:
        port_number = int(port)
    except ValueError:
        raise ListenerError(f"bind '{spec}': port {port!r} is not a number") from None
    if not 0 <= port_number <= 65535:
        raise ListenerError(f"bind '{spec}': port {port_number} is out of range")
    return "tcp", (host or "0.0.0.0", port_number)


def _tcp_socket(host: str, port: int, backlog: int, reuse_port: bool) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenerError(f"bind '{host}:{port}': {exc.strerror}") from None
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"bind '{host}:{port}': {exc.strerror}") from None
    return sock


def _unix_socket(path: str, backlog: int, mode: int = DEFAULT_SOCKET_MODE,
                 group: int | None = None) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            # A stale file from a crashed server; refuse if something still listens there.
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)
            else:
                probe.close()
                raise ListenerError(f"bind 'unix:{path}': another server is listening there")
            finally:
                probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        # bind() creates the file with 0777 & ~umask: binding under a umask that already
        # withholds what the mode withholds leaves no moment in which a client the mode
        # excludes could connect. With a group to set, only the owner may until chown.
        wanted = mode & 0o700 if group is not None else mode
        old_umask = os.umask(0o777 & ~wanted)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        bound = True
        if group is not None:
            try:
                os.chown(path, -1, group)
            except OSError as exc:
                raise ListenerError(f"bind 'unix:{path}': cannot give the socket group {group} "
                                    f"(setting 'socket_group'): {exc.strerror}") from None
        os.chmod(path, mode)  # also when a default ACL on the directory overrode the umask
        sock.listen(backlog)
    except (OSError, ListenerError) as exc:
        sock.close()
        if bound:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, ListenerError):
            raise
        raise ListenerError(f"bind 'unix:{path}': {exc.strerror}") from None
    return sock


def _gid(group: str | None) -> int | None:
    if group is None or group.isdigit():
        return None if group is None else int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenerError(f"no such group {group!r} (setting 'socket_group')") from None


def _adopt_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"bind 'fd://{fd}': {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM:
        raise ListenerError(f"bind 'fd://{fd}': not a stream socket")
    return sock


def _same_address(sock: socket.socket, kind: str, address: object) -> bool:
    try:
        name = sock.getsockname()
    except OSError:
        return False
    if kind == "unix":
        return sock.family == socket.AF_UNIX and name == address
    if kind == "tcp" and sock.family in (socket.AF_INET, socket.AF_INET6):
        host, port = address  # type: ignore[misc]
        if name[1] != port:
            return False
        try:
            wanted = {info[4][0] for info in socket.getaddrinfo(host, port, 0,
                                                                 socket.SOCK_STREAM)}
        except socket.gaierror:
            return False
        return name[0] in wanted
    return False


def inherited_fds(environ: dict[str, str] | None = None) -> list[int]:
    """File descriptors handed over by a previous arbiter or by systemd."""
    environ = os.environ if environ is None else environ
    fds: list[int] = []
    if environ.get(INHERITED_FDS_ENV):
        fds = [int(fd) for fd in environ[INHERITED_FDS_ENV].split(",") if fd]
    elif environ.get("LISTEN_FDS") and environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(environ["LISTEN_FDS"])
        fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    return fds


def open_listeners(binds: list[str], backlog: int, reuse_port: bool = False,
                   inherited: list[int] | None = None, socket_mode: int = DEFAULT_SOCKET_MODE,
                   socket_group: str | None = None) -> list[Listener]:
    """Bind every spec, reusing inherited sockets whose address matches.

    Inherited sockets that match no spec are still served when no spec was
    given explicitly (systemd socket activation decides the addresses).
    ``socket_mode`` and ``socket_group`` apply to the unix socket files created
    here; an inherited socket's file is its creator's business.
    """
    gid = _gid(socket_group)
    adopted = [_adopt_fd(fd) for fd in (inherited or [])]
    listeners: list[Listener] = []
    for spec in binds:
        tls, bare = split_tls(spec)
        protocol, where = split_scheme(bare)
        kind, address = parse_bind(where)
        owned = False
        if kind == "fd":
            sock = next((s for s in adopted if s.fileno() == address), None)
            if sock is not None:
                adopted.remove(sock)
            else:
                sock = _adopt_fd(address)  # type: ignore[arg-type]
        elif (sock := next((s for s in adopted if _same_address(s, kind, address)),
                           None)) is not None:
            adopted.remove(sock)
        elif kind == "unix":
            sock = _unix_socket(address, backlog, socket_mode, gid)  # type: ignore[arg-type]
            owned = True
        else:
            host, port = address  # type: ignore[misc]
            sock = _tcp_socket(host, port, backlog, reuse_port)
        listeners.append(_describe(sock, spec, owned, protocol, tls))
    # Inherited sockets nobody asked for: keep serving them (systemd chose them).
    listeners.extend(_describe(sock, f"fd://{sock.fileno()}") for sock in adopted)
    for listener in listeners:
        listener.sock.setblocking(False)
        if listener.sock.family != socket.AF_UNIX:
            _defer_accept(listener.sock)
            listener.nodelay = _no_delay(listener.sock)
    return listeners


def _no_delay(sock: socket.socket) -> bool:
    """TCP_NODELAY on the listening socket, which Linux copies to every connection it
    accepts: a system call once, not once per connection. Whether it took."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


def _defer_accept(sock: socket.socket) -> None:
    """Hand a connection to accept() only once its first bytes have arrived (nginx's
    ``deferred``). A worker that accepted a connection before its request came would hold
    it, unserved, through whatever request it serves next; with the bytes already here, the
    worker reads the request in the same turn as the accept. A client that sends nothing is
    still handed over after about this many seconds, and the header timeout applies."""
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)


def _describe(sock: socket.socket, spec: str, owned: bool = False,
              protocol: str = "http", tls: bool | None = None) -> Listener:
    listener = Listener(sock, spec, protocol=protocol, tls=tls)
    if sock.family == socket.AF_UNIX:
        listener.unix_path = sock.getsockname() or None
        listener.owned_path = owned
        # PEP 3333: SERVER_NAME and SERVER_PORT "can never be empty strings". A unix
        # socket has neither; apps that build URLs use HTTP_HOST first anyway.
        listener.server_name, listener.server_port = "localhost", "80"
    else:
        host, port = sock.getsockname()[:2]
        listener.server_name, listener.server_port = host, str(port)
    return listener


def close_listeners(listeners: list[Listener], unlink: bool = True) -> None:
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.sock.close()
        if unlink and listener.owned_path and listener.unix_path:
            with contextlib.suppress(OSError):
                os.unlink(listener.unix_path)


def set_inheritable(listeners: list[Listener]) -> str:
    """Mark the sockets inheritable for a USR2 successor; the env value naming them."""
    for listener in listeners:
        os.set_inheritable(listener.fileno(), True)
    return ",".join(str(listener.fileno()) for listener in listeners)

