"""The pidfile: checked before start, written atomically, removed on exit only if it is
still ours.

Owns: deciding whether a pidfile may be taken (its directory is writable, and it does
not name a running forkwsgi arbiter other than ours or our USR2 parent), writing it,
and removing it.

Must never: remove a pidfile another arbiter (a USR2 successor) has written, or
overwrite one that names a running arbiter: logrotate's USR1 and the USR2 recipe
would then signal the wrong process, and that arbiter's exit would delete ours.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable

import psutil

SETTING = "pid"


class PidfileError(Exception):
    """The pidfile cannot be taken; str() is one line naming the setting."""


def _unwritable(path: str, exc: OSError) -> PidfileError:
    reason = exc.strerror or str(exc)
    return PidfileError(f"cannot write pidfile {path} (setting '{SETTING}'): {reason}")


def check_writable(path: str) -> None:
    """Raise PidfileError unless ``write(path, ...)`` can succeed.

    Probes with a real file rather than os.access: that also catches a read-only
    mount, a full disk and root squashed on NFS, exactly as the write would meet them.
    """
    if os.path.isdir(path):
        raise _unwritable(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".forkwsgi-pid-", dir=directory)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def running_arbiter(pid: int) -> bool:
    """Whether ``pid`` is a live forkwsgi arbiter (not a worker, not a reused PID)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        try:
            argv = proc.cmdline()
        except psutil.AccessDenied:
            # Another user's process under hidepid: its short name is all there is, and
            # overwriting a live arbiter's file is the worse mistake.
            return proc.name().startswith("forkwsgi")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if "forkwsgi: arbiter" in " ".join(argv):
        return True
    # Without setproctitle the command line is still the console script or
    # `python -m forkwsgi`, for the workers too: a worker of another server holding a
    # reused PID would pass for an arbiter then; that is the rarer mistake.
    runs_module = any(argv[i:i + 2] == ["-m", "forkwsgi"] for i in range(len(argv)))
    return runs_module or any(os.path.basename(arg) == "forkwsgi" for arg in argv[:2])


def claim(path: str, ours: Iterable[int]) -> int | None:
    """Check that ``path`` may be written by an arbiter whose own PIDs are ``ours``
    (itself, and the arbiter that started it with USR2); raise PidfileError if not.

    Returns the PID of a stale pidfile that will be replaced, else None.
    """
    check_writable(path)
    pid = read(path)
    if pid is None or pid in set(ours):
        return None
    if running_arbiter(pid):
        raise PidfileError(f"pidfile {path} (setting '{SETTING}') names a running forkwsgi "
                           f"arbiter, pid {pid}: stop it first, or upgrade it in place "
                           "with USR2")
    return pid


def write(path: str, pid: int) -> None:
    """Write ``pid`` to ``path`` atomically; PidfileError names the setting."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".forkwsgi-pid-", dir=directory)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{pid}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # rename(2) is atomic: readers see the old or the new file
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise


def read(path: str) -> int | None:
    try:
        with open(path) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def remove(path: str, pid: int) -> None:
    if read(path) == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)
