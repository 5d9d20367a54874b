"""Self-healing: workers recycled by memory and age with their replacement up first, and a
replacement that cannot load the app backing off instead of stopping a serving server."""

from __future__ import annotations

import json
import signal
import threading

import psutil
import pytest
import requests

from forkwsgi import control
from tests.conftest import wait_until

pytestmark = pytest.mark.process
MIB = 1024 * 1024


def status(server) -> dict:
    code, body = control.fetch(server.control, "/status")
    assert code == 200
    return json.loads(body)


def start(serve, tmp_path, app, *args, workers=2, env=None):
    server = serve(app, "--pid", str(tmp_path / "app.pid"), *args, workers=workers, env=env)
    server.control = "unix:" + str(tmp_path / "app.control.sock")
    return server


def total_uss(server) -> int:
    return sum(p.memory_full_info().uss for p in server.workers())


def test_a_leaking_app_is_recycled_by_memory_and_stays_bounded(serve, tmp_path):
    server = start(serve, tmp_path, "tests.control_apps:app", "--max-worker-memory", "48MiB",
                   "--memory-check-interval", "0.1")
    peak = 0
    with requests.Session() as session:
        for n in range(500):  # 500 MiB leaked in all
            assert session.get(server.url + "/leak?mb=1", timeout=30).status_code == 200
            if n % 25 == 0:
                peak = max(peak, total_uss(server))
    server.wait_log("recycled for --max-worker-memory (USS ")
    # Each worker is replaced soon after it passes 48 MiB: the pair never holds what leaked.
    assert peak < 320 * MIB, peak / MIB
    assert total_uss(server) < 320 * MIB
    assert status(server)["exits"].get("memory", 0) >= 2
    assert "is due for recycling (memory: USS " in server.log()


def test_shared_preloaded_data_does_not_count(serve, tmp_path):
    server = start(serve, tmp_path, "tests.recycling_apps:shared", "--preload",
                   "--max-worker-memory", "64MiB", "--memory-check-interval", "0.05",
                   env={"RECYCLING_SHARED": "1"})
    for _ in range(20):
        assert requests.get(server.url, timeout=10).text == str(200 * MIB)
    wait_until(lambda: status(server)["memory_samples"] >= 20, what="20 memory samples")
    document = status(server)
    assert document["exits"].get("memory", 0) == 0
    for worker in document["workers"]:
        assert worker["rss"] > 200 * MIB > 64 * MIB > worker["uss"]


def test_lifetime_recycling_never_leaves_the_server_without_a_worker(serve, tmp_path):
    server = start(serve, tmp_path, "tests.recycling_apps:pid", "--max-worker-lifetime", "1",
                   "--max-worker-lifetime-jitter", "0", workers=1)
    wait_until(lambda: status(server)["workers"][0]["state"] == "idle", what="a worker up")
    failures: list[str] = []
    served_by: set[str] = set()
    serving_counts: list[int] = []
    done = threading.Event()

    def client(keep_alive: bool):
        session = requests.Session() if keep_alive else requests
        while not done.is_set():
            try:
                served_by.add(session.get(server.url, timeout=10).text)
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in (True, False)]
    for thread in threads:
        thread.start()

    def recycled_three_times():
        states = [w["state"] for w in status(server)["workers"]]
        serving_counts.append(sum(s in ("idle", "busy") for s in states))
        return server.log().count("exited: recycled after --max-worker-lifetime") >= 3

    try:
        wait_until(recycled_three_times, timeout=60, interval=0.05, what="three recycles")
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert len(served_by) >= 4
    assert min(serving_counts) >= 1  # never a moment without a serving worker


def test_a_replacement_that_cannot_load_the_app_backs_off(serve, tmp_path):
    flag = tmp_path / "broken"
    server = start(serve, tmp_path, "tests.recycling_apps:pid",
                   env={"RECYCLING_BROKEN_FLAG": str(flag)})
    # Both have loaded the app (not merely forked) before the code "breaks".
    wait_until(lambda: [w["state"] for w in status(server)["workers"]] == ["idle", "idle"],
               what="two workers up")
    first, second = server.workers()
    flag.write_text("deployed broken code")
    first.send_signal(signal.SIGKILL)
    server.wait_log("A NEW WORKER CANNOT LOAD THE APPLICATION")
    # The server keeps serving with the worker it has, and says so.
    for _ in range(5):
        assert requests.get(server.url, timeout=10).text == str(second.pid)
    code, body = control.fetch(server.control, "/readyz")
    assert code == 200 and b"degraded" in body
    wait_until(lambda: status(server)["boot_failures"] >= 2, what="a second, later attempt")
    assert server.process.is_running()
    flag.unlink()
    server.wait_log("workers load the application again")
    assert len(server.wait_workers(2)) == 2
    assert status(server)["boot_failures"] == 0


def test_with_no_worker_left_serving_a_broken_app_stops_the_server(serve, tmp_path):
    flag = tmp_path / "broken"
    server = start(serve, tmp_path, "tests.recycling_apps:pid", workers=1,
                   env={"RECYCLING_BROKEN_FLAG": str(flag)})
    wait_until(lambda: [w["state"] for w in status(server)["workers"]] == ["idle"],
               what="the worker up")
    (only,) = server.workers()
    flag.write_text("deployed broken code")
    only.send_signal(signal.SIGKILL)
    assert server.wait_exit(30) == 3
    assert "failed to boot" in server.log()
    assert not psutil.pid_exists(only.pid) or psutil.Process(only.pid).status() == \
        psutil.STATUS_ZOMBIE
