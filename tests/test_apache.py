"""forkwsgi behind Apache httpd (mod_proxy + mod_proxy_http).

A minimal, self-contained httpd.conf under tmp_path loads only the modules
it needs from the system module directory and runs one process in the
foreground (``-X``). Like test_nginx.py, the client connects from 127.0.0.2
so the client's address and the proxy's (127.0.0.1) differ. Skipped when
apache2/httpd or its proxy modules are missing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess

import pytest

from tests.conftest import free_port, wait_until

CLIENT_ADDR = "127.0.0.2"
MODULE_DIRS = ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules",
               "/usr/libexec/apache2")
MODULES = {"mpm_prefork_module": "mod_mpm_prefork.so", "authz_core_module": "mod_authz_core.so",
           "headers_module": "mod_headers.so", "proxy_module": "mod_proxy.so",
           "proxy_http_module": "mod_proxy_http.so"}


def find_httpd() -> tuple[str, str] | None:
    """The httpd binary and the directory holding every module we load, or None."""
    binary = next((found for name in ("apache2", "httpd")
                   for found in [shutil.which(name) or f"/usr/sbin/{name}"]
                   if os.access(found, os.X_OK)), None)
    modules = next((d for d in MODULE_DIRS
                    if all(os.path.exists(os.path.join(d, so)) for so in MODULES.values())), None)
    return (binary, modules) if binary and modules else None


HTTPD = find_httpd()
pytestmark = pytest.mark.skipif(HTTPD is None, reason="apache2 with mod_proxy_http not installed")

CONF = """\
ServerRoot {d}
ServerName localhost
Listen 127.0.0.1:{port}
{load_modules}
{user}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel warn
DefaultRuntimeDir {d}
Mutex file:{d} default
ProxyPass / http://127.0.0.1:{upstream}/
ProxyPreserveHost On
RequestHeader set X-Forwarded-Proto https
"""


def _user_lines() -> str:
    """As root httpd must switch to someone else; otherwise User/Group are ignored."""
    if os.geteuid() != 0:
        return ""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user for httpd to switch to")
    return f"User #{nobody.pw_uid}\nGroup #{nobody.pw_gid}"


@pytest.fixture
def apache(tmp_path, serve):
    """forkwsgi serving tests.apps:echo, and httpd proxying to it; yields httpd's port."""
    server = serve("tests.apps:echo")
    binary, module_dir = HTTPD
    port = free_port()
    conf = tmp_path / "httpd.conf"
    conf.write_text(CONF.format(
        d=tmp_path, port=port, upstream=server.port, user=_user_lines(),
        load_modules="\n".join(f"LoadModule {name} {module_dir}/{so}"
                               for name, so in MODULES.items())))
    with open(tmp_path / "stderr.log", "wb") as out:
        proc = subprocess.Popen([binary, "-X", "-f", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"httpd exited with status {proc.returncode}:\n"
                                 f"{(tmp_path / 'stderr.log').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        wait_until(listening, what="httpd to listen")
        yield port
        error_log = (tmp_path / "error.log").read_text(errors="replace")
        problems = [line for line in error_log.splitlines()
                    if any(f":{level}]" in line for level in ("error", "crit", "alert", "emerg"))]
        assert problems == [], error_log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            server.signal(signal.SIGQUIT)  # the arbiter reaps its worker: fast kill-tree
            server.wait_exit(10)


def echo_via(port: int, method: str = "GET", path: str = "/", body=None,
             headers: dict[str, str] | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(CLIENT_ADDR, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200, payload[:2000]
        return json.loads(payload)
    finally:
        conn.close()


def test_get_through_apache_with_forwarded_for(apache):
    seen = echo_via(apache, path="/a/b?c=d", headers={"X-Forwarded-For": "6.6.6.6"})
    assert seen["PATH_INFO"] == "/a/b"
    assert seen["QUERY_STRING"] == "c=d"
    # mod_proxy appends the client address: the right-most entry is what httpd vouches for.
    assert seen["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT_ADDR}"
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTP_HOST"] == f"127.0.0.1:{apache}"


def test_post_bodies_through_apache(apache):
    data = os.urandom(512 * 1024)
    seen = echo_via(apache, "POST", "/upload", data,
                    {"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["body"].encode("latin-1") == data
    pieces = [b"first,", b"second,", os.urandom(70000)]
    seen = echo_via(apache, "POST", "/chunked", iter(pieces))  # http.client sends it chunked
    assert seen["body"].encode("latin-1") == b"".join(pieces)
