"""``forkwsgi cgi APP``: one request as a CGI script.

First the command alone, run as a subprocess with a CGI environment and a body
on stdin, as a web server runs it; then as a real CGI script behind Apache
httpd's mod_cgid, with a minimal httpd.conf on a free loopback port.

As root, httpd runs CGI scripts as nobody, who may not be able to run this
interpreter (a Python under a private home directory). The script then runs
the system's Python of the same version, with this environment's
site-packages on its path; without one nobody can run, the Apache tests are
skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import pytest

from .conftest import FORKWSGI, REPO
from .frontends import Frontend, Frontends, fetch, httpd_user, saw

pytestmark = pytest.mark.process

REQUEST = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/cgi-bin/app.cgi", "PATH_INFO": "",
           "QUERY_STRING": "", "SERVER_NAME": "example.org", "SERVER_PORT": "80",
           "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
           "REMOTE_ADDR": "192.0.2.1"}
ERROR_BODY = b"A server error occurred.  Please contact the administrator."


class Answer:
    """What a CGI script wrote: the status, the header fields and the body."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.exit_status = proc.returncode
        self.stdout = proc.stdout
        self.err = proc.stderr.decode(errors="replace")
        head, _, self.body = proc.stdout.partition(b"\r\n\r\n")
        fields = [line.split(b":", 1) for line in head.split(b"\r\n") if b":" in line]
        self.headers = {name.decode().lower(): value.strip().decode() for name, value in fields}
        self.status = self.headers.get("status", "")

    def json(self) -> dict:
        assert self.status == "200 OK", (self.stdout, self.err)
        return json.loads(self.body)


@pytest.fixture
def cgi(tmp_path: Path):
    """``cgi(*args, environ={}, body=b'', cwd=tmp_path) -> Answer``: ``forkwsgi cgi *args``
    with REQUEST (overlaid with ``environ``) in its environment, as a web server runs it."""

    def run(*args: str, environ: dict | None = None, body: bytes = b"",
            cwd: Path | None = None, request: bool = True) -> Answer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORKWSGI_")}
        env.update(REQUEST if request else {})
        env.update(environ or {})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
        proc = subprocess.run([*FORKWSGI, "cgi", *args], input=body, capture_output=True,
                              env=env, cwd=cwd or tmp_path, timeout=60)
        return Answer(proc)

    return run


# --- the command alone -----------------------------------------------------------------------


def test_get_with_path_info_and_query_string(cgi):
    answer = cgi("tests.apps:echo", environ={"PATH_INFO": "/some/path", "QUERY_STRING": "x=1"})
    seen = answer.json()
    assert answer.exit_status == 0
    assert answer.err == ""
    assert (seen["REQUEST_METHOD"], seen["SCRIPT_NAME"], seen["PATH_INFO"],
            seen["QUERY_STRING"]) == ("GET", "/cgi-bin/app.cgi", "/some/path", "x=1")
    assert (seen["wsgi.run_once"], seen["wsgi.multiprocess"], seen["wsgi.multithread"]) == (
        True, True, False)
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.body))


def test_mounted_apps_split_the_path_under_the_scripts_own_name(cgi):
    seen = cgi("--mount", "/api=tests.apps:echo", environ={"PATH_INFO": "/api/x"}).json()
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/cgi-bin/app.cgi/api", "/x")
    answer = cgi("--mount", "/api=tests.apps:echo", environ={"PATH_INFO": "/elsewhere"})
    assert answer.status.startswith("404") and answer.body == b"Not Found\n"


def test_post_body_is_stdin(cgi):
    data = os.urandom(300_000)
    seen = cgi("tests.apps:echo", body=data, environ={
        "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(data)),
        "CONTENT_TYPE": "application/octet-stream"}).json()
    assert seen["body"].encode("latin-1") == data
    assert seen["CONTENT_TYPE"] == "application/octet-stream"


def test_path_bytes_reach_the_app_as_latin_1(cgi):
    # The web server has percent-decoded the path: PATH_INFO holds its raw bytes, which
    # PEP 3333 hands over one byte a character, invalid UTF-8 included.
    seen = cgi("tests.apps:echo", environ={"PATH_INFO": b"/caf\xc3\xa9/\xff"}).json()
    assert seen["PATH_INFO"].encode("latin-1") == b"/caf\xc3\xa9/\xff"


def test_app_that_raises_is_a_500_with_the_traceback_on_stderr(cgi):
    answer = cgi("tests.apps:boom")
    assert answer.status.startswith("500 ")
    assert answer.body == ERROR_BODY
    assert "Traceback (most recent call last)" in answer.err
    assert "RuntimeError: boom: the app failed on purpose" in answer.err
    assert answer.exit_status == 1


def test_missing_module_is_one_line_and_a_500(cgi):
    answer = cgi("tests.no_such_module:app")
    assert answer.status.startswith("500 ")
    assert answer.body == ERROR_BODY
    assert len(answer.err.splitlines()) == 1, answer.err
    assert answer.err.startswith("forkwsgi: error: cannot import module 'tests.no_such_module'")
    assert answer.exit_status == 1


def test_module_that_fails_to_import_names_it_then_shows_the_users_traceback(cgi):
    answer = cgi("tests.apps_broken:app")
    assert answer.status.startswith("500 ")
    first, *rest = answer.err.splitlines()
    assert first.startswith("forkwsgi: error: error importing module 'tests.apps_broken': "
                            "ModuleNotFoundError"), answer.err
    assert any("apps_broken.py" in line for line in rest), answer.err


@pytest.mark.parametrize("args, environ, message", [
    (("tests.apps:echo", "--workers", "2"), {},
     "unknown option '--workers' for 'forkwsgi cgi' (a server option;"),
    (("tests.apps:echo", "--chdri", "/"), {}, "(did you mean '--chdir'?)"),
    ((), {}, "no application: give APP"),
    (("not a spec",), {}, "'not a spec' is not a dotted module name"),
    (("tests.apps:echo",), {"FORKWSGI_WORKERS": "many"}, "FORKWSGI_WORKERS"),
])
def test_usage_and_config_errors_are_one_line_exit_2_and_a_500(cgi, args, environ, message):
    answer = cgi(*args, environ=environ)
    assert len(answer.err.splitlines()) == 1, answer.err
    assert answer.err.startswith("forkwsgi: error: ") and message in answer.err, answer.err
    assert answer.exit_status == 2
    assert answer.status.startswith("500 ")


def test_without_a_cgi_request_it_says_so_and_writes_no_response(cgi):
    answer = cgi("tests.apps:echo", request=False)
    assert answer.exit_status == 2
    assert answer.err.startswith("forkwsgi: error: not a CGI request (REQUEST_METHOD is not set)")
    assert answer.stdout == b""


def test_stdout_is_the_response_alone(cgi):
    answer = cgi("tests.apps:prints")
    assert answer.stdout.startswith(b"Status: 200 OK\r\n")
    assert answer.body == b"answered"
    assert "printed by the app" in answer.err
    assert "echoed by a subprocess of the app" in answer.err


def test_help(cgi):
    answer = cgi("--help", request=False)
    assert answer.exit_status == 0
    text = answer.stdout.decode()
    assert text.startswith("Usage: forkwsgi cgi [OPTIONS] APP")
    for flag in ("--chdir", "--pythonpath", "--env", "--config"):
        assert flag in text
    assert "--workers" not in text and "--bind" not in text


def test_config_file_and_environment_settings_apply_and_the_rest_are_ignored(cgi, tmp_path):
    # app, chdir, pythonpath and env as the server applies them; workers and bind mean
    # nothing to one request and are ignored without a word.
    site = tmp_path / "site"
    (site / "lib").mkdir(parents=True)
    (site / "lib" / "cgi_helper.py").write_text("WHERE = 'from the pythonpath'\n")
    (site / "cgi_site_app.py").write_text(textwrap.dedent("""\
        import json, os
        import cgi_helper

        def app(environ, start_response):
            body = json.dumps({"cwd": os.getcwd(), "helper": cgi_helper.WHERE,
                               "greeting": os.environ.get("GREETING"),
                               "greeting_in_request": "GREETING" in environ}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        """))
    (tmp_path / "forkwsgi.toml").write_text(textwrap.dedent("""\
        chdir = "site"
        pythonpath = ["lib"]
        workers = 4
        bind = ["0.0.0.0:80"]
        """))
    answer = cgi(environ={"FORKWSGI_APP": "cgi_site_app:app", "FORKWSGI_ENV": "GREETING=hi"})
    assert answer.err == ""
    assert answer.json() == {"cwd": str(site), "helper": "from the pythonpath",
                             "greeting": "hi", "greeting_in_request": False}
    # The command line wins over the environment, as for the server.
    answer = cgi("cgi_site_app:app", "--env", "GREETING=from the command line",
                 environ={"FORKWSGI_ENV": "GREETING=hi"})
    assert answer.json()["greeting"] == "from the command line"


def test_a_module_named_cgi_is_still_served(tmp_path):
    # 'cgi' is the subcommand only as the first argument.
    (tmp_path / "cgi.py").write_text("def app(environ, start_response):\n    return []\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for args in (["cgi:app", "--check-config"], ["--check-config", "--", "cgi"]):
        proc = subprocess.run([*FORKWSGI, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert str(tmp_path / "cgi.py") in proc.stdout


# --- behind Apache httpd's mod_cgid ----------------------------------------------------------

MODULES = {"alias_module": "mod_alias.so", "cgid_module": "mod_cgid.so"}
SCRIPTS = {"echo.cgi": "tests.apps:echo", "boom.cgi": "tests.apps:boom",
           "missing.cgi": "tests.no_such_module:app", "prints.cgi": "tests.apps:prints"}

SCRIPT_DIRS = """\
ScriptSock {root}/run/cgid.sock
ScriptAlias /cgi-bin/ {root}/cgi-bin/
"""

SCRIPT = """\
#!/bin/sh
PYTHONPATH='{pythonpath}' exec '{python}' -m forkwsgi cgi '{app}'
"""


def cgi_python(user: tuple[int, int] | None) -> tuple[str, str] | None:
    """An interpreter and PYTHONPATH with which ``user`` can import forkwsgi, or None."""
    ours = os.pathsep.join([str(REPO / "src"), str(REPO)])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    candidates = [(sys.executable, ours)]
    if system:
        candidates.append((system, ours + os.pathsep + sysconfig.get_paths()["purelib"]))
    as_user = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
    for python, pythonpath in candidates:
        try:
            probe = subprocess.run([python, "-c", "import forkwsgi.cgi_mode, tests.apps"],
                                   env={"PYTHONPATH": pythonpath}, cwd="/",
                                   capture_output=True, timeout=60, **as_user)
        except OSError:
            continue
        if probe.returncode == 0:
            return python, pythonpath
    return None


class Apache:
    """httpd serving SCRIPTS: requests to them, and its error log."""

    def __init__(self, front: Frontend) -> None:
        self.port, self.log, self.wait_log = front.port, front.log, front.wait_log

    def get(self, path: str, method: str = "GET", body=None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        status, _, payload = fetch(self.port, method, path, body, headers, host=None)
        return status, payload

    def echo(self, path: str, **kwargs) -> dict:
        return saw(self.port, path=path, host=None, **kwargs)


@pytest.fixture(scope="module")
def apache():
    """httpd on a free loopback port with SCRIPTS in /cgi-bin/, each running one app."""
    user = httpd_user()
    found = cgi_python(user)
    if found is None:
        pytest.skip("no Python that httpd's user can run forkwsgi with")
    python, pythonpath = found
    # Not under pytest's tmp_path: httpd's user must reach the scripts and the socket.
    root = Path(tempfile.mkdtemp(prefix="forkwsgi-cgi-"))
    try:
        root.chmod(0o755)
        (root / "cgi-bin").mkdir(mode=0o755)
        (root / "run").mkdir(mode=0o755)
        if user:
            os.chown(root / "run", *user)  # the cgid daemon, as nobody, removes its socket
        for name, app in SCRIPTS.items():
            script = root / "cgi-bin" / name
            script.write_text(SCRIPT.format(pythonpath=pythonpath, python=python, app=app))
            script.chmod(0o755)
        with Frontends(root) as frontends:
            front = frontends.httpd(MODULES, SCRIPT_DIRS, root=root)
            yield Apache(front)
            # A script's stderr is logged as an error (AH01215); anything else is httpd's own.
            assert [line for line in front.problems() if "AH01215" not in line] == [], \
                front.log()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_apache_get_with_path_info_and_query_string(apache):
    seen = apache.echo("/cgi-bin/echo.cgi/some/path?x=1")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"], seen["QUERY_STRING"]) == (
        "/cgi-bin/echo.cgi", "/some/path", "x=1")
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["HTTP_HOST"] == f"127.0.0.1:{apache.port}"
    assert seen["wsgi.run_once"] is True


def test_apache_post_bodies(apache):
    data = os.urandom(256 * 1024)
    seen = apache.echo("/cgi-bin/echo.cgi/upload", method="POST", body=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert seen["CONTENT_LENGTH"] == str(len(data))
    assert seen["body"].encode("latin-1") == data
    pieces = [b"first,", b"second,", os.urandom(70000)]
    seen = apache.echo("/cgi-bin/echo.cgi/chunked", method="POST", body=iter(pieces))
    assert seen["body"].encode("latin-1") == b"".join(pieces)


def test_apache_non_ascii_percent_encoded_path(apache):
    seen = apache.echo("/cgi-bin/echo.cgi/caf%C3%A9?q=%C3%A9")
    assert seen["PATH_INFO"].encode("latin-1").decode() == "/café"
    assert seen["QUERY_STRING"] == "q=%C3%A9"
    assert seen["REQUEST_URI"] == "/cgi-bin/echo.cgi/caf%C3%A9?q=%C3%A9"


def test_apache_app_that_raises_is_a_500_with_the_traceback_in_the_error_log(apache):
    status, _ = apache.get("/cgi-bin/boom.cgi")
    assert status == 500
    log = apache.wait_log("RuntimeError: boom: the app failed on purpose")
    assert "Traceback (most recent call last)" in log


def test_apache_app_that_does_not_import_is_a_500_not_a_bad_header(apache):
    status, _ = apache.get("/cgi-bin/missing.cgi")
    assert status == 500
    log = apache.wait_log("forkwsgi: error: cannot import module 'tests.no_such_module'")
    assert "End of script output before headers" not in log
    assert "malformed header" not in log


def test_apache_print_in_the_app_goes_to_the_error_log(apache):
    assert apache.get("/cgi-bin/prints.cgi") == (200, b"answered")
    apache.wait_log("printed by the app")
