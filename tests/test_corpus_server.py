"""The request corpus (tests/corpus/) sent to the real server over a socket.

Owns: the end-to-end reading of each corpus case: the bytes go to
``python -m forkwsgi ... tests.apps:echo`` exactly as in the file. An invalid
case must get its status with ``Connection: close``, after which the server
still answers a normal request; a valid case must reach the app with the
method, PATH_INFO (percent-decoded, latin-1), QUERY_STRING and body the
parser promised.

Must never: mock the server or the socket. Cases share one server per set of
limits (the server is started with exactly the limits the parser test uses),
and a failure names every case that failed rather than stopping at the first.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import pytest

from forkwsgi.http.parser import ChunkedDecoder, Limits
from tests.conftest import Server
from tests.test_parser_corpus import CASES, Case

SERVED = [case for case in CASES if case.server]
DEFAULT = [case for case in SERVED if case.limits == Limits()]
CUSTOM = sorted({case.limits for case in SERVED} - {Limits()}, key=repr)
AFTER = b"GET / HTTP/1.0\r\n\r\n"  # fits every limit set in the corpus


def limit_flags(limits: Limits) -> list[str]:
    return ["--limit-request-line", str(limits.request_line),
            "--limit-request-fields", str(limits.fields),
            "--limit-request-field-size", str(limits.field_size),
            "--limit-request-head", str(limits.head),
            "--limit-request-body", str(limits.body)]


# --- talking to the server --------------------------------------------------------------------


def exchange(server: Server, raw: bytes, half_close: bool) -> bytes:
    """Send ``raw`` (then shut down our side if ``half_close``); read until the server closes.

    The server may answer an error and close before reading all we sent: a failed send or
    a reset after the answer arrived is then expected, and what was read is returned.
    """
    chunks: list[bytes] = []
    with server.connect(timeout=5.0) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError("the server neither answered nor closed within 5 s") from None
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def read_response(data: bytes, head_request: bool = False) -> tuple[int, dict[str, str], bytes,
                                                                     bytes]:
    """(status, lower-cased headers, body, what follows) of the first response in ``data``."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, _, status_text = lines[0].partition(" ")
    assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
    status = int(status_text[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_request or 100 <= status < 200 or status in (204, 304):
        return status, headers, b"", rest
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoder = ChunkedDecoder()
        body = decoder.feed(rest)
        assert decoder.done, "chunked response cut short"
        return status, headers, body, decoder.unused
    if "content-length" in headers:
        length = int(headers["content-length"])
        assert len(rest) >= length, "response body cut short"
        return status, headers, rest[:length], rest[length:]
    return status, headers, rest, b""  # delimited by the close


def final_response(data: bytes, head_request: bool = False) -> tuple[int, dict[str, str],
                                                                      bytes]:
    """The first final response, after any 1xx (100 Continue)."""
    while True:
        status, headers, body, data = read_response(data, head_request)
        if status >= 200:
            return status, headers, body


# --- the checks -------------------------------------------------------------------------------


def check_invalid(server: Server, case: Case) -> None:
    status, headers, _ = final_response(exchange(server, case.raw, half_close=False))
    assert status == case.expected["status"], f"status {status}, want {case.expected['status']}"
    assert "close" in headers.get("connection", "").lower(), "no 'Connection: close'"
    after, _, _ = final_response(exchange(server, AFTER, half_close=False))
    assert after == 200, f"the next request got {after}"


def check_valid(server: Server, case: Case) -> None:
    expected = case.expected
    head_request = expected["method"] == "HEAD"
    status, _, body = final_response(exchange(server, case.raw, half_close=True), head_request)
    assert status == 200, f"status {status}"
    if head_request:
        return
    environ = json.loads(body)
    path_info = unquote_to_bytes(expected["path"]).decode("latin-1")
    got = {key: environ.get(key) for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING")}
    want = {"REQUEST_METHOD": expected["method"], "PATH_INFO": path_info,
            "QUERY_STRING": expected["query"]}
    assert got == want
    assert environ.get("body") == expected["body"], "body differs"


def run_cases(server: Server, cases: list[Case]) -> None:
    failures = []
    for case in cases:
        try:
            (check_valid if case.valid else check_invalid)(server, case)
        except (AssertionError, OSError, ValueError) as exc:
            failures.append(f"{case.name}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


def test_corpus_default_limits(server: Server) -> None:
    """Every corpus case with the default limits, through one server.

    The ``server`` fixture runs the default settings; they equal Limits() but for the body
    limit (1 GiB there, none in Limits()), which no case served here comes near.
    """
    assert len(DEFAULT) >= 150
    run_cases(server, DEFAULT)


@pytest.mark.parametrize("limits", CUSTOM, ids=[repr(limits) for limits in CUSTOM])
def test_corpus_custom_limits(serve: Callable[..., Server], limits: Limits) -> None:
    server = serve("tests.apps:echo", *limit_flags(limits))
    run_cases(server, [case for case in SERVED if case.limits == limits])
