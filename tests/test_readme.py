"""The README's Python example runs as written, and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (example,) = [b for b in blocks if "adc.search(" in b]
    return example


def test_the_readme_api_example_runs_as_written(tmp_path, trained_checkpoint, adc_cache_dir) -> None:
    """In a fresh process, in a folder that is not the checkout, with the session's model cache."""
    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + readme_example())
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    flops_ratio, test_top1 = (float(v) for v in result.stdout.split()[-2:])
    assert flops_ratio <= 0.5 + 1e-9
    assert test_top1 > 0.8  # a useful model, not the chance-level one an uncalibrated search handed back
    assert (tmp_path / "small.pt").is_file()
