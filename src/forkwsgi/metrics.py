"""What the server has done, from outside: Prometheus text and the /status document.

Owns: the arbiter's view of the scoreboard as numbers. ``Totals`` holds the
counters of workers that have exited (the arbiter folds a dead worker's
slot in before the slot is reused, so no count is lost with a worker) and
the recent worker exits with their reasons; ``exposition`` renders every
metric in the Prometheus text format (version 0.0.4); ``status`` builds the
JSON document of ``/status``, with each worker's memory and CPU from psutil.

Must never: write to the scoreboard, signal or wait for a process, or be
called by a worker: it runs in the arbiter, on request of the control
endpoint (control.py), and reads what the workers published.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from forkwsgi import scoreboard
from forkwsgi.scoreboard import (
    BUCKETS,
    C_ACCEPTED,
    C_BYTES_IN,
    C_BYTES_OUT,
    C_CELLS,
    C_REJECTED,
    COUNTERS,
    DURATION_BUCKETS,
    REJECTED_CODES,
    STATUS_CLASSES,
)

# Why a worker left. The arbiter knows the reasons it caused; a worker writes its own
# (max_requests) into its slot; the exit status tells the rest.
EXIT_REASONS = ("timeout", "max_requests", "memory", "lifetime", "crash", "signal", "reload",
                "upgrade", "scale", "stop", "boot_failed", "graceful_timeout", "exit")
RECENT_EXITS = 50  # how many worker exits /status lists
CONNECTION_STATES = ("reading_head", "receiving_body", "idle", "lingering")


@dataclass
class WorkerExit:
    pid: int
    generation: int
    reason: str
    detail: str  # e.g. "signal 11 (SIGSEGV) during GET /x from 1.2.3.4:5"
    requests: int
    at: float  # time.time()


@dataclass
class Totals:
    """Counts of the workers that are gone, and how they went."""

    seconds: float = 0.0
    counters: list[int] = field(default_factory=lambda: [0] * COUNTERS)
    exits: collections.Counter = field(default_factory=collections.Counter)
    recent: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_EXITS))

    def fold(self, seconds: float, counters: tuple[int, ...]) -> None:
        """A dead worker's counters (its gauges, after them, are dropped)."""
        self.seconds += seconds
        mine = self.counters
        for index in range(COUNTERS):
            mine[index] += counters[index]

    def exited(self, record: WorkerExit) -> None:
        self.exits[record.reason] += 1
        self.recent.append(record)


@dataclass
class LiveWorker:
    """One running worker as /metrics and /status see it."""

    slot: scoreboard.SlotView
    seconds: float
    counters: tuple[int, ...]  # counters, then gauges
    born: float  # time.monotonic() at fork
    recycling: str | None = None  # why it is being replaced, if it is


def exposition(totals: Totals, live: list[LiveWorker], ready: bool, stopping: bool,
               started: float) -> str:
    """Every metric, in the Prometheus text format."""
    seconds = totals.seconds + sum(w.seconds for w in live)
    counts = list(totals.counters)
    for worker in live:
        theirs = worker.counters
        for index in range(COUNTERS):
            counts[index] += theirs[index]
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {_number(value)}")

    classes = [sum(counts[C_CELLS + c * BUCKETS:C_CELLS + (c + 1) * BUCKETS])
               for c in range(STATUS_CLASSES)]
    metric("forkwsgi_requests_total", "counter",
           "Requests the application answered, by status class.",
           [(f'{{code="{c + 1}xx"}}', classes[c]) for c in range(STATUS_CLASSES)])
    buckets = [sum(counts[C_CELLS + c * BUCKETS + b] for c in range(STATUS_CLASSES))
               for b in range(BUCKETS)]
    cumulative = 0
    histogram = []
    for bound, count in zip([*DURATION_BUCKETS, float("inf")], buckets, strict=True):
        cumulative += count
        histogram.append((f'_bucket{{le="{_number(bound)}"}}', cumulative))
    histogram.append(("_sum", seconds))
    histogram.append(("_count", cumulative))
    out.append("# HELP forkwsgi_request_duration_seconds Time from the request head to the "
               "end of the response.")
    out.append("# TYPE forkwsgi_request_duration_seconds histogram")
    for suffix, value in histogram:
        out.append(f"forkwsgi_request_duration_seconds{suffix} {_number(value)}")
    metric("forkwsgi_requests_in_flight", "gauge", "Requests inside the application now.",
           [("", sum(1 for w in live if w.slot.state == scoreboard.BUSY))])
    metric("forkwsgi_requests_rejected_total", "counter",
           "Requests the server answered itself, without the application, by status.",
           [(f'{{code="{code or "other"}"}}', counts[C_REJECTED + i])
            for i, code in enumerate(REJECTED_CODES)])
    metric("forkwsgi_request_body_bytes_total", "counter",
           "Request body bytes received (decoded).", [("", counts[C_BYTES_IN])])
    metric("forkwsgi_response_body_bytes_total", "counter",
           "Response body bytes sent.", [("", counts[C_BYTES_OUT])])
    metric("forkwsgi_connections_accepted_total", "counter",
           "Connections accepted.", [("", counts[C_ACCEPTED])])
    states = collections.Counter(w.slot.state_name for w in live)
    metric("forkwsgi_workers", "gauge", "Worker processes, by state.",
           [(f'{{state="{name}"}}', states.get(name, 0))
            for name in ("booting", "idle", "busy", "retiring")])
    connections = [sum(w.counters[COUNTERS + i] for w in live)
                   for i in range(len(CONNECTION_STATES))]
    connections.append(states.get("busy", 0))
    metric("forkwsgi_connections", "gauge",
           "Open client connections, by state (as of each worker's last tick).",
           [(f'{{state="{name}"}}', value)
            for name, value in zip((*CONNECTION_STATES, "in_app"), connections, strict=True)])
    metric("forkwsgi_worker_exits_total", "counter",
           "Worker processes that exited, by reason.",
           [(f'{{reason="{reason}"}}', totals.exits.get(reason, 0)) for reason in EXIT_REASONS])
    metric("forkwsgi_ready", "gauge", "1 while the server takes new requests (/readyz).",
           [("", int(ready))])
    metric("forkwsgi_stopping", "gauge", "1 once a stop has begun.", [("", int(stopping))])
    metric("forkwsgi_start_time_seconds", "gauge", "When the arbiter started (Unix time).",
           [("", started)])
    return "\n".join(out) + "\n"


def status(arbiter: dict, totals: Totals, live: list[LiveWorker]) -> dict:
    """The /status document: the arbiter, every worker, and the recent exits."""
    now = time.monotonic()
    workers = []
    for worker in sorted(live, key=lambda w: w.slot.index):
        slot = worker.slot
        entry: dict = {
            "pid": slot.pid,
            "generation": slot.generation,
            "state": slot.state_name,
            "requests": slot.requests,
            "age": round(now - worker.born, 3),
            "request": None,
            "connections": dict(zip(CONNECTION_STATES, worker.counters[COUNTERS:], strict=True)),
        }
        if worker.recycling:
            entry["recycling"] = worker.recycling
        if slot.state == scoreboard.BUSY:
            entry["request"] = {"method": slot.method, "target": slot.target,
                                "client": slot.client,
                                "elapsed": round(max(0.0, now - slot.request_start), 3)}
        entry.update(process_usage(slot.pid))
        workers.append(entry)
    return {
        **arbiter,
        "workers": workers,
        "exits": {reason: count for reason, count in totals.exits.items()},
        "recent_exits": [vars(record) for record in totals.recent],
    }


def process_usage(pid: int) -> dict:
    """RSS, USS (pages only this process holds: shared copy-on-write pages do not count)
    and CPU; empty for a process that is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            try:
                memory = process.memory_full_info()
                uss = memory.uss
            except psutil.AccessDenied:
                memory = process.memory_info()
                uss = None
            times = process.cpu_times()
            return {"rss": memory.rss, "uss": uss,
                    "cpu_seconds": round(times.user + times.system, 3),
                    "cpu_percent": _cpu_percent(process)}
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return {}


_CPU_SAMPLES: dict[int, tuple[float, float]] = {}  # pid -> (monotonic, cpu seconds)


def _cpu_percent(process) -> float:
    """CPU % since this pid was last looked at (a status refresh), else over its life."""
    now = time.monotonic()
    times = process.cpu_times()
    used = times.user + times.system
    last = _CPU_SAMPLES.get(process.pid)
    _CPU_SAMPLES[process.pid] = (now, used)
    if len(_CPU_SAMPLES) > 4 * scoreboard.MAX_SLOTS:
        _CPU_SAMPLES.clear()
    if last is None:
        lifetime = max(1e-3, time.time() - process.create_time())
        return round(100.0 * used / lifetime, 1)
    return round(100.0 * (used - last[1]) / max(1e-3, now - last[0]), 1)


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
