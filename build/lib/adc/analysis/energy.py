"""Analytic energy of a (pruned) network: arithmetic plus memory traffic.

After energy-aware pruning (Yang, Chen and Sze, CVPR 2017): the energy of a
layer is its computation plus the data movement of its weights and
activations through a memory hierarchy (register file, on-chip SRAM, DRAM).
Per sample (batch 1), for every conv/linear layer with kept input and output
channels, ``M`` MACs, ``W`` weight words (weights and bias), ``I`` input
activation words and ``O`` output activation words:

* **computation**: ``M * (mult_pj + add_pj)``.
* **register file**: every MAC reads its weight and its input and updates its
  partial sum in the register file: ``register_accesses_per_mac * M * register_pj``.
* **what fits on chip**: the SRAM is split in half. The weights stay on chip
  in tiles of half the SRAM; the other half buffers input and output rows.
  The layer runs in ``passes = max(1, ceil(W * word_bytes / (sram_bytes / 2)))``
  passes, one per weight tile; each pass streams the whole input again.
* **DRAM**: every weight is read once, every output written once, the input
  read once per pass: ``D = W + O + I * passes`` words, ``D * dram_pj``.
* **SRAM**: every word that crosses DRAM is staged through the SRAM once:
  ``D * sram_pj``.

So a layer whose weights fit in half the SRAM reads everything from DRAM once;
a larger one re-reads its input per weight tile. Batch norms, activations,
pooling and additions are not counted (they are small next to the layers
and, as for FLOPs, fold into the layers at inference). Every term grows with
the kept channels, so the energy is monotone and the search's clipping works
as for FLOPs.

Default per-operation energies (45 nm, 32-bit words): Horowitz, "Computing's
energy problem (and what we can do about it)", ISSCC 2014, as tabulated by Han
et al., "Learning both weights and connections for efficient neural
networks", NeurIPS 2015, Figure 1: 32-bit float multiply 3.7 pJ, float add
0.9 pJ, register file 1 pJ, SRAM 5 pJ (Horowitz's 8 KB cache: 10 pJ per
64-bit access), DRAM 640 pJ per 32-bit word. ``sram_bytes`` defaults to that
8 KB, the size the SRAM figure was measured for; larger SRAMs cost more per
access (Horowitz: about 50 pJ per 32 bits at 1 MB), so set both for your chip
(e.g. Eyeriss: a 108 KB global buffer).

Override any of them with a TOML file (``--energy-model FILE``)::

    mult_pj = 0.2     # an 8-bit integer multiplier
    add_pj = 0.03
    sram_bytes = 131072

Unknown keys and negative values are refused.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adc.utils.errors import AdcError
from adc.analysis.graph import ModelGraph

PJ = 1e-12


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies (picojoules) and the on-chip memory size (see the module docs)."""

    mult_pj: float = 3.7
    add_pj: float = 0.9
    register_pj: float = 1.0
    sram_pj: float = 5.0
    dram_pj: float = 640.0
    sram_bytes: float = 8192.0
    word_bytes: float = 4.0
    register_accesses_per_mac: float = 3.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise AdcError(f"energy model: {f.name} = {value!r} is not a finite number")
            if value < 0:
                raise AdcError(f"energy model: {f.name} = {value!r} is negative; energies and sizes must be >= 0")
        if self.sram_bytes <= 0 or self.word_bytes <= 0:
            raise AdcError("energy model: sram_bytes and word_bytes must be positive")

    @classmethod
    def from_toml(cls, path: str | Path) -> EnergyModel:
        """Read overrides of the defaults from a TOML file.

        Raises:
            AdcError: missing or invalid file, an unknown key (named, with the
                valid ones) or a negative / non-numeric value.
        """
        path = Path(path)
        if not path.is_file():
            raise AdcError(f"--energy-model {str(path)!r}: file does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise AdcError(f"--energy-model {str(path)!r} is not valid TOML: {exc}") from None
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise AdcError(f"--energy-model {str(path)!r}: unknown key {key!r}; valid: {', '.join(names)}")
        return cls(**values)


def load_energy_model(spec: EnergyModel | str | Path | None) -> EnergyModel:
    """The defaults (None), a ready model, or one read from a TOML path."""
    if spec is None:
        return EnergyModel()
    if isinstance(spec, EnergyModel):
        return spec
    return EnergyModel.from_toml(spec)


class EnergyPrice:
    """``price(kept)`` -> joules per sample, vectorised like :meth:`adc.analysis.graph.ModelGraph.layer_costs`."""

    def __init__(self, graph: ModelGraph, model: EnergyModel | None = None) -> None:
        self.graph = graph
        self.model = model or EnergyModel()
        self.in_positions = np.array([lc.in_positions or lc.positions for lc in graph.layers], dtype=np.float64)
        self.positions = np.array([lc.positions for lc in graph.layers], dtype=np.float64)

    def layer_energy(self, kept: np.ndarray) -> np.ndarray:
        """Joules per sample of every layer of ``graph.layers``."""
        g, e = self.graph, self.model
        out_k, in_k = g.layer_channels(kept)
        groups = np.where(g.depthwise, in_k, g.groups)
        per_position = out_k * in_k / groups
        macs = g.mac_coef * per_position
        weights = g.w_coef * per_position + g.has_bias * out_k
        inputs = in_k * self.in_positions
        outputs = out_k * self.positions
        passes = np.maximum(1.0, np.ceil(weights * e.word_bytes / (e.sram_bytes / 2)))
        dram = weights + outputs + inputs * passes
        pj = (macs * (e.mult_pj + e.add_pj + e.register_accesses_per_mac * e.register_pj)
              + dram * (e.dram_pj + e.sram_pj))
        return pj * PJ

    def price(self, kept: np.ndarray) -> float:
        """Joules per sample of the whole network."""
        return float(self.layer_energy(kept).sum())

    __call__ = price
