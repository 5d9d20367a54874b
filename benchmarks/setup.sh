#!/usr/bin/env bash
# Prepare everything benchmarks/run.py needs; safe to run again.
#
#   bash benchmarks/setup.sh
#
# Creates benchmarks/.venv (its own venv, never the project's), installs forkwsgi
# from this checkout plus the peers it is measured against, and apt-installs the
# tools the runner drives (wrk, nginx, strace, taskset, valgrind) and the headers the peers
# compile against (python3-dev for uWSGI, libev-dev for bjoern).
#
# A peer that fails to install is reported and skipped; run.py skips any server
# whose package is missing and says so in its report.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

# --- system packages -------------------------------------------------------
# Only what is missing, so a rerun on a ready machine touches no registry.
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v strace >/dev/null || need+=(strace)
command -v valgrind >/dev/null || need+=(valgrind)  # hotpath.py --instructions
command -v taskset >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(build-essential)
dpkg -s python3-dev >/dev/null 2>&1 || need+=(python3-dev)
dpkg -s libev-dev >/dev/null 2>&1 || need+=(libev-dev)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}"
fi

# --- the venv ----------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel

log "installing forkwsgi from $REPO (editable)"
"${PIP[@]}" -e "$REPO"

log "installing the runner's own deps"
"${PIP[@]}" psutil matplotlib

# Each peer on its own, so one that fails to build does not stop the rest.
#  - gunicorn 25+ has --http-parser {python,fast}; "fast" needs the gunicorn_h1c
#    C extension. It goes in beside gunicorn rather than as gunicorn[fast]: when
#    that extra pins an h1c PyPI does not serve yet, pip quietly falls back to an
#    older gunicorn, and we want the newest. gunicorn checks the h1c API it needs
#    at start-up, so --http-parser fast fails loudly if the pair does not fit.
#  - uwsgi compiles against python3-dev; bjoern against libev-dev.
failed=()
peer() { log "installing $*"; "${PIP[@]}" --upgrade "$@" || failed+=("$*"); }
peer gunicorn
peer gunicorn_h1c
peer waitress
peer granian
peer uwsgi
peer bjoern

"$VENV/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

for name in ("forkwsgi", "gunicorn", "uwsgi", "granian", "waitress", "bjoern", "gunicorn_h1c", "psutil", "matplotlib"):
    try:
        print(f"[setup]   {name:<13} {version(name)}")
    except PackageNotFoundError:
        print(f"[setup]   {name:<13} MISSING")
EOF
if ((${#failed[@]})); then
    log "did not build: ${failed[*]} (run.py will skip them)"
fi
log "done: $VENV/bin/python $HERE/run.py --quick"
