"""Properties of the request parser, checked with hypothesis.

Owns: generators of valid requests (any method token, paths with escapes,
queries, fields with OWS and obs-text, Content-Length or chunked bodies with
extensions and trailers, leading empty lines) and the properties that must
hold for all of them: they round-trip; every prefix of a head is incomplete;
a body (chunked or not) decodes the same however it is split; and any bytes at all,
random or mutated from a valid request, end in a result or an HTTPError,
never another exception, never a hang.

Must never: take long. Example counts are chosen so that the whole file runs
in well under 20 seconds.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkwsgi.http._abnf import FIELD_NAME, METHOD
from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import ChunkedDecoder, Limits, RequestHead, body_decoder, parse_head
from tests.fuzzing import mutated, replays_both_ways

SETTINGS = settings(max_examples=150, deadline=2000,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FAST = settings(SETTINGS, max_examples=300)

TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VCHARS = "".join(map(chr, range(0x21, 0x7F)))
OBS_TEXT = "".join(map(chr, range(0x80, 0x100)))
PATH_CHARS = VCHARS.replace("#", "").replace("?", "").replace("%", "")
QUERY_CHARS = VCHARS.replace("#", "")
HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="
LIMITS = [Limits(), Limits(request_line=32, fields=4, field_size=32, head=256, body=16)]
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "expect"}

tokens = st.text(TCHARS, min_size=1, max_size=12)
methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                    tokens.filter(lambda m: m not in ("CONNECT", "HEAD")))
escapes = st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True).filter(lambda e: e != "%00")
segments = st.lists(st.one_of(st.text(PATH_CHARS, max_size=8), escapes), max_size=4).map("".join)
paths = st.lists(segments, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))
queries = st.one_of(st.none(), st.text(QUERY_CHARS, max_size=30))
hosts = st.builds(lambda name, port: name + port, st.text(HOST_CHARS, max_size=20),
                  st.sampled_from(["", ":80", ":8000", ":"]))
ows = st.text(" \t", max_size=3)
field_values = st.builds(
    lambda first, inner: (first + inner).rstrip(" \t") if first else "",
    st.text(VCHARS + OBS_TEXT, max_size=1), st.text(VCHARS + OBS_TEXT + " \t", max_size=40))
field_names = tokens.filter(lambda n: n.lower() not in FRAMING)
extensions = st.lists(st.one_of(
    st.builds(lambda n: f";{n}", tokens),
    st.builds(lambda n, v: f";{n}={v}", tokens, tokens),
    st.builds(lambda n, v: f';{n}="{v}"', tokens, st.text(VCHARS.replace('"', "").replace(
        "\\", "") + " ", max_size=10)),
), max_size=2).map("".join)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict]:
    """A valid request and the parse it must give (the head's fields, body, trailers)."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    method = draw(methods)
    path = draw(paths)
    query = draw(queries)
    target = path if query is None else f"{path}?{query}"
    fields = draw(st.lists(st.tuples(field_names, field_values), max_size=8))
    host = draw(hosts) if version == "HTTP/1.1" or draw(st.booleans()) else None
    if host is not None:
        fields.insert(draw(st.integers(0, len(fields))), ("Host", host))
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive, Upgrade"]))
    if connection is not None:
        fields.append(("Connection", connection))
    expect = version == "HTTP/1.1" and draw(st.booleans())
    if expect:
        fields.append(("Expect", "100-continue"))
    framing = draw(st.sampled_from(["none", "length"] + (["chunked"] * (version == "HTTP/1.1"))))
    body = draw(st.binary(max_size=300)) if framing != "none" else b""
    trailers: list[tuple[str, str]] = []
    wire = b""
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
        wire = body
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked"]))))
        rest = body
        while rest:
            size = draw(st.integers(1, len(rest)))
            wire += b"%x%s\r\n%s\r\n" % (size, draw(extensions).encode(), rest[:size])
            rest = rest[size:]
        trailers = draw(st.lists(st.tuples(field_names, field_values), max_size=3))
        wire += b"0" + draw(extensions).encode() + b"\r\n"
        wire += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers) + b"\r\n"

    lines = [f"{method} {target} {version}"]
    lines += [f"{name}:{draw(ows)}{value}{draw(ows)}" for name, value in fields]
    head = "\r\n" * draw(st.integers(0, 2)) + "\r\n".join(lines) + "\r\n\r\n"
    raw = head.encode("latin-1") + wire

    keep_alive = connection != "close" and (version == "HTTP/1.1" or connection is not None)
    expected = RequestHead(method, target, path, query or "", version, fields, host,
                           len(body) if framing == "length" else None, framing == "chunked",
                           keep_alive, expect)
    return raw, {"head": expected, "head_length": len(head), "body": body, "trailers": trailers}


def parse_all(raw: bytes, limits: Limits = LIMITS[0]) -> tuple[RequestHead, int, bytes, list]:
    result = parse_head(raw, limits)
    assert result is not None
    head, consumed = result
    if head.chunked:
        decoder = ChunkedDecoder(limits)
        body = decoder.feed(raw[consumed:])
        assert decoder.done and decoder.unused == b""
        return head, consumed, body, decoder.trailers
    return head, consumed, raw[consumed:consumed + (head.content_length or 0)], []


@SETTINGS
@given(requests())
def test_valid_requests_round_trip(request: tuple[bytes, dict]) -> None:
    raw, expected = request
    head, consumed, body, trailers = parse_all(raw)
    assert head == expected["head"]
    assert consumed == expected["head_length"]
    assert body == expected["body"]
    assert trailers == expected["trailers"]


@SETTINGS
@given(requests(), st.data())
def test_head_split_anywhere_wants_more_then_parses(request: tuple[bytes, dict],
                                                   data: st.DataObject) -> None:
    raw, expected = request
    for _ in range(5):
        end = data.draw(st.integers(0, expected["head_length"] - 1))
        assert parse_head(raw[:end]) is None
    assert parse_head(raw) == (expected["head"], expected["head_length"])


@SETTINGS
@given(requests(), st.data())
def test_body_split_anywhere_same_output(request: tuple[bytes, dict],
                                        data: st.DataObject) -> None:
    """Chunked or Content-Length, the body decoder the head asks for gives the same body,
    trailers and bytes after it however the wire is split (the event loop feeds it
    whatever each recv returns)."""
    raw, expected = request
    wire = raw[expected["head_length"]:] + b"NEXT"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = body_decoder(expected["head"])
    out = b"".join(decoder.feed(piece) for piece in pieces)
    assert decoder.done
    assert (out, decoder.trailers, decoder.unused) == (expected["body"], expected["trailers"],
                                                       b"NEXT")


def check_invariants(buf: bytes, limits: Limits) -> None:
    """Whatever ``buf`` is, the parser answers None, a sane head, or an HTTPError."""
    try:
        result = parse_head(buf, limits)
    except HTTPError as exc:
        assert 400 <= exc.status <= 505
        return
    if result is None:
        return
    head, consumed = result
    assert 0 < consumed <= len(buf) and buf[consumed - 4:consumed] == b"\r\n\r\n"
    assert consumed <= limits.head
    assert METHOD.fullmatch(head.method)
    assert head.version in ("HTTP/1.0", "HTTP/1.1")
    assert len(head.headers) <= limits.fields
    for name, value in head.headers:
        assert FIELD_NAME.fullmatch(name)
        assert not set(value) & set("\r\n\x00") and value == value.strip(" \t")
    assert not (head.chunked and head.content_length is not None)  # no CL.TE ambiguity
    assert head.version == "HTTP/1.1" or not head.chunked
    assert head.host is not None or head.version == "HTTP/1.0"
    assert head.path[:1] in ("/", "*") or head.method == "CONNECT"
    if head.chunked:
        decoder = ChunkedDecoder(limits)
        try:
            decoder.feed(buf[consumed:])
        except HTTPError:
            pass


@FAST
@given(st.binary(max_size=300), st.sampled_from(LIMITS))
def test_random_bytes(buf: bytes, limits: Limits) -> None:
    check_invariants(buf, limits)
    check_invariants(b"GET / HTTP/1.1\r\n" + buf, limits)
    check_invariants(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + buf,
                     limits)


@FAST
@given(st.binary(max_size=300), st.sampled_from(LIMITS))
def test_random_chunked_bytes(buf: bytes, limits: Limits) -> None:
    decoder = ChunkedDecoder(limits)
    try:
        decoder.feed(buf)
    except HTTPError:
        return
    if decoder.done:
        assert buf.endswith(decoder.unused)


mutations = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                               st.integers(0, 10**6),
                               st.sampled_from(b"\x00\t\n\r :;,\x7f\x80\xffaZ0-\"\\")),
                     min_size=1, max_size=4)


@FAST
@given(requests(), mutations, st.sampled_from(LIMITS))
def test_mutated_requests(request: tuple[bytes, dict], edits: list, limits: Limits) -> None:
    check_invariants(mutated(request[0], edits), limits)


@pytest.mark.process
def test_fuzz_entry_point_replays_the_corpus():
    """The atheris entry point runs every corpus file through its invariants; the same
    script replays without atheris, so a finding saved by the fuzzer can be rerun here."""
    from tests import fuzz_parser
    from tests.conftest import REPO

    assert replays_both_ways(REPO / "tests" / "fuzz_parser.py", fuzz_parser.TestOneInput,
                             REPO / "tests" / "corpus", REPO / "src") >= 150
