"""adc: AMC-style automated channel pruning for PyTorch CNNs.

Find, with reinforcement learning, how much of each layer to prune so that a
network meets a budget (FLOPs, MACs, parameters) at the highest accuracy, and
get a physically smaller model back::

    import adc
    result = adc.search(model, example_input, evaluate=my_eval_fn, budget={"flops": 0.5})
    small = result.prune(model)
    adc.save(small, "small.pt", policy=result.policy)
"""

from adc.cost import Costs, cost, count
from adc.criteria import CRITERIA
from adc.data import DATA_SOURCES, load_data
from adc.errors import AdcError
from adc.graph import ModelGraph, Unit, analyze, find_units
from adc.models import build_model, load_checkpoint
from adc.pruning import ChannelPruner, prune
from adc.rewards import REWARDS
from adc.search import SearchResult, search
from adc.serialization import load, save

__all__ = [
    "AdcError", "CRITERIA", "ChannelPruner", "Costs", "DATA_SOURCES", "ModelGraph", "REWARDS", "SearchResult", "Unit",
    "analyze", "build_model", "cost", "count", "find_units", "load", "load_checkpoint", "load_data", "prune", "save",
    "search",
]
__version__ = "0.1.0"
