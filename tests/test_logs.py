"""The error log: format, files, reopen on SIGUSR1, --log-config, and fork."""

from __future__ import annotations

import json
import logging
import os
import re
from types import SimpleNamespace

import pytest

from forkwsgi import logs
from forkwsgi.accesslog import make_access_logger
from forkwsgi.settings import SettingError

LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[([A-Z]+)\] (.*)")


def cfg(**values):
    base = {"error_logfile": "-", "log_level": "info", "log_config": None,
            "access_logfile": None, "access_logformat": "%(m)s"}
    base.update(values)
    return SimpleNamespace(**base)


@pytest.fixture(autouse=True)
def clean_logging():
    """Leave the logging module as we found it: tests here reconfigure it."""
    loggers = [logging.getLogger(), logging.getLogger(logs.ERROR_LOGGER)]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_format_and_level(tmp_path):
    path = tmp_path / "error.log"
    logger = logs.setup_error_log(cfg(error_logfile=str(path)))
    logger.debug("not shown at info")
    logger.info("Booting worker with pid: %d", 42)
    logger.error("Worker timeout")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = LINE.fullmatch(lines[0])
    assert first and first.groups() == (str(os.getpid()), "INFO", "Booting worker with pid: 42")
    assert LINE.fullmatch(lines[1]).group(2) == "ERROR"


def test_stderr_by_default(capfd):
    logs.setup_error_log(cfg(log_level="debug")).debug("hello stderr")
    err = capfd.readouterr().err
    assert LINE.fullmatch(err.rstrip("\n")).group(3) == "hello stderr"


def test_setup_again_replaces_the_handler(tmp_path):
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    logs.setup_error_log(cfg(error_logfile=str(first)))
    logger = logs.setup_error_log(cfg(error_logfile=str(second), log_level="warning"))
    assert len(logger.handlers) == 1
    logger.info("dropped")
    logger.warning("kept")
    assert first.read_text() == ""
    assert second.read_text().endswith("[WARNING] kept\n")


def test_reopen_after_logrotate(tmp_path):
    path = tmp_path / "error.log"
    logger = logs.setup_error_log(cfg(error_logfile=str(path)))
    logger.info("before")
    path.rename(tmp_path / "error.log.1")
    logger.info("still the old file")
    logs.reopen_files()
    logger.info("after")
    assert "still the old file" in (tmp_path / "error.log.1").read_text()
    assert path.read_text().endswith("[INFO] after\n")
    assert "before" not in path.read_text()


def test_error_and_access_log_may_share_a_file(tmp_path):
    path = tmp_path / "all.log"
    logger = logs.setup_error_log(cfg(error_logfile=str(path)))
    access = make_access_logger(cfg(access_logfile=str(path)))
    logger.info("error line")
    access({"REQUEST_METHOD": "GET"}, "200 OK", [], 0, 0.0)
    lines = path.read_text().splitlines()
    assert lines[0].endswith("error line") and lines[1] == "GET"


def test_forked_children_log_with_their_own_pid_and_reopen(tmp_path):
    path, access_path = tmp_path / "error.log", tmp_path / "access.log"
    logger = logs.setup_error_log(cfg(error_logfile=str(path)))
    access = make_access_logger(cfg(access_logfile=str(access_path), access_logformat="%(p)s"))
    logger.info("arbiter")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, like a worker: no setup again
        try:
            os.close(read_fd)
            logger.info("worker")
            access({}, "200 OK", [], 0, 0.0)
            os.rename(path, str(path) + ".1")
            logs.reopen_files()
            logger.info("worker after reopen")
            os.write(write_fd, b"ok")
        finally:
            os._exit(0)
    os.close(write_fd)
    assert os.read(read_fd, 2) == b"ok"
    os.close(read_fd)
    os.waitpid(pid, 0)
    old = [LINE.fullmatch(x).groups() for x in (tmp_path / "error.log.1").read_text().splitlines()]
    assert old == [(str(os.getpid()), "INFO", "arbiter"), (str(pid), "INFO", "worker")]
    new = [LINE.fullmatch(x).groups() for x in path.read_text().splitlines()]
    assert new == [(str(pid), "INFO", "worker after reopen")]
    assert access_path.read_text() == f"<{pid}>\n"


# --- --log-config ----------------------------------------------------------------------------


def dict_config(path) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path),
                              "formatter": "plain"}},
        "loggers": {"forkwsgi.error": {"handlers": ["file"], "level": "DEBUG",
                                       "propagate": False}},
    }


def test_log_config_json_replaces_the_setup_and_reopens(tmp_path):
    log_path = tmp_path / "custom.log"
    conf = tmp_path / "logging.json"
    conf.write_text(json.dumps(dict_config(log_path)))
    logger = logs.setup_error_log(cfg(log_config=str(conf)))
    logger.debug("custom")
    assert log_path.read_text() == "DEBUG custom\n"
    log_path.rename(tmp_path / "custom.log.1")
    logs.reopen_files()
    logger.debug("reopened")
    assert log_path.read_text() == "DEBUG reopened\n"


def test_log_config_toml(tmp_path):
    log_path = tmp_path / "custom.log"
    conf = tmp_path / "logging.toml"
    conf.write_text(f"""\
disable_existing_loggers = false
[formatters.plain]
format = "%(levelname)s %(message)s"
[handlers.file]
class = "logging.FileHandler"
filename = {json.dumps(str(log_path))}
formatter = "plain"
[loggers."forkwsgi.error"]
handlers = ["file"]
level = "INFO"
propagate = false
""")
    logs.setup_error_log(cfg(log_config=str(conf))).info("from toml")
    assert log_path.read_text() == "INFO from toml\n"


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"version": 1,\n "handlers": \n', "bad.json:3: invalid JSON"),
    ("bad.toml", "version = 1\nhandlers = [\n", "bad.toml:2: invalid TOML"),
    ("list.json", "[1, 2]", "expected a dictConfig mapping"),
    ("unknown.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
     "unknown.json: Unable to configure handler 'h'"),
])
def test_bad_log_config_names_the_setting(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SettingError) as info:
        logs.setup_error_log(cfg(log_config=str(tmp_path / name)))
    assert str(info.value).startswith("invalid value for setting 'log_config': ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_log_config_file(tmp_path):
    with pytest.raises(SettingError, match="cannot read .*nope.json"):
        logs.setup_error_log(cfg(log_config=str(tmp_path / "nope.json")))


# --- the real server -------------------------------------------------------------------------


def test_usr1_reopens_the_servers_log_files(serve, tmp_path):
    import signal
    import urllib.request

    from .conftest import wait_until

    access, error = tmp_path / "access.log", tmp_path / "error.log"
    server = serve("forkwsgi.examples.hello:app", "--access-logfile", str(access),
                   "--error-logfile", str(error), "--access-logformat", "%(U)s %(s)s")

    def get(path: str) -> bytes:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.read()

    assert get("/before") == b"Hello from forkwsgi!\n"
    wait_until(lambda: access.exists() and "/before 200" in access.read_text(), what="a line")
    access.rename(tmp_path / "access.log.1")
    error.rename(tmp_path / "error.log.1")
    server.signal(signal.SIGUSR1)

    def logged_after() -> bool:
        get("/after")
        return access.exists() and "/after 200" in access.read_text()

    wait_until(logged_after, what="the worker to write to the reopened access log")
    assert error.exists()  # the arbiter reopened the error log too
    assert "/before 200" not in access.read_text()


def test_hup_reloads_the_config_file(serve, tmp_path):
    import signal

    import psutil

    from .conftest import wait_until

    conf = tmp_path / "forkwsgi.toml"
    conf.write_text('name = "before"\n')
    server = serve("forkwsgi.examples.hello:app", "-c", str(conf))
    conf.write_text('name = "after"\n')
    server.signal(signal.SIGHUP)

    def renamed() -> bool:
        try:
            titles = [" ".join(w.cmdline()) for w in server.workers()]
        except psutil.NoSuchProcess:  # an old worker exited while we looked
            return False
        return bool(titles) and all("[after]" in title for title in titles)

    wait_until(renamed, timeout=45, what="workers of the reloaded config")
