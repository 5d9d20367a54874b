"""The one table of settings.

Owns: every setting forkwsgi has, as a row of (name, CLI flags, converter,
default, section, help), the APP spec included (row ``app``, the positional
argument on the command line). The CLI options, the ``FORKWSGI_*`` environment
variables, the config-file keys and docs/settings.md are all generated from
this table; nothing else in the package may invent a setting.

Converters check a value the moment it is given, so a mistake is one line at
start and never a worker failing later: ``workers = "auto"`` reads this
process's CPU affinity and cgroup CPU quota (/proc/self/cgroup and
/sys/fs/cgroup), and ``user``/``group`` look their name up in the system's
user database.

Must never: read config files, the environment or argv (that is config.py
and cli.py), or be consulted on the per-request path (the worker binds what
it needs to locals at start).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

from forkwsgi import gunicorn_compat


class SettingError(ValueError):
    """A setting got a value it cannot take. ``str()`` is the one-line message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"invalid value for setting '{name}': {message}")
        self.setting = name


# --- converters: str (or already-typed value from TOML) -> value; raise ValueError --------


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def to_nonneg_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def to_positive_int(value: Any) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError(f"must be >= 1, got {number}")
    return number


def to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if number < 0 or number != number:
        raise ValueError(f"must be a number of seconds >= 0, got {value!r}")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def to_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def to_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = to_str(value)
    return text or None


def to_list(value: Any) -> list[str]:
    """A list from TOML, repeated CLI flags, or one comma-separated string."""
    if isinstance(value, (list, tuple)):
        items: list[str] = []
        for item in value:
            items.extend(to_list(item))
        return items
    return [part.strip() for part in to_str(value).split(",") if part.strip()]


def to_bind_list(value: Any) -> list[str]:
    # Binds are repeated rather than comma-split: "[::1]:80" and paths may hold commas.
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    binds = [to_str(item).strip() for item in items]
    if not binds or any(not bind for bind in binds):
        raise ValueError("an address is empty")
    return binds


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def to_size(value: Any) -> int:
    """A number of bytes: ``536870912``, ``512MiB``, ``500MB``, ``1G`` (k, M, G are powers of
    1000; KiB, MiB, GiB powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        text = str(value).strip()
        digits = text.rstrip("bBkKmMgGiI ")
        unit = text[len(digits):].strip().lower()
        try:
            number = float(digits) if "." in digits else int(digits)
        except ValueError:
            raise ValueError(f"expected a size such as 512MiB, got {value!r}") from None
    if unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MiB, got {value!r}")
    size = int(number * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return size


def to_control_bind(value: Any) -> str | None:
    """unix:PATH, HOST:PORT, or none (off); checked here so a typo fails at start."""
    text = to_optional_str(value)
    if text is None or text.strip().lower() in ("none", "off"):
        return None if text is None else "none"
    from forkwsgi.listeners import ListenerError, parse_bind

    try:
        kind, _ = parse_bind(text)
    except ListenerError as exc:
        raise ValueError(str(exc)) from None
    if kind == "fd":
        raise ValueError(f"expected unix:PATH, HOST:PORT or none, got {text!r}")
    return text


def to_optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return to_seconds(value)


def to_workers(value: Any) -> int:
    """A count of workers, or ``auto``: the CPUs this process may run on, cgroup quota aware."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return available_cpus()
    return to_positive_int(value)


def available_cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup"
                      ) -> int | None:
    """CPUs allowed by this process's cgroup, rounded up; None when unlimited.

    cgroup v2: ``cpu.max`` of our own cgroup (named in /proc/self/cgroup as ``0::/path``)
    and of each parent up to the root, the tightest wins; then cgroup v1's cfs quota.
    """
    import math

    quotas = []
    own = ""
    with contextlib.suppress(OSError):
        with open(proc) as fh:
            for line in fh:
                if line.startswith("0::"):
                    own = line[3:].strip().strip("/")
    parts = own.split("/") if own else []
    for depth in range(len(parts), -1, -1):
        path = os.path.join(root, *parts[:depth], "cpu.max")
        with contextlib.suppress(OSError, ValueError):
            with open(path) as fh:
                quota, period = fh.read().split()[:2]
            if quota != "max":
                quotas.append(math.ceil(int(quota) / int(period)))
    if quotas:
        return max(1, min(quotas))
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as fh:
            quota_us = int(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as fh:
            period_us = int(fh.read())
        if quota_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    return None


def _existing(value: Any, lookup: Callable[[str], Any], what: str) -> str | None:
    """A user or group name (or a number) that exists here: checked when the settings are
    loaded, so a typo is a one-line error and not a worker dying at every boot."""
    name = to_optional_str(value)
    if name is not None and not name.isdigit():
        try:
            lookup(name)
        except KeyError:
            raise ValueError(f"no such {what} {name!r}") from None
    return name


def to_user(value: Any) -> str | None:
    import pwd

    return _existing(value, pwd.getpwnam, "user")


def to_group(value: Any) -> str | None:
    import grp

    return _existing(value, grp.getgrnam, "group")


def _octal_mode(value: Any, example: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = to_str(value).strip()
        try:
            number = int(text, 8) if not text.startswith("0x") else int(text, 16)
        except ValueError:
            raise ValueError(f"expected an octal mode such as {example}, got {value!r}") from None
    if not 0 <= number <= 0o777:
        raise ValueError(f"must be between 000 and 777, got {oct(number)}")
    return number


def to_umask(value: Any) -> int:
    return _octal_mode(value, "022")


def to_mode(value: Any) -> int:
    """File permissions in octal (660), as chmod takes them."""
    return _octal_mode(value, "660")


_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_env(value: Any) -> dict[str, str]:
    """``KEY=VALUE`` pairs (repeatable flag, TOML list or table)."""
    if isinstance(value, dict):
        value = [f"{to_str(k)}={to_str(v)}" for k, v in value.items()]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    env: dict[str, str] = {}
    for item in items:
        key, sep, val = to_str(item).partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        env[key] = val
    return env


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = to_str(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return text

    convert.choices = options  # type: ignore[attr-defined]
    return convert


CERT_REQS = ("none", "optional", "required")  # gunicorn's 0, 1, 2 (ssl.CERT_NONE...)


def to_cert_reqs(value: Any) -> str:
    """Whether TLS clients must show a certificate: a name, or gunicorn's number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CERT_REQS):
        return CERT_REQS[value]  # ssl.CERT_REQUIRED from a gunicorn config is an int too
    text = to_str(value).strip().lower()
    if text.isdigit() and int(text) < len(CERT_REQS):
        return CERT_REQS[int(text)]
    if text not in CERT_REQS:
        raise ValueError(f"expected one of {', '.join(CERT_REQS)}, got {value!r}")
    return text


to_cert_reqs.choices = CERT_REQS  # type: ignore[attr-defined]


def to_app_spec(value: Any) -> str | None:
    """An APP spec, checked for syntax only; importing it is loader.load_app's job."""
    from forkwsgi.loader import validate_spec  # lazy: the table must stay import-light

    spec = to_optional_str(value)
    if spec is not None:
        validate_spec(spec)
    return spec


def to_mounts(value: Any) -> dict[str, str]:
    """PREFIX=APP pairs (repeatable flag, TOML table or list): prefix -> APP spec, each
    prefix and spec checked for syntax only; importing is loader.load_apps' job."""
    from forkwsgi.loader import validate_spec  # lazy: the table must stay import-light
    from forkwsgi.mount import check_prefix

    if isinstance(value, dict):
        pairs = [(to_str(prefix), to_str(spec)) for prefix, spec in value.items()]
    else:
        pairs = []
        for item in value if isinstance(value, (list, tuple)) else [value]:
            # The first '=' splits: a factory's keyword arguments may hold more.
            prefix, sep, spec = to_str(item).partition("=")
            if not sep:
                raise ValueError(f"expected PREFIX=APP (e.g. /api=pkg.api:app), got {item!r}")
            pairs.append((prefix.strip(), spec.strip()))
    mounts: dict[str, str] = {}
    for prefix, spec in pairs:
        check_prefix(prefix)
        if prefix in mounts:
            raise ValueError(f"prefix {prefix!r} is given twice")
        try:
            validate_spec(spec)
        except ValueError as exc:
            raise ValueError(f"the APP spec at {prefix!r}: {exc}") from None
        mounts[prefix] = spec.strip()
    return mounts


def to_access_logformat(value: Any) -> str:
    """'json', or gunicorn-style atoms; unknown atoms are caught here, not per request."""
    from forkwsgi.logformat import check_format  # lazy: the table must stay import-light

    text = to_str(value)
    check_format(text)
    return text


FORWARDED_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded")


def to_forwarded_headers(value: Any) -> list[str]:
    names = [name.lower() for name in to_list(value)]
    unknown = [name for name in names if name not in FORWARDED_HEADERS]
    if unknown:
        raise ValueError(f"unknown forwarded header {unknown[0]!r}; "
                         f"expected some of {', '.join(FORWARDED_HEADERS)}")
    return names


def to_peers(value: Any) -> list[str]:
    """Addresses and networks (``10.0.0.0/8``), or ``*`` for every peer."""
    peers = to_list(value)
    for peer in peers:
        if peer != "*":
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                raise ValueError(f"{peer!r} is not an address or a network") from None
    return peers


def to_hook(value: Any) -> Callable[..., Any] | None:
    if value is None or callable(value):
        return value
    raise ValueError(f"expected a callable (hooks are set in a Python config file), got {value!r}")


# --- the table ------------------------------------------------------------------------------


class Setting(NamedTuple):
    name: str
    flags: tuple[str, ...]  # CLI flags; () = config file / environment only
    convert: Callable[[Any], Any]
    default: Any
    section: str
    help: str
    multiple: bool = False  # the CLI flag may repeat
    is_flag: bool = False  # boolean switch: --x / --no-x


_KIB = 1024

# Limits cite their precedent in the help text; docs/settings.md repeats it.
SETTINGS: tuple[Setting, ...] = (
    # application: the positional APP argument, also the `app` key and FORKWSGI_APP
    Setting("app", (), to_app_spec, None, "application",
            "The WSGI application: 'pkg.mod:app', 'pkg.mod' (finds 'application' then 'app'), "
            "'pkg.mod:obj.attr' or a factory with literal arguments 'pkg.mod:create_app(\"prod\")'. "
            "On the command line it is the APP argument."),
    Setting("mount", ("--mount",), to_mounts, {}, "application",
            "Serve an application under a URL prefix: PREFIX=APP, e.g. '/api=pkg.api:app'. "
            "Repeat for more; in a file, a table ([mount] with \"/api\" = \"pkg.api:app\"). "
            "The longest prefix that matches the path on a segment boundary wins and gets "
            "the prefix in SCRIPT_NAME; APP, if given too, is served at '/'; a path no prefix "
            "takes gets a 404.",
            multiple=True),
    # server socket
    Setting("bind", ("-b", "--bind"), to_bind_list, ["127.0.0.1:8000"], "socket",
            "Address to listen on: HOST:PORT, [IPV6]:PORT (either may start with tcp://), "
            ":PORT (every IPv4 interface), PORT (on 127.0.0.1), unix:PATH or fd://N; "
            "behind uwsgi://, scgi://, fastcgi:// or ajp:// (e.g. uwsgi://unix:/run/app.sock) "
            "the listener speaks that gateway protocol to a front-end instead of HTTP, and "
            "behind proxy+http:// it takes a PROXY protocol preamble before HTTP "
            "(docs/gateways.md). Repeat for more.",
            multiple=True),
    Setting("backlog", ("--backlog",), to_positive_int, 2048, "socket",
            "Listen queue length (gunicorn: 2048)."),
    Setting("reuse_port", ("--reuse-port",), to_bool, False, "socket",
            "Set SO_REUSEPORT on TCP listeners.", is_flag=True),
    Setting("socket_mode", ("--socket-mode",), to_mode, 0o666, "socket",
            "Permissions of the unix socket files the server creates, in octal (in TOML "
            "write \"660\" or 0o660: a bare 660 is a decimal number), whatever "
            "the umask; a client needs write permission to connect. The default lets every "
            "local user connect (as gunicorn's do); 660 with socket_group admits only that "
            "group. Sockets inherited from systemd or a USR2 parent keep theirs."),
    Setting("socket_group", ("--socket-group",), to_group, None, "socket",
            "Group (name or gid) of the unix socket files the server creates, e.g. the group "
            "nginx runs as; with socket_mode 660 only its members (and the owner) connect."),
    # TLS on the HTTP listeners (docs/tls.md); checked together by make_config
    Setting("certfile", ("--certfile",), to_optional_str, None, "socket",
            "PEM certificate (the server's first, then its chain) to serve TLS with: every "
            "HTTP listener bound without a scheme then speaks HTTPS, as do https:// ones "
            "(http:// keeps one plain; gateway and proxy+http:// listeners never). TLS 1.2 is "
            "the oldest version served; ALPN offers http/1.1. Read at start and at each HUP; "
            "a relative path is relative to chdir."),
    Setting("keyfile", ("--keyfile",), to_optional_str, None, "socket",
            "PEM private key of certfile, unencrypted; read by the arbiter, so the workers' "
            "user need not be able to. Default: the key in certfile itself."),
    Setting("ca_certs", ("--ca-certs",), to_optional_str, None, "socket",
            "PEM file of the certificate authorities whose client certificates are accepted "
            "(see cert_reqs)."),
    Setting("cert_reqs", ("--cert-reqs",), to_cert_reqs, "none", "socket",
            "TLS client certificates: none (not asked for), optional (asked for, and "
            "verified against ca_certs when sent) or required (a client without a valid one "
            "fails the handshake); gunicorn's 0, 1 and 2 also."),
    Setting("ciphers", ("--ciphers",), to_optional_str, None, "socket",
            "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults). "
            "Default: Python's."),
    # processes
    Setting("workers", ("-w", "--workers"), to_workers, 1, "process",
            "Number of worker processes, or 'auto' for the CPUs available (cgroup quota aware)."),
    Setting("timeout", ("-t", "--timeout"), to_seconds, 30.0, "process",
            "A worker busy on one request longer than this is killed and replaced; 0 disables."),
    Setting("graceful_timeout", ("--graceful-timeout",), to_seconds, 30.0, "process",
            "On a graceful stop or reload, seconds workers get to finish in-flight requests."),
    Setting("shutdown_delay", ("--shutdown-delay",), to_seconds, 0.0, "process",
            "On TERM, seconds to go on serving normally before the graceful stop begins, so "
            "a load balancer or Kubernetes can stop sending new connections first (readiness "
            "already says stopping). A second TERM ends the delay; INT and QUIT skip it."),
    Setting("max_requests", ("--max-requests",), to_nonneg_int, 0, "process",
            "Recycle a worker gracefully after this many requests; 0 disables."),
    Setting("max_requests_jitter", ("--max-requests-jitter",), to_nonneg_int, 0, "process",
            "Add a random 0..N to max_requests per worker so they do not all recycle at once."),
    Setting("max_worker_memory", ("--max-worker-memory",), to_size, 0, "process",
            "Recycle a worker whose USS (memory only it holds: pages shared with the arbiter "
            "after --preload do not count) stays above this size for 3 samples in a row "
            "(e.g. 512MiB); it finishes its request once its replacement is up. 0 disables."),
    Setting("memory_check_interval", ("--memory-check-interval",), to_seconds, 1.0, "process",
            "How often the arbiter samples each worker's USS for --max-worker-memory."),
    Setting("max_worker_lifetime", ("--max-worker-lifetime",), to_seconds, 0.0, "process",
            "Recycle a worker after this many seconds (plus a random jitter); its "
            "replacement starts first. 0 disables."),
    Setting("max_worker_lifetime_jitter", ("--max-worker-lifetime-jitter",),
            to_optional_seconds, None, "process",
            "Add a random 0..N seconds to max_worker_lifetime per worker, so they do not all "
            "recycle at once; default: a tenth of max_worker_lifetime."),
    Setting("control_bind", ("--control-bind",), to_control_bind, None, "process",
            "Where the arbiter serves /livez, /readyz, /metrics and /status: unix:PATH or "
            "HOST:PORT (keep it on loopback), or none. Default: a unix socket (mode 0600) "
            "beside the pidfile (app.pid -> app.control.sock), else "
            "$XDG_RUNTIME_DIR/forkwsgi/PID.control.sock."),
    Setting("handoff_after", ("--handoff-after",), to_seconds, 0.001, "process",
            "When a worker has been inside the app this long, its other connections (idle "
            "keep-alive ones and partial heads) move to a free sibling, so no request waits "
            "behind a slow one while another worker is free; 0 disables."),
    Setting("preload", ("--preload",), to_bool, False, "process",
            "Load the application in the arbiter before forking (no app reload on HUP).",
            is_flag=True),
    Setting("chdir", ("--chdir",), to_optional_str, None, "process",
            "Change to this directory before loading the application."),
    Setting("pythonpath", ("--pythonpath",), to_list, [], "process",
            "Comma-separated directories prepended to sys.path.", multiple=True),
    Setting("env", ("-e", "--env"), to_env, {}, "process",
            "Set an environment variable KEY=VALUE in the server. Repeatable.", multiple=True),
    Setting("pid", ("-p", "--pid"), to_optional_str, None, "process",
            "Write the arbiter PID to this file (atomically); removed on exit. A start is "
            "refused while the file names a running forkwsgi arbiter; a stale file is "
            "replaced."),
    Setting("upgrade", ("--upgrade",), choice("fork", "in-place"), "fork", "process",
            "What USR2 does. 'fork': start a new arbiter (a child of this one) on the same "
            "sockets, beside this one, which the operator then stops (the old one can take "
            "back over). 'in-place': this arbiter execs the new code itself and keeps its "
            "PID, for a supervisor that tracks one process (systemd, a container's PID 1); "
            "its workers serve until the new ones are up (docs/signals.md)."),
    Setting("user", ("-u", "--user"), to_user, None, "process",
            "Workers switch to this user (name or uid) after the listeners are bound."),
    Setting("group", ("-g", "--group"), to_group, None, "process",
            "Workers switch to this group (name or gid)."),
    Setting("umask", ("--umask",), to_umask, 0o022, "process",
            "File mode creation mask of the server processes, in octal (in TOML write "
            "\"022\" or 0o022)."),
    Setting("name", ("-n", "--name"), to_optional_str, None, "process",
            "Label shown in process titles instead of the APP spec."),
    # HTTP
    Setting("keep_alive", ("--keep-alive",), to_seconds, 5.0, "http",
            "Seconds an idle keep-alive connection is kept open; 0 disables keep-alive."),
    Setting("header_timeout", ("--header-timeout",), to_seconds, 10.0, "http",
            "Seconds a client has to send a complete request head; then 408 "
            "(Apache mod_reqtimeout: 20-40s; nginx client_header_timeout: 60s)."),
    Setting("body_timeout", ("--body-timeout",), to_seconds, 30.0, "http",
            "Seconds of inactivity allowed while the app reads the request body "
            "(nginx client_body_timeout: 60s)."),
    Setting("max_connections", ("--max-connections",), to_positive_int, 1000, "http",
            "Connections one worker holds open at most (idle keep-alive, partial heads and "
            "bodies, lingering closes); lowered at start to fit the open-file limit. A full "
            "worker sheds its oldest idle connections, then its slowest partial heads."),
    Setting("request_buffering", ("--request-buffering",), to_bool, True, "http",
            "Receive the whole request body in the worker's event loop before calling the app "
            "(nginx proxy_request_buffering, uWSGI post-buffering), so a slow upload costs a "
            "connection slot, not the worker. Off: the app reads the body from the socket as "
            "it arrives (for apps that process a long upload as a stream).", is_flag=True),
    Setting("body_buffer_size", ("--body-buffer-size",), to_nonneg_int, 1024 * _KIB, "http",
            "Bytes of a buffered request body kept in memory; the rest goes to an unnamed "
            "temporary file in TMPDIR (nginx client_body_buffer_size: 16k)."),
    Setting("body_min_rate", ("--body-min-rate",), to_nonneg_int, 240, "http",
            "Bytes per second a client must average while sending a body, once "
            "body_rate_grace has passed; slower gets 408. 0 disables "
            "(ASP.NET Core Kestrel MinRequestBodyDataRate: 240 B/s after 5 s)."),
    Setting("body_rate_grace", ("--body-rate-grace",), to_seconds, 5.0, "http",
            "Seconds from the start of a body before body_min_rate applies."),
    Setting("limit_request_line", ("--limit-request-line",), to_positive_int, 8190, "http",
            "Longest request line in bytes; longer gets 414 (gunicorn: 4094; nginx: 8k)."),
    Setting("limit_request_fields", ("--limit-request-fields",), to_positive_int, 100, "http",
            "Most header fields in a request; more gets 431 (gunicorn: 100; Apache: 100)."),
    Setting("limit_request_field_size", ("--limit-request-field-size",), to_positive_int, 8190,
            "http", "Longest header field line in bytes; longer gets 431 (gunicorn, Apache: 8190)."),
    Setting("limit_request_head", ("--limit-request-head",), to_positive_int, 64 * _KIB, "http",
            "Largest request head (line + all fields) in bytes; larger gets 431 "
            "(nginx: 4 x 8k buffers; node: 16k)."),
    Setting("limit_request_body", ("--limit-request-body",), to_nonneg_int, 1024 * 1024 * _KIB,
            "http", "Largest request body in bytes; larger gets 413; 0 means no limit "
            "(waitress: 1 GiB)."),
    Setting("forwarded_allow_ips", ("--forwarded-allow-ips",), to_list, ["127.0.0.1", "::1"],
            "http", "Peers trusted to set X-Forwarded-For/-Proto/-Host and Forwarded; '*' trusts all.",
            multiple=True),
    Setting("forwarded_headers", ("--forwarded-headers",), to_forwarded_headers,
            ["x-forwarded-for", "x-forwarded-proto"], "http",
            "Headers a trusted peer may set: x-forwarded-for, x-forwarded-proto, "
            "x-forwarded-host, forwarded. Trust only those your proxy overwrites: it passes "
            "the others on from the client.", multiple=True),
    Setting("proxy_allow_from", ("--proxy-allow-from",), to_peers, ["127.0.0.1", "::1"], "http",
            "Peers that may connect to a proxy+http:// listener, whose PROXY protocol preamble "
            "sets REMOTE_ADDR (docs/gateways.md); others are refused at accept. Addresses or "
            "networks; unix socket peers count as 127.0.0.1; '*' allows all.", multiple=True),
    Setting("server_header", ("--server-header",), to_bool, True, "http",
            "Send a Server header.", is_flag=True),
    Setting("debug", ("--debug",), to_bool, False, "http",
            "Show tracebacks in 500 responses. Never in production.", is_flag=True),
    # logging
    Setting("access_logfile", ("--access-logfile",), to_optional_str, None, "logging",
            "Access log file; '-' is stdout. Off by default."),
    Setting("access_logformat", ("--access-logformat", "--access-log-format"), to_access_logformat,
            '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', "logging",
            "gunicorn-style atoms, or 'json' for one escaped JSON object per line."),
    Setting("error_logfile", ("--error-logfile", "--log-file"), to_str, "-", "logging",
            "Error log file; '-' is stderr."),
    Setting("log_level", ("--log-level",), choice("debug", "info", "warning", "error", "critical"),
            "info", "logging", "Error log level."),
    Setting("log_config", ("--log-config",), to_optional_str, None, "logging",
            "logging.config.dictConfig file, JSON or TOML; replaces the error log setup."),
    # hooks: Python config file only
    *(
        Setting(hook, (), to_hook, None, "hooks", doc)
        for hook, doc in (
            ("on_starting", "on_starting(arbiter): before the listeners are bound."),
            ("on_reload", "on_reload(arbiter): on HUP, before the new workers are spawned."),
            ("when_ready", "when_ready(arbiter): the first workers are spawned."),
            ("pre_fork", "pre_fork(arbiter, worker): in the arbiter, before a fork."),
            ("post_fork", "post_fork(arbiter, worker): in the child, right after the fork."),
            ("post_worker_init", "post_worker_init(worker): the worker loaded the app."),
            ("worker_exit", "worker_exit(worker): in the worker, as it exits."),
            ("pre_request", "pre_request(worker, environ): before the app is called."),
            ("post_request", "post_request(worker, environ, status): after the response."),
            ("child_exit", "child_exit(arbiter, worker): in the arbiter, a worker was reaped."),
            ("on_exit", "on_exit(arbiter): the arbiter is about to exit."),
        )
    ),
)

BY_NAME: dict[str, Setting] = {row.name: row for row in SETTINGS}
HOOKS: tuple[str, ...] = tuple(row.name for row in SETTINGS if row.section == "hooks")
ENV_PREFIX = "FORKWSGI_"


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


# Every long flag of a setting is also a name for it in a config file and the environment
# (--access-log-format: access_log_format, FORKWSGI_ACCESS_LOG_FORMAT), so what --help shows
# works everywhere. Other servers' names are not: two vocabularies in one file would have
# --print-config, the docs and the precedence rules speak of one setting by two names.
ALIASES: dict[str, str] = {
    flag[2:].replace("-", "_"): row.name
    for row in SETTINGS for flag in row.flags
    if flag.startswith("--") and flag[2:].replace("-", "_") != row.name
}


def canonical(key: str) -> str | None:
    """The setting a config-file key or environment name stands for, or None."""
    name = key.replace("-", "_")
    return name if name in BY_NAME else ALIASES.get(name)


# gunicorn's names for our settings, so a migrated config file gets a useful hint; config.py
# translates a gunicorn*.py config file with the same table.
GUNICORN_NAMES: dict[str, str] = {
    row.name: ours for row in gunicorn_compat.GUNICORN
    if (ours := gunicorn_compat.our_setting(row)) is not None and ours != row.name
}


def closest(name: str) -> str | None:
    """The setting ``name`` probably meant (a near miss or a gunicorn name), or None.

    None for a gunicorn setting forkwsgi does not have: the nearest of ours would
    point somewhere else (``reload`` is not ``preload``).
    """
    key = name.lower().replace("-", "_")
    if key in GUNICORN_NAMES:
        return GUNICORN_NAMES[key]
    if key not in BY_NAME and gunicorn_compat.by_name(key) is not None:
        return None
    close = difflib.get_close_matches(key, BY_NAME, n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(name: str) -> str:
    """What follows "unknown setting 'x'": `` (did you mean 'workers'?)`` for a near miss
    or a gunicorn name of one of ours, `` (gunicorn's): <what to do instead>`` for a
    gunicorn setting forkwsgi does not have, else ''."""
    key = name.lower().replace("-", "_")
    row = gunicorn_compat.by_name(key)
    if row is not None and key not in BY_NAME and gunicorn_compat.our_setting(row) is None:
        return f" (gunicorn's): {gunicorn_compat.why_not(row)}"
    match = closest(name)
    return f" (did you mean '{match}'?)" if match else ""


def default_text(row: Setting) -> str:
    """The default as the help and docs show it ('' when there is none)."""
    value = row.default
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if row.convert in (to_umask, to_mode):
        return f"{value:03o}"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def convert(name: str, value: Any) -> Any:
    """Convert one raw value for setting ``name``; SettingError names the setting."""
    row = BY_NAME.get(name)
    if row is None:
        raise SettingError(name, "unknown setting") from None
    try:
        return row.convert(value)
    except ValueError as exc:
        raise SettingError(name, str(exc)) from None


class Config(SimpleNamespace):
    """Resolved settings: one attribute per row (``app`` is the APP spec), plus
    ``config_file`` (the absolute path file settings came from, or None),
    ``tls_context`` (the ssl.SSLContext the TLS rows describe, or None: see
    forkwsgi.tls) and, from ``config.resolve``, ``warnings`` (one-line messages
    about ignored input)."""

    app: str | None
    config_file: str | None
    tls_context: Any


def defaults() -> dict[str, Any]:
    import copy

    return {row.name: copy.deepcopy(row.default) for row in SETTINGS}


def make_config(values: dict[str, Any] | None = None, app: str | None = None,
                config_file: str | None = None) -> Config:
    """A Config from defaults overlaid with already-converted ``values``, and its
    ``tls_context``; SettingError when the TLS settings do not go together (a value's own
    error is its converter's, before this)."""
    merged = defaults()
    merged.update(values or {})
    if app is not None:
        merged["app"] = app
    cfg = Config(config_file=config_file, **merged)
    cfg.tls_context = tls_context(cfg)
    return cfg


def tls_context(cfg: Config) -> Any:
    """The ssl.SSLContext the TLS rows describe (None without ``certfile``), built now,
    since building it is the only complete check of them: a file that is missing, holds
    no certificate or key, or a key that does not match. SettingError names the setting.
    Relative paths are relative to ``chdir``, which the arbiter moves to: the same file
    at start and at every HUP."""
    if cfg.certfile is None:
        for name in ("keyfile", "ca_certs", "ciphers"):
            if getattr(cfg, name) is not None:
                raise SettingError(name, "TLS needs certfile too")
        if cfg.cert_reqs != "none":
            raise SettingError("cert_reqs", "TLS needs certfile too")
        for bind in cfg.bind:
            if bind.startswith("https://"):
                raise SettingError("bind", f"{bind!r} serves TLS: it needs certfile")
        return None
    if cfg.cert_reqs != "none" and cfg.ca_certs is None:
        raise SettingError("cert_reqs", f"{cfg.cert_reqs!r} needs ca_certs: the authorities "
                                        f"client certificates are verified against")
    from forkwsgi import tls  # lazy: the ssl module only where TLS is configured

    def where(path: str | None) -> str | None:
        return None if path is None else os.path.join(cfg.chdir or "", os.path.expanduser(path))

    try:
        return tls.build_context(where(cfg.certfile), where(cfg.keyfile), where(cfg.ca_certs),
                                 cfg.cert_reqs, cfg.ciphers)
    except tls.TLSSettingError as exc:
        raise SettingError(exc.setting, str(exc)) from None
