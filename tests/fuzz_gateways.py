"""Fuzz entry point for the gateway parsers (atheris), and a corpus replayer without it.

Owns: one ``TestOneInput(data)`` whose first byte picks a protocol (its index
in PROTOCOLS, modulo their number: uwsgi, SCGI, FastCGI, AJP13, the PROXY
preamble) and runs the rest through that protocol's parse_head and, when a
request head parses, its body decoder, fed whole and in two pieces; under the
default limits and under tiny ones. And the invariants any answer must
satisfy (see check()), which tests/test_gateway_properties.py applies too.

Must never: let an exception other than HTTPError pass as a finding, or be
collected by pytest (the name does not start with ``test_``).

Usage (``pip install -e '.[fuzz]'`` brings atheris; libFuzzer adds what it finds to
the FIRST directory: keep that one scratch):
    python tests/fuzz_gateways.py /tmp/fuzz-gateways tests/corpus_gateways
    python tests/fuzz_gateways.py -runs=200000 /tmp/fuzz-gateways tests/corpus_gateways
    python tests/fuzz_gateways.py --replay tests/corpus_gateways [FILE...]  # no atheris needed
Without atheris installed every run is a replay: each file (or every file in
each directory) is fed to TestOneInput once. A corpus file is the selector
byte, then the packet (tests/corpus_gateways/generate.py writes them).
"""

from __future__ import annotations

try:
    from tests.fuzzing import fuzz_main, instrumented
except ImportError:  # run as a script: tests/ itself is on sys.path
    from fuzzing import fuzz_main, instrumented

with instrumented():
    from forkwsgi.http.errors import HTTPError
    from forkwsgi.http.parser import Limits
    from forkwsgi.protocols import BY_SCHEME, Control
    from forkwsgi.protocols.http import HTTP

# The selector byte's meaning: corpus files depend on this order, so only append.
PROTOCOLS = tuple(BY_SCHEME[name] for name in ("uwsgi", "scgi", "fastcgi", "ajp", "proxy+http"))
UWSGI, SCGI, FASTCGI, AJP, PROXY = PROTOCOLS
LIMITS = (Limits(),
          Limits(request_line=40, fields=4, field_size=40, head=200, body=32))
# What a gateway may send beside one variable per header field (gateway._EXTRA_VARIABLES).
EXTRA_VARIABLES = 64


class Finding(AssertionError):
    """An invariant broken: what libFuzzer saves and the replay reports."""


def check(protocol, data: bytes, limits: Limits) -> None:
    """Whatever ``data`` is, ``protocol`` answers None, a sane message, or an HTTPError."""
    try:
        result = protocol.parse_head(data, limits)
    except HTTPError as error:
        check_error(error)
        return
    if result is None:
        return
    if not (isinstance(result, tuple) and len(result) == 2):
        raise Finding(f"parse_head returned {result!r}")
    message, consumed = result
    if not (isinstance(consumed, int) and 0 < consumed <= len(data)):
        raise Finding(f"consumed={consumed!r} of {len(data)} bytes")
    check_prefixes(protocol, data, message, consumed, limits)
    if isinstance(message, Control):
        check_control(protocol, message)
        return
    if protocol is PROXY:
        raise Finding("a PROXY preamble parsed as a request head")
    check_head(protocol, message, consumed, limits)
    if message.content_length or message.chunked:
        check_body(protocol, message, data[consumed:], limits)


def check_error(error: HTTPError) -> None:
    if not (isinstance(error.status, int) and 400 <= error.status <= 599):
        raise Finding(f"HTTPError with status {error.status!r}")
    if error.wire is not None and not isinstance(error.wire, bytes):
        raise Finding(f"HTTPError.wire is {type(error.wire).__name__}")


def check_prefixes(protocol, data: bytes, message, consumed: int, limits: Limits) -> None:
    """A proper prefix of an accepted message wants more bytes: answering otherwise would
    make the answer depend on how the bytes were split into reads."""
    for end in sorted({0, consumed // 2, consumed - 1}):
        try:
            partial = protocol.parse_head(data[:end], limits)
        except HTTPError as error:
            check_error(error)
            raise Finding(f"accepted whole, refused ({error.status}) at {end} bytes: "
                          f"{error}") from None
        if partial is None:
            continue
        # FastCGI takes the empty STDIN record with a body-less head when it is there.
        head = partial[0]
        if not (protocol is FASTCGI and not isinstance(message, Control)
                and not message.chunked and not isinstance(head, Control)
                and head.variables == message.variables):
            raise Finding(f"the {end}-byte prefix of a {consumed}-byte message parsed")


def check_control(protocol, control: Control) -> None:
    if not isinstance(control.reply, bytes):
        raise Finding(f"Control.reply is {type(control.reply).__name__}")
    if control.peer is not None and not (
            isinstance(control.peer, tuple) and len(control.peer) == 2
            and all(isinstance(part, str) for part in control.peer)):
        raise Finding(f"Control.peer is {control.peer!r}")
    if protocol is PROXY:
        if control.protocol is not HTTP or control.reply or control.close:
            raise Finding("a PROXY preamble must hand over to HTTP, saying nothing")
    elif control.protocol is not None or control.peer is not None:
        raise Finding(f"{protocol.name} switched protocol or peer")


def check_head(protocol, head, consumed: int, limits: Limits) -> None:
    method = head.method
    if not (isinstance(method, str) and method and method.isascii() and method.isprintable()
            and " " not in method):
        raise Finding(f"method {method!r} is not a token")
    if not isinstance(head.target, str) or not head.target:
        raise Finding(f"target {head.target!r}")
    if protocol is AJP:  # the path and the query come apart; a "?" in the path is not checked
        path_and_query = head.path + (f"?{head.query}" if head.query else "")
        if head.target != path_and_query:
            raise Finding(f"target {head.target!r} is not {path_and_query!r}")
    elif head.path != head.target.partition("?")[0]:  # REQUEST_URI comes whole
        raise Finding(f"path {head.path!r} is not the target's {head.target!r}")
    length = head.content_length
    if length is not None and not (isinstance(length, int) and length > 0):
        raise Finding(f"content_length={length!r}")
    if limits.body and (length or 0) > limits.body:
        raise Finding("Content-Length over the body limit")
    if protocol is AJP:
        if consumed > limits.head:
            raise Finding("an AJP13 packet over the head limit")
        if len(head.headers) > limits.fields:
            raise Finding("more header fields than the limit")
        if length and not head.chunked:
            raise Finding("an AJP13 body with a length is still framed by packets")
        if head.path != "*" and head.path[:1] != "/":
            raise Finding(f"AJP13 path {head.path!r}")
        return
    if len(head.variables) > limits.fields + EXTRA_VARIABLES:
        raise Finding(f"{len(head.variables)} variables, over the limit")
    if not method.isalpha():
        raise Finding(f"gateway method {method!r}")
    if protocol is UWSGI and consumed > limits.head:
        raise Finding("a uwsgi packet over the head limit")
    if protocol is SCGI and consumed > limits.head + len(b"%d:," % limits.head):
        raise Finding("an SCGI netstring over the head limit")
    if protocol is not FASTCGI and head.chunked:
        raise Finding(f"a chunked {protocol.name} body")


def check_body(protocol, head, rest: bytes, limits: Limits) -> None:
    """The decoder gives the same answer for ``rest`` whole and cut in two."""
    cut = len(rest) // 2
    whole = feed(protocol, protocol.body_decoder(head, limits), [rest])
    split = feed(protocol, protocol.body_decoder(head, limits), [rest[:cut], rest[cut:]])
    if whole != split:
        raise Finding(f"the body decoder's answer depends on the split: {whole!r} != {split!r}")
    if isinstance(whole, int):
        return
    body, done, unused, _ = whole
    if done and not rest.endswith(unused):
        raise Finding("unused bytes that were not fed")
    # FastCGI's body is framed by its STDIN records alone; CONTENT_LENGTH is replaced by
    # the size received (dispatch.py), so the two need not agree.
    if head.content_length is not None and protocol is not FASTCGI:
        if len(body) > head.content_length or done and len(body) != head.content_length:
            raise Finding(f"{len(body)} body bytes for a Content-Length of "
                          f"{head.content_length}")
    if limits.body and len(body) > limits.body:
        raise Finding("body over the body limit")
    if protocol not in (FASTCGI, AJP) and body != rest[:len(body)]:
        raise Finding("a Content-Length body that is not the bytes fed")


def feed(protocol, decoder, pieces: list[bytes]) -> tuple | int:
    """What a decoder made of ``pieces``: (body, done, unused, reply), or the error status."""
    try:
        body = b"".join(decoder.feed(piece) for piece in pieces)
    except HTTPError as error:
        check_error(error)
        return error.status
    reply = decoder.reply
    if protocol is AJP:
        # GET_BODY_CHUNK is asked for when the packets so far are used up, so whether one
        # is pending rightly depends on the reads; once the body is whole, none may be.
        if decoder.done and reply:
            raise Finding("an AJP13 body asks for more after its end")
        reply = None
    return body, decoder.done, decoder.unused, reply


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    if not data:
        return
    protocol = PROTOCOLS[data[0] % len(PROTOCOLS)]
    for limits in LIMITS:
        check(protocol, data[1:], limits)


if __name__ == "__main__":
    fuzz_main(TestOneInput)
