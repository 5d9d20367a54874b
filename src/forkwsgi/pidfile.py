"""The pidfile: written atomically, removed on exit only if it is still ours.

Must never: remove a pidfile another arbiter (a USR2 successor) has written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write(path: str, pid: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".forkwsgi-pid-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{pid}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # rename(2) is atomic: readers see the old or the new file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def remove(path: str, pid: int) -> None:
    if read(path) == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)
