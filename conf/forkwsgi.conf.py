"""forkwsgi example configuration (Python), with hooks.

Use it with `forkwsgi -c conf/forkwsgi.conf.py`. Lowercase module-level names
that are settings (docs/settings.md) are settings; hooks are functions named
after a hook. Names starting with "_" or holding an uppercase letter, modules
and other functions are yours: a lowercase plain value that is not a setting
is an error, so a typo cannot pass silently.
"""

import multiprocessing

LOG_DIR = "/tmp"  # a constant of this file: uppercase, so not a setting

app = "forkwsgi.examples.hello:app"
bind = ["127.0.0.1:8000"]
workers = min(4, multiprocessing.cpu_count())
timeout = 30
access_logfile = "-"
access_logformat = "json"
env = {"APP_ENV": "example"}


def _describe(worker):
    return f"worker {getattr(worker, 'pid', '?')}"


def when_ready(arbiter):
    print("forkwsgi example: the first workers are up", flush=True)


def post_fork(arbiter, worker):
    print(f"forkwsgi example: {_describe(worker)} forked", flush=True)


def worker_exit(worker):
    print(f"forkwsgi example: {_describe(worker)} exiting", flush=True)
