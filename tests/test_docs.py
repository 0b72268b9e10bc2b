"""The documentation site builds with no broken link, and says what the README says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    """Every page in the nav, every link (to the benchmark results too) resolves; a warning fails."""
    pytest.importorskip("mkdocs")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs)] if mkdocs.exists() else [shutil.which("mkdocs") or "mkdocs"]
    done = subprocess.run([*command, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "fashion_mnist_v2" / "index.html").is_file()


def test_the_usage_page_shows_the_readme_example_as_tested() -> None:
    """``tests/test_readme.py`` runs the README's example; the site's copy is the same code."""
    (readme,) = [b for b in _python_blocks(ROOT / "README.md") if "adc.search(" in b]
    (usage,) = [b for b in _python_blocks(ROOT / "docs" / "usage.md") if "adc.search(" in b]
    assert usage == readme


def test_the_readme_is_a_quick_start() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 130
