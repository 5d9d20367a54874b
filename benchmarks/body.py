"""Request-body throughput through the app's wsgi.input: forkwsgi beside gunicorn, on loopback.

    bash benchmarks/setup.sh
    benchmarks/.venv/bin/python benchmarks/body.py            # the real run (1-4 min)
    benchmarks/.venv/bin/python benchmarks/body.py --quick    # smoke test (~10 s)
    benchmarks/.venv/bin/python benchmarks/body.py --rev HEAD # forkwsgi as committed

The client POSTs bodies of 1, 16 and 64 MiB (b"x" only: no newline, so a line
reader meets one 64 MiB "line"), framed by Content-Length and by
Transfer-Encoding: chunked (64 KiB chunks), several per size over one keep-alive
connection, to three routes of apps.py: /read (read(64 KiB) to the end),
/readall (one read()) and /lines (``for line in wsgi.input``). Each app answers
the byte count, which the client checks. Per request it measures the wall time
(first byte sent to last byte of the response) and the CPU time of the worker
process (user + system, from /proc/PID/task/*/schedstat in nanoseconds; psutil's
cpu_times counts 10 ms ticks, too coarse for a 1 MiB request, and is kept in the
JSON beside it), taken once the worker sleeps again. Cost that is linear in the
size has CPU per MiB at 64 MiB equal to CPU per MiB at 1 MiB.

What it owns: the body workload, its client and the report. It reuses run.py's
machinery (Launcher, readiness polling, stopping by PID, the time cap). What it
must never do: send traffic anywhere but 127.0.0.1, leave a process running,
sleep a fixed time in place of polling, or let one request run past
--request-cap (the rest of that route and framing is then skipped and reported
as "> cap").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import run as bench
from run import (
    BASELINE,
    HOST,
    OURS,
    fmt_ratio,
    median,
    receive_response,
    rotated,
    say,
)

MIB = 2**20
SIZES_MIB = (1, 16, 64)
ROUTES = ("read", "readall", "lines")
FRAMINGS = ("length", "chunked")
NO_BUFFERING = "--no-request-buffering"

BLOCK = b"x" * MIB  # what a Content-Length body is sent in
CHUNK = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
CHUNKED_BLOCK = CHUNK * (MIB // 65536)  # 1 MiB of payload in 64 KiB chunks
LAST_CHUNK = b"0\r\n\r\n"

# --- servers ------------------------------------------------------------------

_BY_NAME = {s.name: s for s in bench.SERVERS}


def _no_buffering(port: int, workers: int, scratch: Path) -> list[str]:
    argv = _BY_NAME[OURS].argv(port, workers, scratch)
    return [*argv[:-1], NO_BUFFERING, argv[-1]]


BODY_SERVERS = (
    dataclasses.replace(_BY_NAME[OURS], note="1 worker, default settings"),
    bench.Server("forkwsgi-nobuf", f"1 worker, {NO_BUFFERING}", _no_buffering, "forkwsgi"),
    dataclasses.replace(_BY_NAME[BASELINE], note="1 worker, sync, --http-parser python"),
)


def lists_flag(launcher: bench.Launcher, flag: str) -> bool:
    """Does `python -m forkwsgi --help`, from the source the servers run, list flag?"""
    done = subprocess.run([bench.PYTHON, "-m", "forkwsgi", "--help"], capture_output=True,
                          text=True, env=launcher.env(), timeout=30)
    return flag in done.stdout


# --- the worker's CPU -------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of pid, in ns (schedstat's first field: time on a CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total


def wait_asleep(pid: int, timeout: float = 10.0) -> None:
    """Poll until no thread of pid is running: the worker is done with the request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                states.add((task / "stat").read_bytes().rpartition(b")")[2].split()[0])
        if not states & {b"R", b"D"}:  # neither running nor in an uninterruptible wait
            return
        time.sleep(0.001)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


# --- the client -------------------------------------------------------------------------


class CapExceeded(Exception):
    """One request took longer than --request-cap."""


def body_pieces(size: int, chunked: bool) -> Iterator[bytes | memoryview]:
    if not chunked:
        for start in range(0, size, MIB):
            yield memoryview(BLOCK)[:min(MIB, size - start)]
        return
    whole, rest = divmod(size, MIB)
    yield from [CHUNKED_BLOCK] * whole
    if rest:  # the warm-up's 64 KiB
        yield CHUNK * (rest // 65536)
    yield LAST_CHUNK


class Client:
    """One keep-alive connection to a server, reopened when the server closes it."""

    def __init__(self, port: int, cap: float):
        self.port, self.cap = port, cap
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, route: str, size: int, chunked: bool) -> tuple[float, int, bytes]:
        """POST size bytes to /route; returns (wall seconds, status, response body)."""
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        head = f"POST /{route} HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\n\r\n".encode()
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=self.cap)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = bytearray()
        t0 = time.perf_counter()
        deadline = t0 + self.cap
        try:
            self.sock.sendall(head)
            for piece in body_pieces(size, chunked):
                self.sock.settimeout(max(0.01, deadline - time.perf_counter()))
                self.sock.sendall(piece)
            self.sock.settimeout(max(0.01, deadline - time.perf_counter()))
            status, keep, body, self.buf = receive_response(self.sock, self.buf)
        except TimeoutError as exc:
            self.close()
            raise CapExceeded from exc
        except OSError:
            self.close()
            raise
        wall = time.perf_counter() - t0
        if wall > self.cap:
            self.close()
            raise CapExceeded
        if not keep:
            self.close()
        return wall, status, body


# --- the runs ------------------------------------------------------------------


@dataclass
class Config:
    rounds: int
    requests: int  # per size, at most
    size_seconds: float  # stop repeating a size once its requests took this long
    request_cap: float
    sizes: tuple[int, ...]
    server_cpu: str


@dataclass
class Results:
    meta: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    # "server/framing/route" -> "size MiB" -> [per round: [per request: {...}]]
    samples: dict = field(default_factory=dict)
    peak_rss_mib: dict = field(default_factory=dict)  # cell -> [per round]
    capped: dict = field(default_factory=dict)  # cell -> smallest size (MiB) that hit the cap
    unsupported: dict = field(default_factory=dict)  # cell -> why
    failures: list = field(default_factory=list)
    truncated: bool = False


def one_request(client: Client, worker: psutil.Process, route: str, size: int,
                chunked: bool) -> dict:
    wait_asleep(worker.pid)
    cpu0, ticks0 = cpu_ns(worker.pid), worker.cpu_times()
    wall, status, body = client.post(route, size, chunked)
    wait_asleep(worker.pid)
    cpu1, ticks1 = cpu_ns(worker.pid), worker.cpu_times()
    if status != 200 or body != str(size).encode():
        raise RuntimeError(f"/{route} {size} bytes: status {status}, answered {body[:80]!r}")
    return {"wall_s": wall, "cpu_s": (cpu1 - cpu0) / 1e9,
            "psutil_cpu_s": (ticks1.user + ticks1.system) - (ticks0.user + ticks0.system)}


def run_cell(launcher: bench.Launcher, server: bench.Server, framing: str, route: str,
             cfg: Config, res: Results) -> None:
    """One fresh server, one route and framing: a warm-up, then every size in turn."""
    cell = f"{server.name}/{framing}/{route}"
    chunked = framing == "chunked"
    capped_at = res.capped.get(cell, math.inf)
    with launcher.run(server, cpus=cfg.server_cpu) as live:
        worker = live.workers()[0]
        client = Client(live.port, cfg.request_cap)
        try:
            _, status, body = client.post(route, 65536, chunked)  # warm-up
            if status == 501:
                res.unsupported[cell] = "501: no wsgi.input_terminated"
                return
            if status != 200 or body != b"65536":
                raise RuntimeError(f"warm-up: status {status}, answered {body[:80]!r}")
            for mib in cfg.sizes:
                if mib >= capped_at:
                    break
                runs, spent = [], 0.0
                while len(runs) < cfg.requests and (not runs or spent < cfg.size_seconds):
                    try:
                        runs.append(one_request(client, worker, route, mib * MIB, chunked))
                    except CapExceeded:
                        res.capped[cell] = mib
                        say(f"    {mib:>3} MiB: over {cfg.request_cap:g} s; skipping the rest")
                        break
                    spent += runs[-1]["wall_s"]
                if runs:
                    res.samples.setdefault(cell, {}).setdefault(str(mib), []).append(runs)
                    say(f"    {mib:>3} MiB: {mib / median([r['wall_s'] for r in runs]):8.1f} "
                        f"MiB/s  CPU {median([r['cpu_s'] for r in runs]):.3f} s  "
                        f"({len(runs)} requests)")
                if cell in res.capped:
                    break
            res.peak_rss_mib.setdefault(cell, []).append(peak_rss_mib(worker.pid))
        finally:
            client.close()


# --- the report ---------------------------------------------------------------------------


def round_medians(cell: dict, mib: int, key: str) -> list[float]:
    return [median([r[key] for r in runs]) for runs in cell.get(str(mib), [])]


def mib_per_s(cell: dict, mib: int) -> list[float]:
    return [mib / w for w in round_medians(cell, mib, "wall_s")]


def fmt_spread(xs: list[float], fmt: str = "{:,.0f}") -> str:
    if not xs:
        return "—"
    mid = fmt.format(median(xs))
    return mid if len(xs) < 2 else f"{mid} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def fmt_times(x: float) -> str:
    return fmt_ratio(x) if x != x or x >= 0.1 else f"{x:.3f}×"


def fmt_seconds(x: float) -> str:
    return f"{x:.4f}" if x < 1 else f"{x:.2f}"


def fmt_cpu(cell: dict, mib: int) -> str:
    """Median CPU seconds; with the first request's, where that costs over twice as much."""
    xs = round_medians(cell, mib, "cpu_s")
    if not xs:
        return "—"
    first = median([runs[0]["cpu_s"] for runs in cell[str(mib)]])
    cold = f" (1st {fmt_seconds(first)})" if first > 2 * median(xs) else ""
    return fmt_seconds(median(xs)) + cold


def linearity(cell: dict, sizes: tuple[int, ...]) -> float:
    """CPU per MiB at the largest size over CPU per MiB at the smallest (1.00: linear)."""
    lo, hi = min(sizes), max(sizes)
    small, big = median(round_medians(cell, lo, "cpu_s")), median(round_medians(cell, hi, "cpu_s"))
    return (big / hi) / (small / lo) if small > 0 else math.nan


def report(res: Results, servers: list[bench.Server], cfg: Config) -> str:
    meta = res.meta
    sizes, big = cfg.sizes, max(cfg.sizes)
    growth = f"{big}÷{min(sizes)}"
    out = bench.report_head("body.py: request bodies through wsgi.input —", meta)
    out.append("MiB/s is the body size over the wall time of one request (median over "
               "rounds of each round's median; min–max across rounds in brackets). CPU is the "
               f"worker's user + system seconds per request. `{growth}` is CPU per MiB at "
               f"{big} MiB over CPU per MiB at {min(sizes)} MiB: 1.00× is linear "
               "in the size, below 1 a fixed cost per request weighs on the small size, far "
               "above 1 a cost that grows faster than the size. `(1st …)`: the first request "
               "of that size on the worker (median over rounds) cost over twice the median. "
               "`vs gunicorn` compares MiB/s at the largest size.\n")
    for framing in FRAMINGS:
        out.append(f"### {'Content-Length' if framing == 'length' else 'chunked (64 KiB chunks)'}"
                   "\n")
        out.append("| route | server | " + " | ".join(
            f"{m} MiB: MiB/s | CPU s" for m in sizes)
            + f" | {growth} | peak RSS MiB | vs gunicorn |")
        out.append("|---|---|" + "---:|---:|" * len(sizes) + "---:|---:|---:|")
        for route in ROUTES:
            for server in servers:
                cell_name = f"{server.name}/{framing}/{route}"
                if why := res.unsupported.get(cell_name):
                    out.append(f"| /{route} | {server.name} | {why} |" + " |" * (2 * len(sizes)
                                                                                 + 2))
                    continue
                cell = res.samples.get(cell_name, {})
                if not cell and cell_name not in res.capped:
                    continue
                cols = []
                for mib in sizes:
                    if mib >= res.capped.get(cell_name, math.inf) and not cell.get(str(mib)):
                        cols += [f"> {cfg.request_cap:g} s", "—"]
                    else:
                        cols += [fmt_spread(mib_per_s(cell, mib)),
                                 fmt_cpu(cell, mib)]
                base = res.samples.get(f"{BASELINE}/{framing}/{route}", {})
                vs_base = median(mib_per_s(cell, big)) / median(mib_per_s(base, big))
                rss = res.peak_rss_mib.get(cell_name, [])
                name = f"**{server.name}**" if server.name.startswith(OURS) else server.name
                out.append(f"| /{route} | {name} | " + " | ".join(cols) +
                           f" | {fmt_times(linearity(cell, sizes))} | "
                           f"{max(rss) if rss else math.nan:.0f} | {fmt_times(vs_base)} |")
        out.append("")
    if res.capped:
        out.append(f"Over the {cfg.request_cap:g} s cap (the rest of that route and framing "
                   "not run): " + "; ".join(f"{k} at {v} MiB" for k, v in res.capped.items())
                   + ".\n")
    out += bench.report_foot(res, servers)
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round, 1 request per size, sizes 1 and 16 MiB")
    p.add_argument("--requests", type=int, default=3, help="requests per size, at most")
    p.add_argument("--seconds", type=float, default=15.0, dest="size_seconds",
                   help="stop repeating a size once its requests took this long (at least one)")
    p.add_argument("--request-cap", type=float, default=60.0,
                   help="a request slower than this skips the rest of its route and framing")
    p.add_argument("--sizes", default=",".join(map(str, SIZES_MIB)), help="MiB, comma-separated")
    p.add_argument("--routes", default=",".join(ROUTES), help="subset of: %(default)s")
    p.add_argument("--framings", default=",".join(FRAMINGS), help="subset of: %(default)s")
    bench.add_run_args(p, BODY_SERVERS, max_minutes=30.0)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.sizes = 1, 1, "1,16"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = tuple(sorted(int(m) for m in args.sizes.split(",")))
    routes = [r for r in args.routes.split(",") if r in ROUTES]
    framings = [f for f in args.framings.split(",") if f in FRAMINGS]
    cfg = Config(args.rounds, args.requests, args.size_seconds, args.request_cap, sizes,
                 args.server_cpu)
    res = Results()
    servers = bench.available(args.servers, BODY_SERVERS, res.skipped)
    res.meta = bench.machine_meta(servers)
    res.meta["method"] = (
        f"{cfg.rounds} interleaved rounds, each a fresh server per route and framing; up to "
        f"{cfg.requests} requests per size (fewer once a size took {cfg.size_seconds:g} s) "
        f"after a 64 KiB warm-up, over one keep-alive connection; one worker on core "
        f"{cfg.server_cpu}, the client on core {args.client_cpu}")
    fingerprint = bench.src_fingerprint()
    started = time.monotonic()
    with bench.session(args.max_minutes, args.client_cpu, res) as launcher:
        launcher.pythonpath, res.meta["forkwsgi_source"] = bench.forkwsgi_source(args.rev,
                                                                           launcher.scratch)
        if any(s.argv is _no_buffering for s in servers) and not lists_flag(launcher,
                                                                           NO_BUFFERING):
            servers = [s for s in servers if s.argv is not _no_buffering]
            res.skipped["forkwsgi-nobuf"] = (f"`python -m forkwsgi --help` does not list "
                                             f"{NO_BUFFERING} in this source yet")
            say(f"skipping forkwsgi-nobuf: {res.skipped['forkwsgi-nobuf']}")
        for rnd in range(cfg.rounds):
            for i, (framing, route) in enumerate((f, r) for f in framings for r in routes):
                for server in rotated(servers, rnd + i):
                    say(f"  round {rnd + 1}/{cfg.rounds}  {framing:<7} /{route:<7} {server.name}")
                    try:
                        run_cell(launcher, server, framing, route, cfg, res)
                    except (RuntimeError, OSError, psutil.Error) as exc:
                        res.failures.append(f"{server.name} {framing} /{route}: {exc}")
                        say(f"    FAILED: {exc}")
    bench.close_meta(res.meta, started, fingerprint, args.rev)
    return bench.publish(report(res, servers, cfg), res, args.json)


if __name__ == "__main__":
    sys.exit(main())
