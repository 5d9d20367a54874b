"""The request corpus (tests/corpus/) against parse_head and ChunkedDecoder.

Owns: loading the corpus (``CASES``, also used by test_corpus_server.py and
fuzz_parser.py), running every case through the parser as the worker would
(head, then the body by its framing), and the checks that hold for every
case: the expected result or status, None for every prefix of a valid head,
the same chunked body however it is split, and no stale generated files.

Must never: start a server or touch a socket; expectations live in the
corpus files, not here.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import ChunkedDecoder, Limits, parse_head

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    expected: dict  # the parse (see corpus/generate.py), or {"status": N}
    limits: Limits
    server: bool  # False: a real socket cannot carry this case

    @property
    def valid(self) -> bool:
        return "status" not in self.expected


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CORPUS.glob("*.http")):
        expected = json.loads(path.with_suffix(".json").read_text())
        limits = Limits(**expected.pop("limits", {}))
        server = expected.pop("server", True)
        cases.append(Case(path.stem, path.read_bytes(), expected, limits, server))
    return cases


CASES = load_cases()
VALID = [case for case in CASES if case.valid]
INVALID = [case for case in CASES if not case.valid]


def ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


def parse_request(raw: bytes, limits: Limits) -> dict:
    """Head, then body by its framing, as the worker reads them; the corpus JSON shape."""
    result = parse_head(raw, limits)
    assert result is not None, "parse_head wants more bytes than the whole case"
    head, consumed = result
    rest = raw[consumed:]
    trailers: list[tuple[str, str]] = []
    if head.chunked:
        decoder = ChunkedDecoder(limits)
        body = decoder.feed(rest)
        assert decoder.done, "the chunked body does not end in the case"
        unused, trailers = decoder.unused, decoder.trailers
    else:
        length = head.content_length or 0
        body, unused = rest[:length], rest[length:]
    parsed = {f.name: getattr(head, f.name) for f in fields(head)}
    parsed["headers"] = [list(field) for field in head.headers]
    parsed.update(body=body.decode("latin-1"), trailers=[list(t) for t in trailers],
                  unused=unused.decode("latin-1"))
    return parsed


def test_corpus_is_large_and_mixed() -> None:
    assert len(CASES) >= 150
    assert len(VALID) >= 50 and len(INVALID) >= 100


def test_corpus_files_match_generator() -> None:
    spec = importlib.util.spec_from_file_location("corpus_generate", CORPUS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.write(check=True) == [], "run python tests/corpus/generate.py"


@pytest.mark.parametrize("case", VALID, ids=ids(VALID))
def test_valid(case: Case) -> None:
    assert parse_request(case.raw, case.limits) == case.expected


@pytest.mark.parametrize("case", INVALID, ids=ids(INVALID))
def test_invalid(case: Case) -> None:
    # The whole case is all the server gets: an error must not wait for more bytes.
    with pytest.raises(HTTPError) as info:
        parse_request(case.raw, case.limits)
    assert info.value.status == case.expected["status"], info.value.detail


def _head_length(case: Case) -> int:
    result = parse_head(case.raw, case.limits)
    assert result is not None
    return result[1]


SMALL_VALID = [case for case in VALID if len(case.raw) <= 4096]
SMALL_INVALID = [case for case in INVALID if len(case.raw) <= 4096]


@pytest.mark.parametrize("case", SMALL_VALID, ids=ids(SMALL_VALID))
def test_valid_prefixes_want_more(case: Case) -> None:
    """Every proper prefix of a valid head is incomplete, never an error."""
    consumed = _head_length(case)
    for end in range(consumed):
        assert parse_head(case.raw[:end], case.limits) is None, end
        assert parse_head(bytearray(case.raw[:end]), case.limits) is None, end


@pytest.mark.parametrize("case", SMALL_INVALID, ids=ids(SMALL_INVALID))
def test_invalid_prefixes(case: Case) -> None:
    """A prefix of an invalid request is incomplete or already an error; never a parse
    that the whole request would contradict."""
    for end in range(len(case.raw)):
        try:
            result = parse_head(case.raw[:end], case.limits)
        except HTTPError:
            continue
        if result is not None:
            # A complete head in a prefix is the whole case's head: same bytes, same answer.
            assert parse_head(case.raw, case.limits) == result


CHUNKED = [case for case in VALID if case.expected["chunked"]]


@pytest.mark.parametrize("case", CHUNKED, ids=ids(CHUNKED))
def test_chunked_any_split(case: Case) -> None:
    """The decoder's output does not depend on where its input was split."""
    body = case.raw[_head_length(case):]
    expected = (case.expected["body"].encode("latin-1"), case.expected["trailers"],
                case.expected["unused"].encode("latin-1"))
    splits = [[body[:i], body[i:]] for i in range(len(body) + 1)]
    splits.append([body[i:i + 1] for i in range(len(body))])
    for pieces in splits:
        decoder = ChunkedDecoder(case.limits)
        out = b"".join(decoder.feed(piece) for piece in pieces)
        assert decoder.done
        assert (out, [list(t) for t in decoder.trailers], decoder.unused) == expected, pieces


BODY_ERRORS = [case for case in INVALID if case.name.startswith(("chunk_", "chunked_"))]


@pytest.mark.parametrize("case", BODY_ERRORS, ids=ids(BODY_ERRORS))
def test_chunked_errors_any_split(case: Case) -> None:
    """A bad chunked body is refused however it is split (possibly with another status
    when two errors race, never accepted)."""
    result = parse_head(case.raw, case.limits)
    assert result is not None
    body = case.raw[result[1]:]
    step = max(1, len(body) // 200)
    for i in range(0, len(body) + 1, step):
        decoder = ChunkedDecoder(case.limits)
        with pytest.raises(HTTPError):
            decoder.feed(body[:i])
            decoder.feed(body[i:])
