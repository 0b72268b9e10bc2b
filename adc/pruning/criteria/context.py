"""What criteria may look at: the unpruned model, its graph and the search's calibration batches.

One :class:`ScoreContext` serves every unit of one model. What a criterion
computes from data -- gradients, activations, reconstruction statistics --
is computed lazily, on the first unit that asks, over the calibration batches
the search drew once (never per episode), and cached in the context for the
other units (:meth:`ScoreContext.memo`). The helpers that turn per-module
numbers into per-channel scores of a unit are methods here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from adc.analysis.graph import Member, ModelGraph, Unit
from adc.pruning.criteria.base import Batch, is_layer, is_norm, member_rows
from adc.pruning.reconstruction import LayerStatistics, collect_statistics
from adc.utils.errors import AdcError

T = TypeVar("T")


@dataclass
class ScoreContext:
    """The unpruned model, its graph and calibration data, with lazily computed, shared statistics.

    Attributes:
        model: The unpruned model (its weights are not modified; gradients are restored).
        graph: Its :class:`~adc.analysis.graph.ModelGraph`.
        calibration: Batches ``(images, labels)`` from the training split, or None.
        seed: Seed for the ``random`` criterion and any sampling.
    """

    model: nn.Module
    graph: ModelGraph
    calibration: list[Batch] | None = None
    seed: int = 0
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def module(self, name: str) -> nn.Module:
        if not self._modules:
            self._modules = dict(self.model.named_modules())
        return self._modules[name]

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per context: what one unit computes for all, the others reuse."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def require_calibration(self, criterion: str) -> list[Batch]:
        if not self.calibration:
            raise AdcError(
                f"criterion {criterion!r} needs calibration data: pass calibration= (a DataLoader or a list of "
                f"(images, labels) batches from the training split), or pick a weight criterion such as 'l1'"
            )
        return self.calibration

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- from per-module numbers to a unit's channels ------------------------------------

    def group_scores(self, unit: Unit, per_member: Callable[[nn.Module, Member], torch.Tensor | None]) -> torch.Tensor:
        """Average per-member channel scores (each normalised by its mean) into unit channels.

        Wide and narrow layers weigh alike, as in Torch-Pruning's ``GroupMagnitudeImportance``.
        """
        total = torch.zeros(unit.channels, dtype=torch.float64)
        weight = torch.zeros(unit.channels, dtype=torch.float64)
        for member in unit.layer_members:
            scores = per_member(self.module(member.module), member)
            if scores is None or len(member.idxs) == 0:
                continue
            scores = scores.double().cpu()
            scores = scores / scores.mean().clamp_min(1e-12)
            root = torch.as_tensor(member.root_idxs, dtype=torch.long)
            total.index_add_(0, root, scores)
            weight.index_add_(0, root, torch.ones_like(scores))
        if not bool((weight > 0).any()):
            return total
        return total / weight.clamp_min(1)

    def channel_sums(self, unit: Unit, tensors: Mapping[str, torch.Tensor], *, outputs_only: bool = False) -> torch.Tensor:
        """Per unit channel, the sum of ``tensors`` over every parameter that channel owns.

        Args:
            tensors: ``"module.param"`` (``"conv1.weight"``, ``"bn1.bias"``) -> a
                tensor shaped like that parameter (say ``weight * grad``). A bias
                counts for output members only (it belongs to an output channel).
            outputs_only: Only the parameters that produce the channel (filters,
                batch norms), not the next layers' input columns.

        Returns:
            A float64 vector of ``unit.channels`` sums: for ``weight * grad``, the
            first-order change of the loss when the channel is zeroed.
        """
        total = torch.zeros(unit.channels, dtype=torch.float64)
        for member in unit.layer_members:
            if outputs_only and member.dim != "out":
                continue
            module = self.module(member.module)
            root = torch.as_tensor(member.root_idxs, dtype=torch.long)
            for param in ("weight", "bias"):
                tensor = tensors.get(f"{member.module}.{param}")
                if tensor is None or len(member.idxs) == 0 or (param == "bias" and member.dim != "out"):
                    continue
                total.index_add_(0, root, member_rows(module, member, tensor).sum(1).double().cpu())
        return total

    def output_members(self, unit: Unit, available: Iterable[str] | None = None) -> list[Member]:
        """The members whose outputs carry the unit's channels to the next layers.

        The unit's batch norms when it has any (the last normalisation before the
        activation), else its layers' outputs; restricted to ``available`` modules.
        """
        allowed = None if available is None else set(available)
        members = [m for m in unit.layer_members if m.dim == "out" and (allowed is None or m.module in allowed)]
        norms = [m for m in members if is_norm(self.module(m.module))]
        return norms or [m for m in members if is_layer(self.module(m.module))]

    def output_modules(self) -> set[str]:
        """Every module some unit reads its channels' activations from (:meth:`output_members`)."""
        return {m.module for u in self.graph.units for m in self.output_members(u)}

    # -- passes over the calibration batches ---------------------------------------------

    def gradient_passes(self, criterion: str, *, micro_batch: int | None = None,
                        reduction: str = "mean") -> Iterator[None]:
        """Forward and backward the cross-entropy of every calibration batch, in eval mode.

        Yields after each backward, with the parameters' ``.grad`` holding that
        pass's gradient (zeroed between passes). Batches are split into
        ``micro_batch`` images when given. The model's gradients and mode are
        restored at the end.
        """
        batches = self.require_calibration(criterion)
        model = self.model
        was_training = model.training
        saved = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
        model.eval()
        device = self.device
        try:
            with torch.enable_grad():
                for images, labels in batches:
                    size = micro_batch or len(images)
                    for start in range(0, len(images), size):
                        model.zero_grad(set_to_none=True)
                        x = images[start:start + size].to(device)
                        y = labels[start:start + size].to(device)
                        nn.functional.cross_entropy(model(x), y, reduction=reduction).backward()
                        yield
        finally:
            for n, p in model.named_parameters():
                p.grad = saved[n]
            model.train(was_training)

    def parameter_tensors(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """``fn(parameter, grad)`` for every parameter with a gradient now, keyed ``"module.param"``."""
        return {name: fn(p.detach(), p.grad.detach()) for name, p in self.model.named_parameters() if p.grad is not None}

    def weight_grads(self) -> dict[str, torch.Tensor]:
        """``|weight x gradient|`` per module, the gradient summed over the calibration batches (first-order Taylor)."""

        def compute() -> dict[str, torch.Tensor]:
            grads: dict[str, torch.Tensor] = {}
            for _ in self.gradient_passes("taylor"):
                for name, m in self.model.named_modules():
                    w = getattr(m, "weight", None)
                    if isinstance(w, nn.Parameter) and w.grad is not None:
                        grads[name] = grads[name] + w.grad.detach() if name in grads else w.grad.detach().clone()
            modules = dict(self.model.named_modules())
            return {name: (modules[name].weight.detach() * g).abs() for name, g in grads.items()}

        return self.memo("weight_grads", compute)

    def output_taylor(self, criterion: str) -> dict[str, torch.Tensor]:
        """Per output module (:meth:`output_modules`), ``N x C``: each image's ``sum(activation x gradient)`` per channel.

        The gradient is that of the image's own loss (summed cross-entropy in
        eval mode, where images do not interact): the first-order change of its
        loss when the channel is zeroed, image by image, as Fisher pruning
        (Theis et al., 2018) and channel-gate sensitivity (SNIP) need.
        """

        def compute() -> dict[str, torch.Tensor]:
            products: dict[str, list[torch.Tensor]] = {}
            modules = dict(self.model.named_modules())

            def hook(name: str) -> Callable:
                def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                    if not isinstance(output, torch.Tensor) or output.dim() < 2 or not output.requires_grad:
                        return
                    value = output.detach().clone()  # before an in-place activation changes it
                    dims = list(range(2, output.dim()))

                    def on_grad(grad: torch.Tensor) -> None:
                        product = value * grad.detach()
                        products.setdefault(name, []).append((product.sum(dims) if dims else product).cpu())

                    output.register_hook(on_grad)

                return record

            handles = [modules[n].register_forward_hook(hook(n)) for n in sorted(self.output_modules())]
            try:
                for _ in self.gradient_passes(criterion, reduction="sum"):
                    pass
            finally:
                for h in handles:
                    h.remove()
            return {n: torch.cat(parts).double() for n, parts in products.items()}

        return self.memo("output_taylor", compute)

    def forward_outputs(self, criterion: str, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """``reduce(output)`` of every output module (:meth:`output_modules`) for every calibration batch, no gradients."""
        batches = self.require_calibration(criterion)
        results: dict[str, list[torch.Tensor]] = {}
        modules = dict(self.model.named_modules())

        def hook(name: str) -> Callable:
            def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                if isinstance(output, torch.Tensor) and output.dim() >= 2:
                    results.setdefault(name, []).append(reduce(output.detach()).cpu())

            return record

        handles = [modules[n].register_forward_hook(hook(n)) for n in sorted(self.output_modules())]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for images, _ in batches:
                    self.model(images.to(self.device))
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        return results

    def positive_fraction(self) -> dict[str, torch.Tensor]:
        """Per output module and channel: fraction of positive values (1 - APoZ after a ReLU)."""

        def compute() -> dict[str, torch.Tensor]:
            def positive(output: torch.Tensor) -> torch.Tensor:
                dims = [d for d in range(output.dim()) if d != 1]
                total = torch.full((output.shape[1],), float(output.numel() // output.shape[1]), device=output.device)
                return torch.stack([(output > 0).float().sum(dim=dims), total])

            counts = self.forward_outputs("apoz", positive)
            return {n: sum(parts)[0] / sum(parts)[1] for n, parts in counts.items()}

        return self.memo("positive_fraction", compute)

    def pooled_outputs(self, criterion: str) -> dict[str, torch.Tensor]:
        """Per output module, ``N x C``: each image's globally average-pooled output per channel."""

        def compute() -> dict[str, torch.Tensor]:
            def pool(output: torch.Tensor) -> torch.Tensor:
                dims = list(range(2, output.dim()))
                return (output.mean(dims) if dims else output).double()

            return {n: torch.cat(parts) for n, parts in self.forward_outputs(criterion, pool).items()}

        return self.memo("pooled_outputs", compute)

    def layer_statistics(self, criterion: str = "reconstruction") -> dict[str, LayerStatistics]:
        """``X^T X`` / ``X^T Y`` of every layer a unit feeds (:func:`~adc.pruning.reconstruction.collect_statistics`).

        Shared by the reconstruction-based criteria and the least-squares
        reconstruction itself, so a search collects them once.
        """
        batches = self.require_calibration(criterion)
        return self.memo("layer_statistics", lambda: collect_statistics(self.model, self.graph, batches, seed=self.seed))
