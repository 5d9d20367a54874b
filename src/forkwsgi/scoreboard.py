"""Per-worker state in shared memory.

Owns: one fixed-size slot per worker in an anonymous shared mapping made by
the arbiter before any fork: pid, generation, state, heartbeat, the request
in flight (method, target, client, start time) and counters. Workers write
their own slot with ``struct.pack_into`` (no syscall); the arbiter reads
every slot to find deadlines, and later the control endpoint reads it for
status and metrics.

Must never: make a syscall on the worker's per-request path, or hold a
reference to arbiter objects.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

MAX_SLOTS = 512

# States a worker reports. BOOTING until the app is loaded: the arbiter waits
# for IDLE before retiring an older generation (HUP), so a reload that cannot
# load the app never leaves the server without workers.
FREE, BOOTING, IDLE, BUSY, RETIRING = 0, 1, 2, 3, 4
STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy",
               RETIRING: "retiring"}

# pid, generation, state, heartbeat, request start, requests served, method, target, client
_SLOT = struct.Struct("<iiBxxxddQ16s192s64s")
_HEAD = struct.Struct("<iiBxxxd")  # pid, generation, state, heartbeat
_STATE = struct.Struct("<B")
_STATE_OFFSET = 8
_HEARTBEAT = struct.Struct("<d")
_HEARTBEAT_OFFSET = 12
_BUSY = struct.Struct("<Bxxxdd")  # state, heartbeat, request start
_DONE = struct.Struct("<Bxxxd")  # state, heartbeat
_REQUESTS = struct.Struct("<Q")
_REQUESTS_OFFSET = 28
_REQUEST = struct.Struct("<16s192s64s")
_REQUEST_OFFSET = 36
SLOT_SIZE = 320
assert _SLOT.size <= SLOT_SIZE


@dataclass
class SlotView:
    index: int
    pid: int
    generation: int
    state: int
    heartbeat: float
    request_start: float
    requests: int
    method: str
    target: str
    client: str

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "?")


class Scoreboard:
    """The shared mapping. Created once in the arbiter; inherited by fork."""

    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * SLOT_SIZE, flags=mmap.MAP_SHARED)

    def claim(self, pid: int = 0, generation: int = 0) -> int:
        """A free slot index for a new worker (arbiter side, before fork)."""
        for index in range(self.slots):
            if self.mem[index * SLOT_SIZE + _STATE_OFFSET] == FREE:
                self.reset(index)
                _HEAD.pack_into(self.mem, index * SLOT_SIZE, pid, generation, BOOTING,
                                time.monotonic())
                return index
        raise RuntimeError("scoreboard full: more workers than slots")

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("<i", self.mem, index * SLOT_SIZE, pid)

    def reset(self, index: int) -> None:
        self.mem[index * SLOT_SIZE:(index + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)

    def read(self, index: int) -> SlotView:
        pid, gen, state, beat, start, count, method, target, client = _SLOT.unpack_from(
            self.mem, index * SLOT_SIZE)
        return SlotView(index, pid, gen, state, beat, start, count,
                        method.rstrip(b"\0").decode("latin-1"),
                        target.rstrip(b"\0").decode("latin-1"),
                        client.rstrip(b"\0").decode("latin-1"))

    def state(self, index: int) -> int:
        return self.mem[index * SLOT_SIZE + _STATE_OFFSET]

    def close(self) -> None:
        self.mem.close()


class SlotWriter:
    """A worker's handle on its own slot: bound methods for the hot path."""

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.mem = board.mem
        self.base = index * SLOT_SIZE
        self.requests = 0

    def set_state(self, state: int) -> None:
        _STATE.pack_into(self.mem, self.base + _STATE_OFFSET, state)

    def heartbeat(self, now: float) -> None:
        _HEARTBEAT.pack_into(self.mem, self.base + _HEARTBEAT_OFFSET, now)

    def busy(self, now: float, method: str, target: str, client: str) -> None:
        _BUSY.pack_into(self.mem, self.base + _STATE_OFFSET, BUSY, now, now)
        _REQUEST.pack_into(self.mem, self.base + _REQUEST_OFFSET,
                           method.encode("latin-1", "replace"),
                           target.encode("latin-1", "replace"),
                           client.encode("latin-1", "replace"))

    def done(self, now: float, state: int = IDLE) -> None:
        self.requests += 1
        _DONE.pack_into(self.mem, self.base + _STATE_OFFSET, state, now)
        _REQUESTS.pack_into(self.mem, self.base + _REQUESTS_OFFSET, self.requests)
