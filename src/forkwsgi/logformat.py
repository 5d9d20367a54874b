"""The access log format grammar: which formats are valid, and what each slot is.

Owns: the syntax of ``access_logformat`` (gunicorn/Apache-style ``%(atom)s``
atoms, so a gunicorn format works unchanged, or ``json``), the atom names and
which conversions each takes, and the error messages for a bad format. The
settings table checks a format with ``check_format()``; accesslog compiles
one from ``parse()``.

Must never: import anything of forkwsgi (settings imports it, and the table
must stay import-light), or know how an atom gets its value: that is accesslog's.

Atoms (as gunicorn; request headers are read from the environ's ``HTTP_*``):

    h  remote address (REMOTE_ADDR)      s  status code
    l  '-'                               B  response body bytes
    u  REMOTE_USER or '-'                b  response body bytes, '-' for 0 (CLF)
    t  [25/Nov/2026:04:30:00 +0000]      f  Referer or '-'
    r  request line: METHOD URI PROTO    a  User-Agent or '-'
    m  method                            T  duration, whole seconds
    U  path (PATH_INFO)                  M  duration, milliseconds
    q  query string                      D  duration, microseconds
    H  protocol                          L  duration, decimal seconds
    p  <PID>                             {Name}i  request header
    {Name}o  response header             {VAR}e   environ key, else OS environment
"""

from __future__ import annotations

import re
from typing import NamedTuple

JSON_FORMAT = "json"

LETTERS = frozenset("hlutrmUqHsBbfaTMDLp")
NUMERIC = frozenset("sBTMD")  # atoms that may take %d / %f conversions
BRACED = frozenset("ioe")  # {Name}i request header, {Name}o response header, {VAR}e variable
# Text that a client (or the app, or whoever set the variable) chose, of any length: the
# fields an overlong line is cut in. Never the timestamp, status, PID or numbers.
FREE_TEXT = frozenset("hurmUqHfa")

_TOKEN = re.compile(r"%(?:(?P<percent>%)|\((?P<key>[^()]*)\)"
                    r"(?P<spec>[#0 +-]*\d*(?:\.\d+)?)(?P<conv>[diouxXeEfFgGcrsa]))")
_ATOM_LIST = "h l u t r m U q H s B b f a T D M L p {Header}i {Header}o {VAR}e"


class Slot(NamedTuple):
    """One atom of a format: ``key`` as written ('a', '{User-Agent}i') and its conversion."""

    key: str
    conv: str

    @property
    def numeric(self) -> bool:
        return self.conv not in "rsa"

    @property
    def free_text(self) -> bool:
        """Client- or app-chosen text of any length, rendered as text."""
        return not self.numeric and (self.key in FREE_TEXT or self.key[0] == "{")


def parse(fmt: str) -> tuple[str, list[Slot]]:
    """An atom format -> a positional %-format with one ``%...`` per slot, and the slots.

    Raises ValueError, saying what is wrong and where, for a format that is not valid.
    """
    positional: list[str] = []
    slots: list[Slot] = []
    pos = 0
    while (start := fmt.find("%", pos)) >= 0:
        match = _TOKEN.match(fmt, start)
        if match is None:
            raise ValueError(f"'%' at position {start} starts no atom; write '%(h)s' "
                             f"for an atom or '%%' for a literal percent sign")
        positional.append(fmt[pos:start])
        pos = match.end()
        if match["percent"]:
            positional.append("%%")
            continue
        slot = Slot(match["key"], match["conv"])
        key = slot.key
        if key in LETTERS:
            if slot.numeric and key not in NUMERIC:
                raise ValueError(f"atom {key!r} is text; write %({key})s")
        elif len(key) > 3 and key[0] == "{" and key[-2] == "}" and key[-1] in BRACED:
            if slot.numeric:
                raise ValueError(f"atom {key!r} is text; write %({key})s")
        else:
            raise ValueError(f"unknown atom {key!r}; known atoms: {_ATOM_LIST}")
        positional.append("%" + match["spec"] + slot.conv)
        slots.append(slot)
    positional.append(fmt[pos:].replace("%", "%%"))
    return "".join(positional), slots


def check_format(fmt: str) -> None:
    """Raise ValueError if ``fmt`` is neither 'json' nor a valid atom format."""
    if fmt != JSON_FORMAT:
        parse(fmt)
