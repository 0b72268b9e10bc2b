"""The run folder: the one owner of every file name a run writes, and of reading them back.

``adc search`` writes ``model.pt`` (the pruned model, :func:`adc.save`
format), ``policy.json``, ``history.csv``, ``report.md``, ``policy.png``,
``reward.png``, ``config.toml`` and ``checkpoint/``; a front search (a budget
range) adds ``front.md``, ``front.csv``, ``front.png`` and one model per point
in ``front/`` (``front/latency-0.45.pt``); ``adc finetune`` adds
``model_finetuned.pt`` and ``finetune.json``; ``adc export`` writes
``model.onnx`` / ``model.ts`` beside the model it exports. Every write is
atomic, and any file-system failure (not writable, not a folder, full) is
one line naming the path.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from adc.engine.checkpoint import Checkpoint
from adc.pruning.serialization import load as load_file
from adc.pruning.serialization import read_header
from adc.run.config import RunConfig, read_toml, write_toml
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text, describe_os_error
from adc.utils.formatting import table_cell

MODEL = "model.pt"
FINETUNED = "model_finetuned.pt"
POLICY = "policy.json"
HISTORY = "history.csv"
REPORT = "report.md"
POLICY_PLOT = "policy.png"
REWARD_PLOT = "reward.png"
CONFIG = "config.toml"
CHECKPOINT = "checkpoint"
FINETUNE = "finetune.json"
TENSORBOARD = "tb"
FRONT_TABLE = "front.md"
FRONT_CSV = "front.csv"
FRONT_PLOT = "front.png"
FRONT_DIR = "front"
FRONT_COLUMNS = ("budget", "episode", "val_top1", "test_top1", "flops_ratio", "params_ratio", "predicted_latency_ratio",
                 "measured_latency_ratio", "measured_speedup", "holds", "model")
"""Columns of ``front.csv`` (and ``front.md``): one row per point of the front."""


class RunFolder:
    """One run's folder.

    Args:
        path: The folder (it need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def finetuned(self) -> Path:
        return self.path / FINETUNED

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.path / CHECKPOINT)

    def written(self) -> list[str]:
        """The names of the search's output files that exist, in a fixed order."""
        names = [MODEL, POLICY, HISTORY, REPORT, POLICY_PLOT, REWARD_PLOT, CONFIG, FRONT_TABLE, FRONT_CSV, FRONT_PLOT,
                 FRONT_DIR]
        return [n for n in names if (self.path / n).exists()]

    @property
    def front_plot(self) -> Path:
        return self.path / FRONT_PLOT

    def front_model(self, name: str) -> Path:
        """The model file of one point of a front: ``front/<name>.pt``."""
        return self.path / FRONT_DIR / f"{name}.pt"

    # -- creating ----------------------------------------------------------------------

    def prepare(self, *, resume: bool) -> bool:
        """Make sure the folder can take this run; create it. Returns whether it was created now.

        Raises:
            AdcError: a finished or unfinished search is already there (without resume),
                nothing to resume (with resume), a file is in the way, or the folder cannot be written.
        """
        if self.path.exists() and not self.path.is_dir():
            raise AdcError(f"--out {str(self.path)!r} is a file, not a folder")
        if resume:
            if not self.path.is_dir():
                raise AdcError(f"--resume {str(self.path)!r}: no such folder")
            if not self.checkpoint.exists():
                raise AdcError(f"--resume {str(self.path)!r}: nothing to resume there (no {CHECKPOINT}/)")
        elif self.model.exists():
            raise AdcError(f"--out {str(self.path)!r} already holds a finished search; choose another folder or --resume it")
        elif (self.path / CHECKPOINT).exists():
            raise AdcError(f"--out {str(self.path)!r} already holds an unfinished search; continue it with "
                           f"--resume {self.path} or choose another folder")
        fresh = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".adc-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise AdcError(f"--out {str(self.path)!r}: cannot write there: {describe_os_error(exc)}") from exc
        return fresh

    def remove(self) -> None:
        """Delete the folder (a refused search leaves none behind)."""
        shutil.rmtree(self.path, ignore_errors=True)

    # -- settings ----------------------------------------------------------------------

    def write_config(self, config: RunConfig) -> Path:
        return write_toml(self.config, config.values())

    def read_config(self) -> RunConfig:
        return RunConfig.from_file(self.config)

    def settings(self) -> dict[str, Any]:
        """The run's settings: its config.toml, else those stored in model.pt (raw values)."""
        if self.config.is_file():
            return read_toml(self.config)
        header, _ = read_header(self.model)
        return dict((header.get("meta") or {}).get("settings") or {})

    # -- outputs -----------------------------------------------------------------------

    def write_policy(self, payload: dict[str, Any]) -> Path:
        return atomic_write_text(self.path / POLICY, json.dumps(payload, indent=2))

    def write_history(self, history: list[dict[str, Any]]) -> Path:
        """``history.csv``: one row per episode: reward, metrics, costs, budget use, timing, worker, policy (JSON)."""
        metric_keys = sorted({k for r in history for k in r["metrics"]})
        budget_keys = sorted({k for r in history for k in r["budget_use"]})
        buf = io.StringIO()
        writer = csv.writer(buf)
        points = any("point" in r for r in history)
        writer.writerow(["episode", *(["point"] if points else []), "phase", "reward", "best_reward", *metric_keys,
                         *[f"budget_use_{k}" for k in budget_keys],
                         "wall_time", "evaluate_time", "prune_time", "worker", "sigma", "policy"])
        for r in history:
            writer.writerow([r["episode"], *([r.get("point", "")] if points else []), r["phase"], r["reward"],
                             r.get("best_reward", ""),
                             *[r["metrics"].get(k, "") for k in metric_keys],
                             *[r["budget_use"].get(k, "") for k in budget_keys],
                             f"{r['wall_time']:.4f}", f"{r['evaluate_time']:.4f}", f"{r['prune_time']:.4f}",
                             r.get("worker", 0), "" if r.get("sigma") is None else r["sigma"], json.dumps(r["policy"])])
        return atomic_write_text(self.path / HISTORY, buf.getvalue())

    def write_front(self, rows: list[dict[str, Any]], *, runtime: str, batch: int) -> Path:
        """``front.csv`` and ``front.md``: one row per point (:data:`FRONT_COLUMNS`; empty where not measured)."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(FRONT_COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in FRONT_COLUMNS])
        atomic_write_text(self.path / FRONT_CSV, buf.getvalue())

        kinds = {"val_top1": "pct", "test_top1": "pct", "flops_ratio": "ratio", "params_ratio": "ratio",
                 "predicted_latency_ratio": "ratio", "measured_latency_ratio": "ratio", "measured_speedup": "speed"}
        lines = ["# Accuracy-cost front", "",
                 f"One model per point of the budget range, each the best evaluated policy that fits the point "
                 f"(policies found for tighter points serve looser ones). Latency measured in {runtime} at batch "
                 f"{batch}, side by side with the unpruned model in the same run; ratios are of the unpruned model. "
                 "Validation top-1 is on the search's validation images; test top-1 is reported only. "
                 f"Plot: `{FRONT_PLOT}`.", "",
                 "| " + " | ".join(FRONT_COLUMNS) + " |", "|" + "---|" * len(FRONT_COLUMNS)]
        for row in rows:
            lines.append("| " + " | ".join(table_cell(row.get(c), kinds.get(c, "")) for c in FRONT_COLUMNS) + " |")
        return atomic_write_text(self.path / FRONT_TABLE, "\n".join(lines) + "\n")

    def write_finetune(self, summary: dict[str, Any]) -> Path:
        return atomic_write_text(self.path / FINETUNE, json.dumps(summary, indent=2) + "\n")

    def read_finetune(self) -> dict[str, Any]:
        return json.loads((self.path / FINETUNE).read_text())


def model_file(path: str | Path, *, finetuned: bool | None = None) -> Path:
    """The model file a command should read from ``path`` (a model file, or a run folder).

    In a run folder: ``model_finetuned.pt`` when ``finetuned`` is True, ``model.pt`` when False,
    and when None the fine-tuned model if there is one.

    Raises:
        AdcError: when the file is not there.
    """
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise AdcError(f"{str(path)!r} is neither a run folder nor a model file")
        return path
    folder = RunFolder(path)
    if finetuned is True and not folder.finetuned.is_file():
        raise AdcError(f"run folder {str(path)!r} has no {FINETUNED}; run adc finetune {path} first")
    if finetuned is None and folder.finetuned.is_file():
        return folder.finetuned
    if finetuned is True:
        return folder.finetuned
    if not folder.model.is_file():
        raise AdcError(f"run folder {str(path)!r} has no {MODEL}; is the search finished? (adc search --resume it)")
    return folder.model


def load(path: str | Path, *, finetuned: bool | None = None) -> nn.Module:
    """Load a model saved by adc: a model file, or a run folder (its fine-tuned model when there is one).

    Args:
        path: A ``.pt`` written by :func:`adc.save`, or a run folder of ``adc search``.
        finetuned: In a run folder, True / False pick ``model_finetuned.pt`` / ``model.pt`` (default: the former if present).

    Raises:
        AdcError: when there is no such model.
    """
    return load_file(model_file(path, finetuned=finetuned))
