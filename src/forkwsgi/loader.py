"""APP specs to WSGI callables.

Owns: the APP spec grammar (``pkg.mod``, ``pkg.mod:attr.sub``,
``pkg.mod:create_app("prod", debug=False)``), what the app is imported with:
the import path (``chdir``, ``pythonpath``, the working directory at
``sys.path[0]``) and the process environment (``env``), loading what a
configuration serves (``app`` and the ``mount`` table, each spec once,
composed by mount.py), and error messages that name the module or attribute
that failed (and the mount prefix) with the user's own traceback attached.

Must never: evaluate anything but literals from a spec (factory arguments go
through ``ast.literal_eval``, never ``eval``), swallow the original traceback,
or read settings other than the applications and the ones that shape the
import path and the environment.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from forkwsgi import mount

# Tried in this order for a bare "pkg.mod" spec: PEP 3333's conventional name first.
DEFAULT_NAMES = ("application", "app")


class AppLoadError(Exception):
    """The application could not be loaded.

    ``summary`` is one line naming what failed; ``details`` is the formatted
    traceback of the user's exception, or ''. ``str()`` is both.
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + ("\n" + details.rstrip("\n") if details else ""))
        self.summary = summary
        self.details = details


class AppSpec(NamedTuple):
    module: str
    attrs: tuple[str, ...]  # () for a bare module: try DEFAULT_NAMES
    call: tuple[tuple[Any, ...], dict[str, Any]] | None  # factory arguments, None = no call

    def __str__(self) -> str:
        text = self.module + (":" + ".".join(self.attrs) if self.attrs else "")
        if self.call is not None:
            args, kwargs = self.call
            parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
            text += "(" + ", ".join(parts) + ")"
        return text


# --- the spec grammar -------------------------------------------------------------------------


def validate_spec(spec: str) -> AppSpec:
    """Parse an APP spec without importing anything; ValueError says what is wrong."""
    module, colon, expr = spec.strip().partition(":")
    if not module:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"{module!r} is not a dotted module name (in {spec!r})")
    if not colon:
        return AppSpec(module, (), None)
    if not expr.strip():
        raise ValueError(f"nothing after ':' in {spec!r}")
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{expr!r} is not an attribute name or a factory call") from None
    call = None
    if isinstance(node, ast.Call):
        call = _literal_arguments(node, expr)
        node = node.func
    return AppSpec(module, _attribute_chain(node, expr), call)


def _attribute_chain(node: ast.expr, expr: str) -> tuple[str, ...]:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError(f"{expr!r} must be a name like 'app' or 'app.wsgi' (with an optional call)")
    names.append(node.id)
    return tuple(reversed(names))


def _literal_arguments(call: ast.Call, expr: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # Literals only: a spec comes from argv, the environment or a config file, and
    # running arbitrary expressions from there would make every one of them code.
    try:
        if any(isinstance(arg, ast.Starred) for arg in call.args):
            raise ValueError("*args")
        args = tuple(ast.literal_eval(arg) for arg in call.args)
        kwargs = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise ValueError("**kwargs")
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
    except ValueError:
        raise ValueError(f"factory arguments must be literals (strings, numbers, True/False/None, "
                         f"lists, dicts), in {expr!r}") from None
    return args, kwargs


# --- what the app is imported with -----------------------------------------------------------


def apply_env(cfg: Any) -> None:
    """The ``env`` setting into os.environ: before anything of the application loads."""
    os.environ.update(cfg.env)


def prepare_import_path(cfg: Any) -> None:
    """chdir to ``cfg.chdir``, then put the working directory and ``cfg.pythonpath``
    at the front of sys.path (like gunicorn, so ``myapp:app`` imports from the
    directory the server runs in). Idempotent: safe to call again on reload.
    """
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            raise AppLoadError(f"cannot change directory to {cfg.chdir!r}: {exc.strerror}") from None
    front = [os.getcwd(), *(os.path.abspath(path) for path in cfg.pythonpath)]
    rest = [path for path in sys.path if path not in front]
    sys.path[:] = [*dict.fromkeys(front), *rest]


# --- loading ----------------------------------------------------------------------------------


def load_app(spec: str) -> Callable[..., Any]:
    """Import and return the WSGI callable named by ``spec``; AppLoadError says why not."""
    try:
        parsed = validate_spec(spec)
    except ValueError as exc:
        raise AppLoadError(f"invalid application spec: {exc}") from None
    module = _import(parsed.module)
    parsed = _lookup_default(module, parsed)
    obj = _lookup(module, parsed)
    if parsed.call is not None:
        args, kwargs = parsed.call
        try:
            obj = obj(*args, **kwargs)
        except Exception as exc:
            raise AppLoadError(f"application factory {str(parsed)!r} raised "
                               f"{type(exc).__name__}: {exc}", _user_traceback(exc)) from None
    return _check_wsgi_callable(obj, str(parsed))


def load_apps(cfg: Any) -> dict[str, Callable[..., Any]]:
    """Prefix -> loaded application for what ``cfg`` serves: APP alone is ``{'/': app}``.

    A spec mounted at several prefixes is loaded once. AppLoadError names the
    prefix when the application is a mount.
    """
    try:
        specs = mount.mount_table(cfg.app, getattr(cfg, "mount", None) or {})
    except ValueError as exc:
        raise AppLoadError(str(exc)) from None
    if not specs:
        raise AppLoadError("no application: give APP or --mount")
    mounted = len(specs) > 1 or cfg.app is None
    loaded: dict[str, Callable[..., Any]] = {}
    apps: dict[str, Callable[..., Any]] = {}
    for prefix, spec in specs.items():
        if spec not in loaded:
            try:
                loaded[spec] = load_app(spec)
            except AppLoadError as exc:
                if not mounted:
                    raise
                where = "APP at '/'" if spec == cfg.app else f"mount {prefix!r}"
                raise AppLoadError(f"{where}: {exc.summary}", exc.details) from None
        apps[prefix] = loaded[spec]
    return apps


def load_from_config(cfg: Any) -> Callable[..., Any]:
    """The one WSGI callable a worker serves for ``cfg``: APP itself when nothing is
    mounted, else the prefix table over every mounted application."""
    return mount.compose(load_apps(cfg))


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Missing module itself (or a parent package) vs. a missing import inside it.
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import module {module!r}: no module named {exc.name!r} "
                               f"(sys.path[0] is {sys.path[0]!r}; see --chdir, --pythonpath)"
                               ) from None
        raise AppLoadError(f"error importing module {module!r}: "
                           f"{type(exc).__name__}: {exc}", _user_traceback(exc)) from None
    except (Exception, SystemExit) as exc:
        # SystemExit too: an app module calling sys.exit() at import is a load failure.
        raise AppLoadError(f"error importing module {module!r}: "
                           f"{type(exc).__name__}: {exc}", _user_traceback(exc)) from None


def _lookup_default(module: Any, spec: AppSpec) -> AppSpec:
    """A bare "pkg.mod" spec completed with the name found in it."""
    if spec.attrs:
        return spec
    for name in DEFAULT_NAMES:
        if hasattr(module, name):
            return spec._replace(attrs=(name,))
    raise AppLoadError(f"module {spec.module!r} has no 'application' or 'app' attribute; "
                       f"name the application, e.g. '{spec.module}:myapp'")


def _lookup(module: Any, spec: AppSpec) -> Any:
    obj, path = module, spec.module
    for attr in spec.attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            kind = "module" if path == spec.module else "object"
            close = difflib.get_close_matches(attr, [n for n in dir(obj) if not n.startswith("_")],
                                              n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AppLoadError(f"{kind} {path!r} has no attribute {attr!r}{hint}") from None
        path = f"{path}:{attr}" if path == spec.module else f"{path}.{attr}"
    return obj


def _check_wsgi_callable(obj: Any, spec: str) -> Callable[..., Any]:
    if not callable(obj):
        raise AppLoadError(f"application {spec!r} is not callable "
                           f"(it is of type {type(obj).__name__!r})")
    # A WSGI server calling an ASGI app gets a coroutine back and a confusing 500 later.
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
            getattr(obj, "__call__", None)):  # noqa: B004
        raise AppLoadError(f"application {spec!r} is an async (ASGI) callable; forkwsgi serves "
                           f"WSGI (PEP 3333) applications")
    return obj


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _user_traceback(exc: BaseException) -> str:
    """The traceback without our frames and importlib's: only the user's code is news."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not _is_ours(frame.filename)])
    return "".join(report.format())


def _is_ours(filename: str) -> bool:
    return (filename == __file__ or filename.startswith("<frozen importlib")
            or filename.startswith(_IMPORTLIB_DIR))
