"""Settings from their sources: config file, environment, command line.

Owns: finding and reading the config file (TOML, ``[tool.forkwsgi]`` of a
pyproject.toml, or a Python file that may also define hooks), the
``FORKWSGI_*`` environment variables, and layering them, in this order of
precedence: command line > environment > config file > default. Each layer
replaces a setting's value whole (a list or ``env`` given on the command line
replaces the file's, it does not extend it). ``resolve()`` is pure apart from
reading the config file, so calling it again on SIGHUP re-reads everything.
What is wrong but harmless comes back as warnings, one line each, on
``Config.warnings``.

Decisions:
- The config file is ``-c FILE`` (or ``FORKWSGI_CONFIG``); without one,
  ``./forkwsgi.toml`` if present, else ``[tool.forkwsgi]`` of ``./pyproject.toml``
  if that table exists, both in the directory forkwsgi was started from.
  ``*.py`` files are Python; anything else is TOML.
- ``app`` is a setting like the others: the APP argument, ``FORKWSGI_APP`` or
  ``app = "pkg.mod:app"`` in the file.
- A setting's name in a file or the environment is its row name or any of its
  long flags (``access_log_format`` for ``--access-log-format``), dashes or
  underscores; giving one setting twice in one source is an error.
- ``FORKWSGI_<NAME>`` is setting NAME. ``FORKWSGI_CONFIG`` names the config file.
  ``FORKWSGI__*`` (double underscore) is reserved for the server's own use and
  ignored here. Any other ``FORKWSGI_*`` variable is a warning, not an error:
  the environment is not only the user's (Kubernetes adds ``FORKWSGI_PORT``,
  ``FORKWSGI_SERVICE_HOST``... for a Service named forkwsgi), so refusing to
  start for it would be worse than a typo doing nothing. A bad value of a real
  setting is still an error.
- Repeatable settings in the environment are split like a shell would:
  ``FORKWSGI_BIND="127.0.0.1:80 unix:/run/app.sock"``.
- In a Python file, module-level names that are settings are settings. Of the
  rest, names starting with ``_`` or holding an uppercase letter (your
  constants), modules, classes, functions and other objects (a logger,
  ``os.environ``) are yours; a function named like a hook with a typo is an
  error, and so is a lowercase plain value (str, number, bool, list, dict,
  None), with a did-you-mean or, for a gunicorn name, what to do instead.
- A Python file whose name starts with ``gunicorn`` (gunicorn.conf.py,
  gunicorn_config.py) is a gunicorn config: gunicorn names are translated to
  ours (``keepalive`` is ``keep_alive``), the ones forkwsgi has no equivalent
  for, hooks with other arguments included, are ignored and named in one
  warning, our own names are settings too, and any other name is the file's
  own, as gunicorn ignores unknown names. The name decides, not the content, so
  a gunicorn name in a forkwsgi file stays an error.

Must never: import the application, touch ``os.environ`` or the working
directory, or print; errors are ``ConfigError`` with a one-line ``str()``.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import shlex
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from forkwsgi import gunicorn_compat, tomltext
from forkwsgi.settings import (
    BY_NAME,
    ENV_PREFIX,
    HOOKS,
    Config,
    SettingError,
    canonical,
    convert,
    make_config,
    suggest,
)

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
    warnings: list[str] = []
    named = config_path or environ.get(CONFIG_ENV) or None
    path = find_config_file(named, search_dir)
    if path is not None:
        values.update(read_config_file(path, display=named or os.path.basename(path),
                                       warnings=warnings))
    values.update(read_environ(environ, warnings))
    cli = dict(cli_values)
    if app is not None:
        cli["app"] = app
    for name, raw in cli.items():
        values[name] = _convert(name, raw, source=None)
    if values.get("chdir"):
        # Relative to where we started, so a reload (already chdir'ed) resolves the same.
        values["chdir"] = os.path.normpath(os.path.join(search_dir, values["chdir"]))
    try:
        cfg = make_config(values, config_file=os.path.abspath(path) if path else None)
    except SettingError as exc:  # settings checked together (the TLS ones)
        raise ConfigError(str(exc), setting=exc.setting) from None
    cfg.warnings = warnings
    return cfg


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


def read_config_file(path: str, display: str | None = None,
                     warnings: list[str] | None = None) -> dict[str, Any]:
    """Converted settings from a TOML or Python config file.

    ``display`` is the path as messages show it (as the user wrote it);
    ``warnings`` collects what is worth telling but not refusing.
    """
    display = display or path
    if path.endswith(".py"):
        return read_python(path, display, warnings)
    data = read_toml(path, display)
    if os.path.basename(path) == "pyproject.toml":
        data = data.get("tool", {}).get("forkwsgi", {})
        if not isinstance(data, dict):
            raise ConfigError("[tool.forkwsgi] must be a table", display)
    values = _Values(display)
    for key, raw in data.items():
        name = canonical(key)
        if name is None:
            raise ConfigError(f"unknown setting '{key}'{suggest(key)}", display)
        values.put(name, key, raw)
    return values.converted


class _Values:
    """Settings of one source, each given once under any of its names, converted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.converted: dict[str, Any] = {}
        self.given_as: dict[str, str] = {}

    def put(self, name: str, given_as: str, raw: Any) -> None:
        if name in self.given_as:
            raise ConfigError(f"setting '{name}' is given twice, as '{self.given_as[name]}' "
                              f"and as '{given_as}'", self.source, name)
        self.given_as[name] = given_as
        try:
            self.converted[name] = convert(name, raw)
        except SettingError as exc:
            other = f" (given as '{given_as}')" if given_as.replace("-", "_") != name else ""
            raise ConfigError(f"{exc}{other}", self.source, name) from None


def _read_bytes(path: str, display: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", display) from None


def read_toml(path: str, display: str | None = None) -> dict[str, Any]:
    """A TOML document; a syntax error is ``file:line: invalid TOML: why (column N)``."""
    display = display or path
    try:
        return tomltext.loads(_read_bytes(path, display))
    except tomltext.TomlError as exc:
        raise ConfigError(str(exc), f"{display}:{exc.line}" if exc.line else display) from None


def read_python(path: str, display: str | None = None,
                warnings: list[str] | None = None) -> dict[str, Any]:
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
    if is_gunicorn_file(path):
        return _translate_gunicorn(namespace, display,
                                   warnings if warnings is not None else [])
    values = _Values(display)
    for name, value in namespace.items():
        if not _is_setting_name(name, value):
            continue
        setting = canonical(name)
        if setting is None:
            hint = ("; a config file named gunicorn*.py is read as a gunicorn config"
                    if gunicorn_compat.by_name(name) is not None else "")
            raise ConfigError(f"unknown setting '{name}'{suggest(name)}{hint}", display)
        values.put(setting, name, value)
    return values.converted


def is_gunicorn_file(path: str) -> bool:
    """Whether a config file is read as gunicorn's: a Python file named gunicorn*.py."""
    name = os.path.basename(path)
    return name.startswith("gunicorn") and name.endswith(".py")


def _translate_gunicorn(namespace: dict[str, Any], display: str,
                        warnings: list[str]) -> dict[str, Any]:
    values = _Values(display)
    ignored: dict[str, list[str]] = {}  # why -> the settings ignored for that reason
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue  # "import syslog" is not gunicorn's syslog setting
        row = gunicorn_compat.by_name(name)
        if row is None:
            setting = canonical(name) if _is_setting_name(name, value) else None
            if setting is not None:
                values.put(setting, name, value)
            continue  # the file's own name: gunicorn ignores those too
        setting = gunicorn_compat.our_setting(row)
        if setting is None:
            shown = name if callable(value) else f"{name}={reprlib.repr(value)}"
            ignored.setdefault(gunicorn_compat.why_not(row), []).append(shown)
        elif value is not None:  # None is gunicorn's "not set": our default applies
            values.put(setting, name, value)
    if ignored:
        listed = ", ".join(f"{', '.join(names)} ({why})" for why, names in ignored.items())
        warnings.append(f"{display}: ignored gunicorn settings: {listed}")
    return values.converted


# What a setting's value can look like in Python; anything else (a logger, os.environ)
# is the file's own business.
_PLAIN = (str, bytes, int, float, bool, list, tuple, dict, set, type(None))


def _is_setting_name(name: str, value: Any) -> bool:
    """Whether a Python config file's global is meant as a setting."""
    if canonical(name) is not None:
        return True
    if name.startswith("_") or name != name.lower() or isinstance(value, ModuleType):
        return False  # private, a CONSTANT of the file's own, or an import
    if gunicorn_compat.by_name(name) is not None:
        return True  # a gunicorn setting, hooks included: its own message says what to do
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


# Kubernetes gives every container variables for each Service of its namespace (service
# links): a Service named forkwsgi (or forkwsgi-x) yields FORKWSGI_[X_]SERVICE_HOST,
# FORKWSGI_[X_]SERVICE_PORT[_NAME], FORKWSGI_[X_]PORT and FORKWSGI_[X_]PORT_N_TCP[_ADDR|...].
_SERVICE_LINK = re.compile(r"(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
                           r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:ADDR|PORT|PROTO))?)?)")


def read_environ(environ: Mapping[str, str],
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """Converted settings from ``FORKWSGI_<NAME>`` variables.

    Variables that are not settings are ignored, each named in ``warnings``
    (Kubernetes service links together in one).
    """
    warnings = warnings if warnings is not None else []
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    service_links: list[str] = []
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var.startswith(INTERNAL_ENV_PREFIX) or var == CONFIG_ENV:
            continue
        key = var[len(ENV_PREFIX):].lower()
        name = canonical(key)
        if name is None:
            if _SERVICE_LINK.fullmatch(var[len(ENV_PREFIX):]):
                service_links.append(var)
            else:
                warnings.append(f"{var}: unknown setting '{key}'{suggest(key)}; ignored")
            continue
        if name in given_as:
            raise ConfigError(f"setting '{name}' is given twice, as {given_as[name]} and as "
                              f"{var}", var, name)
        given_as[name] = var
        value: Any = raw
        if BY_NAME[name].multiple:
            try:
                value = shlex.split(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid value for setting '{name}': {exc}", var,
                                  name) from None
        values[name] = _convert(name, value, var)
    if service_links:
        warnings.append(f"{', '.join(service_links)}: ignored: Kubernetes service links, not "
                        f"settings ('enableServiceLinks: false' in the pod spec drops them)")
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
