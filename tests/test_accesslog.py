"""Access log formatting (pure functions), lines cut to one atomic write, and the writer."""

from __future__ import annotations

import json
import os
import re
import select
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkwsgi import accesslog, logformat, logs
from forkwsgi.accesslog import compile_format, escape, make_access_logger
from forkwsgi.logformat import check_format
from forkwsgi.settings import BY_NAME

from .test_logs import piped_server, read_lines_slowly, run_clients

DEFAULT_FORMAT = BY_NAME["access_logformat"].default


def environ(**extra: str) -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a%20b?x=1",
        "PATH_INFO": "/a b",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7",
        "HTTP_USER_AGENT": "curl/8.0",
        "HTTP_REFERER": "http://example.com/",
        "HTTP_X_REQUEST_ID": "abc123",
        "CONTENT_TYPE": "text/plain",
    }
    env.update(extra)
    return env


HEADERS = [("Content-Type", "text/html"), ("Content-Length", "13"), ("X-Cache", "HIT")]


def line(fmt: str, env: dict | None = None, status: str = "200 OK", headers=HEADERS,
         length: int = 13, duration: float = 0.0123456) -> str:
    return compile_format(fmt)(env if env is not None else environ(), status, headers, length,
                               duration)


# --- atoms -----------------------------------------------------------------------------------


def test_default_format_is_gunicorns_combined_log():
    text = line(DEFAULT_FORMAT)
    assert re.fullmatch(
        r'192\.0\.2\.7 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
        r'"GET /a%20b\?x=1 HTTP/1\.1" 200 13 "http://example\.com/" "curl/8\.0"', text), text


@pytest.mark.parametrize("atom, expected", [
    ("h", "192.0.2.7"), ("l", "-"), ("u", "-"), ("r", "GET /a%20b?x=1 HTTP/1.1"),
    ("m", "GET"), ("U", "/a b"), ("q", "x=1"), ("H", "HTTP/1.1"), ("s", "200"), ("B", "13"),
    ("b", "13"), ("f", "http://example.com/"), ("a", "curl/8.0"), ("T", "0"), ("M", "12"),
    ("D", "12345"), ("L", "0.012346"), ("p", f"<{os.getpid()}>"),
    ("{X-Request-Id}i", "abc123"), ("{x-request-id}i", "abc123"), ("{Content-Type}i", "text/plain"),
    ("{Missing}i", "-"), ("{x-cache}o", "HIT"), ("{Missing}o", "-"),
    ("{REQUEST_METHOD}e", "GET"), ("{NO_SUCH_VARIABLE_XYZ}e", "-"),
])
def test_each_atom(atom, expected):
    assert line(f"%({atom})s") == expected


def test_os_environment_variable_atom(monkeypatch):
    monkeypatch.setenv("FORKWSGI_TEST_DEPLOY", "blue")
    assert line("%({FORKWSGI_TEST_DEPLOY}e)s") == "blue"


def test_remote_user_and_zero_bytes():
    assert line("%(u)s", environ(REMOTE_USER="alice")) == "alice"
    assert line("%(b)s %(B)s", length=0) == "- 0"


def test_request_line_without_raw_uri():
    env = environ()
    del env["RAW_URI"]
    env["SCRIPT_NAME"] = "/app"
    assert line("%(r)s", env) == "GET /app/a b?x=1 HTTP/1.1"


def test_missing_environ_keys_do_not_fail():
    assert line(DEFAULT_FORMAT, env={}).endswith('"- - -" 200 13 "-" "-"')


def test_numeric_conversions_widths_and_percent():
    assert line("%(s)d %(D)08d %(h)-12s| 100%%") == "200 00012345 192.0.2.7   | 100%"
    assert line("%(B).1f", length=5) == "5.0"


@pytest.mark.parametrize("fmt, message", [
    ("%(zz)s", "unknown atom 'zz'"),
    ("%(h)s 100%", "starts no atom"),
    ("%h", "starts no atom"),
    ("%(h)d", "atom 'h' is text"),
    ("%({X}i)d", "is text"),
    ("%({X}z)s", "unknown atom"),
])
def test_bad_formats_fail_at_configuration_time(fmt, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_format(fmt)


def test_the_format_is_parsed_once(monkeypatch):
    format_line = compile_format(DEFAULT_FORMAT)
    monkeypatch.setattr(logformat, "_TOKEN", None)  # any per-request parsing would now fail
    monkeypatch.setattr(logformat, "parse", None)
    assert format_line(environ(), "200 OK", [], 1, 0.1).startswith("192.0.2.7")


def test_timestamp_is_rendered_once_per_second(monkeypatch):
    now = [1_700_000_000.25]
    calls = []
    real_localtime = accesslog.time.localtime

    fake_time = SimpleNamespace(time=lambda: now[0], strftime=accesslog.time.strftime,
                                localtime=lambda s: calls.append(s) or real_localtime(s))
    monkeypatch.setattr(accesslog, "time", fake_time)
    format_line = compile_format("%(t)s")
    first = format_line(environ(), "200 OK", [], 0, 0.0)
    for _ in range(100):
        now[0] += 0.001
        assert format_line(environ(), "200 OK", [], 0, 0.0) is first
    now[0] += 1
    assert format_line(environ(), "200 OK", [], 0, 0.0) != first
    assert len(calls) == 2


# --- escaping --------------------------------------------------------------------------------


def test_a_client_cannot_forge_a_line():
    env = environ(HTTP_USER_AGENT='x"\r\n127.0.0.1 - - [forged] "GET / HTTP/1.1" 200',
                  RAW_URI="/\x1b[31m\\")
    text = line(DEFAULT_FORMAT, env)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert '"x\\"\\x0d\\x0a127.0.0.1 - - [forged] \\"GET / HTTP/1.1\\" 200"' in text
    assert "/\\x1b[31m\\\\" in text


def test_non_ascii_is_escaped_as_bytes():
    assert escape("caf\xe9") == "caf\\xe9"  # latin-1 environ string: the byte as sent
    assert escape("\u2603") == "\\xe2\\x98\\x83"  # beyond latin-1 (app headers): UTF-8 bytes
    assert escape("\x7f\x00") == "\\x7f\\x00"
    assert escape("plain text") == "plain text"


def _unescape(text: str) -> bytes:
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] == "\\":
            if text[i + 1] == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(ord(text[i + 1]))
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


@given(st.text())
def test_escape_is_printable_ascii_and_reversible(value):
    escaped = escape(value)
    assert escaped.isascii() and escaped.isprintable()
    assert re.search(r'(?<!\\)(\\\\)*"', escaped) is None  # every quote is backslashed
    expected = b"".join(bytes([ord(c)]) if ord(c) < 256 else c.encode("utf-8", "surrogatepass")
                        for c in value)
    assert _unescape(escaped) == expected


# --- JSON ------------------------------------------------------------------------------------


def test_json_lines_are_typed():
    record = json.loads(line("json", duration=0.25))
    assert record["status"] == 200 and record["bytes"] == 13 and record["duration"] == 0.25
    assert record["pid"] == os.getpid()
    assert record["method"] == "GET" and record["uri"] == "/a%20b?x=1"
    assert record["remote_addr"] == "192.0.2.7" and record["user_agent"] == "curl/8.0"
    assert record["remote_user"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", record["time"])


def test_json_escapes_everything_a_client_sends():
    text = line("json", environ(HTTP_USER_AGENT="a\nb\u2028\"c\xe9"))
    assert text.isascii() and "\n" not in text and "\u2028" not in text
    assert json.loads(text)["user_agent"] == "a\nb\u2028\"c\xe9"


# --- one line, one atomic write --------------------------------------------------------------

PIPE_BUF = select.PIPE_BUF
CUT = re.compile(r"(.*)\.\.\.\[cut (\d+) bytes\]", re.DOTALL)


def field(text: str, name: str) -> str:
    """The value of quoted field ``name`` in a default-format line."""
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return quoted[{"r": 0, "f": 1, "a": 2}[name]]


def uncut(value: str, whole: str) -> None:
    """``value`` is ``whole`` cut: a head of it, and the count of the bytes missing."""
    kept, count = CUT.fullmatch(value).groups()
    assert whole.startswith(kept) and len(whole.encode()) - len(kept.encode()) == int(count)


def test_a_line_that_fits_is_not_touched():
    fits = "u" * (PIPE_BUF - 1 - len(line(DEFAULT_FORMAT, environ(HTTP_USER_AGENT=""))) + 1)
    text = line(DEFAULT_FORMAT, environ(HTTP_USER_AGENT=fits))
    assert len(text) == PIPE_BUF - 1 and field(text, "a") == fits  # with "\n": PIPE_BUF
    over = line(DEFAULT_FORMAT, environ(HTTP_USER_AGENT=fits + "u"))
    assert len(over) < PIPE_BUF
    uncut(field(over, "a"), fits + "u")


def test_the_longest_client_fields_are_cut_the_rest_kept():
    agent, referer = "A" * 8000, "R" * 3000
    env = environ(HTTP_USER_AGENT=agent, HTTP_REFERER=referer, RAW_URI="/u" * 300)
    text = line(DEFAULT_FORMAT, env, status="503 Service Unavailable")
    assert len(text) < PIPE_BUF
    assert re.match(r'192\.0\.2\.7 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "', text)
    assert '" 503 13 "' in text
    uncut(field(text, "a"), agent)
    uncut(field(text, "f"), referer)
    assert field(text, "r") == f"GET {'/u' * 300} HTTP/1.1"  # below the cut level
    assert len(field(text, "a")) == len(field(text, "f"))  # cut to one level


def test_numbers_time_status_and_pid_are_never_cut():
    fmt = "%(t)s|%(s)s|%(p)s|%(B)s|%(D)s|%({X-Big}i)s|%(a)s|%({X-Big}i)s"
    big = "b" * 3000
    text = line(fmt, environ(HTTP_X_BIG=big, HTTP_USER_AGENT="c" * 3000))
    stamp, status, pid, length, micros, first, agent, second = text.split("|")
    assert (status, pid, length, micros) == ("200", f"<{os.getpid()}>", "13", "12345")
    assert len(text) < PIPE_BUF and re.fullmatch(r"\[.*", stamp)
    for value, whole in ((first, big), (agent, "c" * 3000), (second, big)):
        uncut(value, whole)


@pytest.mark.parametrize("shift", range(4))
def test_a_cut_never_splits_an_escape(shift):
    agent = "a" * shift + '\x01"\\' * 3000  # escaped: \x01 \" \\
    value = field(line(DEFAULT_FORMAT, environ(HTTP_USER_AGENT=agent)), "a")
    kept, _ = CUT.fullmatch(value).groups()
    assert re.fullmatch(r"a*(?:\\x01\\\"\\\\)*(?:\\x01|\\x01\\\")?", kept)
    uncut(value, escape(agent))


def test_a_format_too_long_by_itself_is_cut_at_the_end():
    text = line("%(s)s " + "x" * 5000 + " %(a)s")
    assert text.startswith("200 xxx") and len(text) < PIPE_BUF
    uncut(text, "200 " + "x" * 5000 + " curl/8.0")


def test_non_ascii_format_text_counts_in_bytes():
    text = line("%(a)s \u20ac" + "\xe9" * 2100)  # 4203 bytes of UTF-8 but 2101 characters
    assert len(text.encode()) < PIPE_BUF
    uncut(text, "curl/8.0 \u20ac" + "\xe9" * 2100)


def test_json_stays_valid_json_when_cut():
    agent = ("\U0001f600\n\"\\\xe9" + "x" * 13) * 600
    env = environ(HTTP_USER_AGENT=agent, RAW_URI="/" + "u" * 5000, HTTP_REFERER="r" * 100)
    text = line("json", env)
    assert len(text) < PIPE_BUF and text.isascii()
    record = json.loads(text)
    assert record["status"] == 200 and record["pid"] == os.getpid() and record["bytes"] == 13
    assert record["referer"] == "r" * 100 and record["method"] == "GET"
    for key, whole in (("user_agent", agent), ("uri", "/" + "u" * 5000)):
        kept, count = CUT.fullmatch(record[key]).groups()
        assert whole.startswith(kept)
        kept.encode("utf-8")  # no half of a surrogate pair
        encoded = json.dumps(whole)[1:-1]
        assert int(count) == len(encoded) - len(json.dumps(kept)[1:-1])


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=3000))
def test_any_line_fits_and_json_parses(piece, extra):
    agent = piece * (6000 // len(piece) + 1)  # long, and cut wherever its escapes fall
    env = environ(HTTP_USER_AGENT=agent, RAW_URI="/" + "p" * extra)
    assert len(line(DEFAULT_FORMAT, env).encode()) < PIPE_BUF
    text = line("json", env)
    assert len(text) < PIPE_BUF and json.loads(text)["status"] == 200


FORGED = '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /forged HTTP/1.1" 200 0 "-" "x"'
ACCESS_LINE = re.compile(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                         r'"GET /(\d+) HTTP/1\.1" 200 \d+ "-" "Mozilla/5\.0 (A+)\.\.\.\[cut \d+ bytes\]"')


@pytest.mark.process
def test_workers_sharing_a_slow_pipe_write_whole_lines_no_forgery(tmp_path):
    # A User-Agent of ~8 KB whose text at byte 4096 would look like a line of its own.
    agent = "Mozilla/5.0 " + "A" * (4096 - 12) + FORGED + "B" * 3800
    with piped_server(tmp_path, "forkwsgi.examples.hello:app", "--access-logfile", "-",
                      stream="stdout") as (server, fd):
        requests = [f"GET /{i} HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\n"
                    f"Connection: close\r\n\r\n".encode() for i in range(32)]
        join = run_clients(server, requests)
        lines = read_lines_slowly(fd, lambda lines: len(lines) >= len(requests))
        join()
    assert len(lines) == len(requests)
    paths = []
    for text in lines:
        match = ACCESS_LINE.fullmatch(text)
        assert match, text[:300]
        assert len(text) < PIPE_BUF and "forged" not in text
        paths.append(int(match.group(1)))
    assert sorted(paths) == list(range(len(requests)))


# --- the writer ------------------------------------------------------------------------------


def cfg(**values):
    base = {"access_logfile": None, "access_logformat": DEFAULT_FORMAT}
    base.update(values)
    return SimpleNamespace(**base)


def test_off_means_no_logger():
    assert make_access_logger(cfg()) is None


def test_writes_one_line_per_request_and_reopens(tmp_path):
    path = tmp_path / "access.log"
    log = make_access_logger(cfg(access_logfile=str(path), access_logformat="%(m)s %(U)s"))
    log(environ(), "200 OK", [], 1, 0.1)
    log(environ(PATH_INFO="/two"), "200 OK", [], 1, 0.1)
    assert path.read_text() == "GET /a b\nGET /two\n"
    path.rename(tmp_path / "access.log.1")  # logrotate
    log(environ(PATH_INFO="/three"), "200 OK", [], 1, 0.1)
    logs.reopen_files()
    log(environ(PATH_INFO="/four"), "200 OK", [], 1, 0.1)
    assert (tmp_path / "access.log.1").read_text().splitlines()[-1] == "GET /three"
    assert path.read_text() == "GET /four\n"


def test_stdout(capfd):
    log = make_access_logger(cfg(access_logfile="-", access_logformat="json"))
    log(environ(), "404 Not Found", [], 0, 0.0)
    out = capfd.readouterr().out
    assert json.loads(out)["status"] == 404 and out.endswith("\n")


def test_a_write_failure_is_reported_once_not_raised(tmp_path, caplog, monkeypatch):
    log = make_access_logger(cfg(access_logfile=str(tmp_path / "a.log")))
    log_file = logs.open_log_file(str(tmp_path / "a.log"), logs.STDOUT)

    def full(data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_file, "write", full)
    logger = logs.logging.getLogger(logs.ERROR_LOGGER)
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level("ERROR", logger=logs.ERROR_LOGGER):
        for _ in range(3):
            log(environ(), "200 OK", [], 1, 0.1)
    messages = [r.getMessage() for r in caplog.records if "access log" in r.getMessage()]
    assert len(messages) == 1 and "No space left on device" in messages[0]
