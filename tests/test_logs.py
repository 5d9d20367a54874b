"""The error log: format, files, whole lines through a pipe, no forged records,
reopen on SIGUSR1, --log-config, fork; and the package's import graph."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from forkwsgi import logs
from forkwsgi.accesslog import make_access_logger
from forkwsgi.settings import SettingError

from .conftest import FORKWSGI, REPO, Server, free_port, wait_until

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


# --- whole lines, never forged ---------------------------------------------------------------


def test_cut_leaves_text_that_fits_alone():
    assert logs.cut("x" * 100, 100) == "x" * 100
    assert logs.cut("\xe9" * 50, 100) == "\xe9" * 50  # 100 bytes of UTF-8


def test_cut_marks_how_much_it_left_out():
    text = logs.cut("x" * 10_000, 4095)
    kept = text.partition(".")[0]
    assert text == kept + f"...[cut {10_000 - len(kept)} bytes]"
    assert 4000 < len(text) <= 4095


@pytest.mark.parametrize("shift", range(12))
def test_cut_never_splits_a_character_or_an_escape(shift):
    text = "a" * shift + "\\x0a\\\\\\\"\\u00e9\u20ac\\ud83d\\ude00" * 20
    data = text.encode()
    for limit in range(40, len(data), 3):
        result = logs.cut(text, limit)
        assert len(result.encode()) <= limit
        kept, _, count = result.rpartition("...[cut ")
        assert text.startswith(kept) and count == f"{len(data) - len(kept.encode())} bytes]"
        # what is kept is whole escapes (and whole surrogate pairs) and whole characters
        assert re.fullmatch(r"(?:[^\\]|\\x[0-9a-f]{2}|\\\\|\\\"|\\u00e9|\\ud83d\\ude00)*", kept)


def seqpacket_log_file() -> tuple[logs.LogFile, socket.socket, socket.socket]:
    """A LogFile whose every write(2) arrives as one message: write boundaries made visible."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    right.setblocking(False)
    return logs.LogFile("-", left.fileno()), left, right


def writes(sock: socket.socket) -> list[bytes]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(1 << 20))
    return messages


def error_handler(log_file: logs.LogFile) -> logs.LogFileHandler:
    handler = logs.LogFileHandler(log_file)
    handler.setFormatter(logging.Formatter(logs.ERROR_FORMAT, logs.DATE_FORMAT))
    return handler


def record_with_traceback(message: str, lines: int) -> logging.LogRecord:
    try:
        raise RuntimeError("\n".join(f"detail {i:03d} " + "." * 60 for i in range(lines)))
    except RuntimeError:
        exc_info = sys.exc_info()
    return logging.getLogger(logs.ERROR_LOGGER).makeRecord(
        logs.ERROR_LOGGER, logging.ERROR, __file__, 1, message, (), exc_info)


def test_a_long_traceback_is_written_as_whole_lines_each_write_atomic():
    log_file, left, right = seqpacket_log_file()
    with left, right:
        handler = error_handler(log_file)
        record = record_with_traceback("Error handling request GET /", 200)
        handler.emit(record)
        messages = writes(right)
    assert len(messages) > 3
    assert all(len(m) <= select.PIPE_BUF and m.endswith(b"\n") for m in messages)
    assert b"".join(messages).decode() == handler.format(record) + "\n"


def test_one_line_longer_than_pipe_buf_is_cut():
    log_file, left, right = seqpacket_log_file()
    with left, right:
        error_handler(log_file).emit(logging.LogRecord(
            logs.ERROR_LOGGER, logging.INFO, __file__, 1, "x" * 10_000, (), None))
        [message] = writes(right)
    assert len(message) <= select.PIPE_BUF and message.endswith(b"\n")
    match = LINE.fullmatch(message.decode()[:-1])
    kept, count = re.fullmatch(r"(x+)\.\.\.\[cut (\d+) bytes\]", match.group(3)).groups()
    assert len(kept) + int(count) == 10_000


def test_client_text_cannot_start_a_line_in_the_error_log(tmp_path):
    path = tmp_path / "error.log"
    logger = logs.setup_error_log(cfg(error_logfile=str(path)))
    forged = "/x\r\n[2026-01-01 00:00:00 +0000] [1] [INFO] forged\u2028\x85\x1b[2J"
    logger.info("rejected a request for %s", forged)
    try:
        raise ValueError("the app's own\nmultiline message")
    except ValueError:
        logger.exception("Error handling request GET %s", forged)
    lines = path.read_text().splitlines()
    escaped = "/x\\x0d\\x0a[2026-01-01 00:00:00 +0000] [1] [INFO] forged\\u2028\\x85\\x1b[2J"
    assert LINE.fullmatch(lines[0]).group(3) == f"rejected a request for {escaped}"
    assert LINE.fullmatch(lines[1]).group(3) == f"Error handling request GET {escaped}"
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert lines[-2:] == ["ValueError: the app's own", "multiline message"]
    assert not any(line.startswith("[2026-01-01") for line in lines)


@contextlib.contextmanager
def piped_server(tmp_path: Path, app: str, *args: str, stream: str,
                 workers: int = 2) -> Iterator[tuple[Server, int]]:
    """The real CLI with its ``stream`` ("stdout" or "stderr") a pipe the test reads.

    The serve fixture sends both streams to a file; here one of them is a pipe,
    as under a supervisor, and the test is its (slow) reader.
    """
    read_fd, write_fd = os.pipe()
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p)
    cmd = [*FORKWSGI, "-b", f"127.0.0.1:{port}", "-w", str(workers), *args, app]
    try:
        with open(log_path, "wb") as log:
            out, err = (write_fd, log) if stream == "stdout" else (log, write_fd)
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO,
                                    start_new_session=True)
    finally:
        os.close(write_fd)
    server = Server(proc, "127.0.0.1", port, log_path)
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"forkwsgi exited early with status {proc.returncode}"
            with contextlib.suppress(OSError), server.connect(0.5):
                return True
            return False

        wait_until(listening, what="the server to listen")
        server.wait_workers(workers)
        yield server, read_fd
    finally:
        server.kill_tree()
        os.close(read_fd)


def read_lines_slowly(fd: int, enough, timeout: float = 60.0) -> list[str]:
    """Lines from the pipe ``fd``, read 512 bytes at a time, until ``enough(lines)``.

    The pauses make a slow reader on purpose: the pipe fills, the writers block
    in write(2), and that is when the kernel would interleave a long write.
    """
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        lines = data.decode("utf-8", "replace").split("\n")[:-1]
        if enough(lines):
            return lines
        assert time.monotonic() < deadline, f"timed out; read {len(lines)} lines"
        if select.select([fd], [], [], 1.0)[0]:
            chunk = os.read(fd, 512)
            assert chunk, f"the server closed the pipe after {len(lines)} lines"
            data += chunk
            time.sleep(0.001)


def run_clients(server: Server, requests: list[bytes], threads: int = 4) -> Callable[[], None]:
    """Send ``requests`` from ``threads`` concurrent clients; the returned function joins them."""
    failures: list[Exception] = []

    def client(mine: list[bytes]) -> None:
        try:
            for raw in mine:
                server.request(raw, timeout=60)
        except Exception as exc:  # raised in the test's thread by join()
            failures.append(exc)

    workers = [threading.Thread(target=client, args=(requests[i::threads],), daemon=True)
               for i in range(threads)]
    for worker in workers:
        worker.start()

    def join() -> None:
        for worker in workers:
            worker.join(60)
        assert not failures, failures

    return join


TRACEBACK_LINE = re.compile(r"Traceback \(most recent call last\):|  .*"
                            r"|RuntimeError: boom: the app failed on purpose")


@pytest.mark.process
def test_error_records_through_a_pipe_arrive_as_whole_lines(tmp_path):
    with piped_server(tmp_path, "tests.apps:boom", stream="stderr") as (server, fd):
        path = "a" * 7000  # the request line the error record quotes: far over PIPE_BUF
        requests = [f"GET /{i:04d}{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    .encode() for i in range(20)]
        join = run_clients(server, requests)
        lines = read_lines_slowly(fd, lambda lines: sum(
            line.startswith("RuntimeError: boom") for line in lines) == len(requests))
        join()
    seen = []
    for line in lines:
        record = LINE.fullmatch(line)
        if record is None:
            assert TRACEBACK_LINE.fullmatch(line), line[:200]
            continue
        message = record.group(3)
        if message.startswith("Error handling request"):
            assert len(line.encode()) < select.PIPE_BUF
            kept, count = re.fullmatch(r"(.*)\.\.\.\[cut (\d+) bytes\]", line).groups()
            request_id = re.fullmatch(r".*GET /(\d{4})a+", kept).group(1)
            full = line[:line.index("Error")] + \
                f"Error handling request GET /{request_id}{path}: the application raised"
            assert full.startswith(kept) and len(full) - len(kept) == int(count)
            seen.append(request_id)
    assert sorted(seen) == [f"{i:04d}" for i in range(len(requests))]


# --- imports ---------------------------------------------------------------------------------

def import_graph() -> dict[str, set[str]]:
    """forkwsgi's modules -> the forkwsgi modules each imports, lazy imports included."""
    root = REPO / "src"
    modules = {}
    for path in sorted((root / "forkwsgi").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_import_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [{"a", "b", "c"}]


def test_no_import_cycles():
    """A cycle makes import order matter and lazy imports creep in to hide it."""
    graph = import_graph()
    cycles = [sorted(cycle) for cycle in import_cycles(graph)]
    assert not cycles, "import cycles: " + "; ".join(
        ", ".join(f"{module} -> {sorted(graph[module] & set(cycle))}" for module in cycle)
        for cycle in cycles)
    assert "forkwsgi.logformat" in graph["forkwsgi.settings"]  # lazy imports are seen


def test_throttled_logs_once_per_interval_and_counts_the_rest():
    logger = logging.getLogger("forkwsgi.test.throttled")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        throttled = logs.Throttled(logger, logging.INFO, interval=3600)
        for n in range(5):
            throttled("rejected %s", n)
        assert [r.getMessage() for r in records] == ["rejected 0"]
        throttled.next_at = 0.0  # the interval has passed
        throttled("rejected %s", 5)
        assert records[-1].getMessage() == (
            "rejected 5 (and 4 more like it since the last such line)")
        assert records[-1].levelno == logging.INFO
    finally:
        logger.removeHandler(handler)
