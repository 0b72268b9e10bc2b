"""A search's history rows: one JSON-serialisable record per evaluated policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adc.envs import contract

Record = dict[str, Any]
"""One history row (:func:`episode_record`)."""


def episode_record(index: int, info: Mapping[str, Any], wall: float) -> Record:
    """One history row from an environment's final info (JSON-serialisable)."""
    agent_info = info.get(contract.AGENT) or {}
    timing = info.get(contract.TIMING, {})
    return {
        "episode": index,
        "phase": agent_info.get("phase", "explore"),
        "reward": float(info[contract.REWARD]),
        "metrics": {k: float(v) for k, v in info[contract.METRICS].items()},
        "policy": {k: float(v) for k, v in info[contract.POLICY].items()},
        "kept": {k: int(v) for k, v in info[contract.KEPT].items()},
        "actions": [float(a) for a in info.get(contract.ACTIONS, [])],
        "budget_use": {k: float(v) for k, v in info.get(contract.BUDGET_USE, {}).items()},
        "wall_time": float(wall),
        "evaluate_time": float(timing.get("evaluate", 0.0)),
        "prune_time": float(timing.get("prune", 0.0)),
        "worker": int(info.get(contract.WORKER, 0)),
        "sigma": agent_info.get("sigma"),
        "evaluations": agent_info.get("evaluations"),
    }
