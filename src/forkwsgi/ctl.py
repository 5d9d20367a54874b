"""``forkwsgi status | reload | stop | scale N``: the operator's commands.

Owns: finding a running arbiter (``--control ADDR``, ``--pid FILE``, or the
one arbiter running on this machine), asking its control endpoint what it
is doing, and the friendly wrappers over the signals: each sends one signal,
watches ``/status`` until the outcome is visible, and says what happened
("reloaded: 4 new workers ready in 0.8 s"). A long stop prints its progress.

Exit statuses: 0 done; 1 no arbiter found, it did not answer, or the outcome
did not come in time; 2 a usage mistake.

Must never: change a server's state other than by the signals documented in
docs/signals.md, or wait without a bound (``--wait``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from forkwsgi import control

PROG = "forkwsgi"
COMMANDS = ("status", "reload", "stop", "scale")
POLL = 0.1  # seconds between looks at /status while waiting for an outcome
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CtlError(Exception):
    """A one-line reason the command could not do its job (exit status 1)."""


# --- finding the arbiter ----------------------------------------------------------------------


def find_arbiters() -> list[int]:
    """Arbiters running on this machine, by their process title (the old one of a USR2
    upgrade excluded)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        title = " ".join(cmdline)
        if title.startswith("forkwsgi: arbiter") and "(old)" not in title:
            found.append(process.pid)
    return sorted(found)


def control_address(where: str | None, pidfile: str | None) -> str:
    """The control endpoint to talk to, from the options (or the one arbiter running)."""
    if where:
        return where
    if pidfile:
        if os.path.exists(control.default_path(pidfile, 0)):
            return "unix:" + control.default_path(pidfile, 0)
        try:
            with open(pidfile) as file:
                pid = int(file.read().strip() or 0)
        except (OSError, ValueError) as exc:
            raise CtlError(f"cannot read the pidfile {pidfile}: {exc}") from None
        return _address_of(pid)
    arbiters = find_arbiters()
    if not arbiters:
        raise CtlError("no forkwsgi arbiter is running here (or give --pid or --control)")
    if len(arbiters) > 1:
        raise CtlError("several forkwsgi arbiters are running (pids "
                       f"{', '.join(map(str, arbiters))}): choose one with --pid or --control")
    return _address_of(arbiters[0])


def _address_of(pid: int) -> str:
    """A running arbiter's control socket: the default path for its pid, else a unix socket
    of its whose name says control."""
    import psutil

    path = control.default_path(None, pid)
    if os.path.exists(path):
        return "unix:" + path
    try:
        sockets = psutil.Process(pid).net_connections(kind="unix")
    except psutil.Error as exc:
        raise CtlError(f"arbiter {pid}: {exc}") from None
    for entry in sockets:
        if isinstance(entry.laddr, str) and entry.laddr.endswith(control.SUFFIX):
            return "unix:" + entry.laddr
    raise CtlError(f"arbiter {pid} has no control socket (started with --control-bind none?)")


def get_status(where: str) -> dict:
    try:
        code, body = control.fetch(where, "/status")
    except OSError as exc:
        raise CtlError(f"control endpoint {where}: {exc.strerror or exc}") from None
    if code != 200:
        raise CtlError(f"control endpoint {where} answered {code}")
    return json.loads(body)


# --- output -----------------------------------------------------------------------------------


def _size(value) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def render(status: dict) -> str:
    """The status table: the arbiter's line, then one row per worker."""
    lines = [
        f"arbiter {status['pid']}  {status.get('app', '')}  generation {status['generation']}"
        f"  workers {len(status['workers'])}/{status['target']}"
        f"  {'ready' if status['ready'] else 'NOT READY'}"
        f"{'  STOPPING' if status['stopping'] else ''}  up {_age(status['uptime'])}"
        f"  requests {status['requests']}",
    ]
    header = ("PID", "GEN", "STATE", "REQS", "RSS", "USS", "CPU%", "AGE", "REQUEST")
    rows = [header]
    for worker in status["workers"]:
        request = worker.get("request")
        doing = (f"{request['method']} {request['target']} from {request['client']} "
                 f"({request['elapsed']:.1f}s)") if request else ""
        if worker.get("recycling"):
            doing = (doing + "  " if doing else "") + f"[recycling: {worker['recycling']}]"
        rows.append((str(worker["pid"]), str(worker["generation"]), worker["state"],
                     str(worker["requests"]), _size(worker.get("rss")), _size(worker.get("uss")),
                     f"{worker.get('cpu_percent', 0):.1f}", _age(worker["age"]), doing))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
                     + "  " + row[-1])
    if status.get("recent_exits"):
        lines.append("")
        lines.append("recent worker exits:")
        for record in status["recent_exits"][-5:]:
            when = time.strftime("%H:%M:%S", time.localtime(record["at"]))
            lines.append(f"  {when}  pid {record['pid']}  {record['reason']}"
                         f"{': ' + record['detail'] if record['detail'] else ''}"
                         f"  ({record['requests']} requests)")
    return "\n".join(line.rstrip() for line in lines)


# --- the commands -----------------------------------------------------------------------------


def _target_options(func):
    func = click.option("--control", "where", metavar="ADDR",
                        help="The control endpoint: unix:PATH or HOST:PORT.")(func)
    func = click.option("-p", "--pid", "pidfile", metavar="FILE",
                        help="The server's pidfile (its control socket is beside it).")(func)
    return func


def _wait_option(func):
    return click.option("--wait", "wait", type=float, default=60.0, show_default=True,
                        metavar="SECONDS", help="Give up waiting for the outcome after this.")(func)


@click.command("status", help="What the arbiter and each worker are doing.")
@_target_options
@click.option("--watch", is_flag=False, flag_value=2.0, type=float, default=None,
              metavar="[SECONDS]", help="Refresh every SECONDS (2) until interrupted.")
@click.option("--json", "as_json", is_flag=True, help="The /status document as JSON.")
def status_command(where, pidfile, watch, as_json) -> int:
    where = control_address(where, pidfile)
    while True:
        status = get_status(where)
        text = json.dumps(status, indent=2) if as_json else render(status)
        if watch is None:
            click.echo(text)
            return EXIT_OK
        click.echo("\x1b[H\x1b[2J" + text if sys.stdout.isatty() else text + "\n")
        time.sleep(watch)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        raise CtlError(f"cannot signal arbiter {pid}: {exc.strerror}") from None


def _until(where: str, wait: float, done, progress=None) -> dict:
    deadline = time.monotonic() + wait
    while True:
        status = get_status(where)
        if done(status):
            return status
        if progress is not None:
            progress(status)
        if time.monotonic() >= deadline:
            raise CtlError(f"no outcome after {wait:g}s; see 'forkwsgi status'")
        time.sleep(POLL)


@click.command("reload", help="HUP: a new generation of workers; wait until it serves.")
@_target_options
@_wait_option
def reload_command(where, pidfile, wait) -> int:
    where = control_address(where, pidfile)
    before = get_status(where)
    start = time.monotonic()
    _signal(before["pid"], signal.SIGHUP)

    def reloaded(status: dict) -> bool:
        if status["generation"] <= before["generation"]:
            return False
        workers = status["workers"]
        return all(w["generation"] == status["generation"] for w in workers) and \
            sum(w["state"] in ("idle", "busy") for w in workers) >= status["target"]

    status = _until(where, wait, reloaded)
    click.echo(f"reloaded: {status['target']} new worker(s) ready in "
               f"{time.monotonic() - start:.1f} s (generation {status['generation']})")
    return EXIT_OK


@click.command("stop", help="TERM: finish the requests in flight, then stop.")
@_target_options
@_wait_option
def stop_command(where, pidfile, wait) -> int:
    import psutil

    where = control_address(where, pidfile)
    before = get_status(where)
    pid = before["pid"]
    start = time.monotonic()
    _signal(pid, signal.SIGTERM)
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        process = None
    said = None
    deadline = start + wait
    while process is not None and process.is_running() and \
            process.status() != psutil.STATUS_ZOMBIE:
        try:
            status = get_status(where)
        except CtlError:
            status = None  # the endpoint closes with the listeners' last moments
        if status is not None:
            busy = sum(w["state"] == "busy" for w in status["workers"])
            left = status.get("stop_in")
            line = f"stopping: waiting for {busy} request(s) in flight" + (
                f", {left:.0f} s left before they are cut" if left is not None else "")
            if line != said:
                click.echo(line)
                said = line
        if time.monotonic() >= deadline:
            raise CtlError(f"arbiter {pid} still running after {wait:g}s")
        time.sleep(POLL)
    click.echo(f"stopped: arbiter {pid} exited after {time.monotonic() - start:.1f} s")
    return EXIT_OK


@click.command("scale", help="TTIN/TTOU: run N workers; wait until N serve.")
@click.argument("count", type=click.IntRange(min=1), metavar="N")
@_target_options
@_wait_option
def scale_command(count, where, pidfile, wait) -> int:
    where = control_address(where, pidfile)
    status = get_status(where)
    start = time.monotonic()
    pid = status["pid"]
    # One signal at a time, each seen in the target before the next: two identical signals
    # pending at once would be delivered as one.
    while status["target"] != count:
        sig = signal.SIGTTIN if count > status["target"] else signal.SIGTTOU
        target = status["target"] + (1 if sig == signal.SIGTTIN else -1)
        _signal(pid, sig)
        status = _until(where, wait, lambda s, t=target: s["target"] == t)

    def settled(s: dict) -> bool:
        serving = [w for w in s["workers"] if w["state"] in ("idle", "busy")
                   and not w.get("recycling")]
        return len(serving) == count and len(s["workers"]) == count

    status = _until(where, wait, settled)
    click.echo(f"scaled: {count} worker(s) serving after {time.monotonic() - start:.1f} s")
    return EXIT_OK


COMMAND_OBJECTS = {"status": status_command, "reload": reload_command, "stop": stop_command,
                   "scale": scale_command}


def run(name: str, argv: list[str]) -> int:
    command = COMMAND_OBJECTS[name]
    try:
        with command.make_context(f"{PROG} {name}", argv) as ctx:
            return ctx.invoke(command.callback, **ctx.params) or EXIT_OK
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"{PROG} {name}: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except CtlError as exc:
        click.echo(f"{PROG} {name}: {exc}", err=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
