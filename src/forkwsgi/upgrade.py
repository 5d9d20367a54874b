"""USR2: new code on the same listening sockets, in a new arbiter or in this very process.

Owns: both forms of the upgrade, as methods the Arbiter inherits. ``--upgrade
fork`` (the default, gunicorn's and Unicorn's): a new arbiter, a child of
this one, execs the command line this one was started with and adopts its
listening sockets (``FORKWSGI__FDS``); the operator then stops the old one.
``--upgrade in-place``: the new code's ``--check-config`` runs in a child
first (an exec cannot be undone), then this process execs itself, the PID a
supervisor tracks unchanged, its workers' PIDs in ``FORKWSGI__WORKERS`` for
the new image to adopt (Arbiter.adopt_workers). The environment each image
hands the next, and the signals blocked across the exec.

Must never: exec before the sockets are marked inheritable, let a signal
reach an image without handlers (they are blocked across the exec), or exec
in place before the check has passed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from forkwsgi import listeners as listeners_mod
from forkwsgi import proctitle, scoreboard
from forkwsgi.worker import FORK_SIGNALS

log = logging.getLogger("forkwsgi.error")

PARENT_ENV = "FORKWSGI__PARENT"
ADOPT_ENV = "FORKWSGI__WORKERS"  # in-place upgrade: the previous image's workers, to adopt
ACTIVATED_ENV = "FORKWSGI__ACTIVATED"  # the inherited sockets are systemd's: bind none of ours


class Upgrades:
    """The Arbiter's USR2 methods (they use its listeners, workers, notifier, config)."""

    def reexec(self) -> None:
        """--upgrade fork: a new arbiter, our child, beside this one (docs/signals.md)."""
        if self.reexec_pid:
            log.warning("USR2 ignored: new arbiter %s is already running", self.reexec_pid)
            return
        self.notifier.reloading()
        handover = self.notifier.handover_pair()  # how the successor becomes systemd's MAINPID
        env = self.exec_env()
        if self.cfg.pid:
            with contextlib.suppress(OSError):
                os.replace(self.cfg.pid, self.cfg.pid + ".oldbin")
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("USR2: cannot fork a new arbiter: %s", exc.strerror)
            if self.cfg.pid:
                with contextlib.suppress(OSError):
                    os.replace(self.cfg.pid + ".oldbin", self.cfg.pid)
            for sock in handover or ():
                sock.close()
            return  # READY=1 is still owed, and the loop sends it: our workers serve on
        if pid:
            self.reexec_pid = pid
            # This generation is on its way out (WINCH or TERM next): its responses say
            # Connection: close from now on, so new requests come on new connections, which
            # the new arbiter's workers accept too, and the stop finds no client about to
            # reuse a connection. Taken back if the new arbiter exits (reap).
            self.mark_leaving(self.workers.values())
            if handover is not None:
                handover[1].close()
                self.notifier.await_successor(pid, handover[0])
            proctitle.set_title("arbiter (old)", self.cfg)
            log.info("USR2: started new arbiter %s", pid)
            return
        env[PARENT_ENV] = str(self.pid)
        if handover is not None:
            handover[0].close()
        env.update(self.notifier.successor_env(os.getpid(), handover and handover[1]))
        try:
            self.exec_image(env)
        except BaseException:
            log.exception("USR2: exec of the new arbiter failed")
            os._exit(1)

    def check_upgrade(self) -> None:
        """--upgrade in-place, first: the new code's own --check-config (the configuration,
        the application, the pidfile), in a child, while this image serves on. An exec
        cannot be undone: a new image that fails to start would take the service down with
        it, so it happens only once the check passes (handle_chld)."""
        if self.preflight is not None:
            log.warning("USR2 ignored: the upgrade's check (pid %s) still runs",
                        self.preflight.pid)
            return
        import subprocess

        argv = _command_line()
        options = len(argv) - len(sys.argv) + 1  # where the program's own arguments begin
        check = [sys.executable, *argv[1:options], "--check-config", *argv[options:]]
        try:
            self.preflight = subprocess.Popen(check, cwd=self.start_dir,
                                              stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL)
        except OSError as exc:
            log.error("USR2: cannot check the new code (%s): not upgrading", exc.strerror)
            return
        log.info("USR2: checking the new code and configuration (--check-config, pid %s)",
                 self.preflight.pid)

    def upgrade_checked(self) -> None:
        check, self.preflight = self.preflight, None
        if check.returncode != 0:
            log.error("USR2: the new code or configuration fails --check-config (exit status "
                      "%s; its error is above): not upgrading, this one serves on",
                      check.returncode)
        elif not self.ignored_while_stopping("USR2"):
            self.reexec_in_place()

    def reexec_in_place(self) -> None:
        """--upgrade in-place: execve over this very process, so the PID a supervisor tracks
        (systemd's MAINPID, a container's PID 1) stays. The workers, still our children,
        keep serving; the new image adopts them and retires them once its own are up."""
        self.notifier.reloading()
        env = self.exec_env()
        env[ADOPT_ENV] = ",".join(str(pid) for pid in self.workers)
        env.update(self.notifier.successor_env(self.pid))
        log.info("USR2: re-executing in place (pid %s); %d worker(s) serve meanwhile",
                 self.pid, len(self.workers))
        # Their keep-alive promises end now, while they can still hear it (the new image
        # has another scoreboard): by the time it retires them, their clients have been
        # told Connection: close, rather than closed under a request they were sending.
        self.mark_leaving(self.workers.values())
        cwd = os.getcwd()
        try:
            self.exec_image(env)
        except OSError as exc:
            self.mark_leaving(self.workers.values(), scoreboard.STAYING)
            with contextlib.suppress(OSError):
                os.chdir(cwd)
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            log.error("USR2: cannot re-execute (%s); carrying on", exc.strerror or exc)

    def exec_env(self) -> dict[str, str]:
        """The environment of the next image: ours, and the listening sockets it inherits."""
        env = dict(os.environ)
        env[listeners_mod.INHERITED_FDS_ENV] = listeners_mod.set_inheritable(self.listeners)
        if self.activated:
            env[ACTIVATED_ENV] = "1"
        return env

    def exec_image(self, env: dict[str, str]) -> None:
        """Run the command line this arbiter was started with; returns only by raising."""
        os.chdir(self.start_dir)  # where relative paths on that command line were meant
        signal.set_wakeup_fd(-1)
        # Until the new image has its handlers, these would kill it (the default action of
        # most of them): blocked, they wait for it (install_signals unblocks them).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.execve(sys.executable, [sys.executable, *_command_line()[1:]], env)


def _command_line() -> list[str]:
    """How this process was started, interpreter options included (an upgrade runs it
    again: a reinstalled forkwsgi, Python or application is picked up)."""
    return list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
