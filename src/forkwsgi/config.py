"""Settings from their sources: config file, environment, command line.

Owns: finding and reading the config file (TOML, ``[tool.forkwsgi]`` of a
pyproject.toml, or a Python file that may also define hooks), the
``FORKWSGI_*`` environment variables, and layering them, in this order of
precedence: command line > environment > config file > default. Each layer
replaces a setting's value whole (a list or ``env`` given on the command line
replaces the file's, it does not extend it). ``resolve()`` is pure apart from
reading the config file, so calling it again on SIGHUP re-reads everything.

Decisions:
- The config file is ``-c FILE`` (or ``FORKWSGI_CONFIG``); without one,
  ``./forkwsgi.toml`` if present, else ``[tool.forkwsgi]`` of ``./pyproject.toml``
  if that table exists, both in the directory forkwsgi was started from.
  ``*.py`` files are Python; anything else is TOML.
- ``app`` is a setting like the others: the APP argument, ``FORKWSGI_APP`` or
  ``app = "pkg.mod:app"`` in the file.
- ``FORKWSGI_<NAME>`` is setting NAME. ``FORKWSGI_CONFIG`` names the config file.
  ``FORKWSGI__*`` (double underscore) is reserved for the server's own use and
  ignored here. Any other ``FORKWSGI_*`` variable is an error, so a typo is
  caught instead of silently doing nothing.
- Repeatable settings in the environment are split like a shell would:
  ``FORKWSGI_BIND="127.0.0.1:80 unix:/run/app.sock"``.
- In a Python file, module-level names that are settings are settings. Of the
  rest, names starting with ``_`` or holding an uppercase letter (your
  constants), modules, classes, functions and other objects (a logger,
  ``os.environ``) are yours; a function named like a hook with a typo is an
  error, and so is a lowercase plain value (str, number, bool, list, dict,
  None), with a did-you-mean.

Must never: import the application, touch ``os.environ`` or the working
directory, or print; errors are ``ConfigError`` with a one-line ``str()``.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from forkwsgi.settings import (
    BY_NAME,
    ENV_PREFIX,
    HOOKS,
    Config,
    SettingError,
    convert,
    make_config,
    suggest,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_ENV = "FORKWSGI_CONFIG"
INTERNAL_ENV_PREFIX = "FORKWSGI__"
DEFAULT_FILES = ("forkwsgi.toml", "pyproject.toml")


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is the one line to show the user.

    ``source`` says where it came from (a file, ``file:line`` or an
    environment variable) and prefixes the message when given.
    """

    def __init__(self, message: str, source: str | None = None,
                 setting: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.setting = setting


# --- the public entry point ------------------------------------------------------------------


def resolve(cli_values: Mapping[str, Any], app: str | None, config_path: str | None,
            environ: Mapping[str, str], search_dir: str | None = None) -> Config:
    """The Config for these command-line values, environment and config file.

    ``cli_values`` holds only the options given on the command line, raw
    (strings, lists of strings, booleans). ``config_path`` None means
    ``FORKWSGI_CONFIG`` or the default files in ``search_dir`` (the current
    directory); a relative path is relative to ``search_dir`` too.
    """
    search_dir = search_dir or os.getcwd()
    values: dict[str, Any] = {}
    named = config_path or environ.get(CONFIG_ENV) or None
    path = find_config_file(named, search_dir)
    if path is not None:
        values.update(read_config_file(path, display=named or os.path.basename(path)))
    values.update(read_environ(environ))
    cli = dict(cli_values)
    if app is not None:
        cli["app"] = app
    for name, raw in cli.items():
        values[name] = _convert(name, raw, source=None)
    if values.get("chdir"):
        # Relative to where we started, so a reload (already chdir'ed) resolves the same.
        values["chdir"] = os.path.normpath(os.path.join(search_dir, values["chdir"]))
    return make_config(values, config_file=os.path.abspath(path) if path else None)


# --- config files ----------------------------------------------------------------------------


def find_config_file(config_path: str | None, search_dir: str) -> str | None:
    """The file to read: the one named, else a default one found in ``search_dir``."""
    if config_path is not None:
        path = os.path.join(search_dir, config_path)
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {config_path}")
        return path
    for name in DEFAULT_FILES:
        path = os.path.join(search_dir, name)
        if os.path.isfile(path) and (name != "pyproject.toml" or _has_tool_table(path)):
            return path
    return None


def _has_tool_table(pyproject: str) -> bool:
    try:
        return "forkwsgi" in read_toml(pyproject).get("tool", {})
    except ConfigError:
        return False  # not ours to complain about a broken pyproject we were not asked to read


def read_config_file(path: str, display: str | None = None) -> dict[str, Any]:
    """Converted settings from a TOML or Python config file.

    ``display`` is the path as messages show it (as the user wrote it).
    """
    display = display or path
    if path.endswith(".py"):
        return read_python(path, display)
    data = read_toml(path, display)
    if os.path.basename(path) == "pyproject.toml":
        data = data.get("tool", {}).get("forkwsgi", {})
        if not isinstance(data, dict):
            raise ConfigError("[tool.forkwsgi] must be a table", display)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = key.replace("-", "_")
        if name not in BY_NAME:
            raise ConfigError(f"unknown setting '{key}'{suggest(name)}", display)
        values[name] = _convert(name, raw, display)
    return values


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _read_bytes(path: str, display: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", display) from None


def read_toml(path: str, display: str | None = None) -> dict[str, Any]:
    """A TOML document; a syntax error is ``file:line: invalid TOML: why (column N)``."""
    display = display or path
    source = _read_bytes(path, display)
    try:
        return tomllib.loads(source.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid TOML: not UTF-8 at byte {exc.start}", display) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc).splitlines()[0]
        where = _TOML_POSITION.search(message)
        if where is None:
            raise ConfigError(f"invalid TOML: {message}", display) from None
        line = where[1] or source.count(b"\n") + (not source.endswith(b"\n"))
        column = f" (column {where[2]})" if where[2] else " (at the end of the file)"
        raise ConfigError(f"invalid TOML: {message[:where.start()]}{column}",
                          f"{display}:{line}") from None


def read_python(path: str, display: str | None = None) -> dict[str, Any]:
    """Settings from a Python config file: its module-level names (see the module docstring)."""
    display = display or path
    source = _read_bytes(path, display)
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"invalid Python: {exc.msg}", f"{display}:{exc.lineno}") from None
    try:
        exec(code, namespace)
    except Exception as exc:
        raise ConfigError(f"{type(exc).__name__}: {exc}",
                          f"{display}:{_failing_line(exc, code.co_filename)}") from None
    values: dict[str, Any] = {}
    for name, value in namespace.items():
        if not _is_setting_name(name, value):
            continue
        if name not in BY_NAME:
            raise ConfigError(f"unknown setting '{name}'{suggest(name)}", display)
        values[name] = _convert(name, value, display)
    return values


# What a setting's value can look like in Python; anything else (a logger, os.environ)
# is the file's own business.
_PLAIN = (str, bytes, int, float, bool, list, tuple, dict, set, type(None))


def _is_setting_name(name: str, value: Any) -> bool:
    """Whether a Python config file's global is meant as a setting."""
    if name in BY_NAME:
        return True
    if name.startswith("_") or name != name.lower():
        return False  # private, or a CONSTANT of the file's own
    if callable(value) and not isinstance(value, type):
        # A helper function is yours, unless its name is a near miss of a hook.
        return bool(difflib.get_close_matches(name, HOOKS, n=1, cutoff=0.8))
    return isinstance(value, _PLAIN)


def _failing_line(exc: BaseException, filename: str) -> int | str:
    line: int | str = "?"
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# --- the environment -------------------------------------------------------------------------


def read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Converted settings from ``FORKWSGI_<NAME>`` variables."""
    values: dict[str, Any] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var.startswith(INTERNAL_ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name not in BY_NAME:
            raise ConfigError(f"unknown setting '{name}'{suggest(name)}", var)
        value: Any = raw
        if BY_NAME[name].multiple:
            try:
                value = shlex.split(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid value for setting '{name}': {exc}", var,
                                  name) from None
        values[name] = _convert(name, value, var)
    return values


# --- helpers ---------------------------------------------------------------------------------


def _convert(name: str, raw: Any, source: str | None) -> Any:
    try:
        return convert(name, raw)
    except SettingError as exc:
        raise ConfigError(str(exc), source, name) from None


def dump(cfg: Config) -> str:
    """``cfg`` as TOML (the ``--print-config`` output); it reads back as a config file.

    Unset values and hooks are comments: TOML has no null and cannot hold a function.
    """
    lines = [f"# config file: {cfg.config_file or '(none)'}"]
    for name in BY_NAME:
        value = getattr(cfg, name)
        if name in HOOKS:
            if value is not None:
                code = getattr(value, "__code__", None)
                where = f"{code.co_filename}:{code.co_firstlineno}" if code else repr(value)
                lines.append(f"# {name} = {getattr(value, '__qualname__', name)} "
                             f"({where}; hooks are set in a Python config file)")
        elif value is None:
            lines.append(f"# {name} is not set")
        else:
            lines.append(f"{name} = {_toml_value(value, octal=name in ('umask', 'socket_mode'))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any, octal: bool = False) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and octal:
        return f"0o{value:03o}"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        pairs = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return f"{{ {pairs} }}" if pairs else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))
