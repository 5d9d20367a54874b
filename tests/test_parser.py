"""Unit tests of forkwsgi.http.parser: the contract the worker relies on.

Owns: behaviour that a corpus file cannot show on its own: incremental input
(None, then a result), errors raised before the head is complete, limits
checked at their exact boundary, the decoder's state across feed() calls,
and the types of what comes out.

Must never: start a server or a socket; parser.py is sans-I/O and so are its tests.
"""

from __future__ import annotations

import pytest

from forkwsgi.http import errors
from forkwsgi.http.parser import (
    MAX_CHUNK_EXTENSIONS,
    ChunkedDecoder,
    Limits,
    RequestHead,
    parse_head,
)

GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"


DEFAULT = Limits()


def status_of(buf: bytes, limits: Limits = DEFAULT) -> int:
    with pytest.raises(errors.HTTPError) as info:
        parse_head(buf, limits)
    return info.value.status


# --- parse_head: results ----------------------------------------------------------------------


def test_result_and_consumed() -> None:
    head, consumed = parse_head(GET + b"NEXT")
    assert consumed == len(GET)
    assert head == RequestHead("GET", "/a?b=c", "/a", "b=c", "HTTP/1.1",
                               [("Host", "example.com"), ("Accept", "*/*")], "example.com",
                               None, False, True, False)


def test_bytearray_input() -> None:
    assert parse_head(bytearray(GET)) == parse_head(GET)


def test_everything_is_str() -> None:
    head, _ = parse_head(b"GET /\xe9 HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n".replace(
        b"/\xe9", b"/%E9"))
    assert head.headers[1] == ("X", "caf\xe9")  # obs-text kept, latin-1 (PEP 3333)
    for value in (head.method, head.target, head.path, head.query, head.version, head.host):
        assert type(value) is str


def test_leading_empty_lines_are_consumed() -> None:
    head, consumed = parse_head(b"\r\n\r\n" + GET)
    assert consumed == len(GET) + 4
    assert head.path == "/a"


def test_incomplete_returns_none() -> None:
    for end in range(len(GET)):
        assert parse_head(GET[:end]) is None


def test_only_empty_lines_want_more() -> None:
    assert parse_head(b"\r\n" * 10) is None
    assert parse_head(b"\r\n\r") is None


@pytest.mark.parametrize("name", ["Content-Type", "content-type", "Authorization", "Range",
                                  "If-Modified-Since", "User-Agent", "Referer", "Origin"])
def test_a_repeated_singleton_field_is_400(name: str) -> None:
    # Joined with a comma, two Content-Types would be read differently by two parsers.
    raw = (b"POST / HTTP/1.1\r\nHost: h\r\n%s: a\r\nAccept: */*\r\n%s: b\r\n"
           b"Content-Length: 0\r\n\r\n") % (name.encode(), name.title().encode())
    assert status_of(raw) == 400


def test_repeated_list_fields_are_kept_in_order() -> None:
    head, _ = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nX-Y: 1\r\n"
                         b"Accept: b\r\nCache-Control: no-cache\r\nCache-Control: max-age=0"
                         b"\r\n\r\n")
    assert [value for name, value in head.headers if name == "Accept"] == ["a", "b"]


def test_content_length_and_chunked_are_exclusive() -> None:
    head, _ = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert head.chunked and head.content_length is None
    head, _ = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
    assert not head.chunked and head.content_length == 10


def test_absolute_form_host_overrides_host_field() -> None:
    head, _ = parse_head(b"GET http://a.example:81/x HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert (head.host, head.path, head.headers) == ("a.example:81", "/x",
                                                    [("Host", "b.example")])


# --- parse_head: errors before the head is complete -------------------------------------------


def test_long_request_line_is_414_without_crlf() -> None:
    limits = Limits(request_line=20)
    assert parse_head(b"GET /" + b"a" * 15, limits) is None  # 20 bytes: at the limit
    assert parse_head(b"GET /" + b"a" * 15 + b"\r", limits) is None  # the CR may be the CRLF's
    assert status_of(b"GET /" + b"a" * 16, limits) == 414


def test_growing_head_is_431_before_its_end() -> None:
    limits = Limits(head=64)
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    assert parse_head(start + b"a" * (63 - len(start)), limits) is None
    assert status_of(start + b"a" * (64 - len(start)), limits) == 431


def test_head_limit_is_inclusive() -> None:
    assert parse_head(GET, Limits(head=len(GET))) is not None
    assert status_of(GET, Limits(head=len(GET) - 1)) == 431


def test_long_field_line_is_431_without_crlf() -> None:
    limits = Limits(field_size=10)
    assert parse_head(b"GET / HTTP/1.1\r\nX: 1234567", limits) is None  # 10 bytes
    assert status_of(b"GET / HTTP/1.1\r\nX: 12345678", limits) == 431


def test_too_many_fields_is_431_without_crlf() -> None:
    limits = Limits(fields=2)
    assert parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n", limits) is None
    assert status_of(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC", limits) == 431


@pytest.mark.parametrize("buf", [
    b"GET / HTTP/1.1\n",
    b"GET / HTTP/1.1\r\nHost: h\n",
    b"GET / HTTP/1.1\r\nHost: h\rX",
    b"GET / HTTP/1.1\r\nHost: h\x00",
    b"GET / HTTP/1.1\r\n Host: h",
    b"GET / HTTP/1.1\r\nHost : h",
    b"GET / HTTP/2.0\r\n",
    b"GET /#x",
    b"GET  /",
    b"\n",
    b"\x16\x03\x01",
])
def test_proven_invalid_before_the_end(buf: bytes) -> None:
    with pytest.raises(errors.HTTPError):
        parse_head(buf)


def test_request_line_checked_as_soon_as_complete() -> None:
    assert status_of(b"GET / HTTP/3.0\r\nHost: h") == 505
    assert status_of(b"GET * HTTP/1.1\r\n") == 400


def test_huge_buffer_without_end_costs_one_limit() -> None:
    # No CRLF CRLF in a megabyte: refused after looking at limits.head bytes at most.
    buf = b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 100 + b"\r\n" + b"Y: " + b"b" * 2_000_000
    assert status_of(buf, Limits(field_size=10**7)) == 431


# --- parse_head: the errors carry their status -----------------------------------------------


def test_error_classes() -> None:
    cases = {
        b"GET / HTTP/1.1\r\n\r\n": errors.BadRequest,
        b"GET / HTTP/2.0\r\n\r\n": errors.VersionNotSupported,
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: x\r\n\r\n": errors.ExpectationFailed,
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n": errors.URITooLong,
    }
    for buf, cls in cases.items():
        with pytest.raises(cls):
            parse_head(buf)
    with pytest.raises(errors.ContentTooLarge):
        parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", Limits(body=10))
    with pytest.raises(errors.HeaderFieldsTooLarge):
        parse_head(GET, Limits(fields=1))


def test_body_limit_zero_means_none() -> None:
    head, _ = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000000\r\n\r\n",
                         Limits(body=0))
    assert head.content_length == 10**10


def test_fragment_and_percent_escapes_in_query_are_the_apps() -> None:
    head, _ = parse_head(b"GET /p?a=%zz&b=% HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head.query == "a=%zz&b=%"
    assert status_of(b"GET /p%zz?a HTTP/1.1\r\nHost: h\r\n\r\n") == 400


# --- ChunkedDecoder ---------------------------------------------------------------------------


def test_decoder_one_byte_at_a_time() -> None:
    wire = b"3;x=1\r\nabc\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\nT: v\r\n\r\nrest"
    decoder = ChunkedDecoder()
    out = b""
    for i in range(len(wire)):
        out += decoder.feed(wire[i:i + 1])
        assert decoder.done == (i >= len(wire) - len(b"rest") - 1)
    assert out == b"abc" + b"y" * 16
    assert decoder.done and decoder.trailers == [("T", "v")] and decoder.unused == b"rest"


def test_decoder_after_done_keeps_bytes_unused() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n\r\nGET") == b""
    assert decoder.done
    assert decoder.feed(b" / HTTP/1.1") == b""
    assert decoder.unused == b"GET / HTTP/1.1"


def test_decoder_accepts_bytes_like() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(bytearray(b"2\r\nhi\r\n")) == b"hi"
    assert decoder.feed(memoryview(b"0\r\n\r\n")) == b""
    assert decoder.done


def test_decoder_returns_data_as_it_arrives() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"a\r\nhello") == b"hello"
    assert decoder.feed(b"world") == b"world"
    assert decoder.feed(b"\r") == b""
    assert not decoder.done


def test_decoder_body_limit_counts_every_chunk() -> None:
    decoder = ChunkedDecoder(Limits(body=10))
    assert decoder.feed(b"5\r\nhello\r\n5\r\nworld\r\n") == b"helloworld"
    with pytest.raises(errors.ContentTooLarge):
        decoder.feed(b"1\r\n")  # refused on the size, before the data


def test_decoder_extension_budget_spans_chunks() -> None:
    decoder = ChunkedDecoder()
    chunk = b"1;e=" + b"x" * 1000 + b"\r\na\r\n"
    with pytest.raises(errors.ContentTooLarge):
        for _ in range(MAX_CHUNK_EXTENSIONS // 1000 + 2):
            decoder.feed(chunk)


def test_decoder_long_extension_refused_before_its_end() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(errors.ContentTooLarge):
        decoder.feed(b"1;e=" + b"x" * (MAX_CHUNK_EXTENSIONS + 100))


@pytest.mark.parametrize("wire", [b"5\n", b"x", b"5;a\rb", b"\r\n", b" 5"])
def test_decoder_errors_before_the_line_ends(wire: bytes) -> None:
    with pytest.raises(errors.BadRequest):
        ChunkedDecoder().feed(wire)


def test_decoder_long_trailer_refused_before_its_end() -> None:
    decoder = ChunkedDecoder(Limits(field_size=10))
    decoder.feed(b"0\r\nX: 1234567")
    with pytest.raises(errors.HeaderFieldsTooLarge):
        decoder.feed(b"8")
