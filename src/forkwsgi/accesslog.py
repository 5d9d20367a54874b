"""Access log lines: gunicorn's atoms, or one JSON object per line.

Owns: compiling a format (its grammar and atoms are logformat's) once into a
function of one request, the value of each atom, escaping, fitting a line
into one atomic write, and writing one line per request to the access log file.

One line, one write: a line with its newline takes at most ``PIPE_BUF`` (4096 on Linux)
bytes, so lines from several workers sharing a pipe never interleave and no
client can push text past the end of its own line. A longer line has its
longest free-text fields (user agent, referer, request line, path, query,
headers, variables, user, address; never the time, status, PID or numbers)
cut to a common length, each ending ``...[cut N bytes]``, N being how many
bytes of the field as logged (escaped) were left out. A cut never splits an
escape, and a JSON line stays valid JSON. A format whose own text is too long
is cut at the end of the line as a last resort. Short lines, the common case,
cost one length check.

Must never: parse the format per request, call ``datetime``/``strftime`` per
request (the timestamp is cached per second), read a settings object on the
per-request path, or write a client-controlled byte unescaped: every value
from the request or the app passes through ``escape()`` (or ``json.dumps``),
so no one can forge a log line with a CR/LF or a quote.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from forkwsgi import logformat
from forkwsgi.logformat import JSON_FORMAT, Slot
from forkwsgi.logs import ERROR_LOGGER, PIPE_BUF, STDOUT, cut, open_log_file

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
# (environ, status "200 OK", response headers, body bytes sent, duration in seconds)
AccessLogger = Callable[[Environ, str, Headers, int, float], None]
LineFormatter = Callable[[Environ, str, Headers, int, float], str]
Getter = Callable[[Environ, str, Headers, int, float], Any]


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


_BRACED = {"i": _request_header, "o": _response_header, "e": _variable}


def _getter(slot: Slot, letters: dict[str, Getter]) -> Getter:
    if slot.key[0] == "{":
        return _BRACED[slot.key[-1]](slot.key[1:-2])
    if slot.key == "s" and slot.numeric:
        return lambda e, s, hs, n, d: _status_int(s)
    return letters[slot.key]


def compile_format(fmt: str) -> LineFormatter:
    """The function that renders one request as one line (no newline) in ``fmt``.

    The line fits one atomic write with its newline (see the module docstring).
    Raises ValueError for a format that logformat.check_format rejects.
    """
    clock = _Clock()
    if fmt == JSON_FORMAT:
        return _json_formatter(clock)
    positional, slots = logformat.parse(fmt)
    letters = _letter_atoms(clock)
    getters = tuple(_getter(slot, letters) for slot in slots)
    free = tuple(index for index, slot in enumerate(slots) if slot.free_text)
    # Every value renders as ASCII (escaped), except %c; with ASCII text around them, the
    # line's length in characters is its length in bytes. Otherwise, measure every line.
    ascii_only = positional.isascii() and all(slot.conv != "c" for slot in slots)
    fits = PIPE_BUF if ascii_only else 0

    def format_line(environ: Environ, status: str, headers: Headers, length: int,
                    duration: float) -> str:
        line = positional % tuple([get(environ, status, headers, length, duration)
                                   for get in getters])
        if len(line) < fits:  # the common line stops here
            return line
        # Rare: the values again (cheap, and the same: the clock ticks once per second).
        values = tuple([get(environ, status, headers, length, duration) for get in getters])
        return _fit_atoms(line, positional, values, free)
    return format_line


# A cut field keeps at least this much, marker included: room for the longest marker.
_MIN_FIELD = 32


def _size(line: str) -> int:
    return len(line.encode("utf-8", "backslashreplace"))


def _water_level(lengths: list[int], excess: int) -> int:
    """The longest length that, imposed on all ``lengths``, removes ``excess`` characters.

    The longest fields lose the most and the short ones nothing; _MIN_FIELD if even
    cutting everything to it is not enough.
    """
    low, high = _MIN_FIELD, max(lengths, default=_MIN_FIELD)
    if sum(max(0, n - low) for n in lengths) < excess:
        return low
    while low < high:
        middle = (low + high + 1) // 2
        if sum(max(0, n - middle) for n in lengths) >= excess:
            low = middle
        else:
            high = middle - 1
    return low


def _fit_atoms(line: str, positional: str, values: tuple[Any, ...],
               free: tuple[int, ...]) -> str:
    excess = _size(line) + 1 - PIPE_BUF
    if excess <= 0:
        return line
    level = _water_level([len(values[index]) for index in free], excess)
    shorter = list(values)
    for index in free:
        if len(values[index]) > level:
            shorter[index] = cut(values[index], level)
    return cut(positional % tuple(shorter), PIPE_BUF - 1)


def _json_formatter(clock: _Clock) -> LineFormatter:
    dumps = json.JSONEncoder(ensure_ascii=True).encode  # \uXXXX for controls and non-ASCII

    def format_line(environ: Environ, status: str, headers: Headers, length: int,
                    duration: float) -> str:
        clock.tick()
        get = environ.get
        record = {
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
        }
        line = dumps(record)
        if len(line) < PIPE_BUF:  # ASCII only (ensure_ascii), so characters are bytes
            return line
        return _fit_json(line, record, dumps)
    return format_line


# The client's (or a proxy's) text; never time, status, bytes, duration or pid.
_JSON_FREE = ("remote_addr", "remote_user", "method", "uri", "protocol", "referer", "user_agent")


def _fit_json(line: str, record: dict[str, Any], dumps: Callable[[Any], str]) -> str:
    # Cut inside each encoded string, between its quotes: the escapes stay whole, so the
    # object stays valid JSON, laid out as dumps lays it out.
    fields = {key: dumps(value) for key, value in record.items()}
    free = [key for key in _JSON_FREE if isinstance(record[key], str)]
    level = _water_level([len(fields[key]) - 2 for key in free], len(line) + 1 - PIPE_BUF)
    for key in free:
        if len(fields[key]) - 2 > level:
            fields[key] = f'"{cut(fields[key][1:-1], level)}"'
    return "{" + ", ".join(f'"{key}": {text}' for key, text in fields.items()) + "}"


# --- the logger the worker calls -------------------------------------------------------------


def make_access_logger(cfg: Any) -> AccessLogger | None:
    """The per-request access logger for ``cfg``, or None when access logging is off.

    Call it in the worker after fork (calling it in the arbiter works too). Each
    call writes one line of at most PIPE_BUF bytes with one ``write(2)``; a
    failing write (disk full) is reported once to the error log, not raised
    into the request.
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
