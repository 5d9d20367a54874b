"""The arbiter: signals and deadlines in, spawn / reap / retire / murder out.

Owns: the master loop. It binds the listeners before any fork, forks the
workers, and then sleeps on a self-pipe (serving the control endpoint
meanwhile) until a signal arrives or the nearest deadline passes (read from
the scoreboard). The signal contract is ``handle_<signal>`` below, one
method per row of docs/signals.md. It decides which worker leaves and why,
and says so once per exit.

Must never: serve a request, import the application (unless ``preload``),
or keep per-worker state the scoreboard already holds. Pidfiles, logs,
listeners, titles, the messages to systemd (notify.py), the USR2 upgrades
(upgrade.py), recycling policies (recycling.py) and the metrics
(metrics.py, control.py) belong to their own small modules.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import select
import signal
import time
from dataclasses import dataclass

from forkwsgi import (
    control,
    fdlimit,
    handoff,
    metrics,
    notify,
    pidfile,
    proctitle,
    recycling,
    scoreboard,
)
from forkwsgi import listeners as listeners_mod
from forkwsgi.settings import BY_NAME
from forkwsgi.upgrade import ACTIVATED_ENV, ADOPT_ENV, PARENT_ENV, Upgrades
from forkwsgi.worker import BOOT_ERROR, DUMP_SIGNAL, FORK_SIGNALS, Worker

log = logging.getLogger("forkwsgi.error")

SIGNALS = ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
SIG_NAMES = {getattr(signal, "SIG" + name): name.lower() for name in SIGNALS}
DUMP_GRACE = 1.0  # seconds a hung worker gets to write its stacks before SIGKILL
QUICK_GRACE = 2.0  # seconds workers get to exit after QUIT/INT before SIGKILL
MAX_SLEEP = 10.0  # an upper bound on a sleep, in case a deadline is missed
BOOT_BACKOFF, BOOT_BACKOFF_MAX = 1.0, 60.0  # seconds before a failed replacement is retried
STOP_PROGRESS = 5.0  # seconds between the progress lines of a long stop
BOOT_POLL = 0.05  # while a new generation boots, how often to check it is ready
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                           signal.SIGABRT})


@dataclass
class WorkerInfo:
    """What the arbiter knows of a worker; live state is in its scoreboard slot."""

    pid: int
    slot: int
    generation: int
    born: float
    retire_by: float | None = None  # SIGKILL after this, once asked to leave
    kill_at: float | None = None  # SIGKILL after this (timeout: stacks first)
    reason: str | None = None  # why the arbiter asked it to leave (metrics.EXIT_REASONS)
    recycling: str | None = None  # due for replacement (a reason): retired once it is up
    recycle_at: float | None = None  # --max-worker-lifetime, jitter included
    strikes: int = 0  # memory samples in a row over --max-worker-memory
    adopted: bool = False  # the previous image's, after an in-place upgrade
    detail: str = ""  # what it was doing then, for the exit's log line


class Arbiter(Upgrades):
    def __init__(self, cfg, reload_config=None, start_dir: str | None = None) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.pid = os.getpid()
        self.workers: dict[int, WorkerInfo] = {}
        self.generation = 0
        self.target = cfg.workers
        self.listeners: list[listeners_mod.Listener] = []
        self.board: scoreboard.Scoreboard | None = None
        self.handoff_pair = None  # made in start(), before the first fork
        # With every worker busy, none watches its siblings: the arbiter asks those in long
        # requests to queue their waiting connections (handoff.Watch), so the first worker
        # to be free finds them there, oldest first.
        self.move_watch = handoff.Watch(lambda: scoreboard.busy_slots(self.board.mem),
                                        handoff.ARBITER_AFTER, handoff.ARBITER_LOOK,
                                        handoff.ARBITER_QUIET_LOOK,
                                        lambda: scoreboard.idle_slots(self.board.mem))
        self.next_look = 0.0
        self.app = None
        self.stopping = False
        self.stop_deadline = 0.0  # during --shutdown-delay: when the stop begins
        # When the TERM (or INT, QUIT) that began a stop arrived (monotonic), else None: from
        # then on the server is not ready, --shutdown-delay included.
        self.draining_since: float | None = None
        self.exit_status = 0
        self.reexec_pid = 0
        self.pending_generation: int | None = None  # a reload waiting for its workers to boot
        self.notifier = notify.Notifier()  # silent until start() finds systemd's NOTIFY_SOCKET
        self.activated = False  # serving systemd's sockets alone (LISTEN_FDS, no bind of ours)
        self.preflight = None  # the subprocess.Popen checking an in-place upgrade's new code
        self.start_dir = start_dir or os.getcwd()  # before --chdir: where USR2 re-execs
        self._wake_r = self._wake_w = -1
        self.control: control.ControlServer | None = None
        self.access = None  # the access log, opened for a request a dead worker held
        self.totals = metrics.Totals()  # the counters of workers that are gone
        self.next_progress = 0.0  # the next progress line of a stop
        self.recycler = recycling.Recycler(cfg)
        self.boot_failures = 0  # replacements in a row that could not load the app
        self.last_boot_failure = 0.0
        self.spawn_after = 0.0  # no new worker before this (backing off after boot failures)
        self.started = time.time()

    # --- start and stop -----------------------------------------------------------------------

    def run(self) -> int:
        try:
            if not self.start():
                return self.exit_status
            self.loop()
        except KeyboardInterrupt:
            self.stop(graceful=False)
            self.wait_workers()
        finally:
            self.cleanup()
        return self.exit_status

    def start(self) -> bool:
        cfg = self.cfg
        os.umask(cfg.umask)
        self.call_hook("on_starting", self)
        # First: neither a preloaded app nor any worker may see NOTIFY_SOCKET and speak for us.
        self.notifier = notify.Notifier.from_environ(self.pid)
        parent = os.environ.get(PARENT_ENV)
        if cfg.pid:
            # Before binding: a second server refused here must not take connections
            # (SO_REUSEPORT) or a unix socket path from the one already running.
            try:
                stale = pidfile.claim(cfg.pid, [self.pid, int(parent) if parent else 0])
            except pidfile.PidfileError as exc:
                log.error("%s", exc)
                self.exit_status = 1
                return False
            if stale:
                log.info("replacing stale pidfile %s: pid %s is not a running forkwsgi "
                         "arbiter", cfg.pid, stale)
        inherited = listeners_mod.inherited_fds()
        binds = cfg.bind
        if inherited and ("LISTEN_FDS" in os.environ or os.environ.get(ACTIVATED_ENV)) \
                and binds == BY_NAME["bind"].default:
            binds = []  # socket activation: systemd chose the addresses, add none of ours
            self.activated = True  # and so will the image an upgrade execs
        try:
            self.listeners = listeners_mod.open_listeners(
                binds, cfg.backlog, cfg.reuse_port, inherited, cfg.socket_mode, cfg.socket_group)
        except listeners_mod.ListenerError as exc:
            log.error("cannot listen: %s", exc)
            self.exit_status = 1
            return False
        for key in (listeners_mod.INHERITED_FDS_ENV, "LISTEN_FDS", "LISTEN_PID",
                    "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(ACTIVATED_ENV, None)
        if cfg.pid:
            try:
                pidfile.write(cfg.pid, self.pid)
            except pidfile.PidfileError as exc:
                log.error("%s", exc)
                self.exit_status = 1
                return False
        self.board = scoreboard.Scoreboard()
        where = control.address(cfg.control_bind, cfg.pid, self.pid)
        if where is not None:
            self.control = control.ControlServer(where, self.control_routes)
            try:
                self.control.open()
            except listeners_mod.ListenerError as exc:
                log.error("cannot serve the control endpoint: %s", exc)
                self.control = None
                self.exit_status = 1
                return False
        fdlimit.fit(cfg)
        self.handoff_pair = handoff.make_pair()
        if cfg.preload and not self.load_app():
            return False
        self.install_signals()
        proctitle.set_title("arbiter", cfg)
        for listener in self.listeners:
            log.info("Listening at: %s (%s)", listener.url(cfg.tls_context is not None),
                     self.pid)
        if self.control is not None:
            log.info("Control endpoint at: %s", self.control.bind)
        log.info("Arbiter booted: pid %s, %s worker(s)%s", self.pid, self.target,
                 f", taking over from {parent}" if parent else "")
        self.adopt_workers()
        self.manage_workers()
        self.call_hook("when_ready", self)
        return True

    def load_app(self) -> bool:
        from forkwsgi.loader import AppLoadError, load_from_config

        try:
            self.app = load_from_config(self.cfg)
        except AppLoadError as exc:
            log.error("failed to load the application: %s", exc)
            self.exit_status = BOOT_ERROR
            return False
        return True

    def install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in SIG_NAMES:
            # The handler does nothing: the wakeup fd carries the signal number to the loop,
            # so signals are handled in order, one at a time, outside any system call.
            signal.signal(signum, _noop)
        # An upgrade blocks these across execve (they would kill an image without handlers
        # yet); what arrived meanwhile is pending, and comes now, to the handlers above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIG_NAMES)

    def cleanup(self) -> None:
        if self.control is not None:
            self.control.close()
        successor = self.reexec_pid and _alive(self.reexec_pid)
        listeners_mod.close_listeners(self.listeners, unlink=not successor)
        if self.cfg.pid:
            if not successor:
                pidfile.remove(self.cfg.pid, self.pid)
            pidfile.remove(self.cfg.pid + ".oldbin", self.pid)  # after USR2: we are the old one
        self.call_hook("on_exit", self)
        log.info("Shutting down: arbiter %s", self.pid)

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners so newcomers are refused; ask every worker to leave."""
        now = time.monotonic()
        if self.stopping and graceful:
            graceful = False  # a second TERM means: now
        self.stopping = True
        if self.draining_since is None:
            self.draining_since = now
        self.stop_deadline = now + (self.cfg.graceful_timeout if graceful else QUICK_GRACE)
        self.next_progress = now + STOP_PROGRESS
        # The listening sockets close once every process has closed them. The arbiter goes
        # first (it never accepts), so the last to close is a worker, which takes the
        # connections queued by then and serves them (Connections.close_listeners).
        successor = self.reexec_pid and _alive(self.reexec_pid)
        listeners_mod.close_listeners(self.listeners, unlink=not successor)
        self.listeners = []
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        log.info("%s stop: %d worker(s)", "Graceful" if graceful else "Quick", len(self.workers))
        for pid in list(self.workers):
            self.kill_worker(pid, sig)

    def wait_workers(self) -> None:
        deadline = time.monotonic() + QUICK_GRACE
        while self.workers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.workers):
            self.kill_worker(pid, signal.SIGKILL)
        self.reap()

    # --- the loop -----------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            signals = self.sleep(self.sleep_time())
            if signals.count(signal.SIGHUP) > 1:
                # HUPs that arrive together are one reload: each would re-read the same config.
                first = signals.index(signal.SIGHUP)
                signals = [s for i, s in enumerate(signals) if s != signal.SIGHUP or i == first]
            for signum in signals:
                handler = getattr(self, "handle_" + SIG_NAMES.get(signum, "unknown"), None)
                if handler is not None:
                    handler()
            self.reap()
            now = time.monotonic()
            self.notify(now)
            if self.stopping:
                if not self.workers:
                    return
                if now >= self.stop_deadline:
                    for pid in list(self.workers):
                        self.kill_worker(pid, signal.SIGKILL)
                        self.workers[pid].reason = self.workers[pid].reason or \
                            "graceful_timeout"
                    self.stop_deadline = now + QUICK_GRACE
                elif now >= self.next_progress:
                    self.stop_progress(now)
                continue
            if self.draining_since is not None and now >= self.stop_deadline:
                log.info("--shutdown-delay is over: stopping")
                self.stop(graceful=True)
                continue
            self.murder_workers(now)
            if self.stopping:  # a boot failure stops the server
                continue
            self.manage_workers()

    def sleep(self, timeout: float) -> list[int]:
        """Wait for a signal or ``timeout``, serving the control endpoint meanwhile; the
        signal numbers that arrived, in order."""
        served = self.control
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            readable = [self._wake_r]
            writable: list[int] = []
            now = time.monotonic()
            wait = deadline - now
            if self.cfg.handoff_after and self.target > 1 and not self.stop_begun:
                if now >= self.next_look:
                    self.next_look = self.move_watch.look(now, idle=False)
                wait = min(wait, self.next_look - now)
            if served is not None:
                readable += served.read_fds()
                writable = served.write_fds()
                client_deadline = served.next_deadline()
                if client_deadline is not None:
                    wait = min(wait, client_deadline - time.monotonic())
            try:
                ready, out, _ = select.select(readable, writable, [], max(0.0, wait))
            except InterruptedError:
                ready, out = [self._wake_r], []
            if served is not None and (ready or out or served.clients):
                served.ready([fd for fd in ready if fd != self._wake_r], out)
            if self._wake_r in ready:
                break
            if time.monotonic() >= deadline:
                return []
        try:
            return list(os.read(self._wake_r, 4096))
        except BlockingIOError:
            return []

    def sleep_time(self) -> float:
        """Until the nearest deadline: a worker's timeout, a retirement, the stop."""
        now = time.monotonic()
        # Workers booting for a reload do not signal when ready: look again soon.
        # Nor does anything signal that READY=1 is due, or a USR2 successor's hand-over.
        booting = self.pending_generation is not None or self.notifier.waiting()
        deadlines = [now + (BOOT_POLL if booting else MAX_SLEEP)]
        ping = self.notifier.deadline()
        if ping is not None:
            deadlines.append(ping)  # the watchdog's: systemd kills a silent service
        if self.stop_begun:
            deadlines.append(self.stop_deadline)
        if self.stopping:
            deadlines.append(self.next_progress)
        if self.spawn_after > now:
            deadlines.append(self.spawn_after)
        recycle = self.recycler.deadline(now)
        if recycle is not None:
            deadlines.append(recycle)
        if any(w.recycling is not None and w.retire_by is None for w in self.workers.values()):
            deadlines.append(now + BOOT_POLL)  # a replacement says nothing when it is up
        timeout = self.cfg.timeout
        for info in self.workers.values():
            if info.kill_at is not None:
                deadlines.append(info.kill_at)
            if info.retire_by is not None:
                deadlines.append(info.retire_by)
            elif timeout:
                slot = self.board.read(info.slot)
                since = slot.request_start if slot.state == scoreboard.BUSY else slot.heartbeat
                deadlines.append(since + timeout)
        return min(deadlines) - now

    # --- signal handlers: one per row of docs/signals.md -----------------------------------

    def handle_chld(self) -> None:
        """reap() runs after every wake-up. The one child waited for here is the check of an
        in-place upgrade, which decides whether the upgrade goes on."""
        if self.preflight is not None and self.preflight.poll() is not None:
            self.upgrade_checked()

    def handle_hup(self) -> None:
        """Reload the config, spawn a new generation; the old one retires once it is up."""
        if self.ignored_while_stopping("HUP"):
            return
        self.notifier.reloading()  # READY=1 follows once a generation is up, new or old
        if self.pending_generation is not None:
            self.abandon_generation(self.pending_generation)
        log.info("Hang up: reloading")
        if self.reload_config is not None:
            try:
                cfg = self.reload_config()
            except Exception as exc:
                log.error("reload failed, keeping the running configuration: %s", exc)
                return
            for warning in getattr(cfg, "warnings", ()):
                log.warning("reload: %s", warning)
            if cfg.bind != self.cfg.bind:
                log.warning("bind changed in the config; listeners change on restart or USR2")
            cfg.bind = self.cfg.bind
            self.apply_config(cfg)
        self.target = self.cfg.workers
        self.call_hook("on_reload", self)
        proctitle.set_title("arbiter", self.cfg)
        self.generation += 1
        self.pending_generation = self.generation
        self.manage_workers()
        # The running workers retire once the new generation is up: from now on their
        # responses say Connection: close, so the TERM finds no client about to reuse a
        # connection. Taken back if the new generation cannot load the app (boot_failed).
        self.mark_leaving([w for w in self.workers.values() if w.generation != self.generation])

    def abandon_generation(self, generation: int) -> None:
        """A HUP while a generation boots restarts it, rather than starting another beside
        it: at most one generation is ever starting. Its workers still booting are killed
        (they have served nothing); those already up finish their requests and go."""
        log.info("Hang up while generation %s was starting: restarting it", generation)
        now = time.monotonic()
        for info in list(self.workers.values()):
            if info.generation != generation or info.retire_by is not None \
                    or info.kill_at is not None:
                continue
            if self.board.state(info.slot) in (scoreboard.IDLE, scoreboard.BUSY):
                self.retire(info, "reload")
            else:
                self.kill_worker(info.pid, signal.SIGKILL)
                info.kill_at = now + QUICK_GRACE
                info.reason = "reload"
        self.pending_generation = None

    def apply_config(self, cfg) -> None:
        """Make a reloaded config current: environment, logs, import path."""
        from forkwsgi import loader, logs

        loader.apply_env(cfg)
        try:
            logs.setup_error_log(cfg)
        except (OSError, ValueError) as exc:
            log.error("reload: keeping the current logs: %s", exc)
        loader.prepare_import_path(cfg)
        fdlimit.fit(cfg)
        self.cfg = cfg
        self.recycler = recycling.Recycler(cfg)

    @property
    def stop_begun(self) -> bool:
        """TERM has come: the --shutdown-delay, or the stop itself (stop() sets
        draining_since too). Not ready from then on, and no reload or upgrade."""
        return self.draining_since is not None

    def stop_progress(self, now: float) -> None:
        """Every few seconds of a stop: what it waits for, and how long it may still take."""
        self.next_progress = now + STOP_PROGRESS
        busy = [w for w in self.workers.values()
                if self.board.state(w.slot) == scoreboard.BUSY]
        log.info("stopping: waiting for %d worker(s), %d request(s) in flight; %.0f s left "
                 "before they are killed", len(self.workers), len(busy),
                 max(0.0, self.stop_deadline - now))

    def handle_term(self) -> None:
        """Graceful stop; with --shutdown-delay, serve on for that long first (a second TERM
        ends the delay), so a load balancer stops sending connections before they are
        refused."""
        delay = self.cfg.shutdown_delay
        # A USR2 successor holds the same sockets: this stop refuses nothing, so no delay.
        successor = self.reexec_pid and _alive(self.reexec_pid)
        if self.stop_begun or not delay or successor:
            self.stop(graceful=True)
            return
        self.draining_since = time.monotonic()
        self.stop_deadline = self.draining_since + delay
        log.info("TERM: serving for %g s more before stopping (--shutdown-delay); another "
                 "TERM stops now", delay)

    def handle_int(self) -> None:
        self.stop(graceful=False)

    handle_quit = handle_int

    def ignored_while_stopping(self, name: str) -> bool:
        """A stop is final: no reload, upgrade or new worker may start once it has begun
        (--shutdown-delay included; a worker that dies meanwhile is still replaced)."""
        stopping = self.stop_begun
        if stopping:
            log.info("%s ignored: the server is stopping", name)
        return stopping

    def handle_ttin(self) -> None:
        if self.ignored_while_stopping("TTIN"):
            return
        self.target += 1
        log.info("TTIN: %d worker(s)", self.target)

    def handle_ttou(self) -> None:
        if self.target > 1:
            self.target -= 1
        log.info("TTOU: %d worker(s)", self.target)

    def handle_usr1(self) -> None:
        from forkwsgi import logs

        logs.reopen_files()
        for pid in list(self.workers):
            self.kill_worker(pid, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        if self.ignored_while_stopping("USR2"):
            return
        if self.cfg.upgrade == "in-place" and not self.reexec_pid:
            self.check_upgrade()
        else:
            self.reexec()

    def handle_winch(self) -> None:
        log.info("WINCH: stopping all workers gracefully; the arbiter stays")
        self.target = 0

    # --- workers ------------------------------------------------------------------------------

    def manage_workers(self) -> None:
        """Converge on ``target`` serving workers of the current generation. A worker due
        for recycling keeps serving until its replacement is up, so capacity never dips."""
        now = time.monotonic()
        # A worker being killed for a timeout no longer counts: its replacement starts now.
        current = [w for w in self.workers.values() if w.generation == self.generation
                   and w.retire_by is None and w.kill_at is None]
        self.start_recycling(current, now)
        staying = [w for w in current if w.recycling is None]
        missing = self.target - len(staying)
        if missing > 0 and now >= self.spawn_after:
            for _ in range(missing):
                self.spawn_worker()
        if missing < 0:
            for info in sorted(staying, key=lambda w: w.born)[:-missing]:
                self.retire(info, "scale")
        # Only a worker that reached its loop counts: one that failed to load the app
        # passes through RETIRING on its way out, and must not retire the one it replaces.
        ready = [w for w in staying
                 if self.board.state(w.slot) in (scoreboard.IDLE, scoreboard.BUSY)]
        if self.boot_failures and any(w.born > self.last_boot_failure for w in ready):
            log.warning("workers load the application again, after %d failure(s)",
                        self.boot_failures)
            self.boot_failures = 0
        replaced = [w for w in current if w.recycling is not None]
        for info in sorted(replaced, key=lambda w: w.born)[:len(ready) + len(replaced)
                                                          - self.target]:
            self.retire(info, info.recycling)  # type: ignore[arg-type]
        if self.pending_generation is not None and len(ready) >= self.target:
            self.pending_generation = None
            for info in list(self.workers.values()):
                if info.generation != self.generation and info.retire_by is None:
                    self.retire(info, "upgrade" if info.adopted else "reload")

    def start_recycling(self, current: list[WorkerInfo], now: float) -> None:
        """Mark the workers due for replacement (recycling.py decides), a few at a time."""
        if not self.recycler.active:
            return
        room = recycling.at_once(self.target) - sum(w.recycling is not None for w in current)
        serving = [w for w in current if w.recycling is None
                   and self.board.state(w.slot) in (scoreboard.IDLE, scoreboard.BUSY)]
        for info, reason, detail in self.recycler.due(serving, self.board, now):
            if room <= 0:
                break  # the next look takes it, once a replacement is up
            room -= 1
            info.recycling = reason
            info.detail = detail
            if reason != "max_requests":
                self.board.set_leaving(info.slot, scoreboard.LEAVING_RECYCLED)
            log.info("worker %s is due for recycling (%s%s); starting its replacement first",
                     info.pid, reason, f": {detail}" if detail else "")

    def spawn_worker(self) -> None:
        board = self.board
        slot = board.claim(0, self.generation)
        info = WorkerInfo(0, slot, self.generation, time.monotonic())
        self.recycler.born(info, info.born)
        self.call_hook("pre_fork", self, info)
        # Move every object the arbiter has made so far out of the collector's reach: the
        # child's collections then never write to the pages they share with the arbiter,
        # and copy-on-write leaves them shared (a smaller USS per worker).
        gc.freeze()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            info.pid = pid
            board.set_pid(slot, pid)
            self.workers[pid] = info
            return
        # --- child ---
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self.control is not None:
                # A control client's connection held open here would never see its EOF.
                self.control.close_inherited()
            info.pid = os.getpid()
            board.set_pid(slot, info.pid)
            random.seed()
            self.call_hook("post_fork", self, info)
            worker = Worker(self.cfg, self.listeners, board, slot, self.generation, self.pid,
                            app=self.app, handoff_pair=self.handoff_pair)
        except BaseException:
            log.exception("worker setup failed")
            os._exit(1)
        worker.run()  # never returns; it unblocks FORK_SIGNALS once its handlers are set
        os._exit(0)

    def mark_leaving(self, infos, code: int = scoreboard.LEAVING_RECYCLED) -> None:
        """Tell these workers, through their slots, that they are being replaced: their
        responses say Connection: close from their next batch of requests on. With code
        STAYING, take the word back, except from a worker being recycled or one that
        marked itself (its --max-requests spent): those leave whatever happens."""
        board = self.board
        for info in infos:
            current = board.leaving(info.slot)
            if code == scoreboard.STAYING:
                if current == scoreboard.LEAVING_RECYCLED and info.recycling is None \
                        and info.retire_by is None:
                    board.set_leaving(info.slot, code)
            elif current == scoreboard.STAYING:
                board.set_leaving(info.slot, code)

    def retire(self, info: WorkerInfo, reason: str) -> None:
        info.retire_by = time.monotonic() + self.cfg.graceful_timeout
        info.reason = reason
        self.kill_worker(info.pid, signal.SIGTERM)

    def kill_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        """Collect every exited child, ours or (as PID 1) re-parented orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if self.preflight is not None and pid == self.preflight.pid:
                self.preflight.returncode = os.waitstatus_to_exitcode(status)
                continue  # handle_chld() acts on it, at the CHLD that comes with it
            if pid == self.reexec_pid:
                self.reexec_pid = 0
                log.warning("the new arbiter %s exited; this one carries on", pid)
                self.mark_leaving(self.workers.values(), scoreboard.STAYING)
                if self.cfg.pid:
                    with contextlib.suppress(OSError):
                        os.replace(self.cfg.pid + ".oldbin", self.cfg.pid)
                proctitle.set_title("arbiter", self.cfg)
                continue
            info = self.workers.pop(pid, None)
            if info is None:
                continue  # an orphan re-parented to us as PID 1
            slot = self.board.read(info.slot)
            leaving = self.board.leaving(info.slot)
            self.totals.fold(*self.board.counters(info.slot))
            self.board.reset(info.slot)
            self.call_hook("child_exit", self, info)
            code = os.waitstatus_to_exitcode(status)
            # A worker that fails before it reaches its loop (the app does not import, a
            # crash at import) would fail again in its replacement: stop rather than fork
            # in a loop. A kill from outside (SIGKILL, SIGTERM) is not the code's fault, and
            # an exit after boot (even the app's own sys.exit(3)) is not a boot failure.
            booting = slot.state == scoreboard.BOOTING
            failed_boot = booting and (code > 0 or -code in CRASH_SIGNALS)
            ours = info.retire_by is not None or info.kill_at is not None
            self.account_exit(info, slot, code, leaving,
                              failed_boot and not ours and not self.stopping)
            if failed_boot and not ours and not self.stopping:
                self.boot_failed(info, code)

    def account_exit(self, info: WorkerInfo, slot: scoreboard.SlotView, code: int,
                     leaving: int, failed_boot: bool) -> None:
        """One log line per worker exit with its reason in words, its count in /metrics,
        and an access-log line for the request it held, if any (it got no answer)."""
        if info.reason is not None:
            reason = info.reason
        elif failed_boot:
            reason = "boot_failed"
        elif self.stopping:
            reason = "stop"
        elif leaving == scoreboard.LEAVING_MAX_REQUESTS:
            reason = "max_requests"
        elif code < 0 and -code not in CRASH_SIGNALS:
            reason = "signal"
        elif code != 0:
            reason = "crash"
        else:
            reason = "exit"
        how = f"exit status {code}" if code >= 0 else _signal_name(-code)
        busy = slot.state == scoreboard.BUSY
        held = f"{slot.method} {slot.target} from {slot.client}" if busy else ""
        detail = ", ".join(part for part in (info.detail, how if reason in (
            "crash", "signal", "boot_failed", "timeout", "graceful_timeout") else "",
            f"while serving {held}" if held else "") if part)
        self.totals.exited(metrics.WorkerExit(info.pid, info.generation, reason, detail,
                                              slot.requests, time.time()))
        words = _EXIT_WORDS.get(reason, reason)
        text = f"worker {info.pid} exited: {words}" + (f" ({detail})" if detail else "") + \
            f"; it served {slot.requests} request(s)"
        if reason in ("crash", "signal"):
            log.error("%s", text)
        elif reason in ("timeout", "graceful_timeout", "boot_failed"):
            log.warning("%s", text)
        else:
            log.info("%s", text)
        if busy:
            self.log_lost_request(slot, 504 if reason == "timeout" else 502)

    def log_lost_request(self, slot: scoreboard.SlotView, status: int) -> None:
        """The access-log line the dead worker could not write (docs/signals.md: 504 for a
        worker killed for its timeout, 502 for any other death; the client got no answer,
        and the line's length is 0)."""
        if self.cfg.access_logfile is None:
            return
        if self.access is None:
            from forkwsgi.accesslog import make_access_logger

            self.access = make_access_logger(self.cfg)
        host, _, port = slot.client.rpartition(":")
        path, _, query = slot.target.partition("?")
        environ = {"REQUEST_METHOD": slot.method, "RAW_URI": slot.target, "PATH_INFO": path,
                   "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1",
                   "REMOTE_ADDR": host or slot.client, "REMOTE_PORT": port}
        reason = "Gateway Timeout" if status == 504 else "Bad Gateway"
        self.access(environ, f"{status} {reason}", [], 0,  # type: ignore[misc]
                    max(0.0, time.monotonic() - slot.request_start))

    def boot_failed(self, info: WorkerInfo, code: int) -> None:
        others = [w for w in self.workers.values() if w.generation != info.generation]
        if info.generation == self.generation and self.pending_generation is not None and others:
            # A reload whose app does not load: keep serving with the old generation.
            log.error("reload failed: the new workers cannot load the application; "
                      "keeping the running workers")
            for w in [w for w in self.workers.values() if w.generation == self.generation]:
                self.kill_worker(w.pid, signal.SIGKILL)
            self.mark_leaving(others, scoreboard.STAYING)
            self.generation = max(w.generation for w in others)
            self.pending_generation = None
            return
        if info.generation != self.generation:
            return
        serving = [w for w in self.workers.values()
                   if self.board.state(w.slot) in (scoreboard.IDLE, scoreboard.BUSY)]
        if serving:
            # Broken code deployed, not yet reloaded, while the running workers still serve
            # the code they loaded: keep them, and try again later rather than fork in a loop.
            now = time.monotonic()
            self.boot_failures += 1
            self.last_boot_failure = now
            delay = min(BOOT_BACKOFF_MAX, BOOT_BACKOFF * 2 ** (self.boot_failures - 1))
            self.spawn_after = now + delay
            log.error("A NEW WORKER CANNOT LOAD THE APPLICATION (worker %s, %s; failure %d in "
                      "a row): %d worker(s) still serve; trying again in %gs",
                      info.pid, f"signal {-code}" if code < 0 else f"exit status {code}",
                      self.boot_failures, len(serving), delay)
            return
        log.error("worker %s failed to boot (%s): stopping", info.pid,
                  f"signal {-code}" if code < 0 else f"exit status {code}")
        self.exit_status = BOOT_ERROR
        self.stop(graceful=False)

    def murder_workers(self, now: float) -> None:
        """Kill workers past their deadlines: stacks first, then SIGKILL."""
        timeout = self.cfg.timeout
        for info in list(self.workers.values()):
            if info.kill_at is not None:
                if now >= info.kill_at:
                    self.kill_worker(info.pid, signal.SIGKILL)
                    info.kill_at = now + QUICK_GRACE
                continue
            if info.retire_by is not None:
                if now >= info.retire_by:
                    log.warning("worker %s did not finish in %ss; killing it",
                                info.pid, self.cfg.graceful_timeout)
                    self.kill_worker(info.pid, signal.SIGKILL)
                    info.kill_at = now + QUICK_GRACE
                    info.detail = f"retired for {info.reason}" if info.reason else ""
                    info.reason = "graceful_timeout"
                continue
            if not timeout:
                continue
            slot = self.board.read(info.slot)
            if slot.state == scoreboard.BUSY:
                if now - slot.request_start <= timeout:
                    continue
                log.critical("WORKER TIMEOUT (pid:%s): busy %.1fs on %s %s from %s; "
                             "dumping its stacks, then killing it", info.pid,
                             now - slot.request_start, slot.method, slot.target, slot.client)
            elif now - slot.heartbeat > timeout:
                log.critical("WORKER TIMEOUT (pid:%s): no heartbeat for %.1fs (%s)", info.pid,
                             now - slot.heartbeat, slot.state_name)
            else:
                continue
            self.kill_worker(info.pid, DUMP_SIGNAL)
            info.kill_at = now + DUMP_GRACE
            info.reason = "timeout"

    # --- the service manager: the arbiter decides, notify.py speaks --------------------------

    def notify(self, now: float) -> None:
        """Once a turn of the loop: READY=1 once the workers are up, STOPPING=1, the rest."""
        notifier = self.notifier
        if self.stop_begun:
            notifier.stopping()
        elif notifier.owes_ready() and self.generation_up():
            notifier.ready(self.pid, self.status_line())
        notifier.tick(now, self.status_line)

    def generation_up(self) -> bool:
        """Every worker the current generation needs has loaded the app and reached its loop
        (the readiness of a reload, manage_workers', for the first generation too)."""
        if self.pending_generation is not None:
            return False
        up = [w for w in self.workers.values() if w.generation == self.generation
              and w.retire_by is None and w.kill_at is None
              and self.board.state(w.slot) in (scoreboard.IDLE, scoreboard.BUSY)]
        return len(up) >= self.target

    def status_line(self) -> str:
        """systemd's STATUS=, as `systemctl status` shows it."""
        up = busy = served = 0
        for info in self.workers.values():
            slot = self.board.read(info.slot)
            up += slot.state in (scoreboard.IDLE, scoreboard.BUSY)
            busy += slot.state == scoreboard.BUSY
            served += slot.requests
        served += sum(self.totals.counters[:scoreboard.C_BYTES_IN])  # by workers now gone
        return f"{up}/{self.target} workers up, {busy} busy, {served} requests served"

    def adopt_workers(self) -> None:
        """After an in-place upgrade: the previous image's workers, our children still, serve
        until this image's first generation is up and then retire, as after a reload (and
        if the new workers cannot load the app, they go on serving). Their scoreboard went
        with that image, so each gets a fresh slot that says idle and whose heartbeat never
        ages: they are not held to --timeout meanwhile."""
        pids = [int(pid) for pid in os.environ.pop(ADOPT_ENV, "").split(",") if pid.isdigit()]
        if not pids:
            return
        import psutil

        now = time.monotonic()
        for pid in pids:
            try:
                if psutil.Process(pid).ppid() != self.pid:
                    continue  # not ours: never signal a stranger
            except psutil.Error:
                continue
            slot = self.board.claim(pid, self.generation)
            writer = scoreboard.SlotWriter(self.board, slot)
            writer.heartbeat(float("inf"))
            writer.set_state(scoreboard.IDLE)
            self.workers[pid] = WorkerInfo(pid, slot, self.generation, now, adopted=True)
        self.generation += 1
        self.pending_generation = self.generation
        log.info("Re-executed in place: %d worker(s) of the previous image serve until "
                 "generation %s is up", len(self.workers), self.generation)

    # --- the control endpoint (control.py serves it, metrics.py renders it) --------------------

    def ready(self) -> bool:
        """What /readyz says: a worker takes requests, and no stop has begun."""
        if self.stop_begun:
            return False
        return any(self.board.state(w.slot) in (scoreboard.IDLE, scoreboard.BUSY)
                   for w in self.workers.values())

    def live_workers(self) -> list[metrics.LiveWorker]:
        live = []
        for info in self.workers.values():
            seconds, counters = self.board.counters(info.slot)
            live.append(metrics.LiveWorker(self.board.read(info.slot), seconds, counters,
                                           info.born, info.recycling))
        return live

    def control_routes(self, method: str, target: str) -> tuple[int, str, bytes]:
        path = target.partition("?")[0]
        if path == "/livez":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready = self.ready()
            if ready and self.boot_failures:
                # Still serving, with fewer workers: ready, and /status says why.
                return 200, "text/plain", b"ready (degraded: new workers cannot load the " \
                    b"application)\n"
            return (200 if ready else 503), "text/plain", b"ready\n" if ready else (
                b"stopping\n" if self.stop_begun
                else b"not ready\n")
        if path == "/metrics":
            text = metrics.exposition(self.totals, self.live_workers(), self.ready(),
                                      self.stop_begun,
                                      self.started)
            return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()
        if path == "/status":
            import json

            from forkwsgi import __version__

            live = self.live_workers()
            now = time.monotonic()
            arbiter = {
                "pid": self.pid, "version": __version__, "app": proctitle.title("", self.cfg)
                .split("[", 1)[-1].rstrip("]"),
                "started": self.started, "uptime": round(time.time() - self.started, 3),
                "generation": self.generation, "target": self.target,
                "ready": self.ready(),
                "stopping": self.stop_begun,
                "stop_in": round(max(0.0, self.stop_deadline - now), 3) if self.stopping
                else None,
                "graceful_timeout": self.cfg.graceful_timeout,
                "boot_failures": self.boot_failures,
                "spawn_in": round(self.spawn_after - now, 3) if self.spawn_after > now
                else None,
                "memory_samples": self.recycler.samples,
                "listeners": [str(listener) for listener in self.listeners],
                "requests": sum(w.slot.requests for w in live) + sum(
                    self.totals.counters[:scoreboard.C_BYTES_IN]),
            }
            document = metrics.status(arbiter, self.totals, live)
            return 200, "application/json", json.dumps(document).encode()
        return 404, "text/plain", b"not found: try /livez, /readyz, /metrics or /status\n"

    # --- hooks --------------------------------------------------------------------------------

    def call_hook(self, name: str, *args) -> None:
        hook = getattr(self.cfg, name, None)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("%s hook failed", name)


_EXIT_WORDS = {
    "timeout": "killed after --timeout",
    "graceful_timeout": "killed at the end of --graceful-timeout",
    "max_requests": "recycled after --max-requests",
    "memory": "recycled for --max-worker-memory",
    "lifetime": "recycled after --max-worker-lifetime",
    "reload": "retired by a reload (HUP)",
    "upgrade": "retired by an in-place upgrade (USR2)",
    "scale": "retired to scale down (TTOU/WINCH)",
    "stop": "stopped with the server",
    "crash": "crashed",
    "signal": "killed by a signal the arbiter did not send",
    "boot_failed": "could not boot",
    "exit": "left on its own",
}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _noop(signum, frame) -> None:
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
