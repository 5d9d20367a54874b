"""The HTTP/1.1 request grammar, as data (RFC 9110, RFC 9112, RFC 3986).

Owns: one regular-expression source string per ABNF rule the parser
enforces, each below the RFC text it implements, and the compiled patterns
built from them. Where forkwsgi is stricter or looser than the ABNF, the
comment says so and why.

Must never: hold parsing logic or state. parser.py decides *when* a rule is
applied and which error a mismatch becomes; this module only says what
matches. Patterns are compiled once, at import.

All patterns work on latin-1 decoded ``str`` (one char per byte), except the
``B_`` ones used by the chunked decoder, which work on ``bytes``.
"""

from __future__ import annotations

import re

# RFC 9110 section 5.6.3
#   OWS            = *( SP / HTAB )
#                  ; optional whitespace
#   BWS            = OWS
#                  ; "bad" whitespace
OWS = r"[ \t]*"

# RFC 9110 section 5.6.2
#   token          = 1*tchar
#   tchar          = "!" / "#" / "$" / "%" / "&" / "'" / "*"
#                  / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#                  / DIGIT / ALPHA
#                  ; any VCHAR, except delimiters
tchar = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
token = tchar + "+"

# RFC 9110 section 9.1
#   method         = token
method = token

# RFC 9110 section 5.1
#   field-name     = token
field_name = token

# RFC 9110 section 5.5
#   field-value    = *field-content
#   field-content  = field-vchar
#                    [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar    = VCHAR / obs-text
#   obs-text       = %x80-FF
#
#   Field values containing CR, LF, or NUL characters are invalid and
#   dangerous [...] a recipient of CR, LF, or NUL within a field value MUST
#   either reject the message or replace each of those characters with SP.
#
# We reject, and (stricter than the MAY) also reject every other CTL and DEL:
# no legitimate client sends them and they are how header injection starts.
# obs-text is kept: PEP 3333 hands it to the app as latin-1.
field_vchar = r"[\x21-\x7e\x80-\xff]"
field_char = r"[\t\x20-\x7e\x80-\xff]"  # field-vchar, SP or HTAB
field_value = rf"(?:{field_vchar}(?:{field_char}*{field_vchar})?)?"

# RFC 9112 section 5
#   field-line     = field-name ":" OWS field-value OWS
#
# No whitespace is allowed between the name and the colon (section 5.1), and
# a line that starts with whitespace is obs-fold (section 5.2): both simply
# fail to match. The value group excludes the surrounding OWS.
field_line = rf"({field_name}):{OWS}({field_value}){OWS}"

# RFC 9112 section 2.3
#   HTTP-version   = HTTP-name "/" DIGIT "." DIGIT
#   HTTP-name      = %s"HTTP"
http_version = r"HTTP/[0-9]\.[0-9]"
supported_version = r"HTTP/1\.[01]"

# RFC 3986 section 3.3 / RFC 9110 section 4.1
#   absolute-path  = 1*( "/" segment )
#   segment        = *pchar
#   pchar          = unreserved / pct-encoded / sub-delims / ":" / "@"
#   pct-encoded    = "%" HEXDIG HEXDIG
#   query          = *( pchar / "/" / "?" )
#
# Looser than RFC 3986 on purpose: browsers send "|", "^", "[", "]", "{",
# "}", "\", "`" and '"' unescaped (WHATWG URL's percent-encode sets), so any
# VCHAR but "?" and "#" is a path char, and any VCHAR but "#" a query char.
# Stricter where it matters: in the path, which the server percent-decodes
# into PATH_INFO, "%" must start a two-HEXDIG escape (nginx answers 400 too),
# and "%00" is refused, since a NUL in a decoded path is only ever an attack
# on a filesystem or C library. That check is the separate BAD_PERCENT, so
# that the path itself is one character class: sre runs a class loop several
# times faster than an alternation. The query is passed on raw
# (QUERY_STRING), so its escapes are the app's to judge. "#" starts a
# fragment, which is never sent (RFC 9110 section 4.2.5, RFC 3986 section 3.5).
path_char = r"[\x21-\x22\x24-\x3e\x40-\x7e]"  # VCHAR minus "#" and "?"
absolute_path = rf"/{path_char}*"
bad_percent = r"%(?![0-9A-Fa-f]{2})|%00"
query = r"[\x21-\x22\x24-\x7e]*"  # VCHAR minus "#"

# RFC 9112 section 3.2.1
#   origin-form    = absolute-path [ "?" query ]
origin_form = rf"({absolute_path})(?:\?({query}))?"

# RFC 3986 section 3.2.2 / 3.2.3, RFC 9110 section 7.2
#   Host           = uri-host [ ":" port ]
#   uri-host       = IP-literal / IPv4address / reg-name
#   IP-literal     = "[" ( IPv6address / IPvFuture  ) "]"
#   IPvFuture      = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
#   reg-name       = *( unreserved / pct-encoded / sub-delims )
#   port           = *DIGIT
#
# IPv6address is checked for its alphabet only; an IPv4address is a reg-name.
# reg-name may be empty: RFC 9112 section 3.2 has a client send an empty Host
# when the target URI has no authority. As in paths, "%" is in the class and
# its escapes are checked by BAD_PERCENT.
ip_literal = r"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+)\]"
reg_name = r"[-A-Za-z0-9._~!$&'()*+,;=%]*"
uri_host = rf"(?:{ip_literal}|{reg_name})"
port = r"[0-9]*"
host = rf"{uri_host}(?::{port})?"

# RFC 9112 section 3.2.2
#   absolute-form  = absolute-URI
# RFC 9110 section 4.2.1 / 4.2.2
#   http-URI       = "http" "://" authority path-abempty [ "?" query ]
#   https-URI      = "https" "://" authority path-abempty [ "?" query ]
#
# Schemes are case-insensitive (RFC 3986 section 3.1). "userinfo@" is not in
# the pattern: RFC 9110 section 4.2.4 says a recipient SHOULD treat it as an
# error. An empty host is refused: "A recipient that processes such a URI
# reference MUST reject it as invalid" (section 4.2.1).
# Groups: authority, uri-host, path-abempty, query.
absolute_form = (
    rf"(?:[hH][tT][tT][pP][sS]?)://(({uri_host})(?::{port})?)"
    rf"((?:/{path_char}*)?)(?:\?({query}))?"
)

# RFC 9112 section 3.2.3
#   authority-form = uri-host ":" port
# (CONNECT only; the port is required here.)
authority_form = rf"({uri_host}:[0-9]+)"

# RFC 9112 section 3.2.4
#   asterisk-form  = "*"
# (OPTIONS only.)
asterisk_form = r"\*"

# RFC 9112 section 3
#   request-line   = method SP request-target SP HTTP-version
#
# Exactly one SP between the parts: section 3 allows a recipient to split on
# other whitespace, but doing so is how request-smuggling starts, so we don't.
# This is the fast path for the overwhelmingly common origin-form; anything
# else goes to the slow path in parser.py, which picks the error.
request_line_origin = rf"({method}) ({origin_form}) ({supported_version})"

# RFC 9112 section 7.1
#   chunk          = chunk-size [ chunk-ext ] CRLF
#                    chunk-data CRLF
#   chunk-size     = 1*HEXDIG
#   last-chunk     = 1*("0") [ chunk-ext ] CRLF
#
# At most 16 HEXDIG (2**64 - 1): "Recipients MUST anticipate potentially
# large hexadecimal numerals and prevent parsing errors due to integer
# conversion overflows or precision loss due to integer representation."
chunk_size = r"[0-9A-Fa-f]{1,16}"

# RFC 9112 section 7.1.1
#   chunk-ext      = *( BWS ";" BWS chunk-ext-name
#                       [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token
#   chunk-ext-val  = token / quoted-string
# RFC 9110 section 5.6.4
#   quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text )
quoted_string = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
chunk_ext = rf"(?:{OWS};{OWS}{token}(?:{OWS}={OWS}(?:{token}|{quoted_string}))?)*"
chunk_line = rf"({chunk_size})({chunk_ext})"

# --- compiled, once ---------------------------------------------------------------------------

REQUEST_LINE_ORIGIN = re.compile(request_line_origin)
BAD_PERCENT = re.compile(bad_percent)
METHOD = re.compile(method)
HTTP_VERSION = re.compile(http_version)
ORIGIN_FORM = re.compile(origin_form)
ABSOLUTE_FORM = re.compile(absolute_form)
AUTHORITY_FORM = re.compile(authority_form)
HOST = re.compile(host)
FIELD_NAME = re.compile(field_name)
FIELD_LINE = re.compile(field_line)

# A line start that is not "token:": whitespace before the colon (RFC 9112
# section 5.1), obs-fold (section 5.2), an empty name, no colon. Searched for
# over the whole head, from the request line's LF: one scan instead of a
# match per field line. Character-level checks are parser.py's, done on
# bytes with one translate().
BAD_FIELD_START = re.compile(rf"\n(?!{field_name}:)")

# Prefixes that a still-incomplete line may have and be valid once complete
# (a trailing CR may be the start of its CRLF). Anything else is already
# proven invalid, and is refused without waiting for the rest.
_version_prefix = r"(?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.[0-9]?)?)?)?)?)?)?)?"
PARTIAL_REQUEST_LINE = re.compile(
    rf"(?:{token}(?: (?:[\x21-\x22\x24-\x7e]+(?: {_version_prefix})?)?)?)?\r?")
PARTIAL_FIELD_LINE = re.compile(rf"(?:{token}(?::{field_char}*)?)?\r?")

B_CHUNK_LINE = re.compile(chunk_line.encode("latin-1"))
