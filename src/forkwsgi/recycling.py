"""When a healthy worker should be replaced: its memory, its age, its request budget.

Owns: the policies behind ``--max-worker-memory`` (USS sampled with psutil
every ``--memory-check-interval``; over the limit for ``STRIKES`` samples in a
row), ``--max-worker-lifetime`` (with its jitter, drawn once per worker) and
``--max-requests`` (the worker says so in its scoreboard slot: it keeps
serving until its replacement is up), and when the arbiter must look again.

Must never: signal, fork or retire anything. It names workers and reasons;
the arbiter starts each replacement first and retires the old worker once
the new one accepts (Arbiter.manage_workers), a bounded number at a time.
"""

from __future__ import annotations

import logging
import random

from forkwsgi import scoreboard

log = logging.getLogger("forkwsgi.error")

STRIKES = 3  # consecutive samples over --max-worker-memory before a worker is recycled
POLL = 1.0  # with any policy on, the arbiter looks at least this often


def at_once(target: int) -> int:
    """How many workers may be replaced at the same time: a quarter, at least one."""
    return max(1, target // 4)


class Recycler:
    def __init__(self, cfg) -> None:
        self.memory_limit = cfg.max_worker_memory
        self.interval = cfg.memory_check_interval
        self.lifetime = cfg.max_worker_lifetime
        jitter = cfg.max_worker_lifetime_jitter
        self.jitter = self.lifetime / 10 if jitter is None else jitter
        self.next_sample = 0.0
        self.samples = 0  # memory samples taken (shown in /status)
        self.active = bool(self.memory_limit or self.lifetime or cfg.max_requests)

    def born(self, info, now: float) -> None:
        """A new worker: its lifetime deadline, drawn once."""
        if self.lifetime:
            info.recycle_at = now + self.lifetime + random.uniform(0, self.jitter)

    def deadline(self, now: float) -> float | None:
        """When the arbiter must look again, if a policy is on."""
        if not self.active:
            return None
        soon = now + POLL
        if self.memory_limit:
            soon = min(soon, self.next_sample)
        return soon

    def due(self, workers, board: scoreboard.Scoreboard, now: float) -> list[tuple]:
        """``(info, reason, detail)`` for each serving worker that should be replaced."""
        found = []
        sample = self.memory_limit and now >= self.next_sample
        if sample:
            self.next_sample = now + self.interval
            self.samples += 1
        for info in workers:
            if board.leaving(info.slot) == scoreboard.LEAVING_MAX_REQUESTS:
                found.append((info, "max_requests", ""))
            elif info.recycle_at is not None and now >= info.recycle_at:
                found.append((info, "lifetime", f"{now - info.born:.0f}s old"))
            elif sample:
                uss = _uss(info.pid)
                if uss is None or uss <= self.memory_limit:
                    info.strikes = 0
                    continue
                info.strikes += 1
                if info.strikes >= STRIKES:
                    found.append((info, "memory", f"USS {_mib(uss)} over "
                                  f"{_mib(self.memory_limit)} for {info.strikes} samples"))
        return found


def _uss(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).memory_full_info().uss
    except (psutil.Error, OSError):
        return None


def _mib(size: int) -> str:
    return f"{size / 1048576:.0f} MiB"
