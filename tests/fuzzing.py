"""What the fuzz entry points, the corpus generators and the parsers' property
tests share.

Owns: replaying a corpus through a ``TestOneInput`` (no atheris needed),
handing one to atheris when it is installed, applying byte-level edits to a
valid message, and the command line of a corpus generator (write, or
``--check`` and compare).

Must never: import forkwsgi (an entry point imports what it fuzzes under
atheris' instrumentation) or hypothesis (the entry points run without it).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

try:
    import atheris
except ImportError:  # replay only
    atheris = None

# Fuzzing, rather than replaying: atheris is installed and --replay not asked for.
FUZZING = atheris is not None and "--replay" not in sys.argv


def instrumented():
    """A context for an entry point's imports of what it fuzzes: under atheris' coverage
    instrumentation when fuzzing, plain otherwise."""
    return atheris.instrument_imports() if FUZZING else contextlib.nullcontext()


def replay(test_one_input: Callable[[bytes], None], paths: list[str]) -> int:
    """Feed each file (or every file in each directory) to ``test_one_input`` once."""
    count = 0
    for name in paths:
        path = Path(name)
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            if file.is_file() and file.suffix not in (".json", ".py") and file.name[0] != ".":
                test_one_input(file.read_bytes())
                count += 1
    return count


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    """An entry point's command line: a replay without atheris or with ``--replay``,
    else libFuzzer's arguments to atheris."""
    args = [arg for arg in sys.argv[1:] if arg != "--replay"]
    if not FUZZING:
        paths = [arg for arg in args if not arg.startswith("-")]
        print(f"replayed {replay(test_one_input, paths)} inputs, no finding")
        return
    atheris.Setup([sys.argv[0], *args], test_one_input)
    atheris.Fuzz()


def replays_both_ways(script: Path, test_one_input: Callable[[bytes], None], corpus: Path,
                      src: Path) -> int:
    """Replay ``corpus`` in this process and through ``script --replay`` in a fresh one (as
    a finding saved by the fuzzer is rerun); the number of inputs replayed."""
    count = replay(test_one_input, [str(corpus)])
    proc = subprocess.run([sys.executable, str(script), "--replay", str(corpus)],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(src)})
    assert proc.returncode == 0, proc.stderr
    assert "no finding" in proc.stdout, proc.stdout
    return count


def mutated(data: bytes, edits: Iterable[tuple[str, int, int]]) -> bytes:
    """``data`` with each ``(insert | delete | replace, where, byte)`` applied in turn;
    ``where`` is taken modulo the length, so any integer lands somewhere."""
    buf = bytearray(data)
    for op, where, byte in edits:
        where %= len(buf) + 1
        if op == "insert":
            buf.insert(where, byte)
        elif where < len(buf):
            if op == "delete":
                del buf[where]
            else:
                buf[where] = byte
    return bytes(buf)


def write_corpus(files: dict[Path, bytes], check: bool) -> list[str]:
    """Write each file whose bytes differ (with ``check``, only compare); the names of
    those that differed."""
    stale = []
    for path, data in files.items():
        if not path.exists() or path.read_bytes() != data:
            stale.append(path.name)
            if not check:
                path.write_bytes(data)
    return stale


def generator_main(write: Callable[[bool], list[str]], cases: int, script: str) -> None:
    """A corpus generator's command line: write the files, or with ``--check`` only
    compare them (exit status 1 when one differs)."""
    check = "--check" in sys.argv[1:]
    stale = write(check)
    if check and stale:
        sys.exit(f"out of date (run python {Path(script).name}): {', '.join(stale)}")
    print(f"{cases} cases; {'out of date' if check and stale else 'written'}: {len(stale)}")
