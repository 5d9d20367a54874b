"""TLS served by forkwsgi itself, seen from real clients (curl, requests, ssl sockets).

The certificates are made here with the openssl command line: a CA, two server
certificates for 127.0.0.1 (the second replaces the first in the HUP test) and a
client certificate. Every server is the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import FORKWSGI, REPO, free_port, kill_tree, listening, wait_until
from tests.http_client import Reader

pytestmark = pytest.mark.process

GET = b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n"


# --- certificates ------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]  # (certificate, key), CN server-one
    server2: tuple[Path, Path]  # CN server-two, same CA
    client: tuple[Path, Path]
    other_client: tuple[Path, Path]  # signed by a CA the server does not know


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                   timeout=60)


def _key_and_csr(directory: Path, name: str, subject: str) -> None:
    _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject)


def _ca(directory: Path, name: str) -> None:
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}")


def _sign(directory: Path, name: str, ca: str, extensions: str) -> tuple[Path, Path]:
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
             "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext")
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed")
    directory = tmp_path_factory.mktemp("pki")
    _ca(directory, "test-ca")
    _ca(directory, "other-ca")
    server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    for name in ("server-one", "server-two", "client", "other-client"):
        _key_and_csr(directory, name, f"/CN={name}")
    client_ext = "extendedKeyUsage=clientAuth"
    return Pki(directory / "test-ca.crt",
               _sign(directory, "server-one", "test-ca", server_ext),
               _sign(directory, "server-two", "test-ca", server_ext),
               _sign(directory, "client", "test-ca", client_ext),
               _sign(directory, "other-client", "other-ca", client_ext))


def tls_args(pki: Pki, *more: str) -> tuple[str, ...]:
    cert, key = pki.server
    return ("--certfile", str(cert), "--keyfile", str(key), *more)


def client_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def tls_connect(server, context: ssl.SSLContext, **kwargs) -> ssl.SSLSocket:
    raw = socket.create_connection((server.host, server.port), timeout=30)
    return context.wrap_socket(raw, server_hostname=server.host, **kwargs)


def environ_of(reply) -> dict:
    assert reply.status == 200, reply
    return json.loads(reply.body)


def session(pki: Pki) -> requests.Session:
    client = requests.Session()
    client.trust_env = False  # no proxy from the environment between us and the server
    client.verify = str(pki.ca)
    return client


def peer_name(server, pki: Pki) -> str:
    with tls_connect(server, client_context(pki)) as sock:
        subject = dict(pair[0] for pair in sock.getpeercert()["subject"])
    return subject["commonName"]


# --- what a client sees ------------------------------------------------------------------------


def test_curl_and_requests_verify_the_certificate_and_see_https(serve, pki):
    server = serve("tests.apps:echo", *tls_args(pki))
    url = f"https://{server.host}:{server.port}/path?q=1"
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(pki.ca), url],
                             capture_output=True, timeout=30, check=True).stdout
        assert json.loads(out)["PATH_INFO"] == "/path"
    response = session(pki).get(url, timeout=30)
    assert response.status_code == 200
    env = response.json()
    assert env["wsgi.url_scheme"] == "https"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/path", "q=1")
    with pytest.raises(requests.exceptions.SSLError):  # not signed by a CA it trusts
        requests.get(url, verify=True, timeout=30)


def test_the_handshake_offers_tls_1_2_at_least_and_alpn_http_1_1(serve, pki):
    server = serve("tests.apps:hello", *tls_args(pki))
    context = client_context(pki)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(server, context) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    old = client_context(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # or the client itself refuses to offer TLS 1.1
    with pytest.raises(ssl.SSLError) as refused, tls_connect(server, old):
        pass
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # the server's answer


def test_keep_alive_and_pipelining_over_tls(serve, pki):
    server = serve("tests.apps:echo", *tls_args(pki))
    with tls_connect(server, client_context(pki)) as sock:
        reader = Reader(sock)
        ports = set()
        for index in range(10):
            sock.sendall(GET % b"/n/%d" % index)
            env = environ_of(reader.read())
            assert env["PATH_INFO"] == f"/n/{index}"
            ports.add(env["REMOTE_PORT"])
        assert len(ports) == 1
        sock.sendall(b"".join(GET % f"/p{i}".encode() for i in range(5))
                     + b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                     + GET % b"/last")
        paths = [environ_of(reader.read())["PATH_INFO"] for _ in range(5)]
        assert paths == [f"/p{i}" for i in range(5)]
        post = environ_of(reader.read())
        assert (post["PATH_INFO"], post["body"]) == ("/post", "hello")
        assert environ_of(reader.read())["PATH_INFO"] == "/last"


def test_a_request_openssl_holds_decrypted_is_served_at_once(serve, pki):
    """The app reads its body from the socket (no buffering) exactly to its end; the next
    request came in the same TLS record, so OpenSSL has it decrypted and the kernel has
    nothing: no epoll event will ever announce it. It must be answered now, not at the
    keep-alive deadline (60 s here, past the client's timeout)."""
    server = serve("tests.apps:echo", *tls_args(pki), "--no-request-buffering",
                   "--keep-alive", "60")
    with tls_connect(server, client_context(pki)) as sock:
        sock.sendall(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        sock.sendall(b"hello" + GET % b"/second")  # one record: the body and what follows
        reader = Reader(sock)
        assert environ_of(reader.read())["body"] == "hello"
        assert environ_of(reader.read())["PATH_INFO"] == "/second"


def test_an_http_listener_beside_a_tls_one_stays_plain(serve, pki):
    plain_port = free_port()
    server = serve("tests.apps:echo", *tls_args(pki), "-b", f"http://127.0.0.1:{plain_port}")
    assert session(pki).get(f"https://127.0.0.1:{server.port}/",
                            timeout=30).json()["wsgi.url_scheme"] == "https"
    wait_until(lambda: listening("127.0.0.1", plain_port, server.proc), what="the plain port")
    plain = requests.get(f"http://127.0.0.1:{plain_port}/", timeout=30)
    assert plain.json()["wsgi.url_scheme"] == "http"


# --- client certificates -----------------------------------------------------------------------


def _request_status(server, context: ssl.SSLContext) -> int:
    """The status of a GET, or 0 when the handshake (or the first read, in TLS 1.3, where
    the server judges the client's certificate after the client thinks it is done) fails."""
    try:
        with tls_connect(server, context) as sock:
            sock.sendall(GET % b"/")
            return Reader(sock).read().status
    except (ssl.SSLError, ConnectionError, EOFError):
        return 0


def test_cert_reqs_required_refuses_a_client_without_a_valid_certificate(serve, pki):
    server = serve("tests.apps:echo", *tls_args(pki, "--cert-reqs", "required",
                                                "--ca-certs", str(pki.ca)))
    assert _request_status(server, client_context(pki)) == 0
    assert _request_status(server, client_context(pki, pki.other_client)) == 0
    assert _request_status(server, client_context(pki, pki.client)) == 200
    assert server.proc.poll() is None
    assert _request_status(server, client_context(pki, pki.client)) == 200


def test_cert_reqs_optional_lets_a_client_without_one_in(serve, pki):
    server = serve("tests.apps:echo", *tls_args(pki, "--cert-reqs", "optional",
                                                "--ca-certs", str(pki.ca)))
    assert _request_status(server, client_context(pki)) == 200
    assert _request_status(server, client_context(pki, pki.client)) == 200
    assert _request_status(server, client_context(pki, pki.other_client)) == 0


# --- the handshake in the event loop ------------------------------------------------------------


def _client_hello(pki: Pki) -> bytes:
    """A real ClientHello, as a client's first flight."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        sock.settimeout(30)


def test_stalled_handshakes_do_not_delay_other_clients(serve, pki):
    """One worker; one client opens TCP and sends nothing, another sends half a
    ClientHello and stops. A third client is served meanwhile."""
    server = serve("tests.apps:echo", *tls_args(pki, "--header-timeout", "60"))
    hello = _client_hello(pki)
    silent = socket.create_connection((server.host, server.port), timeout=30)
    half = socket.create_connection((server.host, server.port), timeout=30)
    with silent, half:
        half.sendall(hello[:len(hello) // 2])
        for _ in range(3):
            assert session(pki).get(f"https://{server.host}:{server.port}/",
                                    timeout=30).status_code == 200
        assert _still_open(silent) and _still_open(half)


def read_until_closed(sock: socket.socket) -> None:
    """Return once the server has closed the connection (reading through what it sends
    first, a TLS alert say); the socket's timeout fails the test."""
    with contextlib.suppress(ConnectionError):
        while sock.recv(4096):
            pass


def test_stalled_handshakes_are_dropped_at_the_header_timeout(serve, pki):
    server = serve("tests.apps:echo", *tls_args(pki, "--header-timeout", "2"))
    hello = _client_hello(pki)
    silent = socket.create_connection((server.host, server.port), timeout=60)
    half = socket.create_connection((server.host, server.port), timeout=60)
    with silent, half:
        half.sendall(hello[:len(hello) // 2])
        read_until_closed(half)
        read_until_closed(silent)
    server.wait_log("not done in 2s: closed")
    assert session(pki).get(f"https://{server.host}:{server.port}/",
                            timeout=30).status_code == 200


def test_a_server_flight_bigger_than_the_socket_buffer_waits_for_writable(pki, tmp_path):
    """A certificate chain of ~90 KB, through a listening socket whose accepted sockets
    have a 4 KiB send buffer: the handshake must wait for the socket to be writable
    (EPOLLOUT), several times, and still end. The socket is made here (small SO_SNDBUF,
    which accepted sockets inherit) and handed over as fd://N."""
    cert, key = pki.server
    chain = tmp_path / "chain.pem"
    filler = pki.ca.read_bytes()
    chain.write_bytes(cert.read_bytes() + filler * (90_000 // len(filler)))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    log_path = tmp_path / "server.log"
    env = {**__import__("os").environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*FORKWSGI, "-b", f"fd://{listener.fileno()}", "-w", "1",
                                 "--certfile", str(chain), "--keyfile", str(key),
                                 "tests.apps:hello"], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO, pass_fds=[listener.fileno()],
                                start_new_session=True)
    listener.close()
    try:
        wait_until(lambda: "Worker" in log_path.read_text() and
                   listening("127.0.0.1", port, proc), what="the server")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(30)
        raw.connect(("127.0.0.1", port))
        with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(GET % b"/")
            assert Reader(sock).read().body == b"Hello, world!"
    finally:
        kill_tree(proc.pid)
        proc.wait(10)


def _pid_of(reply) -> int:
    assert reply.status == 200, reply
    fields = dict(part.split("=", 1) for part in reply.body.decode().split())
    return int(fields["pid"])


def test_a_tls_connection_is_never_handed_to_another_worker(serve, pki, tmp_path):
    """Two workers; a and b are TLS connections of worker x. While a's request sleeps in
    the app, handoff would move b, idle, to the free worker, as a descriptor and its
    bytes: its TLS state cannot go with it, so b stays and x answers it after a."""
    server = serve("tests.loop_apps:pids", *tls_args(pki), workers=2)
    context = client_context(pki)
    socks: list[ssl.SSLSocket] = []
    by_worker: dict[int, list[tuple[ssl.SSLSocket, Reader]]] = {}
    try:
        while not any(len(conns) >= 2 for conns in by_worker.values()):
            sock = tls_connect(server, context)
            socks.append(sock)
            reader = Reader(sock)
            sock.sendall(GET % b"/pid")
            by_worker.setdefault(_pid_of(reader.read()), []).append((sock, reader))
        x, ((a, a_reader), (b, b_reader), *_) = next(
            (pid, conns) for pid, conns in by_worker.items() if len(conns) >= 2)
        marker = tmp_path / "slow-started"
        a.sendall(GET % f"/slow?marker={marker}&seconds=1".encode())
        wait_until(marker.exists, timeout=10, what="the slow request to be inside the app")
        b.sendall(GET % b"/pid?n=1")
        assert _pid_of(b_reader.read()) == x
        assert _pid_of(a_reader.read()) == x
    finally:
        for sock in socks:
            sock.close()


# --- reload, responses, errors ------------------------------------------------------------------


def test_hup_serves_a_replaced_certificate(serve, pki, tmp_path):
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki.server[0], cert)
    shutil.copy(pki.server[1], key)
    server = serve("tests.apps:hello", "--certfile", str(cert), "--keyfile", str(key))
    assert peer_name(server, pki) == "server-one"
    shutil.copy(pki.server2[0], cert)
    shutil.copy(pki.server2[1], key)
    assert peer_name(server, pki) == "server-one"  # read at start, not per connection
    server.signal(signal.SIGHUP)
    wait_until(lambda: peer_name(server, pki) == "server-two", what="the new certificate")


def test_a_hup_with_a_broken_certificate_keeps_the_running_one(serve, pki, tmp_path):
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki.server[0], cert)
    shutil.copy(pki.server[1], key)
    server = serve("tests.apps:hello", "--certfile", str(cert), "--keyfile", str(key))
    shutil.copy(pki.server2[1], key)  # the new key, the old certificate: no match
    server.signal(signal.SIGHUP)
    server.wait_log("reload failed, keeping the running configuration")
    assert "does not match the certificate" in server.log()
    assert peer_name(server, pki) == "server-one"


_DOWNLOAD_APP = '''
import os


def download(environ, start_response):
    """The file named by TLS_TEST_FILE: through wsgi.file_wrapper (sendfile on plain
    HTTP), or with /chunked as an iterable of unknown length (chunked framing)."""
    path = os.environ["TLS_TEST_FILE"]
    if environ["PATH_INFO"] == "/chunked":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        with open(path, "rb") as fh:
            data = fh.read()
        return (data[i:i + 50000] for i in range(0, len(data), 50000))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)
'''


def test_file_wrapper_and_chunked_responses_arrive_intact(serve, pki, tmp_path):
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    (tmp_path / "tls_download.py").write_text(textwrap.dedent(_DOWNLOAD_APP))
    server = serve("tls_download:download", *tls_args(pki), "--pythonpath", str(tmp_path),
                   env={"TLS_TEST_FILE": str(path)})
    client = session(pki)
    for suffix in ("/file", "/chunked", "/file"):
        response = client.get(f"https://{server.host}:{server.port}{suffix}", timeout=60)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()


def test_a_response_delimited_by_the_close_ends_with_close_notify(serve, pki):
    """HTTP/1.0 and no length: the close ends the body, and over TLS a close_notify tells
    the client the end is real (a client that does not suppress ragged EOFs fails without
    one)."""
    server = serve("tests.apps:stream", *tls_args(pki))
    with tls_connect(server, client_context(pki), suppress_ragged_eofs=False) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    assert b"".join(chunks).endswith(b"part 4\n")


def test_a_response_the_app_cut_is_not_a_clean_end(serve, pki):
    server = serve("tests.apps:fail_after_headers", *tls_args(pki))
    with tls_connect(server, client_context(pki), suppress_ragged_eofs=False) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            while sock.recv(65536):
                pass


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: test\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello",  # a handshake record that is no ClientHello
    b"\x00" * 100,
])
def test_a_non_tls_client_is_closed_and_the_worker_serves_on(serve, pki, garbage):
    server = serve("tests.apps:echo", *tls_args(pki))
    client = session(pki)
    url = f"https://{server.host}:{server.port}/"
    pid = client.get(url, timeout=30).json()["pid"]
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(garbage)
        read_until_closed(sock)
    assert client.get(url, timeout=30).json()["pid"] == pid
    assert server.proc.poll() is None


# --- settings ----------------------------------------------------------------------------------


def _forkwsgi(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    return subprocess.run([sys.executable, "-m", "forkwsgi", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=env)


@pytest.mark.parametrize("case, setting", [
    ("missing", "certfile"),
    ("mismatch", "keyfile"),
    ("cert_reqs", "cert_reqs"),
    ("required_without_ca", "cert_reqs"),
    ("https_without_cert", "bind"),
])
@pytest.mark.parametrize("check", [True, False])
def test_a_bad_tls_setting_is_one_line_naming_it_and_status_2(pki, tmp_path, case, setting,
                                                              check):
    cert, key = pki.server
    args = {
        "missing": ["--certfile", str(tmp_path / "nope.pem"), "--keyfile", str(key)],
        "mismatch": ["--certfile", str(cert), "--keyfile", str(pki.server2[1])],
        "cert_reqs": ["--certfile", str(cert), "--keyfile", str(key), "--cert-reqs", "maybe"],
        "required_without_ca": ["--certfile", str(cert), "--keyfile", str(key),
                                "--cert-reqs", "required"],
        "https_without_cert": ["-b", f"https://127.0.0.1:{free_port()}"],
    }[case]
    result = _forkwsgi(*(["--check-config"] if check else []), *args,
                       "forkwsgi.examples.hello:app", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"forkwsgi: error: invalid value for setting '{setting}': ")


def test_a_gunicorn_config_keeps_its_tls_settings(tmp_path, pki):
    from forkwsgi.config import resolve

    cert, key = pki.server
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(f"""\
        import ssl

        certfile = {str(cert)!r}
        keyfile = {str(key)!r}
        ca_certs = {str(pki.ca)!r}
        cert_reqs = ssl.CERT_REQUIRED
        do_handshake_on_connect = False
        """))
    cfg = resolve({}, "forkwsgi.examples.hello:app", "gunicorn.conf.py", {},
                  search_dir=str(tmp_path))
    assert (cfg.certfile, cfg.keyfile, cfg.cert_reqs) == (str(cert), str(key), "required")
    assert cfg.tls_context.verify_mode == ssl.CERT_REQUIRED
    assert "do_handshake_on_connect" in cfg.warnings[0]


def test_the_deployment_recipe_serves_https_and_reload_picks_up_a_renewed_certificate(
        serve, pki, tmp_path):
    """docs/deployment.md's "TLS in forkwsgi": the config file it shows, run with this
    test's certificate paths and ports, then `forkwsgi reload` after a renewal."""
    recipe = (REPO / "conf" / "forkwsgi.tls.toml").read_text()
    doc = (REPO / "docs" / "deployment.md").read_text()
    assert recipe in doc
    assert "forkwsgi reload --pid /run/forkwsgi/forkwsgi.pid" in doc
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    shutil.copy(pki.server[0], cert)
    shutil.copy(pki.server[1], key)
    tls_port, plain_port = free_port(), free_port()
    pidfile = tmp_path / "forkwsgi.pid"
    config = tmp_path / "tls.toml"
    config.write_text(recipe.replace("/etc/forkwsgi/fullchain.pem", str(cert))
                      .replace("/etc/forkwsgi/privkey.pem", str(key))
                      .replace("/run/forkwsgi/forkwsgi.pid", str(pidfile))
                      .replace("0.0.0.0:8443", f"127.0.0.1:{tls_port}")
                      .replace("127.0.0.1:8080", f"127.0.0.1:{plain_port}"))
    server = serve("tests.apps:echo", "-c", str(config), bind=False, workers=2, wait=False)
    server.port = tls_port
    wait_until(lambda: listening("127.0.0.1", plain_port, server.proc), what="listening")
    server.wait_workers(2)
    with session(pki) as client:
        https = client.get(f"https://127.0.0.1:{tls_port}/", timeout=10)
        assert https.json()["wsgi.url_scheme"] == "https"
    plain = requests.get(f"http://127.0.0.1:{plain_port}/", timeout=10)
    assert plain.json()["wsgi.url_scheme"] == "http"
    assert peer_name(server, pki) == "server-one"
    shutil.copy(pki.server2[0], cert)
    shutil.copy(pki.server2[1], key)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    out = subprocess.run([*FORKWSGI, "reload", "--pid", str(pidfile)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("reloaded: 2 new worker(s)"), out
    assert peer_name(server, pki) == "server-two"
