"""The error log, log files, and reopening them on SIGUSR1.

Owns: the "forkwsgi.error" logger's default setup (format
``[2026-11-25 04:30:00 +0000] [PID] [INFO] message``, to stderr or a file),
replacing it with a ``--log-config`` dictConfig file (JSON or TOML), the
``LogFile`` append-only destinations the error and access logs write to, and
``reopen_files()`` for logrotate.

Fork safety, so workers need not set anything up again after fork:
``LogFile`` writes each line with one ``os.write`` on an ``O_APPEND`` fd, with
no userspace buffer that a fork could duplicate; the PID in each line is read
per record; and the logging module re-creates its handler locks in the child
(Python 3.7+). ``reopen_files()`` acts on the calling process's fds only, so
the arbiter calls it on SIGUSR1 and tells each worker to call it too.

Must never: be on the per-request path except through ``LogFile.write``, or
open a file per line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
from typing import Any

from forkwsgi.settings import SettingError

ERROR_LOGGER = "forkwsgi.error"
ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
STDOUT, STDERR = 1, 2


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
        """One line; OSError (disk full, closed pipe) is the caller's to handle."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

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


class LogFileHandler(logging.Handler):
    """A logging handler over a LogFile: one write per record, nothing buffered."""

    def __init__(self, log_file: LogFile) -> None:
        super().__init__()
        self.log_file = log_file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            self.log_file.write(line.encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)


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
    from forkwsgi.config import ConfigError, read_toml

    try:
        if path.endswith(".toml"):
            config = read_toml(path)
        else:
            with open(path, encoding="utf-8") as fh:
                config = json.load(fh)
    except ConfigError as exc:
        raise SettingError("log_config", str(exc)) from None
    except json.JSONDecodeError as exc:
        raise SettingError("log_config", f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except OSError as exc:
        raise SettingError("log_config", f"cannot read {path}: {exc.strerror}") from None
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
