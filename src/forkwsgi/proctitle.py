"""Process titles: ``forkwsgi: arbiter [myapp:app]`` / ``forkwsgi: worker [myapp:app]``.

Owns: the title format, so ``ps`` and tests see the same words everywhere.
Must never: fail the server if setproctitle cannot set a title.
"""

from __future__ import annotations


def title(role: str, cfg) -> str:
    # With only --mount there is no APP: the mounted specs stand for it.
    label = cfg.name or cfg.app or " ".join((getattr(cfg, "mount", None) or {}).values())
    return f"forkwsgi: {role} [{label}]"


def set_title(role: str, cfg) -> None:
    try:
        import setproctitle
    except ImportError:  # a title is a convenience; serving is the job
        return
    setproctitle.setproctitle(title(role, cfg))
