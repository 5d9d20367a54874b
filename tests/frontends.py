"""Real front-ends for the tests (nginx, Apache httpd, HAProxy), and forkwsgi behind them.

What it owns: finding each front-end (and the httpd modules a test loads), the
part of a config every front-end needs to run out of one directory (pid, logs,
temp files, the user httpd switches to as root), starting one in a session of
its own on a free loopback port, polling until it listens (failing at once
with its logs when it exits), the error-level lines of its error log, killing
its process group when the test ends; forkwsgi started on a given ``-b`` for a
front-end to reach, and one request through a front-end.

What it must never do: sleep instead of polling, leave a front-end running
after its test, write outside the directory it is given, start a process for a
test not marked ``process`` (the ``frontends`` fixture in conftest marks its
tests; a module-scoped user is in a marked module), or decide what a test
asserts beyond what it is asked.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Server, free_port, wait_until

# Any 127/8 address is loopback on Linux: the front-end reaches forkwsgi from 127.0.0.1,
# so "the client's address" and "the proxy's address" are values a test can tell apart.
CLIENT_ADDR = "127.0.0.2"


def _executable(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.access(p, os.X_OK)),
        None)


NGINX = _executable("nginx")
HTTPD = _executable("apache2") or _executable("httpd")
HAPROXY = _executable("haproxy")
HTTPD_MODULE_DIRS = ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules",
                     "/usr/lib/httpd/modules", "/usr/libexec/apache2")
HTTPD_BASE_MODULES = {"mpm_prefork_module": "mod_mpm_prefork.so",
                      "authz_core_module": "mod_authz_core.so"}
# nginx writes "[error]", httpd "[proxy:error]" (or "[:error]" for a module without a name).
PROBLEM = re.compile(r"[\[:](error|crit|alert|emerg)\]")


# --- configs -----------------------------------------------------------------------------------


def nginx_conf(directory: Path, http: str | None, top: str = "") -> str:
    """A whole nginx.conf: one foreground process with its pid, logs and temp files in
    ``directory``; ``top`` in the main context, ``http`` (unless None) inside ``http {}``."""
    d = directory
    conf = (f"{top}\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
            "events { worker_connections 256; }\n")
    if http is None:
        return conf
    return conf + f"""\
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
{http}
}}
"""


def httpd_user() -> tuple[int, int] | None:
    """The (uid, gid) httpd switches to: nobody as root, else None (it stays who it is)."""
    if os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user for httpd to switch to")
    return nobody.pw_uid, nobody.pw_gid


def httpd_conf(directory: Path, port: int, modules: Mapping[str, str], body: str) -> str:
    """A whole httpd.conf listening on 127.0.0.1:PORT, loading ``modules`` (name: file)
    after the prefork MPM and authz_core, with its pid, log, runtime files and mutexes in
    ``directory``, then ``body``. Skips the test when httpd or a module is missing."""
    needed = {**HTTPD_BASE_MODULES, **modules}
    module_dir = next((d for d in HTTPD_MODULE_DIRS
                       if all(os.path.exists(os.path.join(d, so)) for so in needed.values())),
                      None)
    if HTTPD is None or module_dir is None:
        pytest.skip(f"apache2 with {', '.join(modules.values())} is not installed")
    user = httpd_user()
    return "\n".join([
        f"ServerRoot {directory}", "ServerName localhost", f"Listen 127.0.0.1:{port}",
        *(f"LoadModule {name} {module_dir}/{so}" for name, so in needed.items()),
        *([f"User #{user[0]}", f"Group #{user[1]}"] if user else []),
        f"PidFile {directory}/httpd.pid", f"ErrorLog {directory}/error.log", "LogLevel warn",
        f"DefaultRuntimeDir {directory}", f"Mutex file:{directory} default", body, ""])


@functools.cache
def _nginx_takes_error_log_flag() -> bool:
    """``-e FILE`` (nginx >= 1.19.5) keeps nginx off the compiled-in error log path even
    before it reads the config; older versions only warn if that path is not writable."""
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    version = tuple(int(part) for part in out.rsplit("/", 1)[-1].split()[0].split("."))
    return version >= (1, 19, 5)


# --- running them ------------------------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Frontend:
    """A running front-end: where it listens, and the directory of its config and logs."""

    name: str
    proc: subprocess.Popen
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Its error log (nginx's, httpd's; HAProxy writes none)."""
        return _read(self.directory / "error.log")

    def wait_log(self, text: str) -> str:
        wait_until(lambda: text in self.log(), what=f"{text!r} in {self.name}'s error log")
        return self.log()

    def problems(self) -> list[str]:
        """The error log's lines at level error or worse (upstream resets, bad packets...)."""
        return [line for line in self.log().splitlines() if PROBLEM.search(line)]

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with status {self.proc.returncode}:\n"
                                 f"{_read(self.directory / 'stderr.log')}{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class Frontends:
    """The front-ends started for one test (or module), each in a new directory under
    ``base``; leaving the ``with`` block kills them.

    Config texts are ``str.format`` templates: ``{port}`` is where the front-end listens,
    the keyword arguments fill the rest."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Frontend] = []
        self._made = 0

    def __enter__(self) -> Frontends:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def nginx(self, http: str | None = None, top: str = "", **values: object) -> Frontend:
        """nginx with ``http`` inside ``http {}`` and ``top`` in the main context."""
        if NGINX is None:
            pytest.skip("nginx is not installed")
        directory, port = self._place("nginx")
        conf = directory / "nginx.conf"
        conf.write_text(nginx_conf(directory, None if http is None else
                                   http.format(port=port, **values),
                                   top.format(port=port, **values)))
        flag = ["-e", str(directory / "error.log")] if _nginx_takes_error_log_flag() else []
        return self._start("nginx", [NGINX, "-p", str(directory), *flag, "-c", str(conf)],
                           directory, port)

    def httpd(self, modules: Mapping[str, str], body: str, **values: object) -> Frontend:
        """httpd in one process (``-X``) loading ``modules``, ``body`` after the preamble."""
        directory, port = self._place("httpd")
        conf = directory / "httpd.conf"
        conf.write_text(httpd_conf(directory, port, modules, body.format(port=port, **values)))
        return self._start("httpd", [HTTPD, "-X", "-f", str(conf)], directory, port)

    def haproxy(self, conf_text: str, **values: object) -> Frontend:
        """HAProxy in the foreground (``-db``) with the whole config ``conf_text``."""
        if HAPROXY is None:
            pytest.skip("haproxy is not installed")
        directory, port = self._place("haproxy")
        conf = directory / "haproxy.cfg"
        conf.write_text(conf_text.format(port=port, **values))
        return self._start("haproxy", [HAPROXY, "-db", "-f", str(conf)], directory, port)

    def _place(self, name: str) -> tuple[Path, int]:
        self._made += 1
        directory = self.base / f"{name}-{self._made}"
        directory.mkdir()
        return directory, free_port()

    def _start(self, name: str, command: list[str], directory: Path, port: int) -> Frontend:
        with open(directory / "stderr.log", "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        front = Frontend(name, proc, port, directory)
        self.started.append(front)
        wait_until(front.listening, what=f"{name} to listen")
        return front

    def stop(self) -> None:
        for front in self.started:
            # start_new_session made it the leader of a group of its own, which takes what
            # it forked (httpd's cgid daemon) along. Once reaped, its PID is no longer ours.
            if front.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(front.proc.pid, signal.SIGKILL)
            front.proc.wait(10)


# --- forkwsgi behind them, and requests through them -------------------------------------------


def serve_on(serve: Callable[..., Server], bind: str, app: str = "tests.gateway_apps:app",
             *args: str, workers: int = 1) -> Server:
    """forkwsgi serving ``app`` on ``-b BIND`` (instead of serve's own), its workers up.

    A ``BIND`` that is a scheme alone (``"fastcgi://"``) gets a free loopback port, which
    becomes the server's ``port``."""
    port = free_port() if bind.endswith("://") else None
    server = serve(app, "-b", f"{bind}127.0.0.1:{port}" if port else bind, *args, bind=False,
                   workers=workers, wait=False)
    if port:
        server.port = port
    server.wait_log("Arbiter booted")
    server.wait_workers(workers)
    return server


def fetch(port: int, method: str = "GET", path: str = "/", body=None,
          headers: dict[str, str] | None = None, *, host: str | None = "app.example",
          source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:PORT, from ``source`` if given: (status, headers, body).
    ``Host`` is ``host`` (None: http.client's own, the address asked)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20,
                                      source_address=(source, 0) if source else None)
    try:
        headers = {**({"Host": host} if host else {}), **(headers or {})}
        conn.request(method, path, body=body, headers=headers,
                     encode_chunked="Transfer-Encoding" in headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def saw(port: int, method: str = "GET", path: str = "/", body=None,
        headers: dict[str, str] | None = None, **how) -> dict:
    """What an echoing app saw of one request (its JSON answer), the answer being a 200."""
    status, _, payload = fetch(port, method, path, body, headers, **how)
    assert status == 200, payload[:2000]
    return json.loads(payload)
