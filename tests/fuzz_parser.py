"""Fuzz entry point for the request parser (atheris), and a corpus replayer without it.

Owns: one ``TestOneInput(data)`` that runs arbitrary bytes through parse_head
and, when a head parses, its body through ChunkedDecoder fed in two pieces,
under the default limits and under tiny ones; and the invariants any result
must satisfy (see check()).

Must never: let an exception other than HTTPError pass as a finding, or be
collected by pytest (the name does not start with ``test_``).

Usage (``pip install -e '.[fuzz]'`` brings atheris; libFuzzer adds what it finds to
the FIRST directory: keep that one scratch):
    python tests/fuzz_parser.py /tmp/fuzz-parser tests/corpus       # fuzz, seeded by the corpus
    python tests/fuzz_parser.py -runs=200000 /tmp/fuzz-parser tests/corpus
    python tests/fuzz_parser.py --replay tests/corpus [FILE...]     # no atheris needed
Without atheris installed every run is a replay: each file (or every file in
each directory) is fed to TestOneInput once.
"""

from __future__ import annotations

try:
    from tests.fuzzing import fuzz_main, instrumented
except ImportError:  # run as a script: tests/ itself is on sys.path
    from fuzzing import fuzz_main, instrumented

with instrumented():
    from forkwsgi.http import _abnf, parser
    from forkwsgi.http.errors import HTTPError

LIMITS = (parser.Limits(),
          parser.Limits(request_line=40, fields=4, field_size=40, head=200, body=32))


def check(data: bytes, limits: parser.Limits) -> None:
    try:
        result = parser.parse_head(data, limits)
    except HTTPError:
        return
    if result is None:
        return
    head, consumed = result
    if not (0 < consumed <= len(data) and data[consumed - 4:consumed] == b"\r\n\r\n"):
        raise AssertionError(f"consumed={consumed} does not end a head")
    if consumed > limits.head or len(head.headers) > limits.fields:
        raise AssertionError("a limit was not enforced")
    if not _abnf.METHOD.fullmatch(head.method):
        raise AssertionError(f"method {head.method!r} is not a token")
    if head.chunked and head.content_length is not None:
        raise AssertionError("both chunked and Content-Length")
    if limits.body and (head.content_length or 0) > limits.body:
        raise AssertionError("Content-Length over the body limit")
    for name, value in head.headers:
        if not _abnf.FIELD_NAME.fullmatch(name) or set(value) & {"\r", "\n", "\x00"}:
            raise AssertionError(f"bad field {name!r}: {value!r}")
    if head.chunked:
        rest = data[consumed:]
        whole, split = parser.ChunkedDecoder(limits), parser.ChunkedDecoder(limits)
        try:
            out = whole.feed(rest)
        except HTTPError:
            return
        cut = len(rest) // 2
        out2 = split.feed(rest[:cut]) + split.feed(rest[cut:])  # must not raise either
        if (out, whole.done, whole.trailers, whole.unused) != (
                out2, split.done, split.trailers, split.unused):
            raise AssertionError("chunked output depends on the split")
        if limits.body and len(out) > limits.body:
            raise AssertionError("chunked body over the limit")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    for limits in LIMITS:
        check(data, limits)


if __name__ == "__main__":
    fuzz_main(TestOneInput)
