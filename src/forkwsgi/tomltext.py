"""TOML bytes to a dict, with errors that say where: shared by config files and log configs.

Owns: decoding (UTF-8) and parsing a TOML document, and turning the parser's
message into one line and a line number, so every TOML file forkwsgi reads
reports a mistake the same way (``file:line: invalid TOML: why (column N)``).

Must never: open files or import anything of forkwsgi: config.py and logs.py
both use it, and neither may import the other.
"""

from __future__ import annotations

import re
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


class TomlError(ValueError):
    """``str()`` is the one-line reason (``invalid TOML: ...``); ``line`` is its line, or None."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def loads(source: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(source.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TomlError(f"invalid TOML: not UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc).splitlines()[0]
        where = _POSITION.search(message)
        if where is None:
            raise TomlError(f"invalid TOML: {message}") from None
        line = int(where[1]) if where[1] else source.count(b"\n") + (not source.endswith(b"\n"))
        column = f" (column {where[2]})" if where[2] else " (at the end of the file)"
        raise TomlError(f"invalid TOML: {message[:where.start()]}{column}", line) from None
