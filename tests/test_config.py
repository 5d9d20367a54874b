"""config.resolve and the settings converters, as plain functions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from forkwsgi import gunicorn_compat, settings
from forkwsgi.config import ConfigError, dump, read_environ, resolve
from forkwsgi.settings import SettingError, convert


def resolve_in(directory: Path, cli: dict | None = None, app: str | None = "m:app",
               config: str | None = None, environ: dict | None = None):
    return resolve(cli or {}, app, config, environ or {}, search_dir=str(directory))


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- converters ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, raw, value", [
    ("workers", "4", 4),
    ("workers", 4, 4),
    ("workers", " 2 ", 2),
    ("workers", "auto", settings.available_cpus()),
    ("workers", "AUTO", settings.available_cpus()),
    ("timeout", "2.5", 2.5),
    ("timeout", 3, 3.0),
    ("debug", "yes", True),
    ("debug", "off", False),
    ("debug", True, True),
    ("umask", "027", 0o027),
    ("umask", 0o027, 0o027),
    ("pythonpath", "a, b,,c", ["a", "b", "c"]),
    ("pythonpath", ["a,b", "c"], ["a", "b", "c"]),
    ("bind", ["[::1]:80", "unix:/a,b"], ["[::1]:80", "unix:/a,b"]),
    ("env", ["A=1", "B=x=y"], {"A": "1", "B": "x=y"}),
    ("env", {"A": 1}, {"A": "1"}),
    ("access_logfile", "", None),
    ("log_level", "DEBUG", "debug"),
    ("app", "pkg.mod:create_app('x', n=[1, 2])", "pkg.mod:create_app('x', n=[1, 2])"),
    ("access_logformat", "json", "json"),
])
def test_converters_accept(name, raw, value):
    assert convert(name, raw) == value


@pytest.mark.parametrize("name, raw, message", [
    ("workers", "x", "expected an integer, got 'x'"),
    ("workers", 0, "must be >= 1, got 0"),
    ("workers", True, "expected an integer"),
    ("timeout", "-1", "must be a number of seconds >= 0"),
    ("timeout", "nan", "must be a number of seconds >= 0"),
    ("debug", "maybe", "expected true or false"),
    ("umask", "0999", "expected an octal mode"),
    ("umask", 0o1000, "must be between 000 and 777"),
    ("env", ["1A=x"], "expected KEY=VALUE"),
    ("env", {"BAD KEY": "x"}, "expected KEY=VALUE"),
    ("bind", [""], "an address is empty"),
    ("backlog", [1], "expected an integer"),
    ("log_level", "loud", "expected one of"),
    ("on_starting", "module:function", "expected a callable"),
    ("app", "a b:app", "is not a dotted module name"),
    ("access_logformat", "%(h)s %", "starts no atom"),
])
def test_converters_reject_naming_the_setting(name, raw, message):
    with pytest.raises(SettingError) as info:
        convert(name, raw)
    assert str(info.value).startswith(f"invalid value for setting '{name}': ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_suggest_knows_typos_and_gunicorn_names():
    assert settings.suggest("wokers") == " (did you mean 'workers'?)"
    assert settings.suggest("accesslog") == " (did you mean 'access_logfile'?)"
    assert settings.suggest("loglevel") == " (did you mean 'log_level'?)"
    assert settings.suggest("completely_different") == ""


@pytest.mark.parametrize("gunicorn", ["reload", "threads", "daemon", "paste", "ssl_version",
                                      "worker_class"])
def test_a_gunicorn_setting_we_lack_says_what_to_do_not_a_near_miss(gunicorn):
    # Before: reload -> preload, threads -> preload, daemon -> env, paste -> user,
    # worker_class -> workers.
    assert settings.closest(gunicorn) is None
    assert settings.suggest(gunicorn) == f" (gunicorn's): {gunicorn_compat.by_name(gunicorn).note}"


def test_the_gunicorn_table_is_consistent():
    """Every row maps to a real setting or says why not, once per name and flag; a flag
    gunicorn shares with forkwsgi means the same setting in both (but --log-config)."""
    options = {"--config", "--check-config", "--print-config", "--version"}
    names = [row.name for row in gunicorn_compat.GUNICORN]
    flags = [flag for row in gunicorn_compat.GUNICORN for flag in row.flags]
    assert len(names) == len(set(names)) and len(flags) == len(set(flags))
    ours_by_flag = {flag: row.name for row in settings.SETTINGS for flag in row.flags}
    for row in gunicorn_compat.GUNICORN:
        assert row.ours is None or row.ours in settings.BY_NAME or row.ours in options, row
        assert row.ours is not None or row.note, row
        for flag in row.flags:
            if flag in ours_by_flag and row.name != "logconfig":
                assert ours_by_flag[flag] == gunicorn_compat.our_setting(row), flag
    # gunicorn 23: 93 settings, and -v/--version
    assert len(names) == 94
    hooks = [row for row in gunicorn_compat.GUNICORN if row.section == "Server Hooks"]
    assert all(row.ours in (None, row.name) for row in hooks)


# --- one setting, several names ----------------------------------------------------------------


def test_a_long_flag_is_a_name_in_files_and_the_environment(tmp_path):
    write(tmp_path / "a.toml", 'access_log_format = "json"\nlog-file = "/tmp/e.log"\n')
    cfg = resolve_in(tmp_path, config="a.toml")
    assert cfg.access_logformat == "json" and cfg.error_logfile == "/tmp/e.log"
    write(tmp_path / "b.py", 'access_log_format = "json"\n')
    assert resolve_in(tmp_path, config="b.py").access_logformat == "json"
    assert read_environ({"FORKWSGI_ACCESS_LOG_FORMAT": "json", "FORKWSGI_LOG_FILE": "-"}) == {
        "access_logformat": "json", "error_logfile": "-"}


def test_one_setting_twice_in_one_source_is_an_error(tmp_path):
    write(tmp_path / "a.toml", 'access_logformat = "json"\naccess_log_format = "json"\n')
    with pytest.raises(ConfigError, match=r"a.toml: setting 'access_logformat' is given twice, "
                                          r"as 'access_logformat' and as 'access_log_format'"):
        resolve_in(tmp_path, config="a.toml")
    with pytest.raises(ConfigError, match=r"given twice, as FORKWSGI_ACCESS_LOGFORMAT and as "
                                          r"FORKWSGI_ACCESS_LOG_FORMAT"):
        read_environ({"FORKWSGI_ACCESS_LOG_FORMAT": "json", "FORKWSGI_ACCESS_LOGFORMAT": "json"})


def test_a_bad_value_under_another_name_says_which(tmp_path):
    write(tmp_path / "a.toml", 'access_log_format = "%(zz)s"\n')
    with pytest.raises(ConfigError) as info:
        resolve_in(tmp_path, config="a.toml")
    assert str(info.value).startswith("a.toml: invalid value for setting 'access_logformat': ")
    assert str(info.value).endswith(" (given as 'access_log_format')")


# --- layers ----------------------------------------------------------------------------------


def test_defaults(tmp_path):
    cfg = resolve_in(tmp_path)
    for row in settings.SETTINGS:
        if row.name != "app":
            assert getattr(cfg, row.name) == row.default, row.name
    assert cfg.app == "m:app" and cfg.config_file is None


def test_precedence(tmp_path):
    write(tmp_path / "forkwsgi.toml", "workers = 2\ntimeout = 5\nbacklog = 10\n")
    environ = {"FORKWSGI_WORKERS": "3", "FORKWSGI_TIMEOUT": "6"}
    cfg = resolve_in(tmp_path, cli={"workers": "4"}, environ=environ)
    assert (cfg.workers, cfg.timeout, cfg.backlog, cfg.keep_alive) == (4, 6.0, 10, 5.0)
    assert cfg.config_file == str(tmp_path / "forkwsgi.toml")


def test_lists_are_replaced_not_merged(tmp_path):
    write(tmp_path / "forkwsgi.toml", 'bind = ["a:1", "b:2"]\nenv = { A = "1" }\n')
    cfg = resolve_in(tmp_path, cli={"bind": ["c:3"], "env": ["B=2"]})
    assert cfg.bind == ["c:3"] and cfg.env == {"B": "2"}


def test_relative_paths_are_from_the_start_directory(tmp_path):
    write(tmp_path / "c.toml", 'chdir = "site"\n')
    cfg = resolve_in(tmp_path, config="c.toml")
    assert cfg.chdir == str(tmp_path / "site")
    assert cfg.config_file == str(tmp_path / "c.toml")


def test_reresolving_reads_the_file_again(tmp_path):
    conf = write(tmp_path / "forkwsgi.toml", "workers = 2\n")
    assert resolve_in(tmp_path).workers == 2
    conf.write_text("workers = 5\n")
    assert resolve_in(tmp_path).workers == 5
    conf.write_text("workers = 'five'\n")
    with pytest.raises(ConfigError):
        resolve_in(tmp_path)


def test_environment_rules():
    assert read_environ({"PATH": "/bin", "FORKWSGI__INTERNAL": "x", "FORKWSGI_CONFIG": "c"}) == {}
    assert read_environ({"FORKWSGI_BIND": "a:1  'unix:/x y'"}) == {"bind": ["a:1", "unix:/x y"]}
    with pytest.raises(ConfigError) as info:
        read_environ({"FORKWSGI_BIND": "'unbalanced"})
    assert str(info.value).startswith("FORKWSGI_BIND: invalid value for setting 'bind'")
    with pytest.raises(ConfigError) as info:
        read_environ({"FORKWSGI_ON_STARTING": "x"})
    assert "expected a callable" in str(info.value)


def test_unknown_keys_everywhere(tmp_path):
    write(tmp_path / "a.toml", "[logging]\nlevel = 1\n")
    with pytest.raises(ConfigError, match=r"a.toml: unknown setting 'logging'"):
        resolve_in(tmp_path, config="a.toml")
    write(tmp_path / "b.toml", "accesslog = '-'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'accesslog' \(did you mean "
                                          r"'access_logfile'\?\)"):
        resolve_in(tmp_path, config="b.toml")
    write(tmp_path / "c.toml", "threads = 8\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown setting 'threads' \(gunicorn's\): "
                                          r"forkwsgi workers are sync"):
        resolve_in(tmp_path, config="c.toml")


def test_unknown_environment_variables_are_warnings(tmp_path):
    cfg = resolve_in(tmp_path, environ={"FORKWSGI_WOKERS": "1", "FORKWSGI_THREADS": "4",
                                        "FORKWSGI_WORKERS": "2"})
    assert cfg.workers == 2
    assert cfg.warnings == [
        f"FORKWSGI_THREADS: unknown setting 'threads' (gunicorn's): "
        f"{gunicorn_compat.by_name('threads').note}; ignored",
        "FORKWSGI_WOKERS: unknown setting 'wokers' (did you mean 'workers'?); ignored"]
    assert resolve_in(tmp_path).warnings == []


def test_kubernetes_service_links_are_one_warning():
    warnings: list[str] = []
    environ = {"FORKWSGI_PORT": "tcp://10.0.0.1:8000", "FORKWSGI_PORT_8000_TCP_ADDR": "10.0.0.1",
               "FORKWSGI_SERVICE_HOST": "10.0.0.1", "FORKWSGI_SERVICE_PORT_HTTP": "8000",
               "FORKWSGI_API_SERVICE_HOST": "10.0.0.2", "FORKWSGI_API_PORT_81_UDP_PROTO": "udp"}
    assert read_environ(environ, warnings) == {}
    assert warnings == [
        "FORKWSGI_API_PORT_81_UDP_PROTO, FORKWSGI_API_SERVICE_HOST, FORKWSGI_PORT, "
        "FORKWSGI_PORT_8000_TCP_ADDR, FORKWSGI_SERVICE_HOST, FORKWSGI_SERVICE_PORT_HTTP: "
        "ignored: Kubernetes service links, not settings ('enableServiceLinks: false' in the "
        "pod spec drops them)"]
    with pytest.raises(ConfigError, match=r"FORKWSGI_WORKERS: invalid value for setting "
                                          r"'workers'"):
        read_environ({**environ, "FORKWSGI_WORKERS": "many"}, warnings)


def test_python_config_file(tmp_path):
    write(tmp_path / "conf.py", """\
        from __future__ import annotations
        import logging
        import os
        from os import environ
        from pathlib import Path

        LOG_DIR = "/var/log/app"
        _workers = 3
        log = logging.getLogger("conf")

        workers = _workers
        bind = ["127.0.0.1:9000"]
        access_logfile = LOG_DIR + "/access.log"

        def _helper():
            return 1

        def make_name():
            return "helper"

        def post_fork(arbiter, worker):
            return ("post_fork", worker)
        """)
    cfg = resolve_in(tmp_path, config="conf.py")
    assert cfg.workers == 3 and cfg.bind == ["127.0.0.1:9000"]
    assert cfg.access_logfile == "/var/log/app/access.log"
    assert cfg.post_fork(None, 7) == ("post_fork", 7)
    assert cfg.on_starting is None


@pytest.mark.parametrize("body, message", [
    ("wokers = 2\n", "conf.py: unknown setting 'wokers' (did you mean 'workers'?)"),
    ("accesslog = '-'\n", "conf.py: unknown setting 'accesslog' (did you mean 'access_logfile'?)"
                          "; a config file named gunicorn*.py is read as a gunicorn config"),
    ("def worker_int(worker):\n    pass\n",
     "conf.py: unknown setting 'worker_int' (gunicorn's): no hook on a worker's quick stop"),
    ("def when_redy(arbiter):\n    pass\n",
     "conf.py: unknown setting 'when_redy' (did you mean 'when_ready'?)"),
    ("post_fork = 1\n", "conf.py: invalid value for setting 'post_fork': expected a callable"),
    ("x = (\n", "conf.py:1: invalid Python: "),
    ("import os\nraise RuntimeError('no')\n", "conf.py:2: RuntimeError: no"),
])
def test_python_config_mistakes(tmp_path, body, message):
    write(tmp_path / "conf.py", body)
    with pytest.raises(ConfigError) as info:
        resolve_in(tmp_path, config="conf.py")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_toml_syntax_error_has_file_and_line(tmp_path):
    write(tmp_path / "c.toml", "\n\nworkers = [\n")
    with pytest.raises(ConfigError) as info:
        resolve_in(tmp_path, config="c.toml")
    assert info.value.source.endswith("c.toml:3") or info.value.source.endswith("c.toml:4")
    assert "invalid TOML" in str(info.value)


def test_broken_pyproject_is_not_ours_to_read(tmp_path):
    write(tmp_path / "pyproject.toml", "this is not toml\n")
    assert resolve_in(tmp_path).config_file is None


def test_dump_round_trips_through_a_toml_file(tmp_path):
    cfg = resolve_in(tmp_path, cli={"bind": ["[::1]:1", 'unix:/tmp/"q"'], "env": ["A=b c"],
                                    "umask": "077", "access_logfile": "-", "timeout": "inf"})
    (tmp_path / "dumped.toml").write_text(dump(cfg))
    again = resolve_in(tmp_path, config="dumped.toml", app=None)
    for row in settings.SETTINGS:
        assert getattr(again, row.name) == getattr(cfg, row.name), row.name


# --- -w auto: the cgroup's CPU quota ---------------------------------------------------------


def _cgroup(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(f"0::{own}\n")
    return str(root), str(proc)


@pytest.mark.parametrize("own, files, cpus", [
    ("/", {}, None),  # no cpu controller files: unlimited
    ("/", {"cpu.max": "max 100000\n"}, None),
    ("/", {"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs round up
    ("/app.slice/web.service", {"app.slice/web.service/cpu.max": "50000 100000\n"}, 1),
    # the tightest of our cgroup and its parents wins
    ("/app.slice/web.service", {"app.slice/cpu.max": "300000 100000\n",
                                "app.slice/web.service/cpu.max": "max 100000\n"}, 3),
    ("/", {"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
    ("/", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_cgroup_cpu_quota(tmp_path, own, files, cpus):
    root, proc = _cgroup(tmp_path, own, files)
    assert settings._cgroup_cpu_quota(root, proc) == cpus


# --- gunicorn*.py config files ----------------------------------------------------------------


def test_gunicorn_config_is_translated(tmp_path):
    write(tmp_path / "gunicorn.conf.py", """\
        import multiprocessing
        import syslog

        host = "0.0.0.0"
        bind = host + ":8080"
        workers = multiprocessing.cpu_count() * 2 + 1
        worker_class = "gevent"
        worker_connections = 500
        keepalive = 4
        timeout = 90
        preload_app = True
        raw_env = ["A=1", "B=2"]
        pidfile = None
        accesslog = "-"
        access_log_format = '%(h)s "%(r)s" %(s)s'
        errorlog = "-"
        loglevel = "WARNING"
        proc_name = "shop"
        wsgi_app = "shop.wsgi:application"
        handoff_after = 0.5
        spew = False

        def on_starting(server):
            return "started"
        """)
    cfg = resolve_in(tmp_path, config="gunicorn.conf.py", app=None)
    assert cfg.bind == ["0.0.0.0:8080"] and cfg.workers > 1
    assert (cfg.max_connections, cfg.keep_alive, cfg.timeout) == (500, 4.0, 90.0)
    assert cfg.preload is True and cfg.env == {"A": "1", "B": "2"} and cfg.pid is None
    assert cfg.access_logfile == "-" and cfg.access_logformat == '%(h)s "%(r)s" %(s)s'
    assert (cfg.log_level, cfg.name, cfg.app) == ("warning", "shop", "shop.wsgi:application")
    assert cfg.handoff_after == 0.5  # a forkwsgi name in a gunicorn file is ours too
    assert cfg.on_starting(None) == "started"
    assert cfg.warnings == [
        "gunicorn.conf.py: ignored gunicorn settings: "
        f"worker_class='gevent' ({gunicorn_compat.by_name('worker_class').note}), "
        f"spew=False ({gunicorn_compat.by_name('spew').note})"]


def test_gunicorn_hooks_with_other_arguments_are_named_not_called(tmp_path):
    write(tmp_path / "gunicorn_config.py", """\
        def post_fork(server, worker):
            pass

        def pre_request(worker, req):
            pass

        def post_request(worker, req, environ, resp):
            pass

        def worker_exit(server, worker):
            pass

        def worker_abort(worker):
            pass
        """)
    cfg = resolve_in(tmp_path, config="gunicorn_config.py")
    assert cfg.post_fork is not None
    assert cfg.pre_request is cfg.post_request is cfg.worker_exit is None
    (warning,) = cfg.warnings
    assert warning.startswith("gunicorn_config.py: ignored gunicorn settings: pre_request (")
    for hook in ("post_request", "worker_exit", "worker_abort"):
        assert f"{hook} ({gunicorn_compat.by_name(hook).note})" in warning


def test_a_bad_gunicorn_value_names_both_settings(tmp_path):
    write(tmp_path / "gunicorn.conf.py", "keepalive = 'long'\n")
    with pytest.raises(ConfigError) as info:
        resolve_in(tmp_path, config="gunicorn.conf.py")
    assert str(info.value) == ("gunicorn.conf.py: invalid value for setting 'keep_alive': "
                               "expected a number of seconds, got 'long' (given as 'keepalive')")


def test_a_gunicorn_config_with_nothing_to_ignore_warns_nothing(tmp_path):
    write(tmp_path / "gunicorn.py", "bind = '127.0.0.1:9'\nworkers = 3\n")
    cfg = resolve_in(tmp_path, config="gunicorn.py")
    assert (cfg.bind, cfg.workers, cfg.warnings) == (["127.0.0.1:9"], 3, [])
