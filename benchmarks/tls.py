"""TLS keep-alive hello: forkwsgi serving TLS itself, beside gunicorn and granian doing so.

    bash benchmarks/setup.sh
    benchmarks/.venv/bin/python benchmarks/tls.py            # the real run (~3 min)
    benchmarks/.venv/bin/python benchmarks/tls.py --quick    # smoke test (~1 min)
    benchmarks/.venv/bin/python benchmarks/tls.py --rev HEAD # forkwsgi as committed

Every server runs `apps:app` with one worker, pinned to core 0, and terminates
TLS itself with the same certificate (ECDSA P-256, made here with the openssl
command line): forkwsgi (`--certfile --keyfile`), gunicorn's sync worker (the
same flags) and granian (`--ssl-certificate --ssl-keyfile`), at its default
threads and at one runtime thread + one blocking thread (run.py's
GRANIAN_ONE_THREAD). wrk (`-t1 -c50 --latency`, https, keep-alive) drives it
from core 1, so a handshake is paid once per connection and what is measured
is TLS on the request path: records decrypted and encrypted, and the server's
loop around them. forkwsgi over plain HTTP is a reference row: the price of TLS
on the same server. Rounds are interleaved, the order rotated per round; the
report is the median per server, with ratios against gunicorn and forkwsgi.

What it owns: the certificate, the TLS command lines, the readiness check (a GET
over TLS), the runs and the report, which names the protocol and cipher each
server settled on with a Python client (wrk's OpenSSL offers the same). It
reuses run.py's machinery (Launcher, stopping by PID, the time cap, wrk's
parser, the report head and foot). What it must never do: send traffic anywhere
but 127.0.0.1, leave a process running, sleep a fixed time in place of a
readiness check, or run past --max-minutes (SIGALRM).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import run as bench
from gateways import latency_ms
from run import (
    BASELINE,
    HERE,
    HOST,
    OURS,
    SERVERS,
    Launched,
    Launcher,
    Server,
    fmt_ratio,
    median,
    receive_response,
    rotated,
    say,
)

QUICK = {"rounds": 1, "seconds": 2, "warmup": 1}  # what --quick sets
PLAIN = f"{OURS}-http"  # the reference row: forkwsgi without TLS

# --- servers ----------------------------------------------------------------------------

_RUN = {s.name: s for s in SERVERS}


def cert_paths(scratch: Path) -> tuple[Path, Path]:
    return scratch / "tls" / "cert.pem", scratch / "tls" / "key.pem"


def make_certificate(scratch: Path) -> None:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1; the key in PKCS#8 (granian
    reads no other form)."""
    cert, key = cert_paths(scratch)
    cert.parent.mkdir(exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={HOST}", "-addext",
                    f"subjectAltName=IP:{HOST}"], check=True, capture_output=True, timeout=60)


def with_tls(base: Server, cert_flag: str, key_flag: str, note: str) -> Server:
    """run.py's command line for base, with the certificate and key flags before its APP
    (the last argument)."""
    def argv(port: int, workers: int, scratch: Path) -> list[str]:
        cmd = base.argv(port, workers, scratch)
        cert, key = cert_paths(scratch)
        return [*cmd[:-1], cert_flag, str(cert), key_flag, str(key), cmd[-1]]
    return dataclasses.replace(base, note=note, argv=argv)


TABLE = (
    with_tls(_RUN[OURS], "--certfile", "--keyfile", "1 worker, --certfile --keyfile"),
    with_tls(_RUN[BASELINE], "--certfile", "--keyfile",
             "sync worker, --http-parser python, --certfile --keyfile"),
    with_tls(_RUN["granian"], "--ssl-certificate", "--ssl-keyfile",
             "--interface wsgi, 1 worker, 1 runtime and 1 blocking thread, --ssl-certificate "
             "--ssl-keyfile"),
    with_tls(_RUN["granian-default"], "--ssl-certificate", "--ssl-keyfile",
             "--interface wsgi, 1 worker, granian's default threads, --ssl-certificate "
             "--ssl-keyfile"),
    dataclasses.replace(_RUN[OURS], name=PLAIN, note="1 worker, plain HTTP: the reference"),
)
TLS_SERVERS = frozenset(s.name for s in TABLE if s.name != PLAIN)


# --- talking to them ----------------------------------------------------------------------


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own certificate, on loopback
    return context


def https_get(port: int, timeout: float = 2.0) -> tuple[int, str]:
    """One GET over TLS on a fresh connection: (status, "TLSv1.3 TLS_AES_256_GCM_SHA384")."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw, \
            client_context().wrap_socket(raw, server_hostname=HOST) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        status, _, _, _ = receive_response(sock)
        return status, f"{sock.version()} {sock.cipher()[0]}"


def wait_ready(live: Launched, tls: bool, timeout: float = 30.0) -> str:
    """Poll with a real GET (over TLS for a TLS server) until it answers 200; the
    protocol and cipher it settled on ("" over plain HTTP)."""
    if not tls:
        bench.wait_ready(live, timeout)
        return ""
    deadline = time.monotonic() + timeout
    while True:
        if live.proc.poll() is not None:
            raise RuntimeError(f"{live.server.name} exited with {live.proc.returncode}:\n"
                               f"{live.log_tail()}")
        with contextlib.suppress(OSError):
            status, settled = https_get(live.port)
            if status == 200:
                return settled
        if time.monotonic() > deadline:
            raise RuntimeError(f"{live.server.name} not ready after {timeout:.0f}s:\n"
                               f"{live.log_tail()}")
        time.sleep(0.01)


def wrk(port: int, tls: bool, seconds: int, cfg: bench.Config) -> str:
    scheme = "https" if tls else "http"
    cmd = ["taskset", "-c", cfg.client_cpu, "wrk", "-t1", f"-c{cfg.connections}",
           f"-d{seconds}s", "--latency", f"{scheme}://{HOST}:{port}/"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    return done.stdout + done.stderr


# --- the runs -------------------------------------------------------------------------


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # server -> [samples]
    settled: dict = field(default_factory=dict)  # server -> "TLSv1.3 <cipher>"
    failures: list = field(default_factory=list)
    truncated: bool = False


def measure(launcher: Launcher, server: Server, cfg: bench.Config, res: Results) -> dict:
    tls = server.name in TLS_SERVERS
    with launcher.run(server, cpus=cfg.server_cpu, ready=False) as live:
        settled = wait_ready(live, tls)
        if settled:
            res.settled[server.name] = settled
        if cfg.warmup:
            wrk(live.port, tls, cfg.warmup, cfg)
        out = wrk(live.port, tls, cfg.seconds, cfg)
        return {**bench.parse_wrk(out).__dict__, **latency_ms(out), **live.memory()}


def run_rounds(launcher: Launcher, servers: list[Server], cfg: bench.Config,
               res: Results) -> None:
    for rnd in range(cfg.rounds):
        for server in rotated(servers, rnd):
            say(f"  round {rnd + 1}/{cfg.rounds}  {server.name}")
            try:
                s = measure(launcher, server, cfg, res)
            except (RuntimeError, OSError, subprocess.SubprocessError, psutil.Error) as exc:
                res.failures.append(f"{server.name} round {rnd + 1}: {exc}")
                say(f"    FAILED: {exc}")
                continue
            res.samples.setdefault(server.name, []).append(s)
            flag = f"  ({s['errors']} errors)" if s["errors"] else ""
            say(f"    {s['rps']:>10,.0f} req/s  p99 {s['p99']:.2f} ms{flag}")


# --- report ---------------------------------------------------------------------------


def rps(res: Results, name: str) -> float:
    return median([s["rps"] for s in res.samples.get(name, [])])


def report(res: Results, servers: list[Server]) -> str:
    out = bench.report_head("tls.py: TLS keep-alive hello, one worker —", res.meta)
    out.append("Each server terminates TLS itself with the same certificate; wrk keeps its "
               "50 connections alive, so the handshakes are a negligible share and the "
               "figures are TLS on the request path. req/s and p50/p99 are medians over "
               "rounds, `max` the largest of any round; `errors`: wrk's socket errors and "
               "non-2xx answers. The plain-HTTP forkwsgi row is the reference: what TLS "
               "costs the same server.\n")
    base, ours = rps(res, BASELINE), rps(res, OURS)
    out.append("| server | TLS | req/s (median) | min – max | ÷ gunicorn | ÷ forkwsgi | "
               "p50 ms | p99 ms | max ms | RSS MiB | errors |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    shown = [s.name for s in servers if res.samples.get(s.name)]
    for name in sorted(shown, key=lambda n: rps(res, n), reverse=True):
        samples = res.samples[name]
        xs = [s["rps"] for s in samples]
        mid = rps(res, name)
        label = f"**{name}**" if name == OURS else name
        out.append(
            f"| {label} | {res.settled.get(name, 'none')} | {mid:,.0f} | "
            f"{min(xs):,.0f} – {max(xs):,.0f} | {fmt_ratio(mid / base if base else math.nan)} | "
            f"{fmt_ratio(mid / ours if ours else math.nan)} | "
            f"{median([s['p50'] for s in samples]):.2f} | "
            f"{median([s['p99'] for s in samples]):.2f} | {max(s['max'] for s in samples):.1f} | "
            f"{median([s['rss_mib'] for s in samples]):.1f} | "
            f"{sum(s['errors'] for s in samples)} |")
    out.append("")
    plain = rps(res, PLAIN)
    if not math.isnan(ours) and not math.isnan(plain):
        out.append(f"TLS costs forkwsgi {1 - ours / plain:.0%} of its plain-HTTP req/s "
                   f"({ours:,.0f} vs {plain:,.0f}).\n")
    out += bench.report_foot(res, servers, "; wrk over https (OpenSSL), no verification")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: " + ", ".join(
        f"--{k} {v}" for k, v in QUICK.items()))
    p.add_argument("--seconds", type=int, default=10, help="wrk seconds per measurement")
    p.add_argument("--warmup", type=int, default=2, help="wrk warm-up seconds before each")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--results", type=Path, default=HERE / "results",
                   help="where the Markdown report is saved")
    bench.add_run_args(p, TABLE, max_minutes=10.0)
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = bench.Config(args.rounds, args.seconds, args.warmup, args.connections,
                       args.server_cpu, args.client_cpu, cold_starts=0, probes=0,
                       syscall_requests=0)
    res = Results()
    servers = bench.available(args.servers, TABLE, res.skipped)
    res.meta = bench.machine_meta(servers)
    res.meta["method"] = (
        f"{cfg.rounds} interleaved rounds × {cfg.seconds} s after a {cfg.warmup} s warm-up, "
        f"wrk -t1 -c{cfg.connections} --latency over https on core {cfg.client_cpu}, the "
        f"server (one worker) on core {cfg.server_cpu}")
    fingerprint, started = bench.src_fingerprint(), time.monotonic()
    say(f"estimated {cfg.rounds * len(servers) * (cfg.warmup + cfg.seconds + 1.5) / 60:.1f} "
        f"min (cap {args.max_minutes:g} min)")
    with bench.session(args.max_minutes, args.client_cpu, res) as launcher:
        launcher.pythonpath, res.meta["forkwsgi_source"] = bench.forkwsgi_source(
            args.rev, launcher.scratch)
        make_certificate(launcher.scratch)
        run_rounds(launcher, servers, cfg, res)
    bench.close_meta(res.meta, started, fingerprint, args.rev)
    text = report(res, servers)
    args.results.mkdir(parents=True, exist_ok=True)
    saved = args.results / (f"tls-{time.strftime('%Y-%m-%d-%H%M')}"
                            f"{'-quick' if args.quick else ''}.txt")
    saved.write_text(text + "\n")
    say(f"saved {saved}")
    return bench.publish(text, res, args.json)


if __name__ == "__main__":
    sys.exit(main())
