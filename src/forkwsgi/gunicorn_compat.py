"""gunicorn's settings, command-line flags and signals, and what forkwsgi does for each.

Owns: the table of every gunicorn setting (gunicorn 23: its config-file name,
its command-line flags and its section), each with either the forkwsgi
setting of the same meaning or why there is none and what to do instead; and
gunicorn's signals beside forkwsgi's. What the command line says about a
gunicorn flag, what a config file or the environment says about a gunicorn
name, the translation of a gunicorn Python config file and
docs/migrating-from-gunicorn.md all come from this table.

Must never: import the rest of forkwsgi (settings.py imports this module), or
decide where a gunicorn name is accepted: config.py translates gunicorn
files; everywhere else a gunicorn name is only a better message.
"""

from __future__ import annotations

from typing import NamedTuple


class GunicornSetting(NamedTuple):
    name: str  # gunicorn's config-file name
    flags: tuple[str, ...]  # gunicorn's command-line flags; () = config file only
    section: str  # gunicorn's section, for the migration page
    # The forkwsgi setting with the same meaning; a "--flag" for what forkwsgi has as a
    # command-line option only; None when forkwsgi has no equivalent.
    ours: str | None
    # With an equivalent: how it differs ('' if it does not). Without: why there is
    # none and what to do instead, one clause that reads after "gunicorn's: ".
    note: str


_SYNC = ("forkwsgi workers are sync, one request at a time each, while each worker's event "
         "loop holds idle and slow connections; scale with workers (-w)")
_RELOAD = "forkwsgi has no code reloader; send HUP (kill -HUP <pid>) to load new code"
_HANDSHAKE = ("the TLS handshake always runs in the worker's event loop, so a client slow to "
              "finish it holds a connection slot, never the worker (docs/tls.md)")
_PASTE = ("no PasteDeploy loader; serve a module that calls "
          "paste.deploy.loadapp('config:/path/app.ini') as APP")
_SYSLOG = ("no syslog setting; add a logging.handlers.SysLogHandler in a log_config file, "
           "or log to stderr for journald")
_STATSD = "no StatsD client; derive metrics from the access log (access_logformat = 'json')"
_PROXY_PROTOCOL = ("a listener, not a switch: bind it as proxy+http://HOST:PORT and every "
                   "connection to it must open with a PROXY preamble (docs/gateways.md)")
_HOOK_OBJECTS = "called as is, with forkwsgi's arbiter and worker objects"

GUNICORN: tuple[GunicornSetting, ...] = tuple(GunicornSetting(*row) for row in (
    # Config File
    ("config", ("-c", "--config"), "Config File", "--config",
     "TOML, or Python; a Python file named gunicorn*.py is read as a gunicorn config"),
    ("wsgi_app", (), "Config File", "app", "also the APP argument and FORKWSGI_APP"),
    # Server Socket
    ("bind", ("-b", "--bind"), "Server Socket", "bind",
     "gunicorn's default with $PORT set, 0.0.0.0:$PORT, is not read: use FORKWSGI_BIND"),
    ("backlog", ("--backlog",), "Server Socket", "backlog", ""),
    # Worker Processes
    ("workers", ("-w", "--workers"), "Worker Processes", "workers",
     "also 'auto'; $WEB_CONCURRENCY is not read: use FORKWSGI_WORKERS"),
    ("worker_class", ("-k", "--worker-class"), "Worker Processes", None, _SYNC),
    ("threads", ("--threads",), "Worker Processes", None, _SYNC),
    ("worker_connections", ("--worker-connections",), "Worker Processes", "max_connections",
     "applies to every worker (gunicorn: async workers only)"),
    ("max_requests", ("--max-requests",), "Worker Processes", "max_requests", ""),
    ("max_requests_jitter", ("--max-requests-jitter",), "Worker Processes",
     "max_requests_jitter", ""),
    ("timeout", ("-t", "--timeout"), "Worker Processes", "timeout",
     "bounds one request (gunicorn: a worker silent this long)"),
    ("graceful_timeout", ("--graceful-timeout",), "Worker Processes", "graceful_timeout", ""),
    ("keepalive", ("--keep-alive",), "Worker Processes", "keep_alive",
     "default 5 s (gunicorn: 2 s, and none for sync workers)"),
    # Security
    ("limit_request_line", ("--limit-request-line",), "Security", "limit_request_line",
     "default 8190 (gunicorn: 4094); gunicorn's 0 (unlimited) is not accepted"),
    ("limit_request_fields", ("--limit-request-fields",), "Security", "limit_request_fields", ""),
    ("limit_request_field_size", ("--limit-request-field_size",), "Security",
     "limit_request_field_size",
     "the flag is --limit-request-field-size; gunicorn's 0 (unlimited) is not accepted"),
    # Debugging
    ("reload", ("--reload",), "Debugging", None, _RELOAD),
    ("reload_engine", ("--reload-engine",), "Debugging", None, _RELOAD),
    ("reload_extra_files", ("--reload-extra-file",), "Debugging", None, _RELOAD),
    ("spew", ("--spew",), "Debugging", None,
     "no line tracer; send USR2 to a worker to log its stacks, or use py-spy"),
    ("check_config", ("--check-config",), "Debugging", "--check-config",
     "exit status 1 if the app fails to load, 2 if the configuration is wrong"),
    ("print_config", ("--print-config",), "Debugging", "--print-config",
     "prints TOML that reads back as a config file"),
    # Server Mechanics
    ("preload_app", ("--preload",), "Server Mechanics", "preload", ""),
    ("sendfile", ("--no-sendfile",), "Server Mechanics", None,
     "wsgi.file_wrapper responses of regular files are always sent with sendfile()"),
    ("reuse_port", ("--reuse-port",), "Server Mechanics", "reuse_port", ""),
    ("chdir", ("--chdir",), "Server Mechanics", "chdir", ""),
    ("daemon", ("-D", "--daemon"), "Server Mechanics", None,
     "forkwsgi does not daemonize; run it under systemd (conf/systemd/), in a container "
     "or under another supervisor"),
    ("raw_env", ("-e", "--env"), "Server Mechanics", "env",
     "in a TOML file also a table: env = { KEY = \"value\" }"),
    ("pidfile", ("-p", "--pid"), "Server Mechanics", "pid", ""),
    ("worker_tmp_dir", ("--worker-tmp-dir",), "Server Mechanics", None,
     "no heartbeat files: workers report liveness in shared memory"),
    ("user", ("-u", "--user"), "Server Mechanics", "user", ""),
    ("group", ("-g", "--group"), "Server Mechanics", "group", ""),
    ("umask", ("-m", "--umask"), "Server Mechanics", "umask",
     "octal; default 022 (gunicorn: 0); no -m short flag"),
    ("initgroups", ("--initgroups",), "Server Mechanics", None,
     "workers that switch user drop every supplementary group; grant access with group (-g)"),
    ("tmp_upload_dir", (), "Server Mechanics", None,
     "request bodies over body_buffer_size go to an unnamed temporary file in $TMPDIR; "
     "set TMPDIR"),
    ("secure_scheme_headers", (), "Server Mechanics", None,
     "the scheme comes from X-Forwarded-Proto (or Forwarded) of a trusted peer; "
     "choose the headers with forwarded_headers"),
    ("forwarded_allow_ips", ("--forwarded-allow-ips",), "Server Mechanics",
     "forwarded_allow_ips",
     "also networks (10.0.0.0/8); $FORWARDED_ALLOW_IPS is not read: use "
     "FORKWSGI_FORWARDED_ALLOW_IPS"),
    ("pythonpath", ("--pythonpath",), "Server Mechanics", "pythonpath", ""),
    ("paste", ("--paste", "--paster"), "Server Mechanics", None, _PASTE),
    ("proxy_protocol", ("--proxy-protocol",), "Server Mechanics", None, _PROXY_PROTOCOL),
    ("proxy_allow_ips", ("--proxy-allow-from",), "Server Mechanics", "proxy_allow_from",
     "applies to proxy+http:// listeners; others take no preamble"),
    ("raw_paste_global_conf", ("--paste-global",), "Server Mechanics", None, _PASTE),
    ("permit_obsolete_folding", ("--permit-obsolete-folding",), "Server Mechanics", None,
     "obsolete line folding is always refused with 400 (docs/http.md)"),
    ("strip_header_spaces", ("--strip-header-spaces",), "Server Mechanics", None,
     "whitespace between a header name and its colon is always refused with 400 "
     "(docs/http.md)"),
    ("permit_unconventional_http_method", ("--permit-unconventional-http-method",),
     "Server Mechanics", None, "every token is a valid method, passed to the app as sent"),
    ("permit_unconventional_http_version", ("--permit-unconventional-http-version",),
     "Server Mechanics", None,
     "versions other than HTTP/1.0 and HTTP/1.1 get 505, malformed ones 400 (docs/http.md)"),
    ("casefold_http_method", ("--casefold-http-method",), "Server Mechanics", None,
     "methods are case-sensitive and passed to the app as sent"),
    ("forwarder_headers", ("--forwarder-headers",), "Server Mechanics", None,
     "SCRIPT_NAME, PATH_INFO and REMOTE_USER never come from headers; set a mount prefix "
     "in the app"),
    ("header_map", ("--header-map",), "Server Mechanics", None,
     "header names with an underscore are always dropped (gunicorn's default, 'drop')"),
    # Logging
    ("accesslog", ("--access-logfile",), "Logging", "access_logfile", ""),
    ("disable_redirect_access_to_syslog", ("--disable-redirect-access-to-syslog",), "Logging",
     None, _SYSLOG),
    ("access_log_format", ("--access-logformat",), "Logging", "access_logformat",
     "the same atoms, or 'json'; access_log_format is a name for it in forkwsgi too"),
    ("errorlog", ("--error-logfile", "--log-file"), "Logging", "error_logfile", ""),
    ("loglevel", ("--log-level",), "Logging", "log_level", ""),
    ("capture_output", ("--capture-output",), "Logging", None,
     "the app's stdout and stderr go where the server's go; redirect those "
     "(a shell redirect, systemd StandardOutput=)"),
    ("logger_class", ("--logger-class",), "Logging", None,
     "no logger classes; configure the 'forkwsgi' loggers with log_config (a dictConfig file)"),
    ("logconfig", ("--log-config",), "Logging", None,
     "gunicorn's is a fileConfig (INI) file; forkwsgi's log_config (--log-config) takes a "
     "dictConfig file, JSON or TOML"),
    ("logconfig_dict", (), "Logging", None,
     "write the dict to a JSON file and name it in log_config"),
    ("logconfig_json", ("--log-config-json",), "Logging", "log_config",
     "the flag is --log-config; TOML works too"),
    ("syslog_addr", ("--log-syslog-to",), "Logging", None, _SYSLOG),
    ("syslog", ("--log-syslog",), "Logging", None, _SYSLOG),
    ("syslog_prefix", ("--log-syslog-prefix",), "Logging", None, _SYSLOG),
    ("syslog_facility", ("--log-syslog-facility",), "Logging", None, _SYSLOG),
    ("enable_stdio_inheritance", ("-R", "--enable-stdio-inheritance"), "Logging", None,
     "stdio is always inherited: forkwsgi does not daemonize"),
    ("statsd_host", ("--statsd-host",), "Logging", None, _STATSD),
    ("dogstatsd_tags", ("--dogstatsd-tags",), "Logging", None, _STATSD),
    ("statsd_prefix", ("--statsd-prefix",), "Logging", None, _STATSD),
    # Process Naming
    ("proc_name", ("-n", "--name"), "Process Naming", "name", ""),
    ("default_proc_name", (), "Process Naming", None,
     "internal to gunicorn; process titles show name, else the APP spec"),
    # Server Hooks: the ones forkwsgi calls with the same arguments are the same setting.
    ("on_starting", (), "Server Hooks", "on_starting", _HOOK_OBJECTS),
    ("on_reload", (), "Server Hooks", "on_reload", _HOOK_OBJECTS),
    ("when_ready", (), "Server Hooks", "when_ready", _HOOK_OBJECTS),
    ("pre_fork", (), "Server Hooks", "pre_fork", _HOOK_OBJECTS),
    ("post_fork", (), "Server Hooks", "post_fork", _HOOK_OBJECTS),
    ("post_worker_init", (), "Server Hooks", "post_worker_init", _HOOK_OBJECTS),
    ("worker_int", (), "Server Hooks", None,
     "no hook on a worker's quick stop; worker_exit(worker) runs as any worker exits"),
    ("worker_abort", (), "Server Hooks", None,
     "no hook on a timed-out worker; forkwsgi logs its stacks and the request it was on"),
    ("pre_exec", (), "Server Hooks", None, "no hook before the USR2 re-exec"),
    ("pre_request", (), "Server Hooks", None,
     "gunicorn's pre_request(worker, req) gets a gunicorn Request; forkwsgi's "
     "pre_request(worker, environ) gets the WSGI environ"),
    ("post_request", (), "Server Hooks", None,
     "gunicorn's post_request(worker, req, environ, resp) differs from forkwsgi's "
     "post_request(worker, environ, status)"),
    ("child_exit", (), "Server Hooks", "child_exit", _HOOK_OBJECTS),
    ("worker_exit", (), "Server Hooks", None,
     "gunicorn's worker_exit(server, worker) differs from forkwsgi's worker_exit(worker)"),
    ("nworkers_changed", (), "Server Hooks", None, "no hook on TTIN and TTOU"),
    ("on_exit", (), "Server Hooks", "on_exit", _HOOK_OBJECTS),
    ("ssl_context", (), "Server Hooks", None,
     "no hook: the context is built from certfile, keyfile, ca_certs, cert_reqs and ciphers, "
     "in the arbiter at start and at each HUP (docs/tls.md)"),
    # SSL
    ("keyfile", ("--keyfile",), "SSL", "keyfile",
     "read by the arbiter: it need not be readable by the workers' user"),
    ("certfile", ("--certfile",), "SSL", "certfile",
     "TLS on every HTTP bind without a scheme, as gunicorn; https:// binds too, http:// ones "
     "stay plain; a HUP reads a replaced certificate"),
    ("ssl_version", ("--ssl-version",), "SSL", None,
     "TLS 1.2 is the oldest version served, and the newest both sides speak is used"),
    ("cert_reqs", ("--cert-reqs",), "SSL", "cert_reqs",
     "none, optional or required; gunicorn's 0, 1 and 2 also"),
    ("ca_certs", ("--ca-certs",), "SSL", "ca_certs", ""),
    ("suppress_ragged_eofs", ("--suppress-ragged-eofs",), "SSL", None,
     "a client that closes without close_notify has closed its connection, as with "
     "gunicorn's default"),
    ("do_handshake_on_connect", ("--do-handshake-on-connect",), "SSL", None, _HANDSHAKE),
    ("ciphers", ("--ciphers",), "SSL", "ciphers", "TLS 1.2's; TLS 1.3 suites are OpenSSL's"),
    # Not a setting in gunicorn either, but on its command line.
    ("version", ("-v", "--version"), "Command line", "--version", ""),
))

BY_GUNICORN_NAME: dict[str, GunicornSetting] = {row.name: row for row in GUNICORN}
BY_GUNICORN_FLAG: dict[str, GunicornSetting] = {flag: row for row in GUNICORN
                                                for flag in row.flags}


def by_name(name: str) -> GunicornSetting | None:
    """The row of gunicorn's config-file name ``name`` (dashes read as underscores)."""
    return BY_GUNICORN_NAME.get(name.replace("-", "_"))


def by_flag(flag: str) -> GunicornSetting | None:
    """The row of gunicorn's command-line flag ``flag`` (``-k``, ``--threads``)."""
    return BY_GUNICORN_FLAG.get(flag.partition("=")[0])


def our_setting(row: GunicornSetting) -> str | None:
    """The forkwsgi setting a gunicorn row maps to: None for a command-line-only option."""
    return row.ours if row.ours and not row.ours.startswith("-") else None


def why_not(row: GunicornSetting) -> str:
    """Why a gunicorn setting is not a forkwsgi setting, and what to do instead."""
    if row.ours is None:
        return row.note
    if row.ours.startswith("-"):
        return f"forkwsgi's is the command-line option {row.ours}"
    return f"forkwsgi's is {row.ours!r}"


class GunicornSignal(NamedTuple):
    signal: str
    gunicorn: str  # what gunicorn's master does
    forkwsgi: str  # what forkwsgi's arbiter does, in short; docs/signals.md has the contract


SIGNALS: tuple[GunicornSignal, ...] = tuple(GunicornSignal(*row) for row in (
    ("TERM", "Graceful shutdown: workers finish their requests, up to graceful_timeout.",
     "The same: graceful stop within graceful_timeout; a second TERM makes it quick."),
    ("INT, QUIT", "Quick shutdown.",
     "The same: quick stop; workers still alive after 2 s are killed."),
    ("HUP", "Reload the configuration, start new workers, stop the old ones gracefully; "
            "reloads the app unless preloaded.",
     "The same, and the old workers retire only once every new one has loaded the app; "
     "if it does not load, the old ones keep serving."),
    ("TTIN", "One worker more.", "The same."),
    ("TTOU", "One worker fewer.", "The same, never below one; the oldest retires gracefully."),
    ("USR1", "Reopen the log files.", "The same, in the arbiter and every worker."),
    ("USR2", "Upgrade: start a new master on the same sockets; TERM the old one after.",
     "The same; the pidfile moves to PIDFILE.oldbin. With --upgrade in-place, the arbiter "
     "execs the new code in the same PID instead. Sent to a worker, USR2 logs its stacks."),
    ("WINCH", "Stop the workers gracefully, when daemonized.",
     "Stop the workers gracefully, daemonized or not; HUP brings them back."),
))
