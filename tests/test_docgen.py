"""docs/settings.md and docs/migrating-from-gunicorn.md are generated from their tables
and must not go stale."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forkwsgi import docgen, gunicorn_compat
from forkwsgi.settings import ALIASES, SETTINGS, env_var

from .conftest import REPO


def test_docs_settings_md_is_up_to_date():
    on_disk = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert on_disk == docgen.render(), (
        "docs/settings.md is stale: run `python -m forkwsgi.docgen --write`")


def test_every_setting_is_documented_with_its_sources():
    text = docgen.render()
    for row in SETTINGS:
        assert f"| `{row.name}` |" in text
        assert all(f"`{flag}`" in text for flag in row.flags)
        if row.section != "hooks":
            assert f"`{env_var(row.name)}`" in text
    for alias in ALIASES:
        assert f"`{alias}`, `{env_var(alias)}`" in text


def test_docs_migrating_from_gunicorn_md_is_up_to_date():
    on_disk = (REPO / "docs" / "migrating-from-gunicorn.md").read_text(encoding="utf-8")
    assert on_disk == docgen.render_migration(), (
        "docs/migrating-from-gunicorn.md is stale: run `python -m forkwsgi.docgen --write`")
    assert set(docgen.PAGES) == {"settings.md", "migrating-from-gunicorn.md"}  # --write's pages


def test_every_gunicorn_setting_and_signal_is_on_the_migration_page():
    text = docgen.render_migration()
    for row in gunicorn_compat.GUNICORN:
        line = next(line for line in text.splitlines() if line.startswith(f"| `{row.name}` |"))
        assert all(f"`{flag}`" in line for flag in row.flags), row.name
        assert (row.ours is None and "*none*" in line) or f"`{row.ours}`" in line, row.name
        assert row.note.replace("|", "\\|") in line, row.name
    for sig in gunicorn_compat.SIGNALS:
        assert f"| `{sig.signal}` | {sig.gunicorn} | {sig.forkwsgi} |" in text


@pytest.mark.process
def test_module_prints_the_page():
    proc = subprocess.run([sys.executable, "-m", "forkwsgi.docgen"], capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(REPO / "src")})
    assert proc.stdout == docgen.render()
