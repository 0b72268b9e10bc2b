"""Small helpers shared by the tests: the console entry point in-process, and deterministic timers."""

from __future__ import annotations

import sys

import torch
from torch import nn

from adc.analysis.timers import Timer
from adc.cli import main


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Call the console entry point in-process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["adc", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and one line on stderr, ``error: ...``, holding every fragment; no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class FakeTimer(Timer):
    """A deterministic timer for tests: ``seconds(module)`` decides; counts its calls."""

    runtime = "fake"
    version = "1"
    threads = 1

    def __init__(self) -> None:
        self.calls = 0

    def seconds(self, module: nn.Module) -> float:
        raise NotImplementedError

    def time(self, module: nn.Module, x: torch.Tensor) -> float:
        self.calls += 1
        return self.seconds(module)
