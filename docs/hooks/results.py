"""MkDocs hook: the benchmark pages (``benchmarks/results/``) become the site's ``results/`` pages.

The benchmarks write their measured results beside their code; the site shows
those files as they are, so ``mkdocs build --strict`` also checks every link
to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SHOWN = (".md", ".png", ".csv")


def on_files(files: Files, config: Any) -> Files:
    """Add every result page, plot and table under ``results/``."""
    for path in sorted(RESULTS.iterdir()):
        if path.suffix in SHOWN:
            files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    return files
