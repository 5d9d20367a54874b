"""The real ``python -m forkwsgi`` in a subprocess: flags, exit statuses, one-line errors.

Nothing here starts the arbiter: --print-config and --check-config stop before it.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from forkwsgi import __version__
from forkwsgi.config import tomllib  # tomli on 3.10
from forkwsgi.settings import SETTINGS, available_cpus

from .conftest import FORKWSGI, REPO


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


def test_unknown_environment_variable_is_an_error(forkwsgi):
    result = forkwsgi("--print-config", "m:app", env={"FORKWSGI_WOKERS": "4"})
    assert result.status == 2
    assert result.error_line == ("forkwsgi: error: FORKWSGI_WOKERS: unknown setting 'wokers' "
                                 "(did you mean 'workers'?)")


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
