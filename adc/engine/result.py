"""What a search hands back: the chosen policy, its metrics, the history, and the pruned model on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.graph import ModelGraph
from adc.objective.evaluator import Evaluator
from adc.pruning.pruner import ChannelPruner, check_pruned
from adc.utils.errors import AdcError


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        policy: Unit name -> sparsity of the chosen episode.
        kept: Unit name -> channels kept.
        metrics: The chosen episode's metrics record (validation accuracy, costs, ratios).
        reward: Its reward.
        original: The unpruned model's record (its own batch-norm statistics).
        history: One record per episode, in order.
        graph: The unpruned model's graph (units, layers).
        interrupted: True if the search stopped early (Ctrl-C, or a failure: see ``failure``).
        failure: The one-line error that stopped the search early, if one did.
        selection: The final selection, when it ran: one entry per re-scored
            candidate (``episode``, ``reward`` on the search's validation
            subset, ``holdout_reward`` and ``holdout_top1`` on held-out
            validation images), best first by the held-out reward; the result
            is the first entry's episode.
        episode: The episode the result's policy comes from.
        notes: Things the user should know about how the search ran (a setting
            that had no effect, fewer images than asked for, a skipped step).
        calibration: What the batch-norm recalibration, the criteria and the
            reconstruction used (for the report).
        budget: The budgets this policy meets, as text (one point's, for a front).
        alignment: With ``round_to="auto"``, the probe's measurements and choice
            (:meth:`adc.analysis.alignment.AlignmentProbe.as_dict`; ``reason`` says why in one line).
        latency_hold: With a latency budget, the measured check of the final candidates
            (:class:`adc.engine.latency_hold.LatencyHold` as a dict): predicted and measured latency side by side.
        front: For a budget range, one result per point, tightest first (this result is the last, loosest one).
        point: For a point of a front, its budget (``latency=0.45``).
    """

    policy: dict[str, float]
    kept: dict[str, int]
    metrics: dict[str, float]
    reward: float
    original: dict[str, float]
    history: list[dict[str, Any]]
    graph: ModelGraph
    interrupted: bool = False
    failure: str | None = None
    selection: list[dict[str, Any]] = field(default_factory=list)
    episode: int = -1
    notes: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    budget: str = ""
    alignment: dict[str, Any] | None = None
    latency_hold: dict[str, Any] | None = None
    front: list[SearchResult] = field(default_factory=list, repr=False)
    point: str | None = None
    _evaluator: Evaluator | None = field(default=None, repr=False)

    @property
    def measured_latency(self) -> dict[str, Any] | None:
        """The measured check of this policy (``predicted``, ``measured``, ratios, ``holds``), when one was made."""
        if not self.latency_hold:
            return None
        found = [m for m in self.latency_hold["measured"] if m["episode"] == self.episode]
        return found[-1] if found else None

    @property
    def criterion(self) -> str:
        return self._evaluator.pruner.criterion if self._evaluator is not None else ""

    @property
    def round_to(self) -> int:
        return self._evaluator.pruner.round_to if self._evaluator is not None else 1

    def kept_vector(self) -> np.ndarray:
        """Channels kept per unit, in unit order."""
        return np.array([self.kept[u.name] for u in self.graph.units], dtype=np.float64)

    def prune(self, model: nn.Module | None = None) -> nn.Module:
        """The chosen policy applied for real, with batch-norm statistics re-estimated; checked.

        Args:
            model: The model to prune (default: the searched one). Another model
                of the same architecture gets the same criterion, rounding,
                calibration data and reconstruction.

        Raises:
            AdcError: if the pruned model does not run, or its real costs differ
                from the reported ones (names the unit).
        """
        if self._evaluator is None:
            raise AdcError("this SearchResult has no pruner attached; prune with adc.prune(model, x, result.policy)")
        evaluator = self._evaluator
        if model is not None and model is not evaluator.pruner.model:
            p = evaluator.pruner
            # Same architecture, same units: reuse the searched graph, so the kept counts line up unit by unit.
            pruner = ChannelPruner(model, p.example_input.to(next(model.parameters()).device), criterion=p.criterion,
                                   round_to=p.round_to, calibration=p.calibration, reconstruct=p.reconstruct, seed=p.seed,
                                   graph=p.graph)
            evaluator = Evaluator(pruner, evaluator.score, bn_images=evaluator.bn_images, source=evaluator.source)
        kept = self.kept_vector()
        pruned = evaluator.model(kept)
        with torch.no_grad():
            check_pruned(pruned, evaluator.pruner.graph, kept, evaluator.pruner.example_input)
        return pruned.eval()
