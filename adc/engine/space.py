"""The space a search plays in: the channel rounding, the latency table and every point's resolved budgets.

:class:`SpaceSetup` resolves ``round_to`` (measuring it with the alignment
probe when it is ``auto``), measures the latency table when a budget or the
reward needs one, and resolves the budgets of every point of a front; a
multiple under which a budget is unreachable gives way to the next smaller
one. It also owns the timers that compare pruned copies with the unpruned
model, which the latency check at the end reuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adc.analysis.alignment import probe_alignment
from adc.analysis.graph import ModelGraph
from adc.analysis.latency import LatencyTable, build_latency_table
from adc.analysis.space import PolicySpace
from adc.analysis.timers import Timer, make_timer
from adc.engine.options import SearchOptions
from adc.objective.budgets import Budget, BudgetSpec, UnreachableBudget, resolve_budgets
from adc.pruning.pruner import ChannelPruner


class SpaceSetup:
    """Rounding, latency table and budgets of one search (see the module docs).

    Args:
        model: The unpruned model, on the search's device.
        example_input: An input batch.
        options: The settings.
        latency_table: A ready table (otherwise one is measured when needed).
        timer: Times models for the probe, the table and the measured check (default: the search's runtime).
        table_progress: ``(done, total, layer)`` while a table is measured.
        note: ``note(text, show=True)``: tell the user.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, options: SearchOptions, *,
                 latency_table: LatencyTable | None = None, timer: Timer | None = None,
                 table_progress: Callable[[int, int, str], None] | None = None,
                 note: Callable[..., None] = lambda text, show=True: None) -> None:
        self.model, self.example_input, self.options = model, example_input, options
        self.latency_table, self.timer, self.table_progress, self.note = latency_table, timer, table_progress, note
        self.points: list[BudgetSpec | None] = options.front.points() if options.front else [None]
        self.point_budgets: list[list[Budget]] = []
        self.round_to: int | None = None
        self.saved_round_to: int | None = None  # a resumed search keeps the rounding its first part measured
        self.alignment: dict[str, Any] | None = None  # the probe's measurements and choice (round_to auto)
        self.shapes: ChannelPruner | None = None
        self._ratio_timer: Timer | None = None

    def table_timer(self) -> Timer:
        """The latency table's timer: the one given, else the search's runtime (median of each timing's samples)."""
        o = self.options
        return self.timer or make_timer(o.runtime, o.device, o.threads)

    def side_by_side_timer(self) -> Timer:
        """The probe's and the measured check's timer: the one given, else the minimum of each timing's samples.

        Those compare models timed moments apart; load on a shared machine only ever adds time, so the
        minimum is the steadiest statistic for a ratio.
        """
        if self.timer is not None:
            return self.timer
        if self._ratio_timer is None:
            o = self.options
            self._ratio_timer = make_timer(o.runtime, o.device, o.threads, statistic="min")
        return self._ratio_timer

    def resolve(self, graph: ModelGraph) -> PolicySpace:
        """Resolve ``round_to``, build the space and the latency table, resolve every point's budgets.

        Raises:
            AdcError: a budget no rounding reaches (one line, with the smallest reachable value).
        """
        o = self.options
        # Pruned copies whose shape alone matters (the probe's, the latency anchors', the measured check's):
        # ranked by L1, without reconstruction, so they cost a copy and no refit.
        self.shapes = ChannelPruner(self.model, self.example_input, graph=graph)
        order = self._rounding_order(graph)
        for n, round_to in enumerate(order):
            space = PolicySpace(graph, min_keep=o.min_keep, round_to=round_to)
            table = self.latency_table
            if table is None and o.needs_latency_table:
                table = build_latency_table(self.model, self.example_input, space, prune_to=self.shapes.prune_kept,
                                            batch=o.latency_batch, timer=self.table_timer(), cache_dir=o.cache_dir,
                                            progress=self.table_progress)
            try:
                self.point_budgets = [resolve_budgets(o.budgets_at(p), space, latency_table=table,
                                                      energy_model=o.energy) for p in self.points]
            except UnreachableBudget as exc:
                if n + 1 == len(order):
                    raise
                self.note(f"round_to {round_to} (measured fastest) cannot reach the budget ({exc}); "
                          f"using round_to {order[n + 1]}")
                continue
            self.latency_table, self.round_to = table, round_to
            return space
        raise AssertionError("unreachable")  # the loop returns or raises

    def _rounding_order(self, graph: ModelGraph) -> list[int]:
        """``[round_to]`` for an integer setting; for ``auto``, the probe's choice then its smaller fallbacks."""
        o = self.options
        if isinstance(o.round_to, int):
            return [o.round_to]
        if self.saved_round_to is not None:
            return [self.saved_round_to]
        assert self.shapes is not None
        probe = probe_alignment(self.model, self.example_input, graph, prune_to=self.shapes.prune_kept,
                                timer=self.side_by_side_timer(), batch=o.latency_batch, cache_dir=o.cache_dir)
        self.alignment = probe.as_dict()
        self.note(f"round_to auto chose {probe.choice}: {probe.reason()}", show=False)
        return probe.preference()
