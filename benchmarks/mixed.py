"""An app with one slow endpoint: forkwsgi beside its peers, two workers each, on loopback.

    bash benchmarks/setup.sh
    benchmarks/.venv/bin/python benchmarks/mixed.py            # the real run (~13 min)
    benchmarks/.venv/bin/python benchmarks/mixed.py --quick    # smoke test (~2 min)
    benchmarks/.venv/bin/python benchmarks/mixed.py --rev HEAD # forkwsgi as committed

One request in 20 goes to /slow (the app sleeps 0.1 s, holding its worker), the
rest to /fast (hello). The question is what a slow request does to the fast ones
queued behind it: a server that serves several keep-alive connections per sync
worker can make them wait the whole 0.1 s. Each server runs `apps:app` with
`-w 2`, pinned to core 0; a closed-loop Python client (`mixed.py client`, one
process pinned to core 1) keeps N keep-alive connections busy, directly and
through an nginx reverse proxy with upstream keep-alive (also on core 0), and
times every request, fast and slow apart.

What it owns: the workload (which request of which connection is slow), the
load client, the nginx proxy config and the report with its targets. It reuses
run.py's machinery (Launcher, readiness polling, stopping by PID, the time cap).
What it must never do: send traffic anywhere but 127.0.0.1, leave a process
running, sleep a fixed time in place of a readiness check, or run longer than
--max-minutes (SIGALRM).

The workload is deterministic: connection i sends /slow on its requests k with
(k + phase_i) % 20 == 0, phase_i drawn once from a seeded RNG, so connections do
not all go slow together and every server sees the same sequence. A request's
latency runs from its send (or, after the server closed the connection, from
the connect) to the last byte of the response; requests completing in the
measured window after the warm-up count. Requests still in flight at the end
bound the maximum from below ("≥" in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import run as bench
from run import (
    BASELINE,
    GRANIAN_ONE_THREAD,
    HERE,
    HOST,
    OURS,
    PYTHON,
    SERVERS,
    Launcher,
    Server,
    fmt_ratio,
    granian,
    median,
    nginx_argv,
    package_version,
    parse_response_head,
    rotated,
    say,
)

WORKERS = 2
EVERY = 20  # one request in EVERY per connection is slow
STUCK_S = 1.0  # an in-flight request older than this at the end is "stuck"

# --- servers ------------------------------------------------------------------

_BY_NAME = {s.name: s for s in SERVERS}
MIXED_SERVERS = (
    dataclasses.replace(_BY_NAME[OURS], note="-w 2, default settings"),
    dataclasses.replace(_BY_NAME[BASELINE], note="-w 2, sync worker, --http-parser python"),
    dataclasses.replace(_BY_NAME["uwsgi"],
                        note="--http11-socket, --processes 2, no master, no threads"),
    Server("granian", "--workers 2, granian's thread defaults (1 runtime thread, blocking "
           "threads = backpressure/2 = 256 per worker)", granian(), "granian"),
    Server("granian-1t", "--workers 2 " + " ".join(GRANIAN_ONE_THREAD),
           granian(*GRANIAN_ONE_THREAD), "granian"),
)

NGINX_PROXY = """\
    upstream app {{ server {host}:UPSTREAM; keepalive 64; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def nginx_proxy(upstream: int) -> Server:
    """nginx on its own port, proxying to 127.0.0.1:upstream over keep-alive connections."""
    http = NGINX_PROXY.replace("UPSTREAM", str(upstream))
    return Server("nginx-proxy", "reverse proxy", lambda port, workers, scratch:
                  nginx_argv(port, scratch, http), "nginx")


@dataclass(frozen=True)
class Setup:
    connections: int
    proxied: bool

    @property
    def name(self) -> str:
        return f"c{self.connections}-{'nginx' if self.proxied else 'direct'}"

    @property
    def title(self) -> str:
        via = "through nginx (upstream keep-alive)" if self.proxied else "direct"
        return f"-c{self.connections}, {via}"


# --- the load client (runs as its own process: `mixed.py client ...`) -------------

FAST = f"GET /fast HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
SLOW = f"GET /slow HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


class Run:
    """The shared state of one client run: the clock, the window and the tallies."""

    def __init__(self, port: int, every: int, measure_from: float, until: float):
        self.loop = asyncio.get_running_loop()
        self.port, self.every = port, every
        self.measure_from, self.until = measure_from, until
        self.stopping = False
        self.fast: list[float] = []
        self.slow: list[float] = []
        self.bad_status = 0
        self.conn_errors = 0
        self.connects = 0

    def record(self, slow: bool, started: float, status: int) -> None:
        now = time.perf_counter()
        if not self.measure_from <= now <= self.until:
            return
        if status != 200:
            self.bad_status += 1
        else:
            (self.slow if slow else self.fast).append(now - started)


class Conn(asyncio.Protocol):
    """One TCP connection of a Driver; reads responses framed by Content-Length."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[int, int, bool] | None = None  # (status, length, keep-alive)
        self.done = False  # closed on purpose: connection_lost is no error

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.driver.opened(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.done:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = parse_response_head(bytes(self.buf[:end]))
                del self.buf[:end + 4]
                if self.head[1] < 0:  # every app here sends Content-Length
                    self.close()
                    self.driver.failed()
                    return
            status, length, keep = self.head
            if len(self.buf) < length:
                return
            del self.buf[:length]
            self.head = None
            if not keep:
                self.close()
            self.driver.answered(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.done = True
            self.driver.failed()

    def close(self) -> None:
        self.done = True
        if self.transport is not None:
            self.transport.close()


class Driver:
    """One client connection's closed loop: send, wait for the whole response, send again."""

    def __init__(self, run: Run, phase: int):
        self.run, self.phase = run, phase
        self.sent = 0
        self.conn: Conn | None = None
        self.started: float | None = None  # the request in flight, if any
        self.slow = False

    def request(self) -> None:
        if self.run.stopping:
            return
        self.slow = bool(self.run.every) and (self.sent + self.phase) % self.run.every == 0
        self.sent += 1
        self.started = time.perf_counter()
        if self.conn is None or self.conn.done:
            self.conn = None
            self.run.loop.create_task(self.connect())
        else:
            self.conn.transport.write(SLOW if self.slow else FAST)

    async def connect(self) -> None:
        try:
            await self.run.loop.create_connection(lambda: Conn(self), HOST, self.run.port)
        except OSError:
            self.run.conn_errors += 1
            self.started = None
            self.run.loop.call_later(0.01, self.request)  # back off, then a new request

    def opened(self, conn: Conn) -> None:
        self.run.connects += 1
        if self.run.stopping:
            conn.close()
            return
        self.conn = conn
        conn.transport.write(SLOW if self.slow else FAST)

    def answered(self, status: int) -> None:
        self.run.record(self.slow, self.started, status)
        self.started = None
        self.request()

    def failed(self) -> None:
        if self.run.stopping:
            return
        self.run.conn_errors += 1
        self.conn = None
        self.started = None
        self.request()


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_xs:
        return math.nan
    return sorted_xs[max(0, math.ceil(q * len(sorted_xs)) - 1)]


def summary_ms(seconds: list[float]) -> dict:
    xs = sorted(seconds)
    return {"n": len(xs), "p50": percentile(xs, 0.50) * 1e3, "p99": percentile(xs, 0.99) * 1e3,
            "max": (xs[-1] if xs else math.nan) * 1e3,
            # The latencies come in 100-ms steps (one per slow request waited behind), so a
            # percentile can jump a whole step between runs: the share past each step says
            # more (in the JSON only).
            "share_over_ms": {step: sum(x > step / 1e3 for x in xs) / max(1, len(xs))
                              for step in (100, 200, 300, 400)}}


async def drive(port: int, connections: int, warmup: float, seconds: float, every: int,
                seed: int) -> dict:
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = Run(port, every, t0 + warmup, t0 + warmup + seconds)
    rng = random.Random(seed)
    drivers = [Driver(run, rng.randrange(every) if every else 0) for _ in range(connections)]
    for d in drivers:
        d.request()
    await asyncio.sleep(run.until - time.perf_counter())  # the measured window itself
    run.stopping = True
    end = time.perf_counter()
    in_flight = [end - d.started for d in drivers if d.started is not None]
    for d in drivers:
        if d.conn is not None:
            d.conn.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    answered = len(run.fast) + len(run.slow) + run.bad_status
    return {
        "rps": answered / seconds,
        "fast": summary_ms(run.fast),
        "slow": summary_ms(run.slow),
        "errors": run.bad_status + run.conn_errors,
        "connects": run.connects,
        "oldest_in_flight_ms": max(in_flight, default=0.0) * 1e3,
        "stuck": sum(age > STUCK_S for age in in_flight),
        "client_cpu": cpu / (end - t0),
    }


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mixed.py client",
                                description="The closed-loop keep-alive client; prints JSON.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-c", "--connections", type=int, default=50)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--every", type=int, default=EVERY, help="1 in N requests is slow; 0: none")
    p.add_argument("--seed", type=int, default=20)
    args = p.parse_args(argv)
    # SIGALRM's default action ends the client, should it ever hang.
    signal.alarm(math.ceil(args.warmup + args.seconds + 30))
    gc.disable()  # no collector pauses inside the timings; a run allocates little
    result = asyncio.run(drive(args.port, args.connections, args.warmup, args.seconds,
                               args.every, args.seed))
    print(json.dumps(result))
    return 0


# --- the runs --------------------------------------------------------------------


@dataclass
class Config:
    rounds: int
    seconds: float
    warmup: float
    every: int
    server_cpu: str
    client_cpu: str


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # setup -> server -> [client summaries]
    client_check: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    truncated: bool = False


def run_client(port: int, connections: int, seconds: float, warmup: float, every: int,
               cpus: str) -> dict:
    argv = ["taskset", "-c", cpus, PYTHON, str(Path(__file__).resolve()), "client",
            "--port", str(port), "-c", str(connections), "--seconds", str(seconds),
            "--warmup", str(warmup), "--every", str(every)]
    # subprocess.run kills the client by PID on a timeout or any exception (TimeCap too).
    done = subprocess.run(argv, capture_output=True, text=True, cwd=HERE,
                          timeout=warmup + seconds + 60)
    if done.returncode:
        raise RuntimeError(f"client exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def measure(launcher: Launcher, server: Server, setup: Setup, cfg: Config) -> dict:
    with launcher.run(server, workers=WORKERS, cpus=cfg.server_cpu) as app:
        with contextlib.ExitStack() as stack:
            port = app.port
            if setup.proxied:
                proxy = stack.enter_context(launcher.run(nginx_proxy(app.port),
                                                         cpus=cfg.server_cpu))
                port = proxy.port
            return run_client(port, setup.connections, cfg.seconds, cfg.warmup, cfg.every,
                              cfg.client_cpu)


def fmt_lat(ms: float) -> str:
    if ms != ms:
        return "—"
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def overall_max(s: dict) -> tuple[float, bool]:
    """The largest latency of a run and whether a request still in flight set it."""
    done = max((x for x in (s["fast"]["max"], s["slow"]["max"]) if x == x), default=0.0)
    oldest = s["oldest_in_flight_ms"]
    return (oldest, True) if oldest > done else (done, False)


def agg(samples: list[dict], metric) -> tuple[float, float, float]:
    """(median, min, max) over rounds of metric(sample), ignoring nan."""
    xs = [x for x in (metric(s) for s in samples) if x == x]
    return (median(xs), min(xs), max(xs)) if xs else (math.nan, math.nan, math.nan)


def spread(samples: list[dict], metric, fmt) -> str:
    mid, lo, hi = agg(samples, metric)
    return fmt(mid) if len(samples) < 2 else f"{fmt(mid)} ({fmt(lo)}–{fmt(hi)})"


METRICS = {
    "fast_p50": lambda s: s["fast"]["p50"],
    "fast_p99": lambda s: s["fast"]["p99"],
    "max": lambda s: overall_max(s)[0],
}


def report(res: Results, setups: list[Setup], servers: list[Server]) -> str:
    meta = res.meta
    out = bench.report_head("mixed.py: an app with one slow endpoint —", meta)
    out.append("Latencies in ms, medians over rounds (min–max across rounds in brackets). "
               "Ratios are forkwsgi ÷ peer: below 1.00× forkwsgi's latency is lower. "
               f"`stuck`: requests in flight for over {STUCK_S:g} s when the window closed; "
               "`≥`: such a request set the maximum, which is then a lower bound. A server with "
               "stuck requests served only some of the connections; its percentiles describe "
               "those.\n")
    for setup in setups:
        by = res.samples.get(setup.name)
        if not by:
            continue
        ours = by.get(OURS, [])
        out.append(f"### {setup.title}\n")
        out.append("| server | req/s | fast p50 | fast p99 | fast max | slow p50 | slow p99 | "
                   "slow max | max, all | fast p99 ratio | max ratio | errors | stuck |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for server in servers:
            samples = by.get(server.name)
            if not samples:
                continue
            ratio = {k: agg(ours, f)[0] / agg(samples, f)[0] for k, f in METRICS.items()}
            lower_bound = any(overall_max(s)[1] for s in samples)
            name = f"**{server.name}**" if server.name == OURS else server.name
            out.append(
                f"| {name} | {spread(samples, lambda s: s['rps'], lambda x: f'{x:,.0f}')} | "
                f"{spread(samples, METRICS['fast_p50'], fmt_lat)} | "
                f"{spread(samples, METRICS['fast_p99'], fmt_lat)} | "
                f"{fmt_lat(agg(samples, lambda s: s['fast']['max'])[0])} | "
                f"{fmt_lat(agg(samples, lambda s: s['slow']['p50'])[0])} | "
                f"{fmt_lat(agg(samples, lambda s: s['slow']['p99'])[0])} | "
                f"{fmt_lat(agg(samples, lambda s: s['slow']['max'])[0])} | "
                f"{'≥ ' if lower_bound else ''}{spread(samples, METRICS['max'], fmt_lat)} | "
                f"{fmt_ratio(ratio['fast_p99'])} | {fmt_ratio(ratio['max'])} | "
                f"{sum(s['errors'] for s in samples)} | {sum(s['stuck'] for s in samples)} |")
        out.append("")
    out.append(targets(res))
    if res.client_check:
        c = res.client_check
        out.append(f"Client check: the same client with every request to /fast, -c50 against "
                   f"forkwsgi -w 2, {c['rps']:,.0f} req/s at {c['client_cpu']:.0%} of its core. "
                   f"In the runs above the client used at most {meta['client_cpu_max']:.0%} "
                   "of its core.\n")
    proxy = (f"; nginx {package_version('nginx') or '?'} as the proxy (worker_processes 1, "
             "upstream keepalive 64, proxy_http_version 1.1, Connection \"\", on the servers' "
             "core)")
    out += bench.report_foot(res, servers, proxy)
    return "\n".join(out)


def targets(res: Results) -> str:
    rows = []

    def get(setup: str, server: str, metric: str) -> float:
        return agg(res.samples.get(setup, {}).get(server, []), METRICS[metric])[0]

    for setup, via in (("c50-direct", "direct"), ("c50-nginx", "through nginx")):
        for metric, label in (("fast_p99", "fast p99"), ("max", "max, all requests")):
            ours, base = get(setup, OURS, metric), get(setup, BASELINE, metric)
            verdict = "—" if math.isnan(ours + base) else "met" if ours <= base else "missed"
            rows.append(f"| -c50 {via}: {label} ≤ gunicorn | {fmt_lat(ours)} vs {fmt_lat(base)} "
                        f"ms ({fmt_ratio(ours / base)}) | {verdict} |")
    for setup, via in (("c8-direct", "direct"), ("c8-nginx", "through nginx (for reference)")):
        p50 = get(setup, OURS, "fast_p50")
        verdict = "—" if math.isnan(p50) else "met" if p50 < 2.0 else "missed"
        rows.append(f"| -c8 {via}: fast p50 < 2 ms | {fmt_lat(p50)} ms | {verdict} |")
    return "### Targets\n\n| target | forkwsgi vs gunicorn | |\n|---|---|---|\n" + "\n".join(
        rows) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round × 3 s")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each")
    p.add_argument("--concurrency", default="8,50", help="client connections, comma-separated")
    p.add_argument("--via", default="direct,nginx", help="direct, nginx or both")
    p.add_argument("--every", type=int, default=EVERY, help="1 request in N per connection "
                   "goes to /slow (default %(default)s)")
    bench.add_run_args(p, MIXED_SERVERS, max_minutes=30.0)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 3.0, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    args = parse_args(argv)
    vias = {"direct": False, "nginx": True}
    setups = [Setup(int(c), vias[v]) for c in args.concurrency.split(",")
              for v in args.via.split(",")]
    cfg = Config(args.rounds, args.seconds, args.warmup, args.every, args.server_cpu,
                 args.client_cpu)
    res = Results()
    servers = bench.available(args.servers, MIXED_SERVERS, res.skipped)
    if any(s.proxied for s in setups) and package_version("nginx") is None:
        sys.exit("mixed.py: nginx not found; run benchmarks/setup.sh or pass --via direct")
    res.meta = bench.machine_meta(servers)
    res.meta["method"] = (
        f"{cfg.rounds} interleaved rounds × {cfg.seconds:g} s after a {cfg.warmup:g} s warm-up; "
        f"1 request in {cfg.every} to /slow (0.1 s); -w {WORKERS} on core {cfg.server_cpu}, the "
        f"client (one asyncio process, keep-alive) on core {cfg.client_cpu}")
    fingerprint = bench.src_fingerprint()
    started = time.monotonic()
    per_run = cfg.warmup + cfg.seconds + 2
    say(f"estimated {len(servers) * len(setups) * cfg.rounds * per_run / 60:.0f} min "
        f"(cap {args.max_minutes:g} min)")
    with bench.session(args.max_minutes, args.client_cpu, res) as launcher:
        launcher.pythonpath, res.meta["forkwsgi_source"] = bench.forkwsgi_source(args.rev,
                                                                           launcher.scratch)
        if OURS in [s.name for s in servers]:
            with launcher.run(MIXED_SERVERS[0], workers=WORKERS, cpus=cfg.server_cpu) as live:
                res.client_check = run_client(live.port, 50, 2.0, 1.0, 0, cfg.client_cpu)
            say(f"client check: {res.client_check['rps']:,.0f} req/s all /fast, client "
                f"at {res.client_check['client_cpu']:.0%} of its core")
        for rnd in range(cfg.rounds):
            for i, setup in enumerate(setups):
                for server in rotated(servers, rnd + i):
                    say(f"  round {rnd + 1}/{cfg.rounds}  {setup.name:<12} {server.name}")
                    try:
                        s = measure(launcher, server, setup, cfg)
                    except (RuntimeError, OSError, ValueError,
                            subprocess.SubprocessError) as exc:
                        res.failures.append(f"{server.name} {setup.name}: {exc}")
                        say(f"    FAILED: {exc}")
                        continue
                    res.samples.setdefault(setup.name, {}).setdefault(server.name, []).append(s)
                    say(f"    {s['rps']:>8,.0f} req/s  fast p50 {fmt_lat(s['fast']['p50'])} "
                        f"p99 {fmt_lat(s['fast']['p99'])}  max {fmt_lat(overall_max(s)[0])} "
                        f"ms  errors {s['errors']}  stuck {s['stuck']}  "
                        f"client {s['client_cpu']:.0%}")
    bench.close_meta(res.meta, started, fingerprint, args.rev)
    res.meta["client_cpu_max"] = max((s["client_cpu"] for by in res.samples.values()
                                      for ss in by.values() for s in ss), default=math.nan)
    return bench.publish(report(res, setups, servers), res, args.json)


if __name__ == "__main__":
    sys.exit(main())
