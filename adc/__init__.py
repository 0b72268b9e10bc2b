"""adc: AMC-style automated channel pruning for PyTorch CNNs.

Find, with reinforcement learning, how much of each layer to prune so that a
network meets a budget (FLOPs, MACs, parameters, latency, energy) at the
highest accuracy, and get a physically smaller model back::

    import adc
    result = adc.search(model, example_input, evaluate=my_eval_fn, calibration=train_loader,
                        budget={"flops": 0.5})
    small = result.prune(model)
    adc.save(small, "small.pt", policy=result.policy)

The names below are loaded on first use (PEP 562), so ``import adc`` is
cheap and importing one part of adc does not load the whole search.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "AdcError": "adc.utils.errors",
    "AGENTS": "adc.agents",
    "CRITERIA": "adc.pruning.criteria",
    "ChannelPruner": "adc.pruning.pruner",
    "Costs": "adc.analysis.cost",
    "DATA_SOURCES": "adc.inputs.data",
    "ModelGraph": "adc.analysis.graph",
    "REWARDS": "adc.objective.rewards",
    "SearchOptions": "adc.engine.options",
    "SearchResult": "adc.engine.result",
    "Unit": "adc.analysis.graph",
    "analyze": "adc.analysis.graph",
    "build_model": "adc.inputs.models",
    "cost": "adc.analysis.cost",
    "count": "adc.analysis.cost",
    "evaluate": "adc.inputs.training",
    "export": "adc.pruning.export",
    "find_units": "adc.analysis.graph",
    "load": "adc.run.folder",
    "load_checkpoint": "adc.inputs.models",
    "load_data": "adc.inputs.data",
    "prune": "adc.pruning.pruner",
    "save": "adc.pruning.serialization",
    "search": "adc.engine.loop",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'adc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
