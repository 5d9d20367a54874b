"""One request as a CGI script: ``forkwsgi cgi APP``, for hosts that only offer CGI.

Owns: answering the one request a web server hands a CGI script (the request
in the process environment, its body on stdin, the response on stdout, the
web server's error log on stderr) with ``wsgiref.handlers.CGIHandler``, after
the same configuration and loading as the server: ``config.resolve`` (command
line > environment > config file), ``loader.apply_env``,
``loader.prepare_import_path``, ``loader.load_from_config`` (APP, or the
``mount`` table). Of the settings, only
``USED_SETTINGS`` mean anything here; the others are resolved (so a bad value
is still an error) and then ignored.

Decisions:
- Every failure answers: a configuration or usage error, an application that
  does not load, one that raises. The error is one ``forkwsgi: error: ...``
  line on stderr (followed by the user's own traceback when their code
  raised), and stdout gets CGIHandler's own 500, so the web server shows an
  error page rather than "premature end of script headers". Without
  REQUEST_METHOD there is no web server to answer: the line alone.
- The request's environment is read before ``env`` is applied: ``env`` sets the
  application's process environment, as in the server, and never becomes part
  of the request's WSGI environ.
- stdout is the response's alone: file descriptor 1 points at stderr while the
  application runs, so a print() in it, or a subprocess it starts, goes to the
  error log instead of corrupting the response ahead of its status line.

Exit statuses, as the server's: 0 answered, 1 the application failed to load
or raised, 2 the command line or the configuration is wrong.

Must never: open a socket, fork, or write anything to stdout but the one
response.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO
from wsgiref.handlers import CGIHandler

from forkwsgi.config import ConfigError, resolve
from forkwsgi.loader import AppLoadError, apply_env, load_from_config, prepare_import_path
from forkwsgi.mount import mount_table

USED_SETTINGS = ("app", "mount", "chdir", "pythonpath", "env")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "forkwsgi"


class _Handler(CGIHandler):
    """CGIHandler with its own response stream, remembering whether the application raised."""

    def __init__(self, response: BinaryIO) -> None:
        super().__init__()  # reads the request's environment now
        self.stdout = response
        self.app_failed = False

    def handle_error(self) -> None:
        self.app_failed = True
        super().handle_error()

    def answer_500(self) -> None:
        # error_output is a WSGI application: the page an application that raises gets.
        self.run(self.error_output)


def is_cgi_request(environ: Mapping[str, str]) -> bool:
    return "REQUEST_METHOD" in environ


def answer(cli_values: Mapping[str, Any], app: str | None, config_path: str | None) -> int:
    """Configure, load APP and answer the request in the process environment."""
    if not is_cgi_request(os.environ):
        _error("not a CGI request (REQUEST_METHOD is not set): a web server runs "
               f"'{PROG} cgi' once per request, with the request in the environment")
        return EXIT_USAGE
    with _take_stdout() as response:
        handler = _Handler(response)
        try:
            application = _load(cli_values, app, config_path)
        except _Refusal as refusal:
            _error(refusal.message)
            handler.answer_500()
            return refusal.status
        handler.run(application)
    return EXIT_FAILURE if handler.app_failed else EXIT_OK


def refuse(message: str, status: int) -> int:
    """A failure before there is anything to load: the error line, and a 500 if a web
    server is waiting for an answer."""
    _error(message)
    if is_cgi_request(os.environ):
        with _take_stdout() as response:
            _Handler(response).answer_500()
    return status


class _Refusal(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _load(cli_values: Mapping[str, Any], app: str | None, config_path: str | None) -> Any:
    """The application, configured and imported as the server would; _Refusal says why not."""
    try:
        cfg = resolve(cli_values, app, config_path, os.environ, search_dir=os.getcwd())
    except ConfigError as exc:
        raise _Refusal(str(exc), EXIT_USAGE) from None
    for warning in cfg.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)
    try:
        served = mount_table(cfg.app, cfg.mount)
    except ValueError as exc:
        raise _Refusal(str(exc), EXIT_USAGE) from None
    if not served:
        raise _Refusal("no application: give APP (e.g. 'myapp:app'), FORKWSGI_APP, "
                       "app = \"...\" in the config file, or --mount PREFIX=APP", EXIT_USAGE)
    apply_env(cfg)
    try:
        prepare_import_path(cfg)
        return load_from_config(cfg)
    except AppLoadError as exc:
        raise _Refusal(str(exc), EXIT_FAILURE) from None


def _take_stdout() -> BinaryIO:
    """The response's stream: a copy of stdout, with stdout itself pointed at stderr."""
    sys.stdout.flush()
    response = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return response


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
