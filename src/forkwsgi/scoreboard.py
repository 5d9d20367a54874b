"""Per-worker state in shared memory.

Owns: one fixed-size slot per worker in an anonymous shared mapping made by
the arbiter before any fork: pid, generation, state, heartbeat, the request
in flight (method, target, client, start time) and the worker's counters
(requests by status class, a duration histogram, body bytes, the server's
own rejections, connections by state). Workers write their own slot with
plain stores into shared memory (no syscall); the arbiter reads every slot
to find deadlines, to tell timeouts from idle workers, and for metrics, and
folds a dead worker's counters into its totals before the slot is reused.

State, heartbeat and the request in flight are stored per request: the
arbiter and the siblings decide on them. The counters are kept in the
worker's own memory and stored in the slot once a tick and before the worker
exits: an increment of a Python list costs half one through a memoryview,
and there are four per request. A scrape therefore sees the counts of up to
a tick ago, and a worker killed (a timeout, SIGKILL) takes its last tick's
counts with it.

Must never: make a syscall on the worker's per-request path, or hold a
reference to arbiter objects.
"""

from __future__ import annotations

import mmap
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass

MAX_SLOTS = 512

# States a worker reports. BOOTING until the app is loaded: the arbiter waits
# for IDLE before retiring an older generation (HUP), so a reload that cannot
# load the app never leaves the server without workers.
FREE, BOOTING, IDLE, BUSY, RETIRING = 0, 1, 2, 3, 4
# Why a worker leaves of its own accord, for the arbiter's account of the exit.
STAYING, LEAVING_MAX_REQUESTS, LEAVING_ORPHANED, LEAVING_RECYCLED = 0, 1, 2, 3
_BUSY_BYTE = bytes([BUSY])
STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy",
               RETIRING: "retiring"}

# The slot layout. The fields the arbiter decides on (state, heartbeat, request start) are
# written one at a time through typed memoryviews, never with struct.pack_into: pack_into
# zero-fills its whole span before writing it, and an arbiter reading in that instant would
# see a heartbeat of 0 (a worker silent since boot) and kill a healthy worker. Each field
# is 8-byte aligned and written by a single store, and the writer orders its stores so that
# any mix of old and new values the arbiter can see is a safe one (see SlotWriter).
#   0 pid i | 4 generation i | 8 heartbeat d | 16 request start d | 24 requests Q |
#   32 state B | 36 method 16s | 52 target 192s | 244 client 64s
_SLOT = struct.Struct("<iiddQBxxx16s192s64s")
_HEAD = struct.Struct("<iid")  # pid, generation, heartbeat: written by the arbiter only
_HEARTBEAT_OFFSET = 8
_START_OFFSET = 16
_PID = struct.Struct("<i")
_START = struct.Struct("<d")
_REQUESTS_OFFSET = 24
_STATE_OFFSET = 32
_LEAVING_OFFSET = 33  # why the worker leaves of its own accord (in the state's padding)
_REQUEST = struct.Struct("<16s192s64s")  # diagnostic text: a torn read only garbles a log line
_REQUEST_OFFSET = 36

# The counters, after the fields above: each written by its worker alone (one aligned
# store), read by the arbiter at any time. The duration histogram is kept per status class
# (one cell per class and bucket, not cumulative), so a request costs one increment for
# both its status and its duration.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # + inf
BUCKETS = len(DURATION_BUCKETS) + 1
STATUS_CLASSES = 5  # 1xx..5xx
REJECTED_CODES = (400, 408, 413, 414, 431, 505, 0)  # 0: any other the server sends itself
C_CELLS = 0  # STATUS_CLASSES * BUCKETS cells: class * BUCKETS + bucket
C_BYTES_IN = STATUS_CLASSES * BUCKETS  # request body bytes received (decoded)
C_BYTES_OUT = C_BYTES_IN + 1  # response body bytes sent
C_REJECTED = C_BYTES_OUT + 1  # one per REJECTED_CODES entry
C_ACCEPTED = C_REJECTED + len(REJECTED_CODES)  # connections accepted
COUNTERS = C_ACCEPTED + 1  # the counters above are totals, folded in when a worker dies
# Gauges after them, rewritten by the worker once a tick: its connections reading a head,
# receiving a body, idle between requests, lingering.
GAUGES = 4
_SECONDS_OFFSET = 320  # the sum of request durations, a double
_COUNTERS_OFFSET = 328
_CLASS_CELL = {str(n): (n - 1) * BUCKETS for n in range(1, 6)}
_OTHER_CLASS = 4 * BUCKETS  # a status that does not start with 1..5 counts as 5xx
_FIRST_BUCKET = DURATION_BUCKETS[0]
_REJECT_INDEX = {code: C_REJECTED + i for i, code in enumerate(REJECTED_CODES)}
SLOT_SIZE = 960
assert _SLOT.size <= _SECONDS_OFFSET
assert _COUNTERS_OFFSET + 8 * (COUNTERS + GAUGES) <= SLOT_SIZE
assert SLOT_SIZE % 64 == 0  # a slot never shares a cache line


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
                self.reset(index)  # no worker runs on a free slot: pack_into is safe here
                _HEAD.pack_into(self.mem, index * SLOT_SIZE, pid, generation, time.monotonic())
                self.mem[index * SLOT_SIZE + _STATE_OFFSET] = BOOTING
                return index
        raise RuntimeError("scoreboard full: more workers than slots")

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("<i", self.mem, index * SLOT_SIZE, pid)

    def reset(self, index: int) -> None:
        self.mem[index * SLOT_SIZE:(index + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)

    def read(self, index: int) -> SlotView:
        pid, gen, beat, start, count, state, method, target, client = _SLOT.unpack_from(
            self.mem, index * SLOT_SIZE)
        return SlotView(index, pid, gen, state, beat, start, count,
                        method.rstrip(b"\0").decode("latin-1"),
                        target.rstrip(b"\0").decode("latin-1"),
                        client.rstrip(b"\0").decode("latin-1"))

    def state(self, index: int) -> int:
        return self.mem[index * SLOT_SIZE + _STATE_OFFSET]

    def leaving(self, index: int) -> int:
        return self.mem[index * SLOT_SIZE + _LEAVING_OFFSET]

    def set_leaving(self, index: int, code: int) -> None:
        """The arbiter's word to a worker it is replacing: close connections from now on."""
        self.mem[index * SLOT_SIZE + _LEAVING_OFFSET] = code

    def counters(self, index: int) -> tuple[float, tuple[int, ...]]:
        """A worker's seconds in requests, and its counters then gauges."""
        base = index * SLOT_SIZE
        return (struct.unpack_from("<d", self.mem, base + _SECONDS_OFFSET)[0],
                struct.unpack_from(f"<{COUNTERS + GAUGES}Q", self.mem, base + _COUNTERS_OFFSET))

    def close(self) -> None:
        self.mem.close()


class SlotWriter:
    """A worker's handle on its own slot: bound methods for the hot path.

    Store order is what keeps the arbiter's view safe: ``busy`` writes the request start
    before the BUSY state (so BUSY never pairs with the previous request's start), and
    ``done`` the heartbeat before the IDLE state (so IDLE never pairs with a heartbeat
    from before a long request).
    """

    def __init__(self, board: Scoreboard, index: int) -> None:
        base = index * SLOT_SIZE
        view = memoryview(board.mem)
        # times[0] is the heartbeat, times[1] the request start (offsets 8 and 16)
        self.times = view[base + _HEARTBEAT_OFFSET:base + _REQUESTS_OFFSET].cast("d")
        self.count = view[base + _REQUESTS_OFFSET:base + _STATE_OFFSET].cast("Q")
        self.state = view[base + _STATE_OFFSET:base + _STATE_OFFSET + 1]
        self.leaving = view[base + _LEAVING_OFFSET:base + _LEAVING_OFFSET + 1]
        self.mem = board.mem
        self.index = index
        self.request_offset = base + _REQUEST_OFFSET
        self.request_end = base + _REQUEST_OFFSET + _REQUEST.size
        self.seconds = view[base + _SECONDS_OFFSET:base + _COUNTERS_OFFSET].cast("d")
        start = base + _COUNTERS_OFFSET
        self.counters = view[start:start + 8 * COUNTERS].cast("Q")
        self.gauges = view[start + 8 * COUNTERS:start + 8 * (COUNTERS + GAUGES)].cast("Q")
        # The counters as this worker keeps them; publish() stores them in the slot.
        self.tally = [0] * COUNTERS
        self.busy_seconds = 0.0

    def set_state(self, state: int) -> None:
        self.state[0] = state

    def heartbeat(self, now: float) -> None:
        self.times[0] = now

    def busy(self, now: float, request: bytes) -> None:
        """In a request since ``now``; ``request`` from describe()."""
        times = self.times
        times[1] = now  # request start, before the state says BUSY
        times[0] = now
        self.state[0] = BUSY
        self.mem[self.request_offset:self.request_end] = request

    def done(self, now: float, elapsed: float, status: str, received: int, sent: int) -> None:
        """The request is over: IDLE, and counted (``status`` as sent, e.g. "200 OK")."""
        self.times[0] = now  # heartbeat, before the state says IDLE
        self.state[0] = IDLE
        tally = self.tally
        tally[_CLASS_CELL.get(status[0], _OTHER_CLASS) + (
            0 if elapsed <= _FIRST_BUCKET else bisect_left(DURATION_BUCKETS, elapsed))] += 1
        tally[C_BYTES_OUT] += sent
        if received:
            tally[C_BYTES_IN] += received
        self.busy_seconds += elapsed

    def rejected(self, code: int) -> None:
        """The server answered a request itself (400, 408, 413...), without the app."""
        self.tally[_REJECT_INDEX.get(code, C_REJECTED + len(REJECTED_CODES) - 1)] += 1

    def accepted(self, count: int = 1) -> None:
        self.tally[C_ACCEPTED] += count

    @property
    def requests(self) -> int:
        """Requests this worker has answered through the app."""
        return sum(self.tally[:C_BYTES_IN])

    def publish(self) -> None:
        """Store the counters in the slot (once a tick, and before the worker exits). One
        aligned store per counter, never a span: a reader must never see one half-written."""
        counters = self.counters
        for index, value in enumerate(self.tally):
            if counters[index] != value:
                counters[index] = value
        self.seconds[0] = self.busy_seconds
        self.count[0] = self.requests

    def workers_idle(self) -> int:
        """How many workers' slots say IDLE, this one's included."""
        return idle_slots(self.mem)

    def busy_siblings(self) -> list[tuple[int, int, float]]:
        """``(slot, pid, request start)`` of every other worker in a request."""
        return busy_slots(self.mem, self.index)


def describe(method: str, target: str, client: str) -> bytes:
    """The request in flight as a slot stores it (SlotWriter.busy): the caller keeps it for
    a request that repeats, since encoding it costs as much as the rest of busy()."""
    return _REQUEST.pack(method.encode("latin-1", "replace"), target.encode("latin-1", "replace"),
                         client.encode("latin-1", "replace"))


def idle_slots(mem: mmap.mmap) -> int:
    """How many workers' slots say IDLE (one C-level slice)."""
    return mem[_STATE_OFFSET::SLOT_SIZE].count(IDLE)


def busy_slots(mem: mmap.mmap, exclude: int = -1) -> list[tuple[int, int, float]]:
    """``(slot, pid, request start)`` of every worker in a request (but slot ``exclude``).
    BUSY always pairs with its own request's start (busy() stores the start first)."""
    states = mem[_STATE_OFFSET::SLOT_SIZE]
    found = []
    index = states.find(_BUSY_BYTE)
    while index >= 0:
        if index != exclude:
            base = index * SLOT_SIZE
            found.append((index, _PID.unpack_from(mem, base)[0],
                          _START.unpack_from(mem, base + _START_OFFSET)[0]))
        index = states.find(_BUSY_BYTE, index + 1)
    return found
