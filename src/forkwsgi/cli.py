"""The command line: argv -> Config -> Arbiter.

Owns: the click command, generated from ``settings.SETTINGS`` (one option per
row with flags; booleans as ``--x/--no-x``; repeatable rows repeat), the
options that are not settings (``-c/--config``, ``--check-config``,
``--print-config``, ``--version``), turning every usage or configuration
mistake into one ``forkwsgi: error: ...`` line with exit status 2 (a
gunicorn flag forkwsgi does not have says what to do instead), printing the
configuration's warnings as ``forkwsgi: warning: ...`` lines, and the order
of start-up side effects: ``env`` into os.environ, then chdir and sys.path,
then the arbiter. ``forkwsgi cgi ...`` (``cgi`` as the first argument only:
a module named cgi is still served as ``cgi:app`` or ``-- cgi``) parses its own,
smaller command here and hands the request to cgi_mode.py; ``forkwsgi status``,
``reload``, ``stop`` and ``scale`` go to ctl.py the same way.

Exit statuses: 0 success; 1 the configuration is valid but the application
cannot be loaded or the pidfile cannot be written (``--check-config``), or the
server failed; 2 the command line or the configuration is wrong.

Must never: hand-write an option for a setting, decide precedence (that is
``config.resolve``), or start the arbiter for ``--check-config`` or
``--print-config``. click only parses here; it never runs the server, so its
KeyboardInterrupt handling cannot wrap the arbiter.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from forkwsgi import __version__, gunicorn_compat, settings
from forkwsgi.config import ConfigError, dump, resolve
from forkwsgi.loader import AppLoadError, apply_env, load_apps, prepare_import_path, validate_spec
from forkwsgi.mount import mount_table
from forkwsgi.settings import SETTINGS, Config, Setting, SettingError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "forkwsgi"
# First arguments that name an operator's command (ctl.py) rather than an app: a module
# with one of these names is still served as status:app, or after "--".
CONTROL_COMMANDS = ("status", "reload", "stop", "scale")

HELP = """Serve the WSGI application APP (e.g. myapp:app or 'myapp:create_app()')
with pre-forked worker processes; --mount serves more, each under a URL prefix.

\b
Every option is also an environment variable FORKWSGI_<NAME> and a config
file key <name> (see docs/settings.md). Precedence: command line >
environment > config file > default. The config file is -c FILE, else
./forkwsgi.toml, else [tool.forkwsgi] in ./pyproject.toml.

'forkwsgi cgi APP' answers one request as a CGI script instead (see
'forkwsgi cgi --help'). 'forkwsgi status', 'reload', 'stop' and 'scale N'
talk to a running server (see 'forkwsgi status --help').
"""

_METAVARS = {
    settings.to_int: "INT", settings.to_positive_int: "INT", settings.to_nonneg_int: "INT",
    settings.to_seconds: "SECONDS", settings.to_workers: "INT|auto", settings.to_umask: "MODE",
    settings.to_mode: "MODE",
    settings.to_env: "KEY=VALUE", settings.to_bind_list: "ADDRESS", settings.to_list: "LIST",
    settings.to_access_logformat: "FORMAT", settings.to_mounts: "PREFIX=APP",
    settings.to_size: "SIZE", settings.to_optional_seconds: "SECONDS",
    settings.to_control_bind: "ADDRESS",
}


# --- the command, generated from the table ---------------------------------------------------


def _option(row: Setting) -> click.Option:
    default = settings.default_text(row)
    # click would show a default only by using it; ours must stay None ("not given").
    text = f"{row.help}  [default: {default}]" if default else row.help
    if row.is_flag:
        decls = [f"{flag}/--no-{flag[2:]}" for flag in row.flags if flag.startswith("--")]
        return click.Option([*decls, row.name], default=None, help=text)
    choices = getattr(row.convert, "choices", None)
    metavar = "[" + "|".join(choices) + "]" if choices else _METAVARS.get(row.convert, "TEXT")
    # Every value stays a raw string here: settings.convert is the one converter, so the
    # command line, the environment and the file report a bad value the same way.
    return click.Option([*row.flags, row.name], default=None, multiple=row.multiple,
                        metavar=metavar, help=text)


def build_command() -> click.Command:
    params: list[click.Parameter] = [click.Argument(["app"], required=False, metavar="APP")]
    params += [_option(row) for row in SETTINGS if row.flags]
    params += [
        click.Option(["-c", "--config", "config"], default=None, metavar="FILE",
                     help="Config file: TOML, or Python (*.py) which may also define hooks. "
                          "Also FORKWSGI_CONFIG."),
        click.Option(["--check-config"], is_flag=True, default=False,
                     help="Load the configuration and import the application once, then exit: "
                          "0 if both work, 1 if the application fails to load or the "
                          "pidfile cannot be written, 2 if the configuration is wrong."),
        click.Option(["--print-config"], is_flag=True, default=False,
                     help="Print the resolved settings as TOML and exit."),
    ]
    command = click.Command(PROG, params=params, help=HELP,
                            context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
    return click.version_option(__version__, "--version", prog_name=PROG,
                                message="%(prog)s %(version)s")(command)


# --- errors ----------------------------------------------------------------------------------


def _error(message: str) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)


def _usage_line(exc: click.ClickException) -> str:
    """click's (multi-line) usage error as one line that names the option."""
    if isinstance(exc, click.NoSuchOption):
        return f"unknown option '{exc.option_name}'{_flag_suggestion(exc)}"
    message = " ".join(exc.format_message().split())
    return message[:1].lower() + message[1:].rstrip(".")


def _flag_suggestion(exc: click.NoSuchOption) -> str:
    # gunicorn's flags first: the nearest spelling of one of ours can mean the opposite
    # (--reload is not --preload). Then the table's names (--accesslog) and settings
    # without a short form; click only knows near-miss spellings of our flags.
    flag = exc.option_name
    row = gunicorn_compat.by_flag(flag)
    if row is not None and row.ours is None:
        return f" (gunicorn's): {row.note}"
    if row is not None and row.ours.startswith("-"):
        return f" (did you mean '{row.ours}'?)"
    name = gunicorn_compat.our_setting(row) if row else settings.closest(flag.lstrip("-"))
    longs = [flag for flag in settings.BY_NAME[name].flags if flag.startswith("--")] if name else []
    if longs:
        return f" (did you mean '{longs[0]}'?)"
    hint = settings.suggest(flag.lstrip("-"))
    if hint.startswith(" (gunicorn's)"):
        return hint  # a gunicorn config name written as a flag: --worker_class
    return f" (did you mean '{exc.possibilities[0]}'?)" if exc.possibilities else ""


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``forkwsgi`` console script."""
    sys.exit(run(list(sys.argv[1:] if argv is None else argv)))


def run(argv: list[str]) -> int:
    """Everything ``main`` does, returning the exit status."""
    if argv[:1] == ["cgi"]:
        return run_cgi(argv[1:])
    if argv[:1] and argv[0] in CONTROL_COMMANDS:
        from forkwsgi import ctl

        return ctl.run(argv[0], argv[1:])
    try:
        with build_command().make_context(PROG, argv) as ctx:
            params = dict(ctx.params)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.ClickException as exc:
        _error(_usage_line(exc))
        return EXIT_USAGE
    cli_values = {row.name: _raw(params[row.name]) for row in SETTINGS
                  if row.flags and params[row.name] not in (None, ())}
    start_dir = os.getcwd()
    reload_config = functools.partial(resolve, cli_values, params["app"], params["config"],
                                      os.environ, search_dir=start_dir)
    try:
        cfg = reload_config()
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    for warning in cfg.warnings:
        click.echo(f"{PROG}: warning: {warning}", err=True)
    if params["print_config"]:
        click.echo(dump(cfg), nl=False)
        if not params["check_config"]:
            return EXIT_OK
    try:
        served = mount_table(cfg.app, cfg.mount)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if not served:
        _error("no application: give APP (e.g. 'myapp:app'), FORKWSGI_APP, "
               "app = \"...\" in the config file, or --mount PREFIX=APP")
        return EXIT_USAGE
    if params["check_config"]:
        return check(cfg)
    return serve(cfg, reload_config, start_dir)


def _raw(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check(cfg: Config) -> int:
    """--check-config: what start-up would load, without binding or forking."""
    from forkwsgi.logs import load_log_config

    apply_env(cfg)
    try:
        if cfg.log_config:
            load_log_config(cfg.log_config)
    except SettingError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        prepare_import_path(cfg)
        apps = load_apps(cfg)
    except AppLoadError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    if cfg.pid:
        from forkwsgi import pidfile

        # Writable only: a pidfile naming the running server is what a check before its
        # reload or upgrade finds, and the server itself refuses to start beside it.
        try:
            pidfile.check_writable(cfg.pid)
        except pidfile.PidfileError as exc:
            _error(str(exc))
            return EXIT_FAILURE
    if not cfg.mount:
        click.echo(f"{PROG}: configuration OK; application {cfg.app!r} loaded"
                   + _loaded_from(cfg.app))
        return EXIT_OK
    served = mount_table(cfg.app, cfg.mount)
    click.echo(f"{PROG}: configuration OK; mounted applications loaded:")
    for prefix in sorted(apps, key=len, reverse=True):
        click.echo(f"  {prefix} = {served[prefix]!r}" + _loaded_from(served[prefix]))
    return EXIT_OK


def _loaded_from(spec: str) -> str:
    """The file of the module a spec names (not the app's class: Django's is Django's)."""
    where = getattr(sys.modules.get(validate_spec(spec).module), "__file__", None)
    return f" from {where}" if where else ""


def serve(cfg: Config, reload_config: Callable[[], Config], start_dir: str | None = None) -> int:
    """Start-up side effects in order, then hand over to the arbiter."""
    from forkwsgi.logs import setup_error_log

    apply_env(cfg)
    try:
        setup_error_log(cfg)
    except (SettingError, OSError) as exc:
        _error(str(exc) if isinstance(exc, SettingError)
               else f"cannot open log file {exc.filename}: {exc.strerror}")
        return EXIT_USAGE
    try:
        prepare_import_path(cfg)
    except AppLoadError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    from forkwsgi.arbiter import Arbiter  # imported late: --check-config never needs it

    return Arbiter(cfg, reload_config=reload_config, start_dir=start_dir).run()


# --- forkwsgi cgi ----------------------------------------------------------------------------

CGI_HELP = """Answer one request as a CGI script: run the WSGI application APP once
with the request the web server put in the environment (REQUEST_METHOD,
PATH_INFO, QUERY_STRING...) and the body on stdin; the response goes to
stdout. For hosts that offer CGI and nothing else.

\b
APP and these options are also FORKWSGI_<NAME> variables and config file
keys, as for the server; the other settings do not apply and are ignored.
Any failure is a line on stderr (the web server's error log) and a 500.
"""


def build_cgi_command() -> click.Command:
    from forkwsgi.cgi_mode import USED_SETTINGS

    params: list[click.Parameter] = [click.Argument(["app"], required=False, metavar="APP")]
    params += [_option(row) for row in SETTINGS if row.flags and row.name in USED_SETTINGS]
    params.append(click.Option(["-c", "--config", "config"], default=None, metavar="FILE",
                               help="Config file, as for the server. Also FORKWSGI_CONFIG."))
    return click.Command(f"{PROG} cgi", params=params, help=CGI_HELP,
                         context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})


def run_cgi(argv: list[str]) -> int:
    """``forkwsgi cgi ...``: parse the command line; cgi_mode answers the request."""
    from forkwsgi import cgi_mode

    try:
        with build_cgi_command().make_context(f"{PROG} cgi", argv) as ctx:
            params = dict(ctx.params)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        return cgi_mode.refuse(_cgi_usage_line(exc), EXIT_USAGE)
    cli_values = {name: _raw(value) for name, value in params.items()
                  if name in settings.BY_NAME and name != "app" and value not in (None, ())}
    return cgi_mode.answer(cli_values, params["app"], params["config"])


def _cgi_usage_line(exc: click.ClickException) -> str:
    if not isinstance(exc, click.NoSuchOption):
        return _usage_line(exc)
    flag = exc.option_name
    if exc.possibilities:
        hint = f" (did you mean '{exc.possibilities[0]}'?)"
    elif any(flag in row.flags for row in SETTINGS):
        hint = " (a server option; CGI mode takes APP, --chdir, --pythonpath, --env, --config)"
    else:
        hint = ""
    return f"unknown option '{flag}' for '{PROG} cgi'{hint}"
