"""The control endpoint (/livez, /readyz, /metrics, /status) and the operator's commands
(forkwsgi status | reload | stop | scale), against real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from forkwsgi import control
from tests.conftest import FORKWSGI, REPO, wait_until

APP = "tests.control_apps:app"
pytestmark = pytest.mark.process


def start(serve, tmp_path, *args, workers=2):
    pidfile = tmp_path / "app.pid"
    server = serve(APP, "--pid", str(pidfile), *args, workers=workers)
    server.control = "unix:" + str(tmp_path / "app.control.sock")
    server.pidfile = str(pidfile)
    return server


def get(server, path):
    code, body = control.fetch(server.control, path)
    return code, body


def metrics(server) -> dict:
    """Every sample as {(name, frozenset(labels)): value}."""
    code, body = get(server, "/metrics")
    assert code == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def ctl(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    result = subprocess.run([*FORKWSGI, *args], capture_output=True, text=True, env=env,
                            timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def status(server) -> dict:
    code, body = get(server, "/status")
    assert code == 200
    return json.loads(body)


def busy_with(server, path):
    """Start ``path`` in a thread; return it once a worker is inside that request (whose
    outcome, an answer or a cut connection, the test reads from the server's side)."""

    def fetch():
        try:
            requests.get(server.url + path, timeout=60)
        except requests.RequestException:
            pass

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    wait_until(lambda: any(w["request"] and w["request"]["target"] == path
                           for w in status(server)["workers"]), what=f"{path} in a worker")
    return thread


def test_metrics_count_what_was_sent_and_survive_a_killed_worker(serve, tmp_path):
    server = start(serve, tmp_path)
    sent = 0
    with requests.Session() as session:
        for _ in range(5):
            sent += len(session.get(server.url + "/ok").content)
        for _ in range(3):
            response = session.get(server.url + "/missing")
            assert response.status_code == 404
            sent += len(response.content)
        for _ in range(2):
            response = session.get(server.url + "/boom")
            assert response.status_code == 500
            sent += len(response.content)
        sent += len(session.post(server.url + "/upload", data=b"u" * 1000).content)
        sent += len(session.get(server.url + "/bytes?n=1000").content)
    for _ in range(2):
        assert server.request(b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")

    def check(samples):
        assert value(samples, "forkwsgi_requests_total", code="2xx") == 7
        assert value(samples, "forkwsgi_requests_total", code="4xx") == 3
        assert value(samples, "forkwsgi_requests_total", code="5xx") == 2
        assert value(samples, "forkwsgi_request_duration_seconds_bucket", le="+Inf") == 12
        assert value(samples, "forkwsgi_requests_rejected_total", code="400") == 2
        assert value(samples, "forkwsgi_request_body_bytes_total") == 1000
        assert value(samples, "forkwsgi_response_body_bytes_total") == sent
        # one keep-alive session, two raw connections; the server's own probes are none
        assert value(samples, "forkwsgi_connections_accepted_total") >= 3

    def counted():
        # Each worker stores its counts once a tick: wait until both have.
        samples = metrics(server)
        try:
            check(samples)
        except AssertionError:
            return None
        return samples

    try:
        samples = wait_until(counted, what="every count in /metrics")
    except AssertionError:
        check(metrics(server))  # which count is off
        raise
    assert value(samples, "forkwsgi_workers", state="idle") == 2
    assert value(samples, "forkwsgi_ready") == 1
    # A killed worker's counts stay: the arbiter folds its slot into the totals.
    for worker in server.workers():
        worker.send_signal(signal.SIGKILL)
    wait_until(lambda: value(metrics(server), "forkwsgi_worker_exits_total",
                             reason="signal") == 2, what="two exits by signal")
    server.wait_workers(2)
    check(metrics(server))
    assert "exited: killed by a signal the arbiter did not send (SIGKILL)" in server.log()


def test_status_shows_the_request_in_flight(serve, tmp_path):
    server = start(serve, tmp_path)
    thread = busy_with(server, "/sleep?seconds=3")
    document = status(server)
    assert document["pid"] == server.pid and document["target"] == 2
    busy = [w for w in document["workers"] if w["state"] == "busy"]
    assert len(busy) == 1
    assert busy[0]["request"]["method"] == "GET"
    assert busy[0]["request"]["client"].startswith("127.0.0.1:")
    assert busy[0]["rss"] > 0 and busy[0]["uss"] > 0
    assert {w["pid"] for w in document["workers"]} == {p.pid for p in server.workers()}
    # The command line finds the only arbiter running from its pidfile, and shows the same.
    table = ctl("status", "--pid", server.pidfile).stdout
    assert "GET /sleep?seconds=3 from 127.0.0.1:" in table
    assert " busy " in table and " idle " in table
    as_json = json.loads(ctl("status", "--control", server.control, "--json").stdout)
    assert len(as_json["workers"]) == 2
    thread.join(30)


def test_livez_readyz_and_a_stop(serve, tmp_path):
    server = start(serve, tmp_path, "--graceful-timeout", "30")
    assert get(server, "/livez") == (200, b"ok\n")
    # Ready once a worker has loaded the app, which may come after its process exists.
    wait_until(lambda: get(server, "/readyz") == (200, b"ready\n"), what="ready")
    assert get(server, "/nowhere")[0] == 404
    mode = os.stat(server.control[5:]).st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_ISSOCK(mode)
    thread = busy_with(server, "/sleep?seconds=2")
    server.signal(signal.SIGTERM)
    # Served by the arbiter, so it answers while the stop waits for the request in flight.
    wait_until(lambda: get(server, "/readyz") == (503, b"stopping\n"), what="readyz 503")
    assert get(server, "/livez")[0] == 200
    thread.join(30)
    assert server.wait_exit(30) == 0
    assert not os.path.exists(server.control[5:])


def test_a_request_lost_with_its_worker_gets_an_access_log_line(serve, tmp_path):
    access = tmp_path / "access.log"
    server = start(serve, tmp_path, "--access-logfile", str(access), workers=1)
    thread = busy_with(server, "/sleep?seconds=30")
    (worker,) = server.workers()
    worker.send_signal(signal.SIGKILL)
    wait_until(lambda: access.exists() and '"GET /sleep?seconds=30 HTTP/1.1" 502 ' in
               access.read_text(), what="the lost request's access line")
    server.wait_log(f"worker {worker.pid} exited: killed by a signal the arbiter did not "
                    "send (SIGKILL, while serving GET /sleep?seconds=30 from 127.0.0.1:")
    thread.join(30)


def test_timeout_and_max_requests_are_explained(serve, tmp_path):
    access = tmp_path / "access.log"
    server = start(serve, tmp_path, "--timeout", "1", "--max-requests", "2",
                   "--access-logfile", str(access), workers=1)
    (first,) = server.workers()
    for _ in range(2):
        requests.get(server.url + "/ok", timeout=10)
    server.wait_log(f"worker {first.pid} exited: recycled after --max-requests; it served "
                    "2 request(s)")
    (second,) = server.wait_workers(1)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/sleep?seconds=20", timeout=30)
    server.wait_log(f"worker {second.pid} exited: killed after --timeout")
    wait_until(lambda: '"GET /sleep?seconds=20 HTTP/1.1" 504 ' in access.read_text(),
               what="the timed-out request's access line")
    samples = metrics(server)
    assert value(samples, "forkwsgi_worker_exits_total", reason="max_requests") == 1
    assert value(samples, "forkwsgi_worker_exits_total", reason="timeout") == 1
    recent = status(server)["recent_exits"]
    assert [r["reason"] for r in recent] == ["max_requests", "timeout"]


def test_reload_scale_and_stop_commands(serve, tmp_path):
    server = start(serve, tmp_path)
    old = {p.pid for p in server.workers()}
    out = ctl("reload", "--pid", server.pidfile).stdout
    assert out.startswith("reloaded: 2 new worker(s) ready in ")
    assert not old & {p.pid for p in server.wait_workers(2)}
    assert ctl("scale", "3", "--pid", server.pidfile).stdout.startswith("scaled: 3 worker(s)")
    server.wait_workers(3)
    assert ctl("scale", "1", "--control", server.control).stdout.startswith("scaled: 1 ")
    server.wait_workers(1)
    assert requests.get(server.url + "/ok", timeout=10).status_code == 200
    out = ctl("stop", "--pid", server.pidfile).stdout
    assert f"stopped: arbiter {server.pid} exited" in out
    assert server.wait_exit(10) == 0
    assert not psutil.pid_exists(server.pid) or \
        psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE


def test_commands_without_a_server_say_so(tmp_path):
    result = ctl("status", "--pid", str(tmp_path / "none.pid"), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("forkwsgi status: cannot read the pidfile")
    result = ctl("scale", "zero", "--pid", "x", check=False)
    assert result.returncode == 2 and "forkwsgi scale: error:" in result.stderr


def test_control_bind_on_loopback_tcp_and_off(serve, tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    serve(APP, "--control-bind", address)
    assert control.fetch(address, "/livez") == (200, b"ok\n")
    off = serve(APP, "--control-bind", "none", "--pid", str(tmp_path / "off.pid"))
    assert not (tmp_path / "off.control.sock").exists()
    assert "Control endpoint" not in off.log()


def test_a_bad_control_bind_is_one_line_naming_the_setting(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    result = subprocess.run([sys.executable, "-m", "forkwsgi", "--control-bind", "fd://3",
                             "--check-config", APP], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "control_bind" in result.stderr


def test_requests_the_server_refuses_get_access_log_lines_without_flooding(serve, tmp_path):
    access = tmp_path / "access.log"
    server = start(serve, tmp_path, "--access-logfile", str(access), workers=1)
    assert server.request(b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: access.exists() and '"- - -" 400 ' in access.read_text(),
               what="the rejected request's access line")
    for _ in range(300):
        server.request(b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_until(lambda: value(metrics(server), "forkwsgi_requests_rejected_total",
                             code="400") == 301, what="301 rejections counted")
    # A flood gets at most 20 lines a second; the metrics count every one.
    assert access.read_text().count(" 400 ") < 301


def test_readyz_turns_503_on_term_while_the_listeners_still_serve(serve, tmp_path):
    """With --shutdown-delay the server is not ready from the TERM on, but still serves:
    a load balancer takes it out before its listeners close."""
    server = start(serve, tmp_path, "--shutdown-delay", "30", workers=1)
    wait_until(lambda: get(server, "/readyz")[0] == 200, what="ready")
    server.signal(signal.SIGTERM)
    wait_until(lambda: get(server, "/readyz") == (503, b"stopping\n"), what="readyz 503")
    assert requests.get(server.url + "/ok", timeout=10).status_code == 200
    assert value(metrics(server), "forkwsgi_ready") == 0
    server.signal(signal.SIGTERM)  # a second TERM ends the delay
    assert server.wait_exit(30) == 0


def test_a_long_stop_says_what_it_waits_for(serve, tmp_path):
    server = start(serve, tmp_path, "--graceful-timeout", "30", workers=1)
    thread = busy_with(server, "/sleep?seconds=7")
    server.signal(signal.SIGTERM)
    server.wait_log("stopping: waiting for 1 worker(s), 1 request(s) in flight; ")
    thread.join(30)
    assert server.wait_exit(30) == 0
