"""Several forkwsgi instances behind a real nginx and a real HAProxy; the Kubernetes manifests.

The fleet: three instances (``-w 2``) on loopback ports, with nginx
(conf/nginx/fleet.conf) and HAProxy (conf/haproxy/forkwsgi.cfg) both balancing
over them, each config exactly as the file has it but for its example
addresses. While client threads send GETs and POSTs without pause through
both, over kept-alive connections, each instance in turn is stopped (TERM) and
started again, reloaded (HUP), and upgraded (USR2, then TERM to the old arbiter
once the new one serves, as docs/signals.md says). No client request may fail:
not even a POST, which neither balancer repeats once sent, so a request the
server accepted and then reset during a stop would show here. Between two steps the test waits, by polling, until the changed
instance serves through both balancers again, so every step meets traffic.

docs/deployment.md shows those two configs whole, and any YAML it shows comes
from conf/kubernetes/: checked here, so the doc cannot drift from what is tested.

The manifests in conf/kubernetes/ are validated offline against the Kubernetes
schemas (the kubernetes-validate package bundles them), and their timeouts are
checked to nest with forkwsgi's settings as forkwsgi's own parser reads the
container's command line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import REPO, free_port, listening, wait_until

NGINX_CONF = REPO / "conf" / "nginx" / "fleet.conf"
HAPROXY_CONF = REPO / "conf" / "haproxy" / "forkwsgi.cfg"
KUBERNETES = REPO / "conf" / "kubernetes"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
EXAMPLE_PORTS = (8001, 8002, 8003)  # the instances' addresses in both configs
INSTANCE_ARGS = ("--graceful-timeout", "20")
WORKERS = 2
CLIENTS_PER_BALANCER = 2
CLIENT_REQUESTS = 50_000  # per client thread: the load stops by itself whatever happens
CLIENT_SECONDS = 100.0
GRACE_MARGIN = 5  # seconds terminationGracePeriodSeconds keeps above delay + graceful timeout


def work(environ, start_response):
    """``/work`` takes a moment, so that stops find requests in flight; any other path (the
    health checks) answers at once. The answer is the worker's pid."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if environ.get("PATH_INFO") == "/work":
        time.sleep(0.005)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


# --- the configs, as the files have them -----------------------------------------------------


def template(path: Path, listen: str, address: str = ":80") -> str:
    """``path`` as a ``str.format`` template: braces escaped, the ``address`` in its
    ``listen`` line made ``127.0.0.1:{port}`` and the instances' example addresses
    ``{upstream0}``... Each replaced text must be there once, so a config that changes
    shape fails here, not silently."""
    text = path.read_text().replace("{", "{{").replace("}", "}}")
    replacements = {listen: listen.replace(address, "127.0.0.1:{port}")}
    replacements.update({f"127.0.0.1:{port}": f"127.0.0.1:{{upstream{index}}}"
                         for index, port in enumerate(EXAMPLE_PORTS)})
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{path.name}: {old!r} should be there once"
        text = text.replace(old, new)
    return text


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """Every fenced code block: (its language, its text)."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, re.M | re.S)]


def test_the_deployment_doc_shows_the_configs_the_tests_run():
    blocks = fenced_blocks(DEPLOYMENT_DOC.read_text())
    for path in (NGINX_CONF, HAPROXY_CONF):
        assert path.read_text() in [text for _, text in blocks], f"{path.name} is not in the doc"
    manifests = [path.read_text() for path in sorted(KUBERNETES.glob("*.yaml"))]
    shown = [text for language, text in blocks if language == "yaml"]
    assert shown, "the doc shows no YAML from conf/kubernetes/"
    for text in shown:
        assert any(text in manifest for manifest in manifests), text


# --- the fleet --------------------------------------------------------------------------------


@dataclass
class Load:
    """Client threads sending requests through the balancers until told to stop; every
    request is counted in the phase it began in."""

    balancers: dict[str, str]  # name -> base URL
    phase: str = "warm-up"
    stopping: bool = False
    counts: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0]))  # (phase, via) -> [sent, failed]
    failures: list[str] = field(default_factory=list)
    seen: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # via -> pids
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for via, url in self.balancers.items():
            for _ in range(CLIENTS_PER_BALANCER):
                thread = threading.Thread(target=self.client, args=(via, url), daemon=True)
                thread.start()
                self.threads.append(thread)

    def stop(self) -> None:
        self.stopping = True
        for thread in self.threads:
            thread.join(60)

    def client(self, via: str, url: str) -> None:
        give_up = time.monotonic() + CLIENT_SECONDS
        with requests.Session() as session:  # kept alive to the balancer
            for number in range(CLIENT_REQUESTS):
                if self.stopping or time.monotonic() > give_up:
                    return
                phase = self.phase
                pid = error = None
                try:
                    if number % 2:
                        response = session.post(url + "/work", data=b"x" * 100, timeout=30)
                    else:
                        response = session.get(url + "/work", timeout=30)
                    if response.status_code == 200:
                        pid = int(response.text)
                    else:
                        error = f"{response.status_code} {response.text[:200]!r}"
                except requests.RequestException as exc:
                    error = repr(exc)
                with self.lock:
                    count = self.counts[phase, via]
                    count[0] += 1
                    if error is None:
                        self.seen[via].add(pid)
                    else:
                        count[1] += 1
                        self.failures.append(f"{phase} via {via}: {error}")

    def serving(self, pids: set[int]) -> None:
        """Wait until one of ``pids`` has answered through every balancer."""
        wait_until(lambda: all(pids & self.seen[via] for via in self.balancers),
                   timeout=30, what=f"workers {sorted(pids)} to serve through every balancer")

    def table(self) -> str:
        phases = list(dict.fromkeys(phase for phase, _ in self.counts))
        lines = [f"{'phase':<18} {'via':<8} {'requests':>9} {'failures':>9}"]
        for phase in phases:
            for via in self.balancers:
                sent, failed = self.counts.get((phase, via), (0, 0))
                lines.append(f"{phase:<18} {via:<8} {sent:>9} {failed:>9}")
        return "\n".join(lines)


class Fleet:
    """The forkwsgi instances, each on its own port for good."""

    def __init__(self, serve) -> None:
        self.serve = serve
        self.ports = [free_port() for _ in EXAMPLE_PORTS]
        self.servers = [self.start(port) for port in self.ports]

    def start(self, port: int):
        server = self.serve("tests.test_fleet:work", "-b", f"127.0.0.1:{port}", *INSTANCE_ARGS,
                            workers=WORKERS, bind=False, wait=False)
        server.port = port
        wait_until(lambda: listening("127.0.0.1", port, server.proc), what=f"port {port}")
        server.wait_workers(WORKERS)
        return server

    @staticmethod
    def pids(server) -> set[int]:
        return {worker.pid for worker in server.workers()}

    def restart(self, index: int) -> set[int]:
        """TERM, then the same command line again."""
        server = self.servers[index]
        server.signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0
        self.servers[index] = server = self.start(self.ports[index])
        return self.pids(server)

    def reload(self, index: int) -> set[int]:
        """HUP: a new generation of workers; the old one retires."""
        server = self.servers[index]
        before = self.pids(server)
        server.signal(signal.SIGHUP)
        return wait_until(lambda: len(now := self.pids(server)) == WORKERS
                          and not now & before and now, what="the new generation alone")

    def upgrade(self, index: int) -> set[int]:
        """USR2; once the new arbiter's workers are up, TERM to the old arbiter."""
        server = self.servers[index]
        old = server.process
        server.signal(signal.SIGUSR2)

        def successor():
            for child in old.children():
                with contextlib.suppress(psutil.Error):
                    if len(live_children(child)) == WORKERS:
                        return child
            return None

        new = wait_until(successor, what="the new arbiter and its workers")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0
        # The instance is the new arbiter from now on, for the fixture's cleanup too.
        server.pid = new.pid
        return self.pids(server)


def unusual(haproxy) -> list[str]:
    """HAProxy's log lines of requests that did not end normally (a termination state
    other than ``----``), but for the test's own probe that HAProxy listens."""
    text = (haproxy.directory / "stderr.log").read_text(errors="replace")
    return [line for line in text.splitlines()
            if re.search(r" (?!----)[A-Za-z-]{4} \d+/\d+/\d+/\d+/\+?\d+ ", line)
            and "<BADREQ>" not in line][-30:]


def live_children(proc: psutil.Process) -> list[psutil.Process]:
    alive = []
    for child in proc.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
    return alive


def test_a_fleet_behind_nginx_and_haproxy_restarts_reloads_and_upgrades_failing_nothing(
        serve, frontends):
    fleet = Fleet(serve)
    upstreams = {f"upstream{index}": port for index, port in enumerate(fleet.ports)}
    nginx = frontends.nginx(template(NGINX_CONF, "listen 80;", "80"), **upstreams)
    haproxy = frontends.haproxy(template(HAPROXY_CONF, "bind :80"), **upstreams)
    load = Load({"nginx": nginx.url, "haproxy": haproxy.url})
    load.start()
    try:
        for server in fleet.servers:
            load.serving(fleet.pids(server))
        phases = []
        for index in range(len(fleet.servers)):
            for step, action in (("restart", fleet.restart), ("HUP", fleet.reload),
                                 ("USR2", fleet.upgrade)):
                load.phase = f"{step} app{index + 1}"
                phases.append(load.phase)
                load.serving(action(index))
        load.phase = "after"
        wait_until(lambda: all(load.counts["after", via][0] >= 20 for via in load.balancers),
                   what="requests after the last step")
    finally:
        load.stop()
    table = load.table()
    print("\n" + table)
    assert not load.failures, "\n".join([table, *load.failures[:20], *unusual(haproxy),
                                         nginx.log()[-3000:]])
    assert all(load.counts.get((phase, via), (0, 0))[0]
               for phase in phases for via in load.balancers), table  # every step met traffic


# --- Kubernetes -------------------------------------------------------------------------------


def manifests() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def the(kind: str) -> dict:
    found = [doc for doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"one {kind} in conf/kubernetes/"
    return found[0]


@pytest.mark.parametrize("version", ["1.25", "latest"])
def test_the_kubernetes_manifests_are_valid(version):
    validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = validate.latest_version()
    documents = manifests()
    assert {doc["kind"] for doc in documents} == {"Deployment", "Service"}
    for doc in documents:
        # strict: an unknown field (a typo) is an error, not silently dropped
        validate.validate(doc, version, strict=True)


def test_the_kubernetes_timeouts_nest(tmp_path):
    """terminationGracePeriodSeconds covers --shutdown-delay and --graceful-timeout with a
    margin (the kubelet's SIGKILL comes at its end), read from the container's arguments
    by forkwsgi's own command-line parser; the probes and the Service name its port."""
    from forkwsgi.cli import build_command
    from forkwsgi.config import resolve
    from forkwsgi.settings import SETTINGS

    pod = the("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    with build_command().make_context("forkwsgi", list(container["args"])) as ctx:
        params = dict(ctx.params)
    given = {row.name: params[row.name] for row in SETTINGS
             if row.flags and params[row.name] not in (None, ())}
    cfg = resolve(given, params["app"], None, {}, search_dir=str(tmp_path))
    assert cfg.shutdown_delay > 0  # the endpoint's removal must get time to spread
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= cfg.shutdown_delay + cfg.graceful_timeout + GRACE_MARGIN
    assert "preStop" not in container.get("lifecycle", {})  # --shutdown-delay does its work

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    host, _, bound = cfg.bind[0].rpartition(":")
    assert host == "0.0.0.0" and int(bound) == ports["http"]
    host, _, bound = cfg.control_bind.rpartition(":")
    assert host == "0.0.0.0" and int(bound) == ports["control"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "control"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "control"}
    service = the("Service")["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    assert service["selector"] == the("Deployment")["spec"]["selector"]["matchLabels"]


def test_the_pod_s_own_arguments_serve_and_its_probes_follow_a_stop(serve):
    """The container's arguments, run as they are but on free loopback ports: the
    readiness probe's URL says ready, then not ready from the TERM on while the app is
    still served (--shutdown-delay), and the liveness probe's URL answers throughout."""
    from forkwsgi import control
    from tests.conftest import free_port, wait_until

    (container,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    control_at = f"127.0.0.1:{free_port()}"
    args[args.index("-b"):args.index("-b") + 2] = []  # serve() binds a free port
    args[args.index("--control-bind") + 1] = control_at
    app = args.pop()
    server = serve(app, *args, workers=2)
    probe = {name: container[name]["httpGet"]["path"]
             for name in ("readinessProbe", "livenessProbe")}
    wait_until(lambda: control.fetch(control_at, probe["readinessProbe"])[0] == 200,
               what="ready")
    server.signal(signal.SIGTERM)
    wait_until(lambda: control.fetch(control_at, probe["readinessProbe"])[0] == 503,
               what="not ready after TERM")
    assert requests.get(server.url, timeout=10).status_code == 200
    assert control.fetch(control_at, probe["livenessProbe"])[0] == 200
    assert server.wait_exit(60) == 0
