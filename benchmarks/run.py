"""Measure forkwsgi side by side with other WSGI servers, on loopback, one worker each.

    bash benchmarks/setup.sh
    benchmarks/.venv/bin/python benchmarks/run.py            # the real run (~15 min)
    benchmarks/.venv/bin/python benchmarks/run.py --quick    # smoke test (~3 min)

What it owns: starting each server on a free 127.0.0.1 port, driving it with wrk,
and reporting medians, ratios, memory, cold start, newcomer latency, -w 2 scaling
and syscalls per request. What it must never do: send traffic anywhere but
loopback, leave a process running, or sleep a fixed time in place of a readiness
check. Every process it starts is stopped by PID in a `finally`, and SIGALRM caps
the whole run. mixed.py and body.py import this machinery (Launcher, session,
forkwsgi_source, the report head and foot) rather than repeat it.

Method (docs/performance.md says why):
- the server is pinned to one core (`taskset -c 0`), wrk to the other (`-c 1`);
- one worker process per server, the same `apps:app` for every Python server;
- rounds are interleaved: round 1 runs every server once for a scenario, then
  round 2 again, in a rotated order, so drift hits all servers alike;
- every measurement starts a fresh server, warms it up, then measures;
- the report is the median over rounds, as req/s and as ratios against gunicorn
  (sync worker, pure-Python parser, as `pip install gunicorn` gives) and forkwsgi.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.prefix) / "bin"  # the venv this script runs from (benchmarks/.venv)
PYTHON = str(BIN / "python")
HOST = "127.0.0.1"
BASELINE = "gunicorn"
OURS = "forkwsgi"


class TimeCap(Exception):
    """The run went past --max-minutes; whatever was measured is still reported."""


# --- scenarios --------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    wrk_args: tuple[str, ...] = ()


SCENARIOS = (
    Scenario("hello", "hello, keep-alive", "/"),
    Scenario("close", "hello, Connection: close", "/", ("-H", "Connection: close")),
    Scenario("body64k", "64 KiB response, keep-alive", "/64k"),
    Scenario("upload", "1 MiB POST body read by the app", "/upload",
             ("-s", str(HERE / "upload.lua"))),
)


# --- servers ----------------------------------------------------------------
# Each server is a command line for (port, workers) plus a note for the report.
# Access logs are off everywhere (off by default in all but uWSGI).


@dataclass(frozen=True)
class Server:
    name: str
    note: str
    argv: Callable[[int, int, Path], list[str]]  # (port, workers, scratch dir) -> argv
    package: str  # the distribution that must be installed (nginx: the command)
    scales: bool = False  # takes a worker count (-w 2 scaling phase)


def _forkwsgi(port: int, workers: int, scratch: Path) -> list[str]:
    return [PYTHON, "-m", "forkwsgi", "-b", f"{HOST}:{port}", "-w", str(workers),
            "--log-level", "warning", "apps:app"]


def forkwsgi_from(src: Path) -> Callable[[int, int, Path], list[str]]:
    """forkwsgi imported from ``src`` ahead of the run's PYTHONPATH (``--base``: the same
    server as another revision, side by side with this one in the same run)."""
    boot = (f"import runpy, sys; sys.path.insert(0, {str(src)!r}); "
            "runpy.run_module('forkwsgi', run_name='__main__')")

    def argv(port: int, workers: int, scratch: Path) -> list[str]:
        return [PYTHON, "-c", boot, *_forkwsgi(port, workers, scratch)[3:]]
    return argv


def _gunicorn(parser: str) -> Callable[[int, int, Path], list[str]]:
    def argv(port: int, workers: int, scratch: Path) -> list[str]:
        return [str(BIN / "gunicorn"), "-b", f"{HOST}:{port}", "-w", str(workers),
                "-k", "sync", "--http-parser", parser, "--no-control-socket",
                "--log-level", "warning", "apps:app"]
    return argv


def _uwsgi(port: int, workers: int, scratch: Path) -> list[str]:
    # --http11-socket is --http-socket with keep-alive; --http would add a router
    # process in front. No --master: the first process is a worker (and, with
    # --processes 2, forks the second).
    return [str(BIN / "uwsgi"), "--http11-socket", f"{HOST}:{port}", "--module", "apps:app",
            "--pythonpath", str(HERE), "--processes", str(workers), "--disable-logging",
            "--need-app", "--die-on-term", "--single-interpreter"]


GRANIAN_ONE_THREAD = ("--blocking-threads", "1", "--runtime-threads", "1")


def granian(*threads: str) -> Callable[[int, int, Path], list[str]]:
    """granian's argv with `threads` (its thread flags; none: granian's defaults)."""
    def argv(port: int, workers: int, scratch: Path) -> list[str]:
        return [str(BIN / "granian"), "--interface", "wsgi", "--http", "1", "--host", HOST,
                "--port", str(port), "--workers", str(workers), *threads,
                "--no-access-log", "--log-level", "warning", "apps:app"]
    return argv


def _waitress(port: int, workers: int, scratch: Path) -> list[str]:
    return [str(BIN / "waitress-serve"), f"--listen={HOST}:{port}", "apps:app"]


def _bjoern(port: int, workers: int, scratch: Path) -> list[str]:
    return [PYTHON, "-c", f"import apps, bjoern; bjoern.run(apps.app, {HOST!r}, {port})"]


NGINX_CONF = """\
daemon off;
worker_processes 1;
{user}
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {scratch}/body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
{http}
}}
"""

NGINX_CEILING = """\
    server {{
        listen {host}:{port};
        location = / {{ default_type text/plain; return 200 "Hello, world!"; }}
        location = /64k {{ default_type application/octet-stream; alias {scratch}/64k; }}
        location = /upload {{ client_max_body_size 2m; return 200 "1048576"; }}
    }}"""


def nginx_argv(port: int, scratch: Path, http: str) -> list[str]:
    """Write an nginx.conf for one master + one worker in scratch/nginx-PORT, its own
    pid, logs and temp dirs there, with `http` (a template: {host}, {port}, {scratch})
    as the body of its http block; returns the command line that runs it."""
    conf_dir = scratch / f"nginx-{port}"
    conf_dir.mkdir(exist_ok=True)
    # As root nginx drops its worker to "nobody", who cannot read a 0700 tempdir.
    user = "user root;" if os.geteuid() == 0 else ""
    body = http.format(host=HOST, port=port, scratch=conf_dir)
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, scratch=conf_dir, http=body))
    return ["nginx", "-p", str(conf_dir), "-c", str(conf)]


def _nginx(port: int, workers: int, scratch: Path) -> list[str]:
    argv = nginx_argv(port, scratch, NGINX_CEILING)
    (scratch / f"nginx-{port}" / "64k").write_bytes(b"x" * 65536)
    return argv


SERVERS = (
    Server(OURS, "1 worker", _forkwsgi, "forkwsgi", scales=True),
    Server(BASELINE, "sync worker, --http-parser python", _gunicorn("python"), "gunicorn",
           scales=True),
    Server("gunicorn-h1c", "sync worker, --http-parser fast (gunicorn_h1c)", _gunicorn("fast"),
           "gunicorn_h1c"),
    Server("uwsgi", "--http11-socket, 1 process, no master, no threads", _uwsgi, "uwsgi"),
    Server("granian", "--interface wsgi, 1 worker, 1 runtime and 1 blocking thread",
           granian(*GRANIAN_ONE_THREAD), "granian"),
    Server("granian-default", "--interface wsgi, 1 worker, granian's default threads",
           granian(), "granian"),
    Server("waitress", "1 process, its default 4 threads (one core)", _waitress, "waitress"),
    Server("bjoern", "1 process, libev", _bjoern, "bjoern"),
    Server("nginx", "reference ceiling: return 200 / static file / body discarded", _nginx,
           "nginx"),
)


def package_version(name: str) -> str | None:
    if name == "nginx":
        if not shutil.which("nginx"):
            return None
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        return out.strip().rpartition("/")[2]
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def available(names: str, table: tuple[Server, ...], skipped: dict) -> list[Server]:
    """The servers named (comma-separated) that can run here; the others go into
    skipped with the reason."""
    servers = []
    for server in pick(names, table, "server"):
        if reason := missing_reason(server):
            skipped[server.name] = reason
            say(f"skipping {server.name}: {reason}")
        else:
            servers.append(server)
    return servers


def missing_reason(server: Server) -> str | None:
    """Why this server cannot run here, or None when it can."""
    if package_version(server.package) is None:
        return f"{server.package} is not installed (see benchmarks/setup.sh output)"
    if server.name == OURS:
        done = subprocess.run([PYTHON, "-m", "forkwsgi", "--version"], capture_output=True,
                              text=True, timeout=30)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`python -m forkwsgi --version` failed: {last}"
    return None


# --- tiny HTTP client (readiness, newcomer probes, syscall counting) --------


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> int:
    """One GET on a fresh connection; returns the status code."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                     .encode())
        status, _, _ = read_response(sock)
        return status


def parse_response_head(head: bytes) -> tuple[int, int, bool]:
    """A response head without its blank line -> (status, Content-Length or -1, keep-alive)."""
    lines = head.decode("latin-1").split("\r\n")
    version_, status = lines[0].split(" ", 2)[:2]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn and (version_ == "HTTP/1.1" or "keep-alive" in conn)
    return int(status), int(headers.get("content-length", -1)), keep


def receive_response(sock: socket.socket, buf: bytearray | None = None
                     ) -> tuple[int, bool, bytes, bytearray]:
    """Read one response; returns (status, server keeps the connection, body, leftover bytes)."""
    buf = buf if buf is not None else bytearray()
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    status, length, keep = parse_response_head(bytes(buf[:end]))
    del buf[:end + 4]
    if length < 0:  # no length: the body runs to the close
        while chunk := sock.recv(65536):
            buf += chunk
        return status, False, bytes(buf), bytearray()
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, keep, body, buf


def read_response(sock: socket.socket, buf: bytearray | None = None
                  ) -> tuple[int, bool, bytearray]:
    """Read one response; returns (status, server keeps the connection, leftover bytes)."""
    status, keep, _, buf = receive_response(sock, buf)
    return status, keep, buf


def keepalive_client(port: int, requests: int, connections: int) -> tuple[int, int]:
    """Make exactly `requests` GETs over `connections` threads, each reusing its
    connection while the server allows. Returns (2xx responses, connections opened)."""
    per_thread = [requests // connections + (i < requests % connections)
                  for i in range(connections)]
    ok = [0] * connections
    opened = [0] * connections
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()

    def run(i: int) -> None:
        sock = None
        buf = bytearray()
        try:
            for _ in range(per_thread[i]):
                if sock is None:
                    sock = socket.create_connection((HOST, port), timeout=10)
                    opened[i] += 1
                    buf = bytearray()
                sock.sendall(request)
                status, keep, buf = read_response(sock, buf)
                ok[i] += 200 <= status < 300
                if not keep:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(ok), sum(opened)


# --- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def all_cpus() -> str:
    return f"0-{(os.cpu_count() or 1) - 1}"


class Launched:
    """A running server: its root process, port, and log."""

    def __init__(self, server: Server, port: int, proc: subprocess.Popen, log: Path):
        self.server, self.port, self.proc, self.log = server, port, proc, log

    def workers(self) -> list[psutil.Process]:
        """The processes that serve requests: the leaves of the process tree."""
        root = psutil.Process(self.proc.pid)
        tree = root.children(recursive=True)
        leaves = [p for p in tree if not p.children()]
        return leaves or [root]

    def memory(self) -> dict[str, float]:
        """RSS and USS in MiB, summed over the worker processes."""
        rss = uss = 0
        for p in self.workers():
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
        return {"rss_mib": rss / 2**20, "uss_mib": uss / 2**20}

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_ready(launched: Launched, timeout: float = 30.0, poll: float = 0.005) -> float:
    """Poll with a real GET until it answers 200; returns seconds waited."""
    start = time.perf_counter()
    while True:
        if launched.proc.poll() is not None:
            raise RuntimeError(f"{launched.server.name} exited with {launched.proc.returncode}:\n"
                               f"{launched.log_tail()}")
        with contextlib.suppress(OSError):
            if http_get(launched.port, timeout=2.0) == 200:
                return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{launched.server.name} not ready after {timeout:.0f}s:\n"
                               f"{launched.log_tail()}")
        time.sleep(poll)


def stop(launched: Launched) -> None:
    """SIGTERM the server, give it 10 s, then SIGKILL by PID whatever of its tree is left."""
    try:
        root = psutil.Process(launched.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError):
        launched.proc.terminate()
    try:
        launched.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    # psutil checks each PID still names the process we saw (create time), so a
    # recycled PID is never signalled.
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=5)
    launched.proc.wait(timeout=5)


class Launcher:
    """Starts servers in a scratch dir and remembers them for cleanup.

    `pythonpath` goes ahead of benchmarks/ on every server's PYTHONPATH: where
    forkwsgi is imported from (see forkwsgi_source)."""

    def __init__(self, scratch: Path, pythonpath: list[Path] | None = None):
        self.scratch = scratch
        self.pythonpath = list(pythonpath or [])
        self.count = 0
        self.live: set[Launched] = set()

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(str(p) for p in [*self.pythonpath, HERE])
        return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")

    @contextlib.contextmanager
    def run(self, server: Server, *, workers: int = 1, cpus: str = "0",
            ready: bool = True) -> Iterator[Launched]:
        self.count += 1
        port = free_port()
        log = self.scratch / f"{self.count:04d}-{server.name}.log"
        argv = ["taskset", "-c", cpus, *server.argv(port, workers, self.scratch)]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=HERE, env=self.env(), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        launched = Launched(server, port, proc, log)
        self.live.add(launched)
        try:
            if ready:
                wait_ready(launched)
            yield launched
        finally:
            stop(launched)
            self.live.discard(launched)

    def cleanup(self) -> None:
        """Stop whatever an interrupted stop() left running."""
        for launched in list(self.live):
            stop(launched)
            self.live.discard(launched)


@contextlib.contextmanager
def session(max_minutes: float, client_cpu: str, res: Results) -> Iterator[Launcher]:
    """The frame of a run: this process pinned to the client core (so its own work
    stays off the server's), SIGALRM raising TimeCap after max_minutes, a Launcher
    in a fresh scratch dir. TimeCap or Ctrl-C ends the block with res.truncated set
    (what was measured is still reported). On the way out the alarm is disarmed,
    whatever is still running is stopped by PID and the scratch dir is removed."""
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(client_cpu)})

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeCap

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(max_minutes * 60)))
    scratch = Path(tempfile.mkdtemp(prefix="forkwsgi-bench-"))
    launcher = Launcher(scratch)
    prog = Path(sys.argv[0]).name
    try:
        yield launcher
    except TimeCap:
        res.truncated = True
        say(f"{prog}: hit --max-minutes {max_minutes:g}; reporting what was measured")
    except KeyboardInterrupt:
        res.truncated = True
        say(f"{prog}: interrupted; reporting what was measured")
    finally:
        signal.alarm(0)
        launcher.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def src_fingerprint() -> str:
    """A digest of the checkout's src/forkwsgi (to notice edits made during a run)."""
    digest = hashlib.sha1()
    for path in sorted((REPO / "src" / "forkwsgi").rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def forkwsgi_source(rev: str | None, scratch: Path) -> tuple[list[Path], str]:
    """Where the servers import forkwsgi from, as (PYTHONPATH entries, description).

    rev None: the checkout's src/, whatever its state (PYTHONPATH=src, so an install
    that is not editable still runs the current code). A git revision: src/ as it is
    in that commit, exported into scratch with `git archive`, which reads the
    repository and never touches the working tree or the index."""
    if rev is None:
        dirty = " with uncommitted changes" if _git("status", "--porcelain", "--", "src") else ""
        return [REPO / "src"], f"working tree src/ at {_git('rev-parse', '--short', 'HEAD')}{dirty}"
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = scratch / f"src-{sha[:12]}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return [dest / "src"], f"src/ of {rev} = {sha[:12]} (git archive; the working tree unused)"


def add_run_args(p: argparse.ArgumentParser, table: tuple[Server, ...],
                 max_minutes: float) -> None:
    """The flags mixed.py and body.py share."""
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (%(default)s)")
    p.add_argument("--servers", default=",".join(s.name for s in table),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--rev", default=None, help="run forkwsgi from src/ of this git revision "
                   "(exported to the scratch dir) instead of the working tree")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--max-minutes", type=float, default=max_minutes,
                   help="hard cap on the whole run (%(default)s)")
    p.add_argument("--json", type=Path, default=None, help="save the samples and meta here")


def close_meta(meta: dict, started: float, fingerprint: str, rev: str | None) -> None:
    """Record how long the run took, the load after it, and whether src/ changed under it."""
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_after"] = os.getloadavg()
    meta["src_changed"] = rev is None and src_fingerprint() != fingerprint


def publish(text: str, res: object, json_path: Path | None) -> int:
    """Print the report, save res as JSON if asked; the exit status of the run."""
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res.__dict__, indent=1, default=str))
        say(f"saved {json_path}")
    return 1 if res.failures or res.truncated else 0


# --- wrk ----------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int  # socket errors plus non-2xx/3xx responses
    latency_avg_ms: float


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk_command(port: int, scenario: Scenario, seconds: int, connections: int,
                cpus: str) -> list[str]:
    return ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            *scenario.wrk_args, f"http://{HOST}:{port}{scenario.path}"]


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    requests = re.search(r"(\d+) requests in", out)
    errors = sum(int(n) for n in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", out.split("Socket errors:")[-1])
    ) if "Socket errors:" in out else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(requests.group(1)) if requests else 0,
        errors=errors + (int(non2xx.group(1)) if non2xx else 0),
        latency_avg_ms=parse_duration_ms(latency.group(1)) if latency else math.nan,
    )


def wrk(port: int, scenario: Scenario, seconds: int, connections: int, cpus: str) -> WrkResult:
    cmd = wrk_command(port, scenario, seconds, connections, cpus)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    return parse_wrk(done.stdout + done.stderr)


# --- the phases -----------------------------------------------------------------


@dataclass
class Config:
    rounds: int
    seconds: int  # wrk takes whole seconds only
    warmup: int
    connections: int
    server_cpu: str
    client_cpu: str
    cold_starts: int
    probes: int
    syscall_requests: int


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # server -> reason
    throughput: dict = field(default_factory=dict)  # scenario -> server -> [samples]
    memory: dict = field(default_factory=dict)  # scenario -> server -> [{rss_mib, uss_mib}]
    cold_start_ms: dict = field(default_factory=dict)  # server -> [ms]
    newcomer_ms: dict = field(default_factory=dict)  # server -> [ms or None for timeout]
    scaling: dict = field(default_factory=dict)  # server -> {"1": [rps], "2": [rps]}
    syscalls: dict = field(default_factory=dict)  # server -> {...}
    failures: list = field(default_factory=list)
    truncated: bool = False


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rotated(items: list, by: int) -> list:
    by %= max(len(items), 1)
    return items[by:] + items[:by]


def phase_throughput(launcher: Launcher, servers: list[Server], scenarios: list[Scenario],
                     cfg: Config, res: Results) -> None:
    for sc in scenarios:
        for rnd in range(cfg.rounds):
            for server in rotated(servers, rnd):
                say(f"  {sc.name:<8} round {rnd + 1}/{cfg.rounds}  {server.name}")
                try:
                    with launcher.run(server, cpus=cfg.server_cpu) as live:
                        if cfg.warmup:
                            wrk(live.port, sc, cfg.warmup, cfg.connections, cfg.client_cpu)
                        r = wrk(live.port, sc, cfg.seconds, cfg.connections, cfg.client_cpu)
                        mem = live.memory()
                except (RuntimeError, subprocess.SubprocessError, psutil.Error) as exc:
                    res.failures.append(f"{server.name} {sc.name}: {exc}")
                    say(f"    FAILED: {exc}")
                    continue
                res.throughput.setdefault(sc.name, {}).setdefault(server.name, []).append(
                    r.__dict__)
                res.memory.setdefault(sc.name, {}).setdefault(server.name, []).append(mem)
                flag = f"  ({r.errors} errors)" if r.errors else ""
                say(f"    {r.rps:>10,.0f} req/s  rss {mem['rss_mib']:.1f} MiB{flag}")


def phase_cold_start(launcher: Launcher, servers: list[Server], cfg: Config,
                     res: Results) -> None:
    for i in range(cfg.cold_starts):
        for server in rotated(servers, i):
            try:
                t0 = time.perf_counter()
                with launcher.run(server, cpus=cfg.server_cpu, ready=False) as live:
                    wait_ready(live, poll=0.002)
                    ms = (time.perf_counter() - t0) * 1000
            except RuntimeError as exc:
                res.failures.append(f"{server.name} cold start: {exc}")
                continue
            res.cold_start_ms.setdefault(server.name, []).append(ms)
            say(f"  cold start {i + 1}/{cfg.cold_starts}  {server.name:<13} {ms:7.1f} ms")


def probe_ms(port: int, timeout: float) -> float | None:
    """Time one GET on a new connection, connect to last body byte; None on timeout."""
    t0 = time.perf_counter()
    try:
        status = http_get(port, timeout=timeout)
    except (OSError, ConnectionError):
        return None
    return (time.perf_counter() - t0) * 1000 if status == 200 else None


def phase_newcomer(launcher: Launcher, servers: list[Server], cfg: Config,
                   res: Results) -> None:
    """While wrk holds 50 keep-alive connections busy, does a new client get served?"""
    hello = SCENARIOS[0]
    interval, timeout = 0.25, 5.0
    duration = math.ceil(2 + cfg.probes * (interval + timeout))  # wrk outlives the probes
    for server in servers:
        try:
            with launcher.run(server, cpus=cfg.server_cpu) as live:
                cmd = wrk_command(live.port, hello, duration, cfg.connections, cfg.client_cpu)
                load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                try:
                    time.sleep(1.0)  # let wrk open its connections first
                    samples = []
                    for _ in range(cfg.probes):
                        samples.append(probe_ms(live.port, timeout))
                        time.sleep(interval)
                    if load.poll() is not None:
                        raise RuntimeError(f"wrk exited early ({load.returncode})")
                finally:
                    load.terminate()
                    load.wait(timeout=10)
        except RuntimeError as exc:
            res.failures.append(f"{server.name} newcomer: {exc}")
            continue
        res.newcomer_ms[server.name] = samples
        say(f"  newcomer {server.name:<13} {fmt_newcomer(samples)}")


def phase_scaling(launcher: Launcher, servers: list[Server], cfg: Config,
                  res: Results) -> None:
    """-w 1 vs -w 2, nothing pinned: does a second worker use the second core?"""
    hello = SCENARIOS[0]
    cpus = all_cpus()
    for rnd in range(cfg.rounds):
        for server in rotated(servers, rnd):
            for workers in (1, 2):
                try:
                    with launcher.run(server, workers=workers, cpus=cpus) as live:
                        if cfg.warmup:
                            wrk(live.port, hello, cfg.warmup, cfg.connections, cpus)
                        r = wrk(live.port, hello, cfg.seconds, cfg.connections, cpus)
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    res.failures.append(f"{server.name} -w {workers}: {exc}")
                    continue
                res.scaling.setdefault(server.name, {}).setdefault(str(workers), []).append(
                    r.rps)
                say(f"  scaling round {rnd + 1}  {server.name:<9} -w {workers}  "
                    f"{r.rps:>10,.0f} req/s")


STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def parse_strace_summary(text: str) -> dict[str, int]:
    """`strace -c` table -> {syscall: calls}."""
    calls = {}
    for line in text.splitlines():
        m = STRACE_ROW.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = int(m.group(1))
    return calls


def phase_syscalls(launcher: Launcher, servers: list[Server], cfg: Config,
                   res: Results) -> None:
    """strace -c the worker while exactly N keep-alive GETs are served."""
    connections = 10
    for server in servers:
        try:
            with launcher.run(server, cpus=cfg.server_cpu) as live:
                worker = live.workers()[0]
                out = launcher.scratch / f"strace-{server.name}.txt"
                tracer = subprocess.Popen(
                    ["strace", "-f", "-c", "-o", str(out), "-p", str(worker.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_traced(worker.pid)
                    ok, opened = keepalive_client(live.port, cfg.syscall_requests, connections)
                finally:
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(timeout=20)
                calls = parse_strace_summary(out.read_text())
        except (RuntimeError, OSError, subprocess.SubprocessError, psutil.Error) as exc:
            res.failures.append(f"{server.name} syscalls: {exc}")
            continue
        res.syscalls[server.name] = {"requests": cfg.syscall_requests, "ok": ok,
                                     "connections_opened": opened, "calls": calls}
        say(f"  syscalls {server.name:<13} {sum(calls.values()) / ok:.2f} per request, "
            f"{opened} connections for {ok} requests")


def wait_traced(pid: int, timeout: float = 10.0) -> None:
    """Block until strace has attached (TracerPid in /proc is set)."""
    deadline = time.monotonic() + timeout
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        for line in status.read_text().splitlines():
            if line.startswith("TracerPid:") and line.split()[1] != "0":
                time.sleep(0.1)  # strace attaches to the threads right after
                return
        time.sleep(0.01)
    raise RuntimeError("strace did not attach")


# --- report -----------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def fmt_ratio(x: float) -> str:
    return "—" if x != x else f"{x:.2f}×"


def fmt_ms(x: float) -> str:
    return "—" if x != x else f"{x:.1f}"


def fmt_newcomer(samples: list[float | None]) -> str:
    done = [s for s in samples if s is not None]
    timeouts = len(samples) - len(done)
    text = f"median {fmt_ms(median(done))} ms, max {fmt_ms(max(done, default=math.nan))} ms"
    return text + (f", {timeouts} timed out" if timeouts else "")


def throughput_medians(res: Results) -> dict[str, dict[str, float]]:
    return {sc: {srv: median([s["rps"] for s in samples]) for srv, samples in by.items()}
            for sc, by in res.throughput.items()}


def report_head(title: str, meta: dict) -> list[str]:
    """A report's title and its line on the command, machine, method and load."""
    source = f" forkwsgi: {meta['forkwsgi_source']}." if "forkwsgi_source" in meta else ""
    out = [f"## {title} {meta['date']}\n",
           f"`{meta['command']}` — {meta['cpu']}, {meta['cpus']} cores, Linux "
           f"{meta['kernel']}, Python {meta['python']}; {meta['method']}.{source} Load average "
           f"{meta['loadavg_before'][0]:.2f} before, {meta['loadavg_after'][0]:.2f} after "
           f"({meta['elapsed_s']:.0f} s).\n"]
    busy = max(meta["loadavg_before"][0], meta["loadavg_after"][0])
    if busy > 1.0:
        out.append(f"**The machine was busy (load average up to {busy:.1f} on {meta['cpus']} "
                   "cores): other work shared the cores, so read these numbers as noisy.**\n")
    if meta.get("src_changed"):
        out.append("**src/forkwsgi changed while this ran: the forkwsgi figures may mix two "
                   "versions of the code.**\n")
    return out


def report_foot(res: Results, servers: list[Server], extra: str = "") -> list[str]:
    """The servers and versions, then what was skipped, failed or cut short."""
    out = ["Servers: " + "; ".join(
        f"{s.name} {res.meta['versions'].get(s.name, '')} ({s.note})".replace("  ", " ")
        for s in servers) + extra + ".\n"]
    if res.skipped:
        out.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in res.skipped.items()) + ".\n")
    if res.failures:
        out.append("Failures:\n" + "\n".join(f"- {f.splitlines()[0]}" for f in res.failures)
                   + "\n")
    if res.truncated:
        out.append("**The run hit --max-minutes; the tables hold what was measured.**\n")
    return out


def report(res: Results, servers: list[Server], scenarios: list[Scenario]) -> str:
    meds = throughput_medians(res)
    out = report_head("Results", res.meta)
    for sc in scenarios:
        by = meds.get(sc.name)
        if not by:
            continue
        base, ours = by.get(BASELINE, math.nan), by.get(OURS, math.nan)
        out.append(f"### {sc.title}\n")
        out.append("| server | req/s (median) | min – max | vs gunicorn | vs forkwsgi | errors |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for srv in sorted(by, key=by.get, reverse=True):
            samples = res.throughput[sc.name][srv]
            rps = [s["rps"] for s in samples]
            errors = sum(s["errors"] for s in samples)
            name = f"**{srv}**" if srv == OURS else srv
            out.append(f"| {name} | {by[srv]:,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | "
                       f"{fmt_ratio(by[srv] / base)} | {fmt_ratio(by[srv] / ours)} | {errors} |")
        out.append("")
    if res.memory:
        out.append("### Memory of the worker process(es) after the load (MiB)\n")
        first = scenarios[0].name
        out.append(f"| server | RSS after {first} | USS after {first} | peak RSS, any scenario |")
        out.append("|---|---:|---:|---:|")
        names = [s.name for s in servers if any(s.name in by for by in res.memory.values())]
        for srv in names:
            after = res.memory.get(first, {}).get(srv, [])
            peak = max((m["rss_mib"] for by in res.memory.values() for m in by.get(srv, [])),
                       default=math.nan)
            out.append(f"| {srv} | {median([m['rss_mib'] for m in after]):.1f} | "
                       f"{median([m['uss_mib'] for m in after]):.1f} | {peak:.1f} |")
        out.append("")
    if res.cold_start_ms:
        out.append("### Cold start: launch to first 200 (ms)\n")
        out.append("| server | median | max | launches |")
        out.append("|---|---:|---:|---:|")
        for srv, ms in sorted(res.cold_start_ms.items(), key=lambda kv: median(kv[1])):
            out.append(f"| {srv} | {median(ms):.0f} | {max(ms):.0f} | {len(ms)} |")
        out.append("")
    if res.newcomer_ms:
        out.append("### Newcomer latency: a new connection's GET while 50 keep-alive "
                   "connections are busy\n")
        out.append("| server | median ms | max ms | timed out (5 s) | probes |")
        out.append("|---|---:|---:|---:|---:|")
        for srv, samples in res.newcomer_ms.items():
            done = [s for s in samples if s is not None]
            out.append(f"| {srv} | {fmt_ms(median(done))} | {fmt_ms(max(done, default=math.nan))} "
                       f"| {len(samples) - len(done)} | {len(samples)} |")
        out.append("")
    if res.scaling:
        out.append("### Scaling: hello keep-alive, nothing pinned, req/s (median)\n")
        out.append("| server | -w 1 | -w 2 | -w 2 / -w 1 |")
        out.append("|---|---:|---:|---:|")
        for srv, by in res.scaling.items():
            w1, w2 = median(by.get("1", [])), median(by.get("2", []))
            out.append(f"| {srv} | {w1:,.0f} | {w2:,.0f} | {fmt_ratio(w2 / w1)} |")
        out.append("")
    if res.syscalls:
        out.append("### Syscalls per keep-alive request (strace -f -c on the worker)\n")
        for srv, data in res.syscalls.items():
            ok = data["ok"] or 1
            total = sum(data["calls"].values()) / ok
            out.append(f"**{srv}**: {total:.2f} syscalls per request; {data['ok']} requests "
                       f"over {data['connections_opened']} connections.\n")
            out.append("| syscall | per request |")
            out.append("|---|---:|")
            for name, n in sorted(data["calls"].items(), key=lambda kv: -kv[1]):
                if n / ok >= 0.005:
                    out.append(f"| {name} | {n / ok:.2f} |")
            out.append("")
    out += report_foot(res, servers)
    return "\n".join(out)


def chart(res: Results, scenarios: list[Scenario], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meds = throughput_medians(res)
    shown = [sc for sc in scenarios if any(n != "nginx" for n in meds.get(sc.name, {}))]
    if not shown:
        return
    cols = 2 if len(shown) > 1 else 1
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    for ax, sc in zip(axes.flat, shown, strict=False):
        # nginx is a ceiling, not a peer: named in the title so the WSGI bars stay readable.
        by = {n: v for n, v in meds[sc.name].items() if n != "nginx"}
        names = sorted(by, key=by.get)
        values = [by[n] for n in names]
        colors = ["#d62728" if n == OURS else "#1f77b4" for n in names]
        bars = ax.barh(names, values, color=colors)
        base = by.get(BASELINE)
        labels = [f"{v:,.0f}" + (f"  {v / base:.2f}×" if base else "") for v in values]
        ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
        ceiling = meds[sc.name].get("nginx")
        ax.set_title(sc.title + (f"  (nginx: {ceiling:,.0f})" if ceiling else ""), fontsize=10)
        ax.set_xlabel("requests/s (median)")
        ax.set_xlim(0, max(values) * 1.35)
        ax.tick_params(axis="y", labelsize=9)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(f"One worker pinned to one core, wrk -t1 -c50 on the other; "
                 f"ratio vs gunicorn sync. {res.meta['date']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_meta(servers: list[Server]) -> dict:
    """The date, command, machine and server versions a report starts with."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": (f"benchmarks/.venv/bin/python benchmarks/{Path(sys.argv[0]).name} "
                    + " ".join(sys.argv[1:])).strip(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
        "versions": {s.name: package_version(s.package) or "" for s in servers},
    }


def collect_meta(args: argparse.Namespace, cfg: Config, servers: list[Server]) -> dict:
    meta = machine_meta(servers)
    versions = meta["versions"]
    if "gunicorn-h1c" in versions:
        versions["gunicorn-h1c"] = f"{package_version('gunicorn')} + h1c {versions['gunicorn-h1c']}"
    return {
        **meta,
        "config": cfg.__dict__,
        "method": (f"{cfg.rounds} interleaved rounds × {cfg.seconds:g} s after a "
                   f"{cfg.warmup:g} s warm-up, wrk -t1 -c{cfg.connections} on core "
                   f"{cfg.client_cpu}, server on core {cfg.server_cpu}"),
    }


# --- main ---------------------------------------------------------------------------

PHASES = ("throughput", "coldstart", "newcomer", "scaling", "syscalls")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round x 2 s, fewer probes and launches")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5, help="wrk seconds per measurement")
    p.add_argument("--warmup", type=int, default=1, help="wrk warm-up seconds before each (0: none)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--servers", default=",".join(s.name for s in SERVERS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--phases", default=",".join(PHASES),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--contrast", default=f"{OURS},{BASELINE},uwsgi",
                   help="servers for the newcomer, scaling and syscall phases")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--max-minutes", type=float, default=45.0, help="hard cap on the whole run")
    p.add_argument("--chart", type=Path, default=None,
                   help="PNG path (default docs/performance.png; results/ with --quick)")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--base", default=None, metavar="REV",
                   help="also run forkwsgi from src/ of this git revision, as server "
                        "'forkwsgi-base' (a regression check in the same run)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 2, 1
    return args


def pick(names: str, table: tuple, what: str) -> list:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {x.name: x for x in table}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        sys.exit(f"{Path(sys.argv[0]).name}: unknown {what}: {', '.join(unknown)}")
    return [by_name[n] for n in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"run.py: {tool} not found; run benchmarks/setup.sh")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        sys.exit(f"run.py: unknown phase: {', '.join(sorted(unknown))}")
    scenarios = pick(args.scenarios, SCENARIOS, "scenario")
    cfg = Config(rounds=args.rounds, seconds=args.seconds, warmup=args.warmup,
                 connections=args.connections, server_cpu=args.server_cpu,
                 client_cpu=args.client_cpu, cold_starts=2 if args.quick else 5,
                 probes=5 if args.quick else 10,
                 syscall_requests=500 if args.quick else 2000)

    res = Results()
    servers = available(args.servers, SERVERS, res.skipped)
    contrast = [s for s in servers if s.name in args.contrast.split(",")]
    if "syscalls" in phases and not shutil.which("strace"):
        res.skipped["syscalls phase"] = "strace not found"
        phases.remove("syscalls")
    res.meta = collect_meta(args, cfg, servers)

    # The runner's own work (readiness polls, probes, the syscall client) stays
    # off the server's core; servers and wrk get their cores from taskset.
    started, fingerprint = time.monotonic(), src_fingerprint()
    per_run = cfg.warmup + cfg.seconds + 1.5  # + launch, readiness and stop
    estimate = (len(servers) * len(scenarios) * cfg.rounds * per_run * ("throughput" in phases)
                + 4 * cfg.rounds * per_run * ("scaling" in phases)
                + len(contrast) * cfg.probes * 1.5 * ("newcomer" in phases))
    with session(args.max_minutes, args.client_cpu, res) as launcher:
        say(f"estimated {estimate / 60:.0f} min (cap {args.max_minutes:g} min); "
            f"scratch {launcher.scratch}")
        if args.base:
            (base_src,), where = forkwsgi_source(args.base, launcher.scratch)
            servers.append(Server(f"{OURS}-base", f"1 worker, {where}",
                                  forkwsgi_from(base_src), "forkwsgi"))
        if "throughput" in phases:
            say(f"throughput: {len(servers)} servers × {len(scenarios)} scenarios × "
                f"{cfg.rounds} rounds")
            phase_throughput(launcher, servers, scenarios, cfg, res)
        if "coldstart" in phases:
            say("cold start")
            phase_cold_start(launcher, servers, cfg, res)
        if "newcomer" in phases:
            say("newcomer latency")
            phase_newcomer(launcher, contrast, cfg, res)
        if "scaling" in phases:
            say("scaling -w 1 vs -w 2")
            phase_scaling(launcher, [s for s in contrast if s.scales], cfg, res)
        if "syscalls" in phases:
            say("syscalls per request")
            phase_syscalls(launcher, contrast, cfg, res)
    close_meta(res.meta, started, fingerprint, None)

    text = report(res, servers, scenarios)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.results / f"{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps(res.__dict__, indent=1, default=str))
    chart_path = args.chart or (args.results / f"{stamp}-quick.png" if args.quick
                                else REPO / "docs" / "performance.png")
    chart(res, scenarios, chart_path)
    say(f"saved {json_path} and {chart_path} ({res.meta['elapsed_s']:.0f} s)")
    return 1 if res.failures or res.truncated else 0


if __name__ == "__main__":
    sys.exit(main())
