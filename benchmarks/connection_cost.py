"""Instructions one uwsgi connection costs the serving process, forkwsgi beside uWSGI.

Behind nginx, a uwsgi upstream gets one connection per request, so what a
connection costs the app server (accept, read the variables, build the
environ, call the app, answer, close) decides its throughput. This counts
that cost in instructions, which repeat run to run where a timing on a shared
machine does not: each server runs under valgrind (callgrind) twice, serving
a sequential client SMALL and then SMALL + N connections, and the difference
in the serving process's instructions, divided by N, is the cost of one
connection. Start-up and the app's import cancel out. Only user-space
instructions are counted: the kernel's share (accept, read, write, close) is
about the same for both servers, as CPU times show.

The client sends nginx's uwsgi_params for ``GET /`` (as gateways.py has
nginx send them) to the hello app and reads the answer to the close.

    benchmarks/.venv/bin/python benchmarks/connection_cost.py

Needs valgrind (setup.sh installs it). Every process it starts listens on
127.0.0.1 only and is stopped by PID when its count is taken.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import BIN, HERE, HOST, free_port

SMALL = 100

# nginx's uwsgi_params for "GET /" on port 8080, as nginx fills them in.
PARAMS = (("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""),
          ("CONTENT_LENGTH", ""), ("REQUEST_URI", "/"), ("PATH_INFO", "/"),
          ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
          ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", HOST), ("REMOTE_PORT", "51234"),
          ("SERVER_PORT", "8080"), ("SERVER_NAME", "localhost"),
          ("HTTP_HOST", "localhost:8080"), ("HTTP_USER_AGENT", "wrk"))


def uwsgi_packet() -> bytes:
    def string(text: str) -> bytes:
        return struct.pack("<H", len(text)) + text.encode("latin-1")

    block = b"".join(string(name) + string(value) for name, value in PARAMS)
    return struct.pack("<BHB", 0, len(block), 0) + block


def forkwsgi_argv(port: int) -> list[str]:
    # No handoff: one worker has no sibling to hand a connection to.
    return [str(BIN / "forkwsgi"), "-w", "1", "--handoff-after", "0", "-b",
            f"uwsgi://{HOST}:{port}", "--chdir", str(HERE), "apps:app"]


def uwsgi_argv(port: int) -> list[str]:
    # One process, no master: the process valgrind starts is the one that serves.
    return [str(BIN / "uwsgi"), "--socket", f"{HOST}:{port}", "--module", "apps:app",
            "--pythonpath", str(HERE), "--processes", "1", "--disable-logging",
            "--need-app", "--die-on-term", "--single-interpreter"]


SERVERS = {"forkwsgi": forkwsgi_argv, "uwsgi": uwsgi_argv}


def serve(port: int, count: int, packet: bytes) -> None:
    """``count`` sequential connections, each one request read to the close."""
    for _ in range(count):
        with socket.create_connection((HOST, port), timeout=60) as sock:
            sock.sendall(packet)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            sys.exit(f"unexpected answer: {answer[:80]!r}")


def wait_ready(port: int, process: subprocess.Popen, packet: bytes) -> None:
    deadline = time.monotonic() + 300  # the app's start-up, under valgrind
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with status {process.returncode} before it served")
        try:
            serve(port, 1, packet)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("the server did not answer within 300 s")


def counted(argv: list[str], port: int, count: int, scratch: Path) -> int:
    """Instructions of the process that served (the newest process: forkwsgi's worker,
    forked after its arbiter; uWSGI's only one) after ``count`` connections."""
    for old in scratch.glob("callgrind.*"):
        old.unlink()
    packet = uwsgi_packet()
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--trace-children=yes",
         f"--callgrind-out-file={scratch}/callgrind.%p", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, process, packet)
        serve(port, count, packet)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: ours alone
            process.wait()
    files = sorted(scratch.glob("callgrind.*"), key=lambda p: int(p.suffix[1:]))
    if not files:
        sys.exit("valgrind wrote no profile")
    text = files[-1].read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        sys.exit(f"no instruction total in {files[-1]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000,
                        help=f"connections measured (beyond the first {SMALL})")
    parser.add_argument("--servers", default="forkwsgi,uwsgi",
                        help="comma-separated: " + ",".join(SERVERS))
    args = parser.parse_args()
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        sys.exit("needs valgrind (bash benchmarks/setup.sh installs it)")
    costs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.servers.split(","):
            argv = SERVERS[name]
            small = counted(argv(port := free_port()), port, SMALL, Path(scratch))
            large = counted(argv(port := free_port()), port, SMALL + args.connections,
                            Path(scratch))
            costs[name] = (large - small) / args.connections
            print(f"{name}: {costs[name]:,.0f} instructions per uwsgi connection", flush=True)
    if "forkwsgi" in costs and "uwsgi" in costs:
        print(f"forkwsgi / uWSGI: {costs['forkwsgi'] / costs['uwsgi']:.2f}x the instructions")


if __name__ == "__main__":
    main()
