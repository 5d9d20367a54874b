"""Gateway protocols behind nginx: forkwsgi over HTTP, uwsgi, SCGI and FastCGI beside uWSGI.

    bash benchmarks/setup.sh
    benchmarks/.venv/bin/python benchmarks/gateways.py            # the real run (~5 min)
    benchmarks/.venv/bin/python benchmarks/gateways.py --quick    # smoke test (~1 min)
    benchmarks/.venv/bin/python benchmarks/gateways.py --rev HEAD # forkwsgi as committed

A configuration is one app server speaking one protocol to one nginx in front
of it: forkwsgi (`-w 1`) over HTTP, uwsgi, SCGI and FastCGI, and uWSGI (one
process, no master, no threads) over uwsgi (`--socket`), FastCGI
(`--fastcgi-socket`), SCGI (`--scgi-socket`) and HTTP (`--http-socket`). The
app server and nginx (one worker) share core 0; wrk (`-t1 -c50 --latency`,
keep-alive) drives nginx from core 1, on `/` (hello) and `/64k`. nginx keeps
its upstream connections alive where the server does: HTTP to forkwsgi
(`keepalive` pool, `proxy_http_version 1.1`) and FastCGI to forkwsgi
(`fastcgi_keep_conn on` and the pool). uwsgi and SCGI carry one request per
connection; uWSGI closes its FastCGI and `--http-socket` connections after
every response whatever nginx asks, so nginx gets no pool there (with one,
it logs the closed connections as errors and retries). Every gateway protocol
gets the same CGI variables, nginx's `uwsgi_params` (PATH_INFO from
$document_uri, no SCRIPT_NAME), so the protocols differ by their framing only.

What it owns: the configurations (app server command line, nginx config per
protocol), the runs and the report with its targets and the protocol to pick.
It reuses run.py's machinery (Launcher, stopping by PID, the time cap, wrk and
its parser, the report head and foot). What it must never do: send traffic
anywhere but 127.0.0.1, leave a process running, sleep a fixed time in place of
a readiness check (a real GET through nginx), or run past --max-minutes
(SIGALRM).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import run as bench
from run import (
    HERE,
    HOST,
    OURS,
    SCENARIOS,
    SERVERS,
    Launched,
    Launcher,
    Scenario,
    Server,
    fmt_ratio,
    median,
    nginx_argv,
    package_version,
    rotated,
    say,
)

PEER = "uwsgi"
PROTOCOLS = {"http": "HTTP", "uwsgi": "uwsgi", "scgi": "SCGI", "fastcgi": "FastCGI"}
SHOWN_AS = {OURS: f"**{OURS}**", PEER: "uWSGI"}
TARGETED = ("uwsgi", "fastcgi")  # the targets; the other protocols are for reference
POOL = 64  # nginx's idle upstream connections (more than wrk's 50)
SCENARIO_NAMES = ("hello", "body64k")
QUICK = {"rounds": 1, "seconds": 2, "warmup": 1}  # what --quick sets

# --- configurations ---------------------------------------------------------------

_RUN = {s.name: s for s in SERVERS}


def listening(base: Server, flag: str, new_flag: str, scheme: str = "") -> Callable:
    """run.py's command line for base, with its listener (`flag ADDRESS`) replaced by
    `new_flag SCHEME127.0.0.1:PORT`: every other flag stays as run.py has it."""
    def argv(port: int, workers: int, scratch: Path) -> list[str]:
        cmd = base.argv(port, workers, scratch)
        at = cmd.index(flag)
        cmd[at:at + 2] = [new_flag, f"{scheme}{HOST}:{port}"]
        return cmd
    return argv


def forkwsgi_over(scheme: str) -> Callable:
    return listening(_RUN[OURS], "-b", "-b", f"{scheme}://")


def uwsgi_over(flag: str) -> Callable:
    return listening(_RUN[PEER], "--http11-socket", flag)


@dataclass(frozen=True)
class Gateway:
    server: Server  # the app server; its name is "who:protocol"
    protocol: str
    keepalive: bool  # nginx keeps its connections to the server alive

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def who(self) -> str:
        return self.name.partition(":")[0]


def gateway(who: str, protocol: str, argv: Callable, note: str, keepalive: bool) -> Gateway:
    package = "forkwsgi" if who == OURS else PEER
    return Gateway(Server(f"{who}:{protocol}", note, argv, package), protocol, keepalive)


GATEWAYS = (
    gateway(OURS, "http", _RUN[OURS].argv, "-w 1, nginx proxy_pass with upstream keepalive",
            keepalive=True),
    gateway(OURS, "uwsgi", forkwsgi_over("uwsgi"), "-w 1, -b uwsgi://", keepalive=False),
    gateway(OURS, "scgi", forkwsgi_over("scgi"), "-w 1, -b scgi://", keepalive=False),
    gateway(OURS, "fastcgi", forkwsgi_over("fastcgi"),
            "-w 1, -b fastcgi://, nginx fastcgi_keep_conn on with upstream keepalive",
            keepalive=True),
    gateway(PEER, "uwsgi", uwsgi_over("--socket"), "--socket", keepalive=False),
    gateway(PEER, "fastcgi", uwsgi_over("--fastcgi-socket"),
            "--fastcgi-socket (closes after every response)", keepalive=False),
    gateway(PEER, "scgi", uwsgi_over("--scgi-socket"), "--scgi-socket", keepalive=False),
    gateway(PEER, "http", uwsgi_over("--http-socket"),
            "--http-socket (closes after every response)", keepalive=False),
)
TABLE = tuple(g.server for g in GATEWAYS)
BY_NAME = {g.name: g for g in GATEWAYS}

# nginx's uwsgi_params as nginx ships them, for every gateway protocol.
CGI_PARAMS = (
    ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
    ("REQUEST_URI", "$request_uri"), ("PATH_INFO", "$document_uri"),
    ("DOCUMENT_ROOT", "$document_root"), ("SERVER_PROTOCOL", "$server_protocol"),
    ("REQUEST_SCHEME", "$scheme"), ("HTTPS", "$https if_not_empty"),
    ("REMOTE_ADDR", "$remote_addr"), ("REMOTE_PORT", "$remote_port"),
    ("SERVER_PORT", "$server_port"), ("SERVER_NAME", "$server_name"),
)


def params(directive: str, *extra: tuple[str, str], leave_out: str = "") -> str:
    return " ".join(f"{directive} {name} {value};" for name, value in (*CGI_PARAMS, *extra)
                    if name != leave_out)


def hand_over(gw: Gateway) -> str:
    """The nginx directives of the location that passes a request to upstream `app`."""
    if gw.protocol == "http":
        reuse = ' proxy_http_version 1.1; proxy_set_header Connection "";'
        return "proxy_pass http://app;" + (reuse if gw.keepalive else "")
    if gw.protocol == "uwsgi":
        return params("uwsgi_param") + " uwsgi_pass app;"
    if gw.protocol == "scgi":
        # nginx writes CONTENT_LENGTH itself, first, as SCGI wants.
        return params("scgi_param", ("SCGI", "1"), leave_out="CONTENT_LENGTH") + " scgi_pass app;"
    keep = " fastcgi_keep_conn on;" if gw.keepalive else ""
    return params("fastcgi_param") + keep + " fastcgi_pass app;"


NGINX_FRONT = """\
    upstream app {{ server {host}:UPSTREAM;POOL }}
    server {{
        listen {host}:{port};
        location / {{ PASS }}
    }}"""


def nginx_front(gw: Gateway, upstream: int) -> Server:
    """nginx on its own port, passing every request to the app server on `upstream`."""
    http = (NGINX_FRONT.replace("UPSTREAM", str(upstream))
            .replace("POOL", f" keepalive {POOL};" if gw.keepalive else "")
            .replace("PASS", hand_over(gw)))
    return Server("nginx", f"in front of {gw.name}",
                  lambda port, workers, scratch: nginx_argv(port, scratch, http), "nginx")


# --- the runs -------------------------------------------------------------------------


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # scenario -> configuration -> [samples]
    failures: list = field(default_factory=list)
    truncated: bool = False


LATENCY_ROW = re.compile(r"^[ \t]*Latency[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)", re.M)
PERCENTILE_ROW = re.compile(r"^[ \t]*(50|99)%[ \t]+(\S+)", re.M)


def latency_ms(out: str) -> dict[str, float]:
    """p50, p99 and max in ms from the output of `wrk --latency`."""
    found = {f"p{q}": bench.parse_duration_ms(v) for q, v in PERCENTILE_ROW.findall(out)}
    row = LATENCY_ROW.search(out)
    return {"p50": found.get("p50", math.nan), "p99": found.get("p99", math.nan),
            "max": bench.parse_duration_ms(row.group(3)) if row else math.nan}


def upstream_errors(log: Path, offset: int) -> int:
    """nginx's error-level lines in its log past offset: failures it hid from the client
    by retrying (a closed keep-alive connection), or answered with 502."""
    with log.open("rb") as f:
        f.seek(offset)
        return sum(re.search(rb"\[(error|crit|alert|emerg)\]", line) is not None for line in f)


def wait_through(front: Launched, app: Launched, timeout: float = 30.0) -> None:
    """Poll with a real GET through nginx until the app answers 200 (nginx answers 502
    until the app server listens); fail early if the app server exits."""
    deadline = time.monotonic() + timeout
    while True:
        if app.proc.poll() is not None:
            raise RuntimeError(f"{app.server.name} exited with {app.proc.returncode}:\n"
                               f"{app.log_tail()}")
        try:
            bench.wait_ready(front, timeout=0.2)
            return
        except RuntimeError as exc:
            if front.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{exc}\n{app.server.name}:\n{app.log_tail()}") from None


def measure(launcher: Launcher, gw: Gateway, sc: Scenario, cfg: bench.Config) -> dict:
    sc = dataclasses.replace(sc, wrk_args=("--latency", *sc.wrk_args))
    with launcher.run(gw.server, cpus=cfg.server_cpu, ready=False) as app, \
            launcher.run(nginx_front(gw, app.port), cpus=cfg.server_cpu, ready=False) as front:
        wait_through(front, app)
        if cfg.warmup:
            bench.wrk(front.port, sc, cfg.warmup, cfg.connections, cfg.client_cpu)
        log = launcher.scratch / f"nginx-{front.port}" / "nginx-error.log"
        offset = log.stat().st_size
        cmd = bench.wrk_command(front.port, sc, cfg.seconds, cfg.connections, cfg.client_cpu)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.seconds + 30)
        out = done.stdout + done.stderr
        return {**bench.parse_wrk(out).__dict__, **latency_ms(out),
                "nginx_errors": upstream_errors(log, offset)}


Step = tuple[int, Scenario, Gateway]  # (round, scenario, configuration)


def plan(gateways: list[Gateway], scenarios: list[Scenario], rounds: int) -> list[Step]:
    """Every measurement in its order: round by round, each scenario with every
    configuration, the order rotated per round and scenario so drift hits all alike."""
    return [(rnd, sc, gw) for rnd in range(rounds) for i, sc in enumerate(scenarios)
            for gw in rotated(gateways, rnd + i)]


def run_plan(launcher: Launcher, steps: list[Step], cfg: bench.Config, res: Results) -> None:
    for n, (rnd, sc, gw) in enumerate(steps, 1):
        say(f"  {n}/{len(steps)}  round {rnd + 1}  {sc.name:<8} {gw.name}")
        try:
            s = measure(launcher, gw, sc, cfg)
        except (RuntimeError, OSError, subprocess.SubprocessError, psutil.Error) as exc:
            res.failures.append(f"{gw.name} {sc.name} round {rnd + 1}: {exc}")
            say(f"    FAILED: {exc}")
            continue
        res.samples.setdefault(sc.name, {}).setdefault(gw.name, []).append(s)
        say(f"    {s['rps']:>9,.0f} req/s  p50 {fmt_ms(s['p50'])}  p99 {fmt_ms(s['p99'])} ms  "
            f"errors {s['errors']}  nginx errors {s['nginx_errors']}")


# --- report ---------------------------------------------------------------------------


def fmt_ms(ms: float) -> str:
    if ms != ms:
        return "—"
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def rps(res: Results, scenario: str, name: str | None) -> float:
    """The median req/s of a configuration; nan when it has no sample (or is None)."""
    return median([s["rps"] for s in res.samples.get(scenario, {}).get(name, [])])


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def fmt_rps(x: float) -> str:
    return "—" if x != x else f"{x:,.0f}"


def peer_of(gw: Gateway) -> str | None:
    """The uWSGI configuration on the same protocol as a forkwsgi one."""
    twin = f"{PEER}:{gw.protocol}"
    return twin if gw.who == OURS and twin in BY_NAME else None


def scenario_table(res: Results, sc: Scenario, gateways: list[Gateway]) -> list[str]:
    by = res.samples.get(sc.name, {})
    out = [f"### {sc.title}, through nginx\n",
           "| server | protocol | nginx ↔ server | req/s (median) | min – max | p50 ms | "
           "p99 ms | max ms | ÷ uWSGI, same protocol | errors | nginx errors |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    shown = [g for g in gateways if by.get(g.name)]
    for gw in sorted(shown, key=lambda g: rps(res, sc.name, g.name), reverse=True):
        samples = by[gw.name]
        xs = [s["rps"] for s in samples]
        mid = rps(res, sc.name, gw.name)
        twin = peer_of(gw)
        vs_peer = fmt_ratio(ratio(mid, rps(res, sc.name, twin))) if twin else ""
        conn = "kept alive" if gw.keepalive else "one per request"
        out.append(
            f"| {SHOWN_AS[gw.who]} | {PROTOCOLS[gw.protocol]} | {conn} | {mid:,.0f} | "
            f"{min(xs):,.0f} – {max(xs):,.0f} | {fmt_ms(median([s['p50'] for s in samples]))} | "
            f"{fmt_ms(median([s['p99'] for s in samples]))} | "
            f"{fmt_ms(max(s['max'] for s in samples))} | {vs_peer} | "
            f"{sum(s['errors'] for s in samples)} | {sum(s['nginx_errors'] for s in samples)} |")
    out.append("")
    return out


def targets(res: Results, scenarios: list[Scenario], gateways: list[Gateway]) -> list[str]:
    out = ["### Targets: forkwsgi ≥ 1.00× uWSGI on the same protocol\n",
           "| scenario | protocol | forkwsgi vs uWSGI req/s | ratio | |",
           "|---|---|---:|---:|---|"]
    for sc in scenarios:
        for gw in gateways:
            twin = peer_of(gw)
            if not twin:
                continue
            ours, peer = rps(res, sc.name, gw.name), rps(res, sc.name, twin)
            if math.isnan(ours) and math.isnan(peer):
                continue
            if gw.protocol not in TARGETED:
                verdict = "for reference"
            else:
                verdict = "—" if math.isnan(ours + peer) else "met" if ours >= peer else "missed"
            out.append(f"| {sc.title} | {PROTOCOLS[gw.protocol]} | {fmt_rps(ours)} vs "
                       f"{fmt_rps(peer)} | {fmt_ratio(ratio(ours, peer))} | {verdict} |")
    out.append("")
    out.append("The targets are on uwsgi and FastCGI; SCGI and HTTP are for reference. Over "
               "HTTP nginx keeps its connections to forkwsgi alive, while uWSGI's "
               "`--http-socket` closes each one (its keep-alive `--http11-socket` would hold "
               "one connection per process while nginx's others wait).\n")
    return out


def which_protocol(res: Results, scenarios: list[Scenario], gateways: list[Gateway]) -> list[str]:
    """The forkwsgi protocol with the best req/s over the scenarios (geometric mean of its
    share of each scenario's fastest), and how the others compare."""
    ours = [g for g in gateways if g.who == OURS]
    share: dict[str, list[float]] = {g.name: [] for g in ours}
    lines = []
    for sc in scenarios:
        measured = {g.name: rps(res, sc.name, g.name) for g in ours}
        measured = {k: v for k, v in measured.items() if v > 0}  # nan > 0 is False
        if not measured:
            continue
        best = max(measured, key=measured.get)
        others = ", ".join(f"{PROTOCOLS[BY_NAME[k].protocol]} {fmt_ratio(v / measured[best])}"
                           for k, v in sorted(measured.items(), key=lambda kv: -kv[1])
                           if k != best)
        lines.append(f"- {sc.title}: {PROTOCOLS[BY_NAME[best].protocol]} is fastest "
                     f"({measured[best]:,.0f} req/s){'; ' + others + ' of it' if others else ''}.")
        for k, v in measured.items():
            share[k].append(v / measured[best])
    full = {k: v for k, v in share.items() if v and len(v) == len(lines)}
    if not full:
        return []
    mean = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in full.items()}
    pick = max(mean, key=mean.get)
    rest = "; ".join(f"{PROTOCOLS[BY_NAME[k].protocol]} {fmt_ratio(v)}"
                     for k, v in sorted(mean.items(), key=lambda kv: -kv[1]) if k != pick)
    head = (f"**Behind nginx, pick forkwsgi over {PROTOCOLS[BY_NAME[pick].protocol]}**: the "
            f"most req/s over {len(lines)} scenario(s) (geometric mean of each protocol's share "
            f"of the fastest: {rest or 'no other protocol measured'}).")
    return ["### Which protocol behind nginx\n", head, "", *lines, ""]


def report(res: Results, scenarios: list[Scenario], gateways: list[Gateway]) -> str:
    out = bench.report_head("gateways.py: forkwsgi's gateway protocols behind nginx —",
                            res.meta)
    out.append("Every row is one app server process (one worker) and one nginx (one worker) "
               "in front of it, both on the servers' core; wrk keeps its connections to nginx "
               "alive. `nginx ↔ server`: whether nginx reuses its connections to the server. "
               "req/s and p50/p99 are medians over rounds, `max` the largest of any round. "
               "`errors`: wrk's socket errors and non-2xx answers; `nginx errors`: error lines "
               "in nginx's log during the measurement (an upstream failure nginx retried or "
               "answered with 502).\n")
    for sc in scenarios:
        if res.samples.get(sc.name):
            out += scenario_table(res, sc, gateways)
    out += targets(res, scenarios, gateways)
    out += which_protocol(res, scenarios, gateways)
    nginx = (f"; nginx {package_version('nginx') or '?'} in front (worker_processes 1, "
             f"upstream keepalive {POOL} where kept alive, nginx's uwsgi_params variables for "
             "every gateway protocol)")
    out += bench.report_foot(res, [g.server for g in gateways], nginx)
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: " + ", ".join(
        f"--{k} {v}" for k, v in QUICK.items()))
    p.add_argument("--seconds", type=int, default=5, help="wrk seconds per measurement")
    p.add_argument("--warmup", type=int, default=1, help="wrk warm-up seconds before each")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--scenarios", default=",".join(SCENARIO_NAMES),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--results", type=Path, default=HERE / "results",
                   help="where the Markdown report is saved")
    bench.add_run_args(p, TABLE, max_minutes=20.0)
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if package_version("nginx") is None:
        sys.exit("gateways.py: nginx not found; run benchmarks/setup.sh")
    scenarios = bench.pick(args.scenarios, tuple(s for s in SCENARIOS
                                                 if s.name in SCENARIO_NAMES), "scenario")
    cfg = bench.Config(args.rounds, args.seconds, args.warmup, args.connections,
                       args.server_cpu, args.client_cpu, cold_starts=0, probes=0,
                       syscall_requests=0)
    res = Results()
    gateways = [BY_NAME[s.name] for s in bench.available(args.servers, TABLE, res.skipped)]
    res.meta = bench.machine_meta([g.server for g in gateways])
    res.meta["method"] = (
        f"{cfg.rounds} interleaved rounds × {cfg.seconds} s after a {cfg.warmup} s warm-up, "
        f"wrk -t1 -c{cfg.connections} --latency on core {cfg.client_cpu} against nginx; the "
        f"app server and nginx on core {cfg.server_cpu}")
    steps = plan(gateways, scenarios, cfg.rounds)
    fingerprint, started = bench.src_fingerprint(), time.monotonic()
    say(f"estimated {len(steps) * (cfg.warmup + cfg.seconds + 1.5) / 60:.0f} min "
        f"(cap {args.max_minutes:g} min)")
    with bench.session(args.max_minutes, args.client_cpu, res) as launcher:
        launcher.pythonpath, res.meta["forkwsgi_source"] = bench.forkwsgi_source(args.rev,
                                                                           launcher.scratch)
        run_plan(launcher, steps, cfg, res)
    bench.close_meta(res.meta, started, fingerprint, args.rev)
    text = report(res, scenarios, gateways)
    args.results.mkdir(parents=True, exist_ok=True)
    saved = args.results / (f"gateways-{time.strftime('%Y-%m-%d-%H%M')}"
                            f"{'-quick' if args.quick else ''}.txt")
    saved.write_text(text + "\n")
    say(f"saved {saved}")
    return bench.publish(text, res, args.json)


if __name__ == "__main__":
    sys.exit(main())
