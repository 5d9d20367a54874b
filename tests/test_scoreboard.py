"""The scoreboard slot as a worker writes it and the arbiter reads it."""

from __future__ import annotations

from forkwsgi import scoreboard


def test_counts_reach_the_slot_when_published_and_the_request_in_flight_at_once():
    board = scoreboard.Scoreboard(slots=2)  # the writer's views hold it: no close()
    writer = scoreboard.SlotWriter(board, board.claim(4321))

    writer.busy(100.0, scoreboard.describe("POST", "/café", "127.0.0.1:5000"))
    seen = board.read(writer.index)
    assert (seen.state_name, seen.method, seen.target, seen.client, seen.request_start) == (
        "busy", "POST", "/café", "127.0.0.1:5000", 100.0)

    writer.done(100.25, 0.25, "201 Created", 1000, 13)
    writer.done(101.0, 0.001, "404 Not Found", 0, 9)
    writer.rejected(400)
    writer.accepted(2)
    seen = board.read(writer.index)
    assert (seen.state_name, seen.heartbeat) == ("idle", 101.0)
    # Counted in the worker's memory only, until its tick stores them.
    assert board.counters(writer.index) == (0.0, (0,) * (scoreboard.COUNTERS
                                                         + scoreboard.GAUGES))
    assert writer.requests == 2

    writer.publish()
    seconds, counters = board.counters(writer.index)
    assert seconds == 0.251
    buckets = scoreboard.BUCKETS
    assert counters[1 * buckets + scoreboard.DURATION_BUCKETS.index(0.25)] == 1  # 2xx
    assert counters[3 * buckets + 0] == 1  # 4xx, the first bucket
    assert sum(counters[:scoreboard.C_BYTES_IN]) == 2
    assert counters[scoreboard.C_BYTES_IN] == 1000
    assert counters[scoreboard.C_BYTES_OUT] == 22
    assert counters[scoreboard.C_REJECTED] == 1  # 400 is the first rejected code
    assert counters[scoreboard.C_ACCEPTED] == 2
    assert board.read(writer.index).requests == 2
