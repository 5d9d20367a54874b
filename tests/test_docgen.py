"""docs/settings.md is generated from the settings table and must not go stale."""

from __future__ import annotations

import subprocess
import sys

from forkwsgi import docgen
from forkwsgi.settings import SETTINGS, env_var

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


def test_module_prints_the_page():
    proc = subprocess.run([sys.executable, "-m", "forkwsgi.docgen"], capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(REPO / "src")})
    assert proc.stdout == docgen.render()
