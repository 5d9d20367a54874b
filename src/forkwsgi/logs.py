"""The error log, log files, and reopening them on SIGUSR1.

Owns: the "forkwsgi.error" logger's default setup (format
``[2026-11-25 04:30:00 +0000] [PID] [INFO] message``, to stderr or a file),
replacing it with a ``--log-config`` dictConfig file (JSON or TOML), the
``LogFile`` append-only destinations the error and access logs write to,
cutting overlong lines (``cut()``), ``Throttled`` lines for recurring
events, and ``reopen_files()`` for logrotate.

Nothing silent, nothing flooding: every error path logs at INFO or above, and
one that a client can repeat at will (a malformed request, a shed connection)
logs through a ``Throttled``: at most one line per interval per process, the
next one saying how many were left out.

Whole lines, never torn: a ``LogFile`` writes in pieces of at most
``PIPE_BUF`` bytes, each one ``os.write`` that ends on a line boundary, so
lines from several workers sharing a pipe (stdout under a supervisor) or an
``O_APPEND`` file never interleave mid-line. Anything longer is split between
its lines, and a single line longer than ``PIPE_BUF`` is cut: its head, then
``...[cut N bytes]``, N being how many bytes of it were left out. The access
log fits its lines itself, cutting the longest client-chosen fields first.

No forged records: in the default error log, the message of a record (which
may quote a client's request) has its control characters and line breaks
escaped as ``\\xhh`` (``\\u2028``, ``\\u2029`` for those two), so a record
starts a line and nothing else does. A record's traceback keeps its own
newlines: it is the application's text, as trusted as what it prints to
stderr. A ``--log-config`` setup formats records its own way, unescaped.

Fork safety, so workers need not set anything up again after fork:
``LogFile`` writes with ``os.write`` on an ``O_APPEND`` fd, with no userspace
buffer that a fork could duplicate; the PID in each line is read per record;
and the logging module re-creates its handler locks in the child (Python
3.7+). ``reopen_files()`` acts on the calling process's fds only, so the
arbiter calls it on SIGUSR1 and tells each worker to call it too.

Must never: be on the per-request path except through ``LogFile.write``, open
a file per line, or import forkwsgi.config (config.py and logs.py share
tomltext.py instead).
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import os
import re
import select
import time
from typing import Any

from forkwsgi import tomltext
from forkwsgi.settings import SettingError

ERROR_LOGGER = "forkwsgi.error"
ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
STDOUT, STDERR = 1, 2

# POSIX: a write of at most PIPE_BUF bytes to a pipe is atomic, never interleaved with
# another process's write; beyond it the kernel may split it anywhere.
PIPE_BUF = select.PIPE_BUF
CUT_MARKER = "...[cut {} bytes]"


# --- cutting ---------------------------------------------------------------------------------

# The escapes a log line may hold: the access log's \xhh, \" and \\, JSON's \uXXXX and \n.
# An escaped backslash is itself an escape, so scanning from the start pairs them right.
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.DOTALL)
_HIGH_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}")


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8: unchanged if it fits, else its head + marker.

    The cut falls between characters and never inside a backslash escape nor
    between the halves of a JSON surrogate pair, so escaped text stays
    unambiguous and a JSON string stays valid. ``limit`` must leave room for
    the marker (under 32 bytes).
    """
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return text
    text = data.decode("utf-8")  # lone surrogates now spelled out, so lengths agree with data
    room = max(limit - len(CUT_MARKER.format(len(data))), 0)
    end = _escape_boundary(text, len(data[:room].decode("utf-8", "ignore")))
    kept = text[:end]
    return kept + CUT_MARKER.format(len(data) - len(kept.encode("utf-8")))


def _escape_boundary(text: str, end: int) -> int:
    """The largest position <= ``end`` that does not split an escape of ``text``."""
    boundary, before = end, None
    for match in _ESCAPE.finditer(text, 0, end + 5):  # no escape is longer than 6
        if match.end() > end:
            if match.start() < end:
                boundary = match.start()
            break
        before = match
    if before is not None and before.end() == boundary and _HIGH_SURROGATE.fullmatch(before[0]):
        boundary = before.start()
    return boundary


_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def _chunks(data: bytes) -> list[bytes]:
    """``data`` as pieces of whole lines, each at most PIPE_BUF bytes; longer lines cut."""
    chunks: list[bytes] = []
    chunk = b""
    for match in _LINE.finditer(data):
        line = match[0]
        if len(line) > PIPE_BUF:
            newline = line.endswith(b"\n")
            text = line[:-1] if newline else line
            line = cut(text.decode("utf-8", "backslashreplace"), PIPE_BUF - newline).encode(
                "utf-8") + b"\n" * newline
        if len(chunk) + len(line) > PIPE_BUF:
            chunks.append(chunk)
            chunk = b""
        chunk += line
    if chunk:
        chunks.append(chunk)
    return chunks


class LogFile:
    """An append-only destination: a path opened ``O_APPEND``, or "-" for a std stream.

    ``reopen()`` opens the path afresh and ``dup2``s it over the same fd number,
    so there is no moment without a valid fd and holders of ``.fd`` keep working.
    """

    def __init__(self, path: str, std_fd: int) -> None:
        self.is_std = path == "-"
        self.path = path if self.is_std else os.path.abspath(path)  # immune to a later chdir
        self.fd = std_fd if self.is_std else self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        """Whole lines, each ``os.write`` at most PIPE_BUF bytes and ending a line.

        Up to PIPE_BUF bytes go in one write; more are split between lines (see
        the module docstring). OSError (disk full, closed pipe) is the caller's.
        """
        for chunk in (data,) if len(data) <= PIPE_BUF else _chunks(data):
            written = os.write(self.fd, chunk)
            # Short only where atomicity is lost anyway (a regular file filling its disk, a
            # terminal): finish the line rather than drop its end.
            while written < len(chunk):
                written += os.write(self.fd, chunk[written:])

    def reopen(self) -> None:
        if self.is_std:
            return
        fresh = self._open()
        try:
            os.dup2(fresh, self.fd, inheritable=False)
        finally:
            os.close(fresh)


# Keyed by absolute path (or "<fd N>"), so the error and access logs may share a file.
# Files stay open for the life of the process: one opened in the arbiter is inherited by
# every worker, which matters once workers have dropped privileges (--user) and could
# not open it themselves. A reload to new paths leaves the old fds open, a bounded cost.
_files: dict[str, LogFile] = {}


def open_log_file(path: str, std_fd: int = STDERR) -> LogFile:
    """The one LogFile for ``path`` in this process ("-" means ``std_fd``)."""
    key = os.path.abspath(path) if path != "-" else f"<fd {std_fd}>"
    log_file = _files.get(key)
    if log_file is None:
        log_file = _files[key] = LogFile(path, std_fd)
    return log_file


# Every character that ends a line for some reader (str.splitlines, a terminal), except TAB.
_LINE_BREAKS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, 0x85) if code != 0x09}
_LINE_BREAKS.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


class LogFileHandler(logging.Handler):
    """A logging handler over a LogFile: whole lines, nothing buffered, each message one line."""

    def __init__(self, log_file: LogFile) -> None:
        super().__init__()
        self.log_file = log_file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if not message.isprintable():
                escaped = message.translate(_LINE_BREAKS)
                if escaped != message:
                    record = copy.copy(record)  # other handlers see the record as logged
                    record.msg, record.args = escaped, None
            line = self.format(record) + "\n"
            self.log_file.write(line.encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)


class Throttled:
    """A recurring log line, at most once per ``interval`` seconds in this process.

    ``__call__(msg, *args)`` logs like ``logger.log(level, msg, *args)`` when the
    interval since the last line has passed, adding how many calls were left out
    since then; otherwise it only counts. An attacker repeating a bad request can
    then cost the log one line per interval, and the operator still sees it happen.
    """

    __slots__ = ("logger", "level", "interval", "next_at", "left_out")

    def __init__(self, logger: logging.Logger, level: int, interval: float) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.next_at = 0.0
        self.left_out = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.left_out += 1
            return
        if self.left_out:
            msg += f" (and {self.left_out} more like it since the last such line)"
            self.left_out = 0
        self.next_at = now + self.interval
        self.logger.log(self.level, msg, *args)


# --- setup -----------------------------------------------------------------------------------


def setup_error_log(cfg: Any) -> logging.Logger:
    """Configure "forkwsgi.error" from ``cfg``, and open the access log file too.

    Call it in the arbiter before forking, and again on reload to replace the
    setup. Raises SettingError (naming 'log_config') when the log_config file is
    unreadable or dictConfig rejects it, and OSError when a log file cannot be opened.
    """
    logger = logging.getLogger(ERROR_LOGGER)
    if cfg.access_logfile:
        open_log_file(cfg.access_logfile, STDOUT)  # here, so workers inherit it (see _files)
    if cfg.log_config:
        config = load_log_config(cfg.log_config)
        try:
            logging.config.dictConfig(config)
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise SettingError("log_config", f"{cfg.log_config}: {_one_line(exc)}") from None
        return logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = LogFileHandler(open_log_file(cfg.error_logfile, STDERR))
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(cfg.log_level.upper())
    logger.propagate = False
    return logger


def load_log_config(path: str) -> dict[str, Any]:
    """A dictConfig dict from a .json or .toml file (other names: JSON)."""
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise SettingError("log_config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            config = tomltext.loads(source)
        else:
            config = json.loads(source)
    except tomltext.TomlError as exc:
        where = f"{path}:{exc.line}" if exc.line else path
        raise SettingError("log_config", f"{where}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingError("log_config", f"{path}: not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise SettingError("log_config", f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise SettingError("log_config", f"{path}: expected a dictConfig mapping at the top level")
    config.setdefault("version", 1)
    return config


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --- SIGUSR1 ---------------------------------------------------------------------------------


def reopen_files() -> None:
    """Reopen every log file of this process (logrotate moved them away).

    Covers the LogFiles of the error and access logs, and every FileHandler
    that a --log-config attached to a forkwsgi logger or to the root logger.
    """
    failed: list[str] = []
    for log_file in list(_files.values()):
        try:
            log_file.reopen()
        except OSError as exc:  # e.g. a worker that dropped privileges; keep the old fd
            failed.append(f"{log_file.path}: {exc.strerror}")
    for logger in _forkwsgi_loggers():
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                try:
                    old = handler.setStream(handler._open())
                except OSError as exc:
                    failed.append(f"{handler.baseFilename}: {exc.strerror}")
                    continue
                if old is not None:
                    old.close()
    for problem in failed:
        logging.getLogger(ERROR_LOGGER).error("cannot reopen log file %s", problem)


def _forkwsgi_loggers() -> list[logging.Logger]:
    names = [name for name in logging.Logger.manager.loggerDict
             if name == "forkwsgi" or name.startswith("forkwsgi.")]
    return [logging.getLogger(), *(logging.getLogger(name) for name in names)]
