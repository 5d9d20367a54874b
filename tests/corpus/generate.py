"""Writes the parser corpus: one ``NAME.http`` (the exact request bytes) and one
``NAME.json`` (what must come of them) per case in CASES below.

Owns: the cases, written where CRLFs, NULs and bare LFs are visible. The files
are what the tests, the fuzzer and reviewers read; this table is how they are
made. Run ``python tests/corpus/generate.py`` after editing it (``--check``
only compares, as tests/test_parser_corpus.py does).

Must never: compute an expectation with forkwsgi's parser. Expected results are
written by hand here; only ``headers`` is derived, by a naive split that is
right for the valid cases (which have no obs-fold, no bare CR/LF).

JSON sidecars: ``{"status": N}`` for a request the server must refuse (at the
head or while decoding the body), or the expected parse: method, target, path,
query, version, headers, host, content_length, chunked, keep_alive,
expect_continue, body (decoded, latin-1), trailers, unused (bytes after the
request, latin-1). Either may carry ``limits`` (fields of parser.Limits that
differ from the defaults) and ``server: false`` for a case that a real
socket cannot carry (e.g. a body too large to send).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: what the corpus tools share
from fuzzing import generator_main, write_corpus  # noqa: E402

H = b"Host: example.com\r\n"
CASES: list[tuple[str, bytes, dict]] = []


def ok(name: str, raw: bytes, *, method: str = "GET", target: str | None = None,
       path: str = "/", query: str = "", version: str = "HTTP/1.1",
       host: str | None = "example.com", content_length: int | None = None,
       chunked: bool = False, keep_alive: bool | None = None, expect_continue: bool = False,
       body: bytes = b"", trailers: list[list[str]] | None = None, unused: bytes = b"",
       limits: dict | None = None, server: bool = True) -> None:
    if target is None:
        target = path + ("?" + query if query else "")
    if keep_alive is None:
        keep_alive = version == "HTTP/1.1"
    expected = {
        "method": method, "target": target, "path": path, "query": query, "version": version,
        "headers": _naive_headers(raw), "host": host, "content_length": content_length,
        "chunked": chunked, "keep_alive": keep_alive, "expect_continue": expect_continue,
        "body": body.decode("latin-1"), "trailers": trailers or [],
        "unused": unused.decode("latin-1"),
    }
    _add(name, raw, expected, limits, server)


def bad(name: str, raw: bytes, status: int = 400, *, limits: dict | None = None,
        server: bool = True) -> None:
    _add(name, raw, {"status": status}, limits, server)


def _add(name: str, raw: bytes, expected: dict, limits: dict | None, server: bool) -> None:
    assert name not in {case[0] for case in CASES}, name
    if limits:
        expected["limits"] = limits
    if not server:
        expected["server"] = False
    CASES.append((name, raw, expected))


def _naive_headers(raw: bytes) -> list[list[str]]:
    head = raw.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].decode("latin-1")
    fields = []
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields.append([name, value.strip(" \t")])
    return fields


# --- valid: request lines and targets ---------------------------------------------------------

ok("get_simple", b"GET / HTTP/1.1\r\n" + H + b"\r\n")
ok("get_http10_no_host", b"GET /index.html HTTP/1.0\r\n\r\n", path="/index.html",
   version="HTTP/1.0", host=None)
ok("get_http10_with_host", b"GET / HTTP/1.0\r\n" + H + b"\r\n", version="HTTP/1.0")
ok("get_query", b"GET /search?q=forkwsgi&page=2 HTTP/1.1\r\n" + H + b"\r\n",
   path="/search", query="q=forkwsgi&page=2")
ok("get_empty_query", b"GET /a? HTTP/1.1\r\n" + H + b"\r\n", target="/a?", path="/a")
ok("get_query_with_question_marks", b"GET /a?b?c=/d HTTP/1.1\r\n" + H + b"\r\n",
   path="/a", query="b?c=/d")
ok("get_query_raw_percent", b"GET /p?discount=100% HTTP/1.1\r\n" + H + b"\r\n",
   path="/p", query="discount=100%")
ok("get_percent_encoded_path", b"GET /caf%C3%A9/a%20b%2Fc HTTP/1.1\r\n" + H + b"\r\n",
   path="/caf%C3%A9/a%20b%2Fc")
ok("get_percent_lowercase_hex", b"GET /a%2fb%3a HTTP/1.1\r\n" + H + b"\r\n", path="/a%2fb%3a")
ok("get_browser_unescaped_chars", b'GET /a|b^c[1]{2}`"\\ HTTP/1.1\r\n' + H + b"\r\n",
   path='/a|b^c[1]{2}`"\\')
ok("get_subdelims_path", b"GET /a;p=1/b,c/!$&'()*+=:@~._- HTTP/1.1\r\n" + H + b"\r\n",
   path="/a;p=1/b,c/!$&'()*+=:@~._-")
ok("get_double_slash_path", b"GET //evil.example/x HTTP/1.1\r\n" + H + b"\r\n",
   path="//evil.example/x")
ok("get_dot_segments_kept", b"GET /a/../b/./c HTTP/1.1\r\n" + H + b"\r\n", path="/a/../b/./c")
ok("method_lowercase_is_a_token", b"get / HTTP/1.1\r\n" + H + b"\r\n", method="get")
ok("method_extension", b"PURGE /cache/x HTTP/1.1\r\n" + H + b"\r\n", method="PURGE",
   path="/cache/x")
ok("method_tchars", b"M-SEARCH_2.0! /x HTTP/1.1\r\n" + H + b"\r\n", method="M-SEARCH_2.0!",
   path="/x")
ok("method_delete", b"DELETE /items/7 HTTP/1.1\r\n" + H + b"\r\n", method="DELETE",
   path="/items/7")
ok("options_asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", method="OPTIONS",
   target="*", path="*")
ok("options_origin_form", b"OPTIONS /x HTTP/1.1\r\n" + H + b"\r\n", method="OPTIONS",
   path="/x")
ok("absolute_form", b"GET http://origin.example/a/b?c=d HTTP/1.1\r\n" + H + b"\r\n",
   target="http://origin.example/a/b?c=d", path="/a/b", query="c=d", host="origin.example")
ok("absolute_form_https_no_path", b"GET https://origin.example HTTP/1.1\r\n" + H + b"\r\n",
   target="https://origin.example", path="/", host="origin.example")
ok("absolute_form_port_query_only",
   b"GET http://origin.example:8080?x=1 HTTP/1.1\r\n" + H + b"\r\n",
   target="http://origin.example:8080?x=1", path="/", query="x=1",
   host="origin.example:8080")
ok("absolute_form_scheme_case", b"GET HTTP://Origin.Example/ HTTP/1.1\r\n" + H + b"\r\n",
   target="HTTP://Origin.Example/", path="/", host="Origin.Example")
ok("absolute_form_ipv6", b"GET http://[::1]:8000/x HTTP/1.1\r\n" + H + b"\r\n",
   target="http://[::1]:8000/x", path="/x", host="[::1]:8000")
ok("connect_authority_form", b"CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443"
   b"\r\n\r\n", method="CONNECT", target="origin.example:443", path="",
   host="origin.example:443", keep_alive=False)
ok("head_method", b"HEAD /x HTTP/1.1\r\n" + H + b"\r\n", method="HEAD", path="/x")

# --- valid: leading empty lines (RFC 9112 section 2.2) ---------------------------------------

ok("leading_crlf", b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n")
ok("leading_crlf_three", b"\r\n\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n")

# --- valid: header fields ---------------------------------------------------------------------

ok("browser_chrome",
   b"GET /static/app.css?v=3 HTTP/1.1\r\n"
   b"Host: www.example.com\r\n"
   b"Connection: keep-alive\r\n"
   b'sec-ch-ua: "Chromium";v="126", "Google Chrome";v="126", "Not-A.Brand";v="99"\r\n'
   b"sec-ch-ua-mobile: ?0\r\n"
   b"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
   b"(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
   b'sec-ch-ua-platform: "Windows"\r\n'
   b"Accept: text/css,*/*;q=0.1\r\n"
   b"Sec-Fetch-Site: same-origin\r\n"
   b"Sec-Fetch-Mode: no-cors\r\n"
   b"Sec-Fetch-Dest: style\r\n"
   b"Referer: https://www.example.com/products?page=3\r\n"
   b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
   b"Accept-Language: en-US,en;q=0.9\r\n"
   b"Cookie: sessionid=8c6f2a1b9e7d4c3f; csrftoken=Zx81kLmQ2pRt7YvW\r\n\r\n",
   path="/static/app.css", query="v=3", host="www.example.com")
ok("browser_firefox",
   b"GET /search?q=caf%C3%A9 HTTP/1.1\r\n"
   b"Host: www.example.com\r\n"
   b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
   b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
   b"Accept-Language: en-US,en;q=0.5\r\n"
   b"Accept-Encoding: gzip, deflate, br\r\n"
   b"Upgrade-Insecure-Requests: 1\r\n"
   b"Connection: keep-alive\r\n\r\n",
   path="/search", query="q=caf%C3%A9", host="www.example.com")
ok("curl", b"GET /api/v1/items HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/8.5.0\r\n"
   b"Accept: */*\r\n\r\n", path="/api/v1/items", host="localhost:8000")
ok("ows_around_value", b"GET / HTTP/1.1\r\nHost: \t example.com \t \r\nX-A:  a b  \r\n\r\n")
ok("no_space_after_colon", b"GET / HTTP/1.1\r\nHost:example.com\r\nX-A:1\r\n\r\n")
ok("empty_value", b"GET / HTTP/1.1\r\n" + H + b"X-Empty:\r\nX-Spaces:   \r\n\r\n")
ok("tab_inside_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\tb\r\n\r\n")
ok("obs_text_value_latin1", b"GET / HTTP/1.1\r\n" + H + b"X-Name: caf\xe9 \xff\x80\r\n\r\n")
ok("utf8_value_as_latin1", b"GET / HTTP/1.1\r\n" + H + b"X-Name: \xc3\xa9t\xc3\xa9\r\n\r\n")
ok("name_all_tchars", b"GET / HTTP/1.1\r\n" + H + b"X-!#$%&'*+-.^_`|~09az: ok\r\n\r\n")
ok("name_with_underscore", b"GET / HTTP/1.1\r\n" + H + b"X_Forwarded_For: 1.2.3.4\r\n\r\n")
ok("duplicate_fields_kept_in_order", b"GET / HTTP/1.1\r\n" + H +
   b"Accept: text/html\r\nX-A: 1\r\nAccept: application/json\r\n\r\n")
ok("value_with_colons", b"GET / HTTP/1.1\r\n" + H + b"X-Time: 12:34:56\r\nReferer: "
   b"http://a.example:8080/x\r\n\r\n")
ok("long_cookie_value", b"GET / HTTP/1.1\r\n" + H + b"Cookie: " + b"; ".join(
   b"k%d=%s" % (i, b"v" * 40) for i in range(60)) + b"\r\n\r\n")
ok("host_case_insensitive_name", b"GET / HTTP/1.1\r\nhOsT: example.com\r\n\r\n")
ok("host_with_port", b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
   host="example.com:8080")
ok("host_ipv4", b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n", host="127.0.0.1:8000")
ok("host_ipv6", b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8000\r\n\r\n",
   host="[2001:db8::1]:8000")
ok("host_empty_value", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", host="")
ok("host_port_empty", b"GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", host="example.com:")
ok("host_pct_encoded", b"GET / HTTP/1.1\r\nHost: ex%41mple.com\r\n\r\n", host="ex%41mple.com")

# --- valid: bodies ----------------------------------------------------------------------------

ok("post_content_length", b"POST /form HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
   b"Content-Length: 5\r\n\r\nhello", method="POST", path="/form", content_length=5,
   body=b"hello")
ok("post_content_length_zero", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
   method="POST", content_length=0)
ok("content_length_leading_zeros", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0005\r\n\r\n"
   b"hello", method="POST", content_length=5, body=b"hello")
ok("content_length_ows", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \t5 \r\n\r\nhello",
   method="POST", content_length=5, body=b"hello")
ok("content_length_name_case", b"POST / HTTP/1.1\r\n" + H + b"CONTENT-length: 3\r\n\r\nabc",
   method="POST", content_length=3, body=b"abc")
ok("put_binary_body", b"PUT /blob HTTP/1.1\r\n" + H + b"Content-Length: 8\r\n\r\n"
   b"\x00\r\n\r\n\xff\n\r", method="PUT", path="/blob", content_length=8,
   body=b"\x00\r\n\r\n\xff\n\r")
ok("content_length_18_digits_no_limit", b"POST / HTTP/1.1\r\n" + H +
   b"Content-Length: 999999999999999999\r\n\r\n", method="POST",
   content_length=999999999999999999, server=False)
ok("content_length_at_body_limit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\n"
   b"hello", method="POST", content_length=5, body=b"hello", limits={"body": 5})
ok("http10_content_length", b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", method="POST",
   version="HTTP/1.0", host=None, content_length=2, body=b"hi")

CHUNKED = b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"


def chunked_ok(name: str, body_wire: bytes, body: bytes, *, head: bytes = CHUNKED,
               **kwargs) -> None:
    kwargs.setdefault("method", "POST")
    kwargs.setdefault("path", "/upload")
    ok(name, head + body_wire, chunked=True, body=body, **kwargs)


chunked_ok("chunked_simple", b"5\r\nhello\r\n0\r\n\r\n", b"hello")
chunked_ok("chunked_many_chunks", b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n", b"abcdef")
chunked_ok("chunked_empty_body", b"0\r\n\r\n", b"")
chunked_ok("chunked_hex_sizes", b"A\r\n0123456789\r\nf\r\n" + b"x" * 15 + b"\r\n0\r\n\r\n",
           b"0123456789" + b"x" * 15)
chunked_ok("chunked_lowercase_hex", b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789")
chunked_ok("chunked_size_leading_zeros", b"0005\r\nhello\r\n0\r\n\r\n", b"hello")
chunked_ok("chunked_size_16_digits", b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello")
chunked_ok("chunked_last_chunk_zeros", b"5\r\nhello\r\n000\r\n\r\n", b"hello")
chunked_ok("chunked_data_with_crlf", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n")
chunked_ok("chunked_binary_data", b"3\r\n\x00\xff\n\r\n0\r\n\r\n", b"\x00\xff\n")
chunked_ok("chunked_extension_token", b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello")
chunked_ok("chunked_extension_quoted", b'5;a="q \\" ;=x";b\r\nhello\r\n0\r\n\r\n', b"hello")
chunked_ok("chunked_extension_bws", b"5 ; a = b ;\tc\r\nhello\r\n0\r\n\r\n", b"hello")
chunked_ok("chunked_trailers", b"5\r\nhello\r\n0\r\nX-Checksum: abc \r\nX-B:1\r\n\r\n",
           b"hello", trailers=[["X-Checksum", "abc"], ["X-B", "1"]])
chunked_ok("chunked_te_uppercase", b"5\r\nhello\r\n0\r\n\r\n", b"hello",
           head=b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: CHUNKED\r\n\r\n")
chunked_ok("chunked_te_ows", b"5\r\nhello\r\n0\r\n\r\n", b"hello",
           head=b"POST /upload HTTP/1.1\r\n" + H + b"transfer-encoding:\t chunked \t\r\n\r\n")
chunked_ok("chunked_at_body_limit", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde",
           limits={"body": 5})
chunked_ok("chunked_then_pipelined_request", b"5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n"
           + H + b"\r\n", b"hello", unused=b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
chunked_ok("chunked_expect_continue", b"5\r\nhello\r\n0\r\n\r\n", b"hello",
           head=b"POST /upload HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n", expect_continue=True)
ok("content_length_then_pipelined_request", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2"
   b"\r\n\r\nhiGET /next HTTP/1.1\r\n" + H + b"\r\n", method="POST", content_length=2,
   body=b"hi", unused=b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
ok("get_then_pipelined_request", b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H
   + b"\r\n", path="/1", unused=b"GET /2 HTTP/1.1\r\n" + H + b"\r\n")

# --- valid: persistence (RFC 9112 section 9.3) and Expect -------------------------------------

ok("http10_keep_alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
   version="HTTP/1.0", host=None, keep_alive=True)
ok("http10_keep_alive_mixed_case", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
   version="HTTP/1.0", host=None, keep_alive=True)
ok("http10_keep_alive_in_list", b"GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n",
   version="HTTP/1.0", host=None, keep_alive=True)
ok("http10_keep_alive_and_close", b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
   version="HTTP/1.0", host=None, keep_alive=False)
ok("http10_other_option", b"GET / HTTP/1.0\r\nConnection: upgrade\r\n\r\n",
   version="HTTP/1.0", host=None, keep_alive=False)
ok("http11_close", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", keep_alive=False)
ok("http11_close_uppercase", b"GET / HTTP/1.1\r\n" + H + b"Connection: CLOSE\r\n\r\n",
   keep_alive=False)
ok("http11_close_in_list", b"GET / HTTP/1.1\r\n" + H + b"Connection: te,close\r\n\r\n",
   keep_alive=False)
ok("http11_close_second_field", b"GET / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\n"
   b"Connection: close\r\n\r\n", keep_alive=False)
ok("http11_keep_alive_explicit", b"GET / HTTP/1.1\r\n" + H + b"Connection: keep-alive\r\n\r\n")
ok("http11_closed_is_not_close", b"GET / HTTP/1.1\r\n" + H + b"Connection: closed\r\n\r\n")
ok("expect_100_continue", b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
   b"Content-Length: 5\r\n\r\nhello", method="POST", content_length=5, body=b"hello",
   expect_continue=True)
ok("expect_100_continue_case", b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-Continue\r\n"
   b"Content-Length: 5\r\n\r\nhello", method="POST", content_length=5, body=b"hello",
   expect_continue=True)
ok("expect_ignored_on_http10", b"GET / HTTP/1.0\r\nExpect: something-else\r\n\r\n",
   version="HTTP/1.0", host=None)

# --- valid: at the limits ---------------------------------------------------------------------

_line20 = b"GET /" + b"a" * 11 + b" HTTP/1.1"
assert len(_line20) == 25
ok("request_line_at_limit", _line20 + b"\r\n" + H + b"\r\n", path="/" + "a" * 11,
   limits={"request_line": 25})
ok("fields_at_limit", b"GET / HTTP/1.1\r\n" + H + b"A: 1\r\nB: 2\r\n\r\n", limits={"fields": 3})
ok("field_size_at_limit", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"v" * 15 + b"\r\n\r\n",
   limits={"field_size": 20})
_head = b"GET / HTTP/1.1\r\n" + H + b"\r\n"
ok("head_at_limit", _head, limits={"head": len(_head)})
ok("fields_100_default", b"GET / HTTP/1.1\r\n" + H + b"".join(
   b"X-F%d: %d\r\n" % (i, i) for i in range(99)) + b"\r\n")

# --- invalid: request line --------------------------------------------------------------------

bad("request_line_double_space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_double_space_before_version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_trailing_space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n")
bad("request_line_leading_space", b" GET / HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_tab_separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_http09", b"GET /\r\n\r\n")
bad("request_line_no_target", b"GET HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_only_method", b"GET\r\n\r\n")
bad("method_not_token", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n")
bad("method_with_slash", b"GET/ / HTTP/1.1\r\n" + H + b"\r\n")
bad("method_with_nul", b"G\x00T / HTTP/1.1\r\n" + H + b"\r\n")
bad("method_non_ascii", b"G\xc9T / HTTP/1.1\r\n" + H + b"\r\n")
bad("version_lowercase", b"GET / http/1.1\r\n" + H + b"\r\n")
bad("version_no_minor", b"GET / HTTP/1\r\n" + H + b"\r\n")
bad("version_trailing_junk", b"GET / HTTP/1.1x\r\n" + H + b"\r\n")
bad("version_two_digit_minor", b"GET / HTTP/1.10\r\n" + H + b"\r\n")
bad("version_two_digit_major", b"GET / HTTP/11.1\r\n" + H + b"\r\n")
bad("version_missing_dot", b"GET / HTTP/11\r\n" + H + b"\r\n")
bad("version_http2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505)
bad("version_http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505)
bad("version_http3", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505)
bad("version_http09", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505)
bad("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)
bad("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)))
bad("nul_first_byte", b"\x00GET / HTTP/1.1\r\n" + H + b"\r\n")
bad("target_space_inside", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n")
bad("target_fragment", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n")
bad("target_fragment_in_query", b"GET /a?b#c HTTP/1.1\r\n" + H + b"\r\n")
bad("target_non_ascii", b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n")
bad("target_non_ascii_query", b"GET /?q=\xe9 HTTP/1.1\r\n" + H + b"\r\n")
bad("target_ctl", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n")
bad("target_del", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n")
bad("target_nul", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n")
bad("target_tab", b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n")
bad("target_bad_percent", b"GET /a%zz HTTP/1.1\r\n" + H + b"\r\n")
bad("target_truncated_percent", b"GET /a%2 HTTP/1.1\r\n" + H + b"\r\n")
bad("target_percent_nul", b"GET /a%00b HTTP/1.1\r\n" + H + b"\r\n")
bad("target_relative", b"GET a/b HTTP/1.1\r\n" + H + b"\r\n")
bad("target_asterisk_not_options", b"GET * HTTP/1.1\r\n" + H + b"\r\n")
bad("target_asterisk_with_path", b"OPTIONS *x HTTP/1.1\r\n" + H + b"\r\n")
bad("target_authority_form_not_connect", b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n")
bad("connect_origin_form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n")
bad("connect_without_port", b"CONNECT example.com HTTP/1.1\r\n" + H + b"\r\n")
bad("connect_empty_host", b"CONNECT :443 HTTP/1.1\r\n" + H + b"\r\n")
bad("connect_absolute_form", b"CONNECT http://example.com/ HTTP/1.1\r\n" + H + b"\r\n")
bad("absolute_form_userinfo", b"GET http://user:pw@example.com/ HTTP/1.1\r\n" + H + b"\r\n")
bad("absolute_form_empty_host", b"GET http:///path HTTP/1.1\r\n" + H + b"\r\n")
bad("absolute_form_other_scheme", b"GET ftp://example.com/ HTTP/1.1\r\n" + H + b"\r\n")
bad("absolute_form_bad_port", b"GET http://example.com:8o/ HTTP/1.1\r\n" + H + b"\r\n")
bad("absolute_form_bad_percent", b"GET http://example.com/%zz HTTP/1.1\r\n" + H + b"\r\n")
bad("request_line_too_long", b"GET /" + b"a" * 8190 + b" HTTP/1.1\r\n" + H + b"\r\n", 414)
bad("request_line_too_long_unfinished", b"GET /" + b"a" * 9000, 414)
bad("request_line_over_limit", b"GET /" + b"a" * 12 + b" HTTP/1.1\r\n" + H + b"\r\n", 414,
    limits={"request_line": 25})

# --- invalid: line endings (RFC 9112 section 2.2) ---------------------------------------------

bad("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: example.com\n\n")
bad("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: example.com\r\n\r\n")
bad("bare_lf_after_field", b"GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n")
bad("bare_lf_final_line", b"GET / HTTP/1.1\r\nHost: example.com\r\n\n")
bad("bare_lf_unfinished", b"GET / HTTP/1.1\nHost: example.com\n")
bad("bare_lf_leading", b"\nGET / HTTP/1.1\r\n" + H + b"\r\n")
bad("bare_lf_after_leading_crlf", b"\r\n\nGET / HTTP/1.1\r\n" + H + b"\r\n")
bad("bare_cr_line_endings", b"GET / HTTP/1.1\rHost: example.com\r\r")
bad("bare_cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n")
bad("bare_cr_before_crlf", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n")
bad("bare_cr_in_request_line", b"GET /\r HTTP/1.1\r\n" + H + b"\r\n")
bad("lf_cr_line_endings", b"GET / HTTP/1.1\n\rHost: example.com\n\r\n\r")

# --- invalid: field lines (RFC 9112 section 5) ------------------------------------------------

bad("space_before_colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n")
bad("tab_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n")
bad("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n")
bad("obs_fold_tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n")
bad("whitespace_before_first_field", b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n")
bad("empty_field_name", b"GET / HTTP/1.1\r\n" + H + b": value\r\n\r\n")
bad("field_without_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A value\r\n\r\n")
bad("field_token_without_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\r\n\r\n")
bad("name_with_parenthesis", b"GET / HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n")
bad("name_with_quote", b'GET / HTTP/1.1\r\n' + H + b'X"A: b\r\n\r\n')
bad("name_with_at", b"GET / HTTP/1.1\r\n" + H + b"X@A: b\r\n\r\n")
bad("name_with_slash", b"GET / HTTP/1.1\r\n" + H + b"X/A: b\r\n\r\n")
bad("name_non_ascii", b"GET / HTTP/1.1\r\n" + H + b"Caf\xe9: b\r\n\r\n")
bad("name_with_nul", b"GET / HTTP/1.1\r\n" + H + b"X\x00A: b\r\n\r\n")
bad("value_nul", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n")
bad("value_soh", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n")
bad("value_esc", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x1b[31mb\r\n\r\n")
bad("value_vertical_tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x0bb\r\n\r\n")
bad("value_form_feed", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x0cb\r\n\r\n")
bad("value_del", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n")
bad("value_trailing_nul", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00\r\n\r\n")

# --- invalid: Host (RFC 9112 section 3.2) -----------------------------------------------------

bad("http11_without_host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
bad("http11_without_any_field", b"GET / HTTP/1.1\r\n\r\n")
bad("absolute_form_without_host", b"GET http://example.com/ HTTP/1.1\r\n\r\n")
bad("duplicate_host", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
bad("duplicate_host_same_value", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n")
bad("duplicate_host_http10", b"GET / HTTP/1.0\r\n" + H + b"host: example.com\r\n\r\n")
bad("host_with_space", b"GET / HTTP/1.1\r\nHost: example .com\r\n\r\n")
bad("host_with_path", b"GET / HTTP/1.1\r\nHost: example.com/x\r\n\r\n")
bad("host_with_userinfo", b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n")
bad("host_bad_port", b"GET / HTTP/1.1\r\nHost: example.com:80a\r\n\r\n")
bad("host_list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n")
bad("host_bad_percent", b"GET / HTTP/1.1\r\nHost: ex%zzample.com\r\n\r\n")
bad("host_unclosed_ipv6", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n")
bad("host_non_ascii", b"GET / HTTP/1.1\r\nHost: caf\xe9.example\r\n\r\n")

# --- invalid: Content-Length (RFC 9110 section 8.6, RFC 9112 section 6.3) ---------------------

POST = b"POST / HTTP/1.1\r\n" + H
bad("content_length_duplicate_same", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
    b"hello")
bad("content_length_duplicate_different", POST + b"Content-Length: 5\r\nContent-Length: 6"
    b"\r\n\r\nhello!")
bad("content_length_list_same", POST + b"Content-Length: 1,1\r\n\r\na")
bad("content_length_list_space", POST + b"Content-Length: 1, 1\r\n\r\na")
bad("content_length_negative", POST + b"Content-Length: -1\r\n\r\n")
bad("content_length_plus", POST + b"Content-Length: +5\r\n\r\nhello")
bad("content_length_hex", POST + b"Content-Length: 0x5\r\n\r\nhello")
bad("content_length_space_inside", POST + b"Content-Length: 1 2\r\n\r\n")
bad("content_length_empty", POST + b"Content-Length:\r\n\r\n")
bad("content_length_alpha", POST + b"Content-Length: five\r\n\r\n")
bad("content_length_decimal", POST + b"Content-Length: 5.0\r\n\r\nhello")
bad("content_length_superscript", POST + b"Content-Length: \xb2\r\n\r\nhi")
bad("content_length_name_space", POST + b"Content-Length : 5\r\n\r\nhello")
bad("content_length_huge", POST + b"Content-Length: 99999999999999999999\r\n\r\n", 413)
bad("content_length_over_limit", POST + b"Content-Length: 11\r\n\r\nhello world", 413,
    limits={"body": 10})

# --- invalid: Transfer-Encoding (RFC 9112 section 6.1) ----------------------------------------


def te(value: bytes, *extra: bytes) -> bytes:
    return (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: " + value + b"\r\n"
            + b"".join(extra) + b"\r\n5\r\nhello\r\n0\r\n\r\n")


bad("cl_te", POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX")
bad("te_cl", te(b"chunked", b"Content-Length: 4\r\n"))
bad("te_cl_smuggled_request", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"5c\r\nGPOST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n")
bad("te_gzip", te(b"gzip"))
bad("te_identity", te(b"identity"))
bad("te_chunked_identity", te(b"chunked, identity"))
bad("te_gzip_chunked", te(b"gzip, chunked"))
bad("te_chunked_chunked", te(b"chunked, chunked"))
bad("te_two_fields_chunked", te(b"chunked", b"Transfer-Encoding: chunked\r\n"))
bad("te_two_fields_gzip_chunked", te(b"gzip", b"Transfer-Encoding: chunked\r\n"))
bad("te_two_fields_empty_chunked", te(b"", b"Transfer-Encoding: chunked\r\n"))
bad("te_empty", te(b""))
bad("te_chunked_trailing_comma", te(b"chunked,"))
bad("te_leading_comma", te(b", chunked"))
bad("te_chunked_parameter", te(b"chunked;q=1"))
bad("te_xchunked", te(b"xchunked"))
bad("te_chunked_suffix", te(b"chunkedx"))
bad("te_quoted", te(b'"chunked"'))
bad("te_space_inside", te(b"chun ked"))
bad("te_vertical_tab", te(b"chunked\x0b"))
bad("te_nul", te(b"chunked\x00"))
bad("te_obs_text", te(b"chunked\xff"))
bad("te_obs_fold", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
bad("te_obs_fold_list", te(b"chunked\r\n , identity"))
bad("te_space_before_colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n")
bad("te_name_with_space", POST + b"Transfer Encoding: chunked\r\n\r\n0\r\n\r\n")
bad("te_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    b"\r\n")
bad("te_bare_lf", POST + b"Transfer-Encoding: chunked\n\r\n0\r\n\r\n")

# --- invalid: Expect (RFC 9110 section 10.1.1) ------------------------------------------------

bad("expect_unknown", POST + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417)
bad("expect_100_continue_with_parameter", POST + b"Expect: 100-continue; x=1\r\n"
    b"Content-Length: 1\r\n\r\na", 417)
bad("expect_list_with_unknown", POST + b"Expect: 100-continue, foo\r\nContent-Length: 1\r\n"
    b"\r\na", 417)

# --- invalid: chunked framing (RFC 9112 section 7.1) ------------------------------------------

bad("chunk_size_empty", CHUNKED + b"\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_0x", CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_plus", CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_minus", CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_leading_space", CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_trailing_space", CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n")
bad("chunk_size_trailing_tab", CHUNKED + b"5\t\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_not_hex", CHUNKED + b"g\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_17_digits", CHUNKED + b"00000000000000005\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_overflow", CHUNKED + b"10000000000000000\r\nhello\r\n0\r\n\r\n")
bad("chunk_size_over_body_limit", CHUNKED + b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n", 413,
    limits={"body": 1000})
bad("chunked_over_body_limit", CHUNKED + b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 413,
    limits={"body": 5})
bad("chunk_extension_nul", CHUNKED + b"5;a\x00=b\r\nhello\r\n0\r\n\r\n")
bad("chunk_extension_ctl_value", CHUNKED + b"5;a=\x01\r\nhello\r\n0\r\n\r\n")
bad("chunk_extension_nul_in_quotes", CHUNKED + b'5;a="\x00"\r\nhello\r\n0\r\n\r\n')
bad("chunk_extension_unterminated_quote", CHUNKED + b'5;a="b\r\nhello\r\n0\r\n\r\n')
bad("chunk_extension_no_name", CHUNKED + b"5;=b\r\nhello\r\n0\r\n\r\n")
bad("chunk_extension_semicolon_only", CHUNKED + b"5;\r\nhello\r\n0\r\n\r\n")
bad("chunk_extension_bare_cr", CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n")
bad("chunk_extensions_too_long", CHUNKED + b"5;a=" + b"x" * 17000 + b"\r\nhello\r\n0\r\n\r\n",
    413)
bad("chunk_size_bare_lf", CHUNKED + b"5\nhello\r\n0\r\n\r\n")
bad("chunk_data_bare_lf", CHUNKED + b"5\r\nhello\n0\r\n\r\n")
bad("chunk_last_bare_lf", CHUNKED + b"5\r\nhello\r\n0\n\r\n")
bad("chunk_trailer_end_bare_lf", CHUNKED + b"5\r\nhello\r\n0\r\n\n")
bad("chunk_data_longer_than_size", CHUNKED + b"5\r\nhelloX\r\n0\r\n\r\n")
bad("chunk_data_shorter_than_size", CHUNKED + b"5\r\nhell\r\n0\r\n\r\n")
bad("chunk_data_without_crlf", CHUNKED + b"5\r\nhello0\r\n\r\n")
bad("chunk_trailer_obs_fold", CHUNKED + b"0\r\nX-A: a\r\n b\r\n\r\n")
bad("chunk_trailer_without_colon", CHUNKED + b"0\r\nX-A b\r\n\r\n")
bad("chunk_trailer_space_before_colon", CHUNKED + b"0\r\nX-A : b\r\n\r\n")
bad("chunk_trailer_nul", CHUNKED + b"0\r\nX-A: \x00\r\n\r\n")
bad("chunk_trailer_bare_lf", CHUNKED + b"0\r\nX-A: b\n\r\n")
bad("chunk_trailers_too_many", CHUNKED + b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431,
    limits={"fields": 3})

# --- invalid: limits --------------------------------------------------------------------------

bad("too_many_fields", b"GET / HTTP/1.1\r\n" + H + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431,
    limits={"fields": 3})
bad("too_many_fields_default", b"GET / HTTP/1.1\r\n" + H + b"".join(
    b"X-F%d: %d\r\n" % (i, i) for i in range(100)) + b"\r\n", 431)
bad("too_many_fields_unfinished", b"GET / HTTP/1.1\r\n" + H + b"A: 1\r\nB: 2\r\nC", 431,
    limits={"fields": 3})
bad("field_too_long", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"v" * 8190 + b"\r\n\r\n", 431)
bad("field_too_long_unfinished", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"v" * 9000, 431)
bad("field_over_limit", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"v" * 16 + b"\r\n\r\n", 431,
    limits={"field_size": 20})
bad("head_too_large", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n\r\n", 431,
    limits={"head": len(b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n\r\n") - 1})
bad("head_too_large_unfinished", b"GET / HTTP/1.1\r\n" + b"".join(
    b"X-F%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)), 431)
bad("head_of_empty_lines_too_large", b"\r\n" * 40, 431, limits={"head": 64})


def dump(expected: dict) -> str:
    """One key per line, each value compact: diffs stay readable."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in expected.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write(check: bool = False) -> list[str]:
    """Write (or, with check, compare) every case's files; return the names that differ."""
    files = {}
    for name, raw, expected in CASES:
        files[HERE / f"{name}.http"] = raw
        files[HERE / f"{name}.json"] = dump(expected).encode()
    return write_corpus(files, check)


if __name__ == "__main__":
    generator_main(write, len(CASES), __file__)
