"""Access log lines: gunicorn's atoms, or one JSON object per line.

Owns: the access log format grammar (gunicorn/Apache-style ``%(atom)s``
atoms, so a gunicorn ``access_log_format`` works unchanged), compiling a
format once into a function of one request, escaping, and writing one line
per request to the access log file.

Must never: parse the format per request, call ``datetime``/``strftime`` per
request (the timestamp is cached per second), read a settings object on the
per-request path, or write a client-controlled byte unescaped: every value
from the request or the app passes through ``escape()`` (or ``json.dumps``),
so no one can forge a log line with a CR/LF or a quote.

Atoms (as gunicorn; request headers are read from the environ's ``HTTP_*``):

    h  remote address (REMOTE_ADDR)      s  status code
    l  '-'                               B  response body bytes
    u  REMOTE_USER or '-'                b  response body bytes, '-' for 0 (CLF)
    t  [25/Nov/2026:04:30:00 +0000]      f  Referer or '-'
    r  request line: METHOD URI PROTO    a  User-Agent or '-'
    m  method                            T  duration, whole seconds
    U  path (PATH_INFO)                  M  duration, milliseconds
    q  query string                      D  duration, microseconds
    H  protocol                          L  duration, decimal seconds
    p  <PID>                             {Name}i  request header
    {Name}o  response header             {VAR}e   environ key, else OS environment
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from forkwsgi.logs import ERROR_LOGGER, STDOUT, open_log_file

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
# (environ, status "200 OK", response headers, body bytes sent, duration in seconds)
AccessLogger = Callable[[Environ, str, Headers, int, float], None]
LineFormatter = Callable[[Environ, str, Headers, int, float], str]
Getter = Callable[[Environ, str, Headers, int, float], Any]

JSON_FORMAT = "json"


# --- escaping --------------------------------------------------------------------------------

# Apache's rule (mod_log_config): non-printables as \xhh, and '"' and '\' backslashed.
_ESCAPES = {code: f"\\x{code:02x}" for code in range(256) if not 0x20 <= code < 0x7F}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def escape(value: str) -> str:
    """``value`` safe inside a quoted log field; printable ASCII passes unchanged."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    text = value.translate(_ESCAPES)
    if text.isascii():
        return text
    # Beyond latin-1 (app-made headers): the UTF-8 bytes, each as \xhh.
    return "".join(char if char.isascii() else
                   "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
                   for char in text)


# --- per-process facts, cached ---------------------------------------------------------------

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


# A worker builds its logger after fork, but the arbiter may build one first: either way
# the PID is right, without a getpid() syscall per request.
os.register_at_fork(after_in_child=_refresh_pid)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Clock:
    """Local time rendered once per second: ``t`` (CLF) and ISO 8601 for JSON."""

    def __init__(self) -> None:
        self.second = -1
        self.clf = self.iso = ""

    def tick(self) -> None:
        second = int(time.time())
        if second != self.second:
            tm = time.localtime(second)
            zone = time.strftime("%z", tm)
            # Month names spelled out here: %b follows the locale, CLF does not.
            self.clf = (f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
                        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {zone}]")
            self.iso = time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f"{zone[:3]}:{zone[3:]}"
            self.second = second


# --- atoms -----------------------------------------------------------------------------------


def _environ_atom(key: str, default: str = "-") -> Getter:
    def get(environ: Environ, status: str, headers: Headers, length: int, duration: float) -> str:
        value = environ.get(key)
        return escape(str(value)) if value else default
    return get


def _request_line(environ: Environ, status: str, headers: Headers, length: int,
                  duration: float) -> str:
    return escape(f"{environ.get('REQUEST_METHOD', '-')} {_raw_uri(environ)} "
                  f"{environ.get('SERVER_PROTOCOL', '-')}")


def _raw_uri(environ: Environ) -> str:
    uri = environ.get("RAW_URI")
    if uri:
        return uri
    query = environ.get("QUERY_STRING")
    uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return f"{uri}?{query}" if query else uri or "-"


def _status_code(status: str) -> str:
    return escape(status.partition(" ")[0])


def _status_int(status: str) -> int | str:
    code = status.partition(" ")[0]
    return int(code) if code.isdigit() else escape(code)


def _request_header(name: str) -> Getter:
    key = name.upper().replace("-", "_")
    # PEP 3333 (and CGI): these two arrive without the HTTP_ prefix.
    return _environ_atom(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)


def _response_header(name: str) -> Getter:
    wanted = name.lower()

    def get(environ: Environ, status: str, headers: Headers, length: int, duration: float) -> str:
        for header, value in headers:
            if header.lower() == wanted:
                return escape(value)
        return "-"
    return get


def _variable(name: str) -> Getter:
    def get(environ: Environ, status: str, headers: Headers, length: int, duration: float) -> str:
        value = environ.get(name)
        if value is None:
            value = os.environ.get(name)
        return escape(str(value)) if value is not None else "-"
    return get


def _letter_atoms(clock: _Clock) -> dict[str, Getter]:
    def t(environ: Environ, status: str, headers: Headers, length: int, duration: float) -> str:
        clock.tick()
        return clock.clf

    return {
        "h": _environ_atom("REMOTE_ADDR"),
        "l": lambda e, s, hs, n, d: "-",
        "u": _environ_atom("REMOTE_USER"),
        "t": t,
        "r": _request_line,
        "m": _environ_atom("REQUEST_METHOD"),
        "U": _environ_atom("PATH_INFO", ""),
        "q": _environ_atom("QUERY_STRING", ""),
        "H": _environ_atom("SERVER_PROTOCOL"),
        "s": lambda e, s, hs, n, d: _status_code(s),
        "B": lambda e, s, hs, n, d: n,
        "b": lambda e, s, hs, n, d: str(n) if n else "-",
        "f": _environ_atom("HTTP_REFERER"),
        "a": _environ_atom("HTTP_USER_AGENT"),
        "T": lambda e, s, hs, n, d: int(d),
        "M": lambda e, s, hs, n, d: int(d * 1_000),
        "D": lambda e, s, hs, n, d: int(d * 1_000_000),
        "L": lambda e, s, hs, n, d: f"{d:.6f}",
        "p": lambda e, s, hs, n, d: f"<{_pid}>",
    }


_NUMERIC = frozenset("sBTMD")  # atoms that may take %d / %f conversions
_BRACED = {"i": _request_header, "o": _response_header, "e": _variable}
_TOKEN = re.compile(r"%(?:(?P<percent>%)|\((?P<key>[^()]*)\)"
                    r"(?P<spec>[#0 +-]*\d*(?:\.\d+)?)(?P<conv>[diouxXeEfFgGcrsa]))")
_ATOM_LIST = "h l u t r m U q H s B b f a T D M L p {Header}i {Header}o {VAR}e"


def _parse(fmt: str, clock: _Clock) -> tuple[str, list[Getter]]:
    """gunicorn's ``%(atom)s`` format -> a positional %-format and one getter per slot."""
    letters = _letter_atoms(clock)
    positional: list[str] = []
    getters: list[Getter] = []
    pos = 0
    while (start := fmt.find("%", pos)) >= 0:
        match = _TOKEN.match(fmt, start)
        if match is None:
            raise ValueError(f"'%' at position {start} starts no atom; write '%(h)s' "
                             f"for an atom or '%%' for a literal percent sign")
        positional.append(fmt[pos:start])
        pos = match.end()
        if match["percent"]:
            positional.append("%%")
            continue
        key, conv = match["key"], match["conv"]
        numeric = conv not in "rsa"
        if key in letters:
            if numeric and key not in _NUMERIC:
                raise ValueError(f"atom {key!r} is text; write %({key})s")
            getter = letters[key]
            if key == "s" and numeric:
                getter = lambda e, s, hs, n, d: _status_int(s)  # noqa: E731
        elif len(key) > 3 and key[0] == "{" and key[-2] == "}" and key[-1] in _BRACED:
            if numeric:
                raise ValueError(f"atom {key!r} is text; write %({key})s")
            getter = _BRACED[key[-1]](key[1:-2])
        else:
            raise ValueError(f"unknown atom {key!r}; known atoms: {_ATOM_LIST}")
        positional.append("%" + match["spec"] + conv)
        getters.append(getter)
    positional.append(fmt[pos:].replace("%", "%%"))
    return "".join(positional), getters


def check_format(fmt: str) -> None:
    """Raise ValueError if ``fmt`` is neither 'json' nor a valid atom format."""
    if fmt != JSON_FORMAT:
        _parse(fmt, _Clock())


def compile_format(fmt: str) -> LineFormatter:
    """The function that renders one request as one line (no newline) in ``fmt``."""
    clock = _Clock()
    if fmt == JSON_FORMAT:
        return _json_formatter(clock)
    positional, getters = _parse(fmt, clock)
    slots = tuple(getters)

    def format_line(environ: Environ, status: str, headers: Headers, length: int,
                    duration: float) -> str:
        return positional % tuple([get(environ, status, headers, length, duration)
                                   for get in slots])
    return format_line


def _json_formatter(clock: _Clock) -> LineFormatter:
    dumps = json.JSONEncoder(ensure_ascii=True).encode  # \uXXXX for controls and non-ASCII

    def format_line(environ: Environ, status: str, headers: Headers, length: int,
                    duration: float) -> str:
        clock.tick()
        get = environ.get
        return dumps({
            "time": clock.iso,
            "remote_addr": get("REMOTE_ADDR"),
            "remote_user": get("REMOTE_USER"),
            "method": get("REQUEST_METHOD"),
            "uri": _raw_uri(environ),
            "protocol": get("SERVER_PROTOCOL"),
            "status": _status_int(status),
            "bytes": length,
            "duration": round(duration, 6),
            "referer": get("HTTP_REFERER"),
            "user_agent": get("HTTP_USER_AGENT"),
            "pid": _pid,
        })
    return format_line


# --- the logger the worker calls -------------------------------------------------------------


def make_access_logger(cfg: Any) -> AccessLogger | None:
    """The per-request access logger for ``cfg``, or None when access logging is off.

    Call it in the worker after fork (calling it in the arbiter works too). Each
    call writes one line with one ``write(2)``; a failing write (disk full) is
    reported once to the error log, not raised into the request.
    """
    if cfg.access_logfile is None:
        return None
    format_line = compile_format(cfg.access_logformat)
    log_file = open_log_file(cfg.access_logfile, STDOUT)
    error_log = logging.getLogger(ERROR_LOGGER)
    failing = False

    def access_log(environ: Environ, status: str, headers: Headers, length: int,
                   duration: float) -> None:
        nonlocal failing
        try:
            line = format_line(environ, status, headers, length, duration)
        except Exception:  # a bug here must not fail the request; it is still reported
            error_log.exception("cannot format the access log line")
            return
        try:
            log_file.write((line + "\n").encode("utf-8", "backslashreplace"))
        except OSError as exc:
            if not failing:
                error_log.error("cannot write the access log %s: %s", log_file.path, exc.strerror)
            failing = True
        else:
            if failing:
                failing = False
    return access_log
