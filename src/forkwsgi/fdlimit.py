"""Fitting the workers into the open-file limit.

Owns: raising the soft RLIMIT_NOFILE to the hard limit at start (what the
Go runtime and nginx's worker_rlimit_nofile do), and lowering
``max_connections`` when a worker's connections still would not fit beside
the descriptors it needs for itself, saying so once.

Must never: run per connection, or raise the hard limit (that is the
supervisor's: ``ulimit -Hn``, systemd ``LimitNOFILE=``, Docker ``--ulimit``).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("forkwsgi.error")

# Descriptors a worker needs besides its connections: listeners, epoll, the wake-up pipe,
# the handoff pair, log files, a body's temporary file, and the app's own (a database
# connection, a few files).
RESERVE = 64


def fit(cfg) -> None:
    """Raise the soft limit as far as allowed; lower ``cfg.max_connections`` to fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cfg.max_connections + RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container's nr_open may be below the hard limit: keep the soft one
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(1, soft - RESERVE)
        log.warning("max_connections lowered from %d to %d to fit the open-file limit (%d); "
                    "raise it with ulimit -n or systemd's LimitNOFILE=",
                    cfg.max_connections, fitted, soft)
        cfg.max_connections = fitted
