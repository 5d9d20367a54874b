"""The real ``python -m forkwsgi`` in a subprocess: flags, exit statuses, one-line errors.

Most tests stop before the arbiter (--print-config and --check-config do); the
ones about what a server does with what it was given (gunicorn's bind forms,
a gunicorn.conf.py, Kubernetes variables) start a real one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import textwrap
from pathlib import Path

import click
import pytest

from forkwsgi import __version__, cli, gunicorn_compat, loader
from forkwsgi.listeners import ListenerError, parse_bind
from forkwsgi.settings import BY_NAME, SETTINGS, available_cpus
from forkwsgi.tomltext import tomllib  # tomli on 3.10

from .conftest import FORKWSGI, REPO, Server, free_port, listening, wait_until

pytestmark = pytest.mark.process


class Result:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.status = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def error_line(self) -> str:
        """The one stderr line of a failed run (asserting there is exactly one)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        assert lines[0].startswith("forkwsgi: error: "), lines[0]
        return lines[0]

    def config(self) -> dict:
        assert self.status == 0, self.err
        return tomllib.loads(self.out)


@pytest.fixture
def forkwsgi(tmp_path: Path):
    """``forkwsgi(*args, env={}, cwd=tmp_path) -> Result``, in a clean FORKWSGI_* environment."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            pythonpath: tuple[Path, ...] = (REPO / "src", REPO)) -> Result:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FORKWSGI_")}
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        proc = subprocess.run([*FORKWSGI, *args], cwd=cwd or tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=60)
        return Result(proc)

    return run


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- basics ----------------------------------------------------------------------------------


def test_version(forkwsgi):
    result = forkwsgi("--version")
    assert result.status == 0
    assert result.out.strip() == f"forkwsgi {__version__}"


def test_help_lists_every_flag_of_the_table(forkwsgi):
    result = forkwsgi("--help")
    assert result.status == 0
    for row in SETTINGS:
        for flag in row.flags:
            assert flag in result.out, flag
        if row.is_flag:
            assert f"--no-{row.flags[-1][2:]}" in result.out
    assert "--check-config" in result.out and "--print-config" in result.out


def test_print_config_is_toml_with_defaults(forkwsgi):
    cfg = forkwsgi("--print-config", "pkg.mod:app").config()
    assert cfg["app"] == "pkg.mod:app"
    assert cfg["workers"] == 1
    assert cfg["bind"] == ["127.0.0.1:8000"]
    assert cfg["umask"] == 0o022
    assert "chdir" not in cfg  # unset: a comment, as TOML has no null


def test_print_config_reads_back_as_a_config_file(forkwsgi, tmp_path):
    first = forkwsgi("--print-config", "-w", "3", "-b", "unix:/tmp/x.sock", "-b", "[::1]:80",
                     "-e", "A=1", "--umask", "027", "--access-logfile", "-", "m:app")
    saved = write(tmp_path / "saved.toml", first.out)
    second = forkwsgi("--print-config", "-c", str(saved))
    assert second.config() == first.config()


# --- one-line usage errors, exit 2 -----------------------------------------------------------


def test_unknown_flag_is_one_line_with_a_suggestion(forkwsgi):
    result = forkwsgi("--wokers", "4", "app:app")
    assert result.status == 2
    assert result.error_line == "forkwsgi: error: unknown option '--wokers' (did you mean '--workers'?)"


def test_gunicorn_flag_gets_our_name(forkwsgi):
    result = forkwsgi("--accesslog", "-", "app:app")
    assert result.status == 2
    assert "'--accesslog'" in result.error_line and "'--access-logfile'" in result.error_line


@pytest.mark.parametrize("args, message", [
    (["-w", "x", "m:app"], "invalid value for setting 'workers': expected an integer, got 'x'"),
    (["-w", "0", "m:app"], "invalid value for setting 'workers': must be >= 1, got 0"),
    (["--timeout", "soon", "m:app"], "invalid value for setting 'timeout'"),
    (["--log-level", "loud", "m:app"], "invalid value for setting 'log_level'"),
    (["-e", "NOEQUALS", "m:app"], "invalid value for setting 'env': expected KEY=VALUE"),
    (["--umask", "999", "m:app"], "invalid value for setting 'umask'"),
    (["--access-logformat", "%(zz)s", "m:app"],
     "invalid value for setting 'access_logformat': unknown atom 'zz'"),
    (["-u", "no-such-user-here", "m:app"],
     "invalid value for setting 'user': no such user 'no-such-user-here'"),
    (["-g", "no-such-group-here", "m:app"],
     "invalid value for setting 'group': no such group 'no-such-group-here'"),
    (["-w"], "option '-w' requires an argument"),
    (["a:app", "b:app"], "unexpected extra argument"),
])
def test_bad_command_line_is_one_line_and_exit_2(forkwsgi, args, message):
    result = forkwsgi(*args)
    assert result.status == 2
    assert message in result.error_line


@pytest.mark.parametrize("spec, message", [
    ("app:", "nothing after ':'"),
    ("my-app:app", "is not a dotted module name"),
    ("m:create_app(os.environ)", "factory arguments must be literals"),
    ("m:app[0]", "must be a name"),
])
def test_bad_app_spec_is_a_setting_error(forkwsgi, spec, message):
    result = forkwsgi("--print-config", spec)
    assert result.status == 2
    assert result.error_line.startswith("forkwsgi: error: invalid value for setting 'app': ")
    assert message in result.error_line


def test_no_app_anywhere_is_exit_2(forkwsgi):
    result = forkwsgi("--check-config")
    assert result.status == 2
    assert "no application" in result.error_line


# --- settings from every source --------------------------------------------------------------


def test_precedence_cli_over_env_over_file_over_default(forkwsgi, tmp_path):
    write(tmp_path / "forkwsgi.toml", 'app = "m:app"\nworkers = 2\ntimeout = 7\n')
    env = {"FORKWSGI_WORKERS": "3", "FORKWSGI_KEEP_ALIVE": "9"}
    cfg = forkwsgi("--print-config", "-w", "4", env=env).config()
    assert cfg["workers"] == 4  # command line
    assert cfg["keep_alive"] == 9.0  # environment
    assert cfg["timeout"] == 7.0  # file
    assert cfg["backlog"] == 2048  # default
    assert forkwsgi("--print-config", env=env).config()["workers"] == 3
    assert forkwsgi("--print-config").config()["workers"] == 2
    (tmp_path / "forkwsgi.toml").unlink()
    assert forkwsgi("--print-config", "m:app").config()["workers"] == 1


def test_app_precedence(forkwsgi, tmp_path):
    conf = write(tmp_path / "c.toml", 'app = "from_file:app"\n')
    assert forkwsgi("--print-config", "-c", str(conf)).config()["app"] == "from_file:app"
    env = {"FORKWSGI_APP": "from_env:app"}
    assert forkwsgi("--print-config", "-c", str(conf), env=env).config()["app"] == "from_env:app"
    result = forkwsgi("--print-config", "-c", str(conf), "cli:app", env=env)
    assert result.config()["app"] == "cli:app"


def test_workers_auto(forkwsgi):
    assert forkwsgi("--print-config", "-w", "auto", "m:app").config()["workers"] == available_cpus()
    env = {"FORKWSGI_WORKERS": "auto"}
    assert forkwsgi("--print-config", "m:app", env=env).config()["workers"] == available_cpus()


def test_switches_and_repeated_flags(forkwsgi):
    cfg = forkwsgi("--print-config", "--no-server-header", "--debug", "-b", "127.0.0.1:1",
                   "-b", "unix:/tmp/s", "-e", "A=1", "-e", "B=x=y", "--pythonpath", "a,b",
                   "--pythonpath", "c", "m:app").config()
    assert cfg["server_header"] is False and cfg["debug"] is True
    assert cfg["bind"] == ["127.0.0.1:1", "unix:/tmp/s"]
    assert cfg["env"] == {"A": "1", "B": "x=y"}
    assert cfg["pythonpath"] == ["a", "b", "c"]


def test_repeatable_settings_from_the_environment_split_like_a_shell(forkwsgi):
    env = {"FORKWSGI_BIND": "127.0.0.1:1 unix:/tmp/s", "FORKWSGI_ENV": "A=1 'B=two words'",
           "FORKWSGI_DEBUG": "yes"}
    cfg = forkwsgi("--print-config", "m:app", env=env).config()
    assert cfg["bind"] == ["127.0.0.1:1", "unix:/tmp/s"]
    assert cfg["env"] == {"A": "1", "B": "two words"}
    assert cfg["debug"] is True


def test_unknown_environment_variable_is_a_warning(forkwsgi):
    result = forkwsgi("--print-config", "m:app", env={"FORKWSGI_WOKERS": "4"})
    assert result.status == 0
    assert result.config()["workers"] == 1
    assert result.err == ("forkwsgi: warning: FORKWSGI_WOKERS: unknown setting 'wokers' "
                          "(did you mean 'workers'?); ignored\n")


def test_bad_environment_value_names_the_variable_and_setting(forkwsgi):
    result = forkwsgi("--print-config", "m:app", env={"FORKWSGI_WORKERS": "many"})
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: FORKWSGI_WORKERS: invalid value for setting "
                                 "'workers': expected an integer, got 'many'")


def test_internal_variables_are_ignored(forkwsgi):
    result = forkwsgi("--print-config", "m:app", env={"FORKWSGI__LISTEN_FDS": "3,4"})
    assert result.status == 0, result.err


def test_config_file_from_the_environment(forkwsgi, tmp_path):
    conf = write(tmp_path / "elsewhere.toml", "workers = 5\n")
    cfg = forkwsgi("--print-config", "m:app", env={"FORKWSGI_CONFIG": str(conf)}).config()
    assert cfg["workers"] == 5


def test_unknown_toml_key(forkwsgi, tmp_path):
    conf = write(tmp_path / "c.toml", "wokers = 4\n")
    result = forkwsgi("--print-config", "-c", "c.toml", "m:app")
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: c.toml: unknown setting 'wokers' "
                                 "(did you mean 'workers'?)")
    assert conf.exists()


def test_bad_toml_value(forkwsgi, tmp_path):
    write(tmp_path / "c.toml", 'workers = "x"\n')
    result = forkwsgi("--print-config", "-c", "c.toml", "m:app")
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: c.toml: invalid value for setting 'workers': "
                                 "expected an integer, got 'x'")


def test_toml_syntax_error_names_file_and_line(forkwsgi, tmp_path):
    write(tmp_path / "c.toml", "workers = 2\ntimeout = = 3\n")
    result = forkwsgi("--print-config", "-c", "c.toml", "m:app")
    assert result.status == 2
    assert result.error_line.startswith("forkwsgi: error: c.toml:2: invalid TOML: ")


def test_missing_config_file(forkwsgi):
    result = forkwsgi("--print-config", "-c", "nope.toml", "m:app")
    assert result.status == 2
    assert result.error_line == "forkwsgi: error: config file not found: nope.toml"


def test_python_config_unknown_name(forkwsgi, tmp_path):
    write(tmp_path / "c.py", "import os\nLOG_DIR = '/tmp'\nworkrs = 2\n")
    result = forkwsgi("--print-config", "-c", "c.py", "m:app")
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: c.py: unknown setting 'workrs' "
                                 "(did you mean 'workers'?)")


def test_python_config_hook_typo(forkwsgi, tmp_path):
    write(tmp_path / "c.py", "def on_startng(arbiter):\n    pass\n")
    result = forkwsgi("--print-config", "-c", "c.py", "m:app")
    assert result.status == 2
    assert "unknown setting 'on_startng' (did you mean 'on_starting'?)" in result.error_line


def test_python_config_errors_name_file_and_line(forkwsgi, tmp_path):
    write(tmp_path / "syntax.py", "workers = 2\nbind = [\n")
    result = forkwsgi("--print-config", "-c", "syntax.py", "m:app")
    assert result.status == 2
    assert result.error_line.startswith("forkwsgi: error: syntax.py:2: invalid Python: ")
    write(tmp_path / "boom.py", "workers = 2\n\nworkers = undefined_name\n")
    result = forkwsgi("--print-config", "-c", "boom.py", "m:app")
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: boom.py:3: NameError: "
                                 "name 'undefined_name' is not defined")


def test_python_config_with_hooks(forkwsgi, tmp_path):
    write(tmp_path / "c.py", """\
        import multiprocessing
        BASE = "/srv"
        _private = "x"
        app = "m:app"
        workers = 2
        chdir = BASE

        def helper():
            return 1

        def on_starting(arbiter):
            pass
        """)
    result = forkwsgi("--print-config", "-c", "c.py")
    cfg = result.config()
    assert cfg["workers"] == 2 and cfg["chdir"] == "/srv" and cfg["app"] == "m:app"
    assert "# on_starting = on_starting (" in result.out


def test_hook_outside_python_is_an_error(forkwsgi, tmp_path):
    write(tmp_path / "c.toml", 'on_starting = "mod:func"\n')
    result = forkwsgi("--print-config", "-c", "c.toml", "m:app")
    assert result.status == 2
    assert "invalid value for setting 'on_starting': expected a callable" in result.error_line


def test_pyproject_tool_table_and_dashed_keys(forkwsgi, tmp_path):
    write(tmp_path / "pyproject.toml", """\
        [project]
        name = "x"

        [tool.forkwsgi]
        app = "m:app"
        max-requests = 100
        """)
    cfg = forkwsgi("--print-config").config()
    assert cfg["app"] == "m:app" and cfg["max_requests"] == 100
    assert forkwsgi("--print-config").out.startswith(f"# config file: {tmp_path}/pyproject.toml")


def test_forkwsgi_toml_wins_over_pyproject(forkwsgi, tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.forkwsgi]\nworkers = 7\n")
    write(tmp_path / "forkwsgi.toml", "workers = 3\n")
    assert forkwsgi("--print-config", "m:app").config()["workers"] == 3


def test_pyproject_without_our_table_is_not_read(forkwsgi, tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.other]\nwokers = 1\n")
    assert forkwsgi("--print-config", "m:app").config()["workers"] == 1


@pytest.mark.parametrize("name", ["forkwsgi.example.toml", "forkwsgi.conf.py"])
def test_shipped_example_configs_load(forkwsgi, name):
    result = forkwsgi("--check-config", "-c", str(REPO / "conf" / name))
    assert result.status == 0, result.err
    assert "configuration OK" in result.out


# --- --check-config --------------------------------------------------------------------------


def test_check_config_ok(forkwsgi):
    result = forkwsgi("--check-config", "tests.apps:echo")
    assert result.status == 0, result.err
    assert "application 'tests.apps:echo' loaded" in result.out


def test_check_config_import_error_names_the_module_and_shows_the_traceback(forkwsgi, tmp_path):
    write(tmp_path / "brokenapp.py", "import os\nimport no_such_dependency_xyz\napp = None\n")
    result = forkwsgi("--check-config", "brokenapp:app")
    assert result.status == 1
    first, *rest = result.err.splitlines()
    assert first == ("forkwsgi: error: error importing module 'brokenapp': ModuleNotFoundError: "
                     "No module named 'no_such_dependency_xyz'")
    tail = "\n".join(rest)
    assert "brokenapp.py\", line 2" in tail and "import no_such_dependency_xyz" in tail


def test_check_config_missing_module(forkwsgi):
    result = forkwsgi("--check-config", "no_such_module_xyz:app")
    assert result.status == 1
    assert "cannot import module 'no_such_module_xyz'" in result.err


def test_check_config_missing_attribute(forkwsgi):
    result = forkwsgi("--check-config", "tests.apps:ecko")
    assert result.status == 1
    assert "module 'tests.apps' has no attribute 'ecko' (did you mean 'echo'?)" in result.err


def test_check_config_bare_module_finds_application(forkwsgi):
    assert forkwsgi("--check-config", "tests.apps").status == 0


def test_check_config_factory(forkwsgi, tmp_path):
    write(tmp_path / "factoryapp.py", """\
        def create_app(name, debug=True):
            assert name == "prod" and debug is False
            def app(environ, start_response):
                return []
            return app
        """)
    assert forkwsgi("--check-config", 'factoryapp:create_app("prod", debug=False)').status == 0
    result = forkwsgi("--check-config", "factoryapp:create_app()")
    assert result.status == 1
    assert "application factory 'factoryapp:create_app()' raised TypeError" in result.err


def test_app_imports_from_the_working_directory_and_chdir(forkwsgi, tmp_path):
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    write(app_dir / "siteapp.py", "def app(environ, start_response):\n    return []\n")
    only_src = (REPO / "src",)
    assert forkwsgi("--check-config", "siteapp:app", cwd=app_dir, pythonpath=only_src).status == 0
    result = forkwsgi("--check-config", "--chdir", "site", "siteapp:app", pythonpath=only_src)
    assert result.status == 0, result.err
    result = forkwsgi("--check-config", "--pythonpath", str(app_dir), "siteapp:app",
                      pythonpath=only_src)
    assert result.status == 0, result.err


def test_env_is_applied_before_the_app_loads(forkwsgi, tmp_path):
    write(tmp_path / "needsenv.py", """\
        import os
        if os.environ.get("MY_SETTING") != "on":
            raise RuntimeError("MY_SETTING is not on")
        def app(environ, start_response):
            return []
        """)
    assert forkwsgi("--check-config", "needsenv:app").status == 1
    assert forkwsgi("--check-config", "-e", "MY_SETTING=on", "needsenv:app").status == 0


def test_check_config_not_callable(forkwsgi, tmp_path):
    write(tmp_path / "notcallable.py", "app = 42\n")
    result = forkwsgi("--check-config", "notcallable:app")
    assert result.status == 1
    assert "application 'notcallable:app' is not callable" in result.err


def test_check_config_bad_log_config_is_exit_2(forkwsgi, tmp_path):
    write(tmp_path / "log.json", '{"version": 1,\n "handlers": {\n')
    result = forkwsgi("--check-config", "--log-config", "log.json", "tests.apps:echo")
    assert result.status == 2
    assert result.error_line.startswith("forkwsgi: error: invalid value for setting 'log_config'")


# --- coming from gunicorn --------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--reload"], "forkwsgi has no code reloader; send HUP (kill -HUP <pid>) to load new code"),
    (["--threads", "4"], "forkwsgi workers are sync, one request at a time each"),
    (["-k", "gthread"], "forkwsgi workers are sync, one request at a time each"),
    (["--worker-class", "gevent"], "scale with workers (-w)"),
    (["-D"], "forkwsgi does not daemonize; run it under systemd"),
    (["--daemon"], "forkwsgi does not daemonize; run it under systemd"),
    (["--paste", "production.ini"], "no PasteDeploy loader"),
    (["--ssl-version", "TLSv1_2"], "TLS 1.2 is the oldest version served"),
    (["--do-handshake-on-connect"], "the TLS handshake always runs in the worker's event loop"),
])
def test_gunicorn_flag_without_equivalent_says_what_to_do_instead(forkwsgi, args, says):
    result = forkwsgi(*args, "m:app")
    assert result.status == 2
    flag = args[0].partition("=")[0]
    assert result.error_line.startswith(f"forkwsgi: error: unknown option '{flag}' (gunicorn's): ")
    assert says in result.error_line
    assert "did you mean" not in result.error_line  # --reload is not --preload


@pytest.mark.parametrize("flag, ours", [
    ("--worker-connections", "--max-connections"),
    ("-m", "--umask"),
    ("--limit-request-field_size", "--limit-request-field-size"),
    ("--log-config-json", "--log-config"),
    ("-v", "--version"),
])
def test_gunicorn_flag_spelled_otherwise_here_names_ours(forkwsgi, flag, ours):
    result = forkwsgi(flag, "1", "m:app")
    assert result.status == 2
    assert result.error_line == f"forkwsgi: error: unknown option '{flag}' (did you mean '{ours}'?)"


def test_every_gunicorn_flag_is_ours_or_explained(capsys):
    known = {decl for param in cli.build_command().params if isinstance(param, click.Option)
             for decl in (*param.opts, *param.secondary_opts)}
    for row in gunicorn_compat.GUNICORN:
        for flag in row.flags:
            if flag in known:
                continue
            assert cli.run([flag, "x", "m:app"]) == 2, flag
            line = capsys.readouterr().err
            if row.ours is None:
                assert line == f"forkwsgi: error: unknown option '{flag}' (gunicorn's): {row.note}\n"
            else:
                ours = row.ours if row.ours.startswith("-") else next(
                    f for f in BY_NAME[row.ours].flags if f.startswith("--"))
                assert line.endswith(f" (did you mean '{ours}'?)\n"), line


def test_gunicorn_key_in_a_toml_file_gets_the_same_message(forkwsgi, tmp_path):
    write(tmp_path / "c.toml", "threads = 4\n")
    result = forkwsgi("--print-config", "-c", "c.toml", "m:app")
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: c.toml: unknown setting 'threads' (gunicorn's): "
                                 + gunicorn_compat.by_name("threads").note)


def test_access_log_format_is_a_name_for_access_logformat_everywhere(forkwsgi, tmp_path):
    write(tmp_path / "c.toml", 'access_log_format = "json"\n')
    assert forkwsgi("--print-config", "-c", "c.toml", "m:app").config()["access_logformat"] == "json"
    write(tmp_path / "c.py", 'access_log_format = "%(h)s %(s)s"\n')
    cfg = forkwsgi("--print-config", "-c", "c.py", "m:app").config()
    assert cfg["access_logformat"] == "%(h)s %(s)s"
    cfg = forkwsgi("--print-config", "m:app", env={"FORKWSGI_ACCESS_LOG_FORMAT": "json"}).config()
    assert cfg["access_logformat"] == "json"
    cfg = forkwsgi("--print-config", "--access-log-format", "json", "m:app").config()
    assert cfg["access_logformat"] == "json"


# Each server here binds by itself, so readiness is polled on the port it was given.
def _listening(server: Server, port: int, workers: int = 1) -> Server:
    server.port = port

    try:
        wait_until(lambda: listening("127.0.0.1", port, server.proc),
                   what=f"the server to listen on port {port}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log()}") from None
    server.wait_workers(workers)
    return server


GET = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("form, listens_on", [
    (":{port}", "http://0.0.0.0:{port}"),  # gunicorn: an empty host is every interface
    ("{port}", "http://127.0.0.1:{port}"),  # the default host, not a host named "8000"
    ("tcp://127.0.0.1:{port}", "http://127.0.0.1:{port}"),
])
def test_gunicorn_bind_forms_serve(serve, form, listens_on):
    port = free_port()
    server = serve("tests.apps:hello", "-b", form.format(port=port), bind=False, wait=False)
    _listening(server, port)
    assert server.request(GET).startswith(b"HTTP/1.1 200 ")
    assert f"Listening at: {listens_on.format(port=port)} " in server.log()


@pytest.mark.parametrize("spec, address", [
    ("8000", ("tcp", ("127.0.0.1", 8000))),
    (":8000", ("tcp", ("0.0.0.0", 8000))),
    ("tcp://example.org:81", ("tcp", ("example.org", 81))),
    ("tcp://[::1]:81", ("tcp", ("::1", 81))),
    ("[::1]", ("tcp", ("::1", 8000))),
    ("example.org", ("tcp", ("example.org", 8000))),
    ("unix:///run/app.sock", ("unix", "/run/app.sock")),
    ("unix:app.sock", ("unix", "app.sock")),
])
def test_parse_bind_reads_gunicorn_forms(spec, address):
    assert parse_bind(spec) == address


@pytest.mark.parametrize("spec, message", [
    ("::1:80", "write IPv6 addresses as [ADDRESS]:PORT"),
    ("tcp://::1:80", "write IPv6 addresses as [ADDRESS]:PORT"),
    ("[::1]80", "expected [IPV6]:PORT"),
    ("host:http", "port 'http' is not a number"),
    ("99999", "port 99999 is out of range"),
])
def test_parse_bind_errors(spec, message):
    with pytest.raises(ListenerError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_bind(spec)


KUBERNETES_SERVICE_LINKS = {  # what a Service named "forkwsgi" puts in every pod's environment
    "FORKWSGI_PORT": "tcp://10.0.0.1:8000",
    "FORKWSGI_PORT_8000_TCP": "tcp://10.0.0.1:8000",
    "FORKWSGI_PORT_8000_TCP_ADDR": "10.0.0.1",
    "FORKWSGI_PORT_8000_TCP_PORT": "8000",
    "FORKWSGI_PORT_8000_TCP_PROTO": "tcp",
    "FORKWSGI_SERVICE_HOST": "10.0.0.1",
    "FORKWSGI_SERVICE_PORT": "8000",
    "FORKWSGI_SERVICE_PORT_HTTP": "8000",
}


def test_kubernetes_service_links_are_a_warning_not_a_refusal(serve):
    server = serve("tests.apps:hello", env=KUBERNETES_SERVICE_LINKS)
    assert server.request(GET).startswith(b"HTTP/1.1 200 ")
    warning = next(line for line in server.log().splitlines()
                   if line.startswith("forkwsgi: warning: "))
    assert warning.startswith("forkwsgi: warning: " + ", ".join(sorted(KUBERNETES_SERVICE_LINKS))
                              + ": ignored: Kubernetes service links, not settings")


def test_bad_value_of_a_real_setting_still_stops_it(forkwsgi):
    env = {**KUBERNETES_SERVICE_LINKS, "FORKWSGI_TIMEOUT": "soon"}
    result = forkwsgi("--check-config", "tests.apps:hello", env=env)
    assert result.status == 2
    assert result.err.splitlines()[-1] == ("forkwsgi: error: FORKWSGI_TIMEOUT: invalid value for "
                                           "setting 'timeout': expected a number of seconds, "
                                           "got 'soon'")


def test_a_gunicorn_conf_py_serves(serve, tmp_path):
    port = free_port()
    write(tmp_path / "envapp.py", """\
        import os
        LOADED_BY = os.getpid()

        def app(environ, start_response):
            body = f"{os.environ.get('GREETING')} preloaded={LOADED_BY != os.getpid()}".encode()
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        """)
    write(tmp_path / "gunicorn.conf.py", f"""\
        import multiprocessing

        bind = "127.0.0.1:{port}"
        workers = 2
        worker_class = "sync"
        threads = 1
        accesslog = "-"
        errorlog = "-"
        loglevel = "info"
        timeout = 60
        keepalive = 2
        preload_app = True
        raw_env = ["GREETING=hello"]
        pidfile = None
        cores = multiprocessing.cpu_count()  # the file's own name: gunicorn ignores it too

        def post_fork(server, worker):
            print("post_fork ran", flush=True)

        def pre_request(worker, req):
            worker.log.debug("%s %s", req.method, req.path)  # gunicorn's Request: not called
        """)
    server = serve("envapp:app", "-c", "gunicorn.conf.py", bind=False, wait=False, workers=2,
                   cwd=tmp_path)
    _listening(server, port, workers=2)
    reply = server.request(GET)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"hello preloaded=True")
    log = server.wait_log('"GET / HTTP/1.1" 200')  # the access log, to stdout
    assert "post_fork ran" in log
    warnings = [line for line in log.splitlines() if line.startswith("forkwsgi: warning: ")]
    assert warnings == [
        "forkwsgi: warning: gunicorn.conf.py: ignored gunicorn settings: "
        f"worker_class='sync', threads=1 ({gunicorn_compat.by_name('threads').note}), "
        f"pre_request ({gunicorn_compat.by_name('pre_request').note})"]


def test_a_gunicorn_name_in_a_forkwsgi_python_file_is_an_error(forkwsgi, tmp_path):
    write(tmp_path / "conf.py", "workers = 2\nworker_class = 'gevent'\n")
    result = forkwsgi("--print-config", "-c", "conf.py", "m:app")
    assert result.status == 2
    assert result.error_line == (
        "forkwsgi: error: conf.py: unknown setting 'worker_class' (gunicorn's): "
        f"{gunicorn_compat.by_name('worker_class').note}; a config file named gunicorn*.py is "
        "read as a gunicorn config")


# --- start-up order --------------------------------------------------------------------------


def test_the_arbiter_does_not_import_the_command_line():
    tree = ast.parse((REPO / "src" / "forkwsgi" / "arbiter.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "forkwsgi" for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "cli" not in imported and "forkwsgi.cli" not in imported


def test_loader_applies_env(monkeypatch, tmp_path):
    monkeypatch.setenv("APPLY_ENV_TEST", "before")  # restored after the test
    loader.apply_env(cli.resolve({"env": ["APPLY_ENV_TEST=after"]}, "m:app", None, {},
                                 search_dir=str(tmp_path)))
    assert os.environ["APPLY_ENV_TEST"] == "after"
