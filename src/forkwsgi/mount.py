"""Several WSGI applications in one worker, each under a URL prefix.

Owns: the prefix grammar (``/`` or ``/a/b``: a leading ``/``, no trailing
``/``, no empty segment), which applications a configuration mounts where
(the APP argument is the ``/`` mount), the prefix table with its longest-
prefix match on a path-segment boundary (``/api`` takes ``/api`` and
``/api/x``, never ``/apix``), the PEP 3333 split of the path (SCRIPT_NAME
gets the prefix appended, PATH_INFO keeps the rest, '' when the path is the
prefix itself), and the plain-text 404 for a path no prefix takes.

Decisions:
- The match is on PATH_INFO, the percent-decoded path the applications see,
  so SCRIPT_NAME + PATH_INFO is still the path requested.
- The environ is changed in place, as WSGI middleware does: the access log's
  ``%(U)s`` then shows the path as the mounted application got it, as it does
  under a SCRIPT_NAME set in the environment; ``%(r)s`` keeps the request line.
- A table of one application at ``/`` is that application itself: without
  mounts nothing stands between the dispatcher and the app.

Must never: parse HTTP (it sees only the environ the server built), import an
application (loader.py does, and hands the loaded callables in), or import
other forkwsgi modules (settings.py and loader.py import this one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

ROOT = "/"

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]

_NOT_FOUND_BODY = b"Not Found\n"
_NOT_FOUND_HEADERS = [("Content-Type", "text/plain; charset=utf-8"),
                      ("Content-Length", str(len(_NOT_FOUND_BODY)))]


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a mount prefix; ValueError says what is wrong."""
    if not prefix.startswith("/"):
        raise ValueError(f"prefix {prefix!r} must start with '/'")
    if prefix != ROOT and prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r} must not end with '/' "
                         f"(write {prefix.rstrip('/') or ROOT!r})")
    if "//" in prefix:
        raise ValueError(f"prefix {prefix!r} has an empty path segment")
    bad = [char for char in prefix if char in "?#" or char.isspace() or not char.isprintable()]
    if bad:
        raise ValueError(f"prefix {prefix!r} holds {bad[0]!r}: a prefix is a path")
    return prefix


def mount_table(app: str | None, mounts: Mapping[str, str]) -> dict[str, str]:
    """Prefix -> APP spec of what a configuration serves: the mounts, plus APP at ``/``.

    APP beside a ``/`` mount is a ValueError naming both: which one was meant
    cannot be guessed, and silently dropping one would serve the wrong site.
    """
    table = dict(mounts)
    if app is not None:
        if ROOT in table:
            raise ValueError(f"the application {app!r} (APP) and the mount '/' = "
                             f"{table[ROOT]!r} both claim '/': give one of them")
        table[ROOT] = app
    return table


def compose(apps: Mapping[str, WSGIApp]) -> WSGIApp:
    """One WSGI callable serving ``apps`` (prefix -> loaded app) by longest prefix."""
    if set(apps) == {ROOT}:
        return apps[ROOT]
    return Mounts(apps)


def not_found(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """forkwsgi's own answer for a path no mount takes."""
    start_response("404 Not Found", list(_NOT_FOUND_HEADERS))
    return [_NOT_FOUND_BODY]


class Mounts:
    """The prefix table: a WSGI application dispatching to the mounted ones."""

    def __init__(self, apps: Mapping[str, WSGIApp]) -> None:
        for prefix in apps:
            check_prefix(prefix)
        self.apps = dict(apps)
        # Longest first, so the first match is the longest; '/' is the fallback, not a
        # row, since it takes every path unchanged.
        self.table: tuple[tuple[str, int, WSGIApp], ...] = tuple(
            (prefix, len(prefix), app)
            for prefix, app in sorted(self.apps.items(), key=lambda item: -len(item[0]))
            if prefix != ROOT)
        self.root: WSGIApp = self.apps.get(ROOT, not_found)

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, length, app in self.table:
            if path.startswith(prefix) and (len(path) == length or path[length] == "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[length:]
                return app(environ, start_response)
        return self.root(environ, start_response)

    def __repr__(self) -> str:
        return f"Mounts({', '.join(sorted(self.apps, key=lambda p: -len(p)))})"
