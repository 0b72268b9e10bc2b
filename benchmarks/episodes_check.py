"""Follow-up to the full benchmark: does ddpg pull away from random search with more episodes?

Searches resnet20 (the full benchmark's reference model, trained on the
Fashion-MNIST train split) at flops=0.5 with one agent for N episodes and
prints, per seed, the best validation reward and the test top-1 of the best
policy right after pruning (BN recalibrated, no fine-tune), one JSON line each::

    .venv/bin/python -m benchmarks.episodes_check ddpg 200 0,1,2
    .venv/bin/python -m benchmarks.episodes_check random 200 0,1,2
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def main(argv: list[str]) -> None:
    from adc.inputs.data import example_input, load_data
    from adc.engine.loop import search
    from adc.inputs.training import evaluate
    from benchmarks.run import DATA, load_reference

    torch.set_num_threads(1)
    agent, episodes, seeds = argv[0], int(argv[1]), [int(s) for s in argv[2].split(",")]
    splits = load_data(DATA)
    model, _ = load_reference("resnet20", splits)
    x = example_input(splits)
    for seed in seeds:
        started = time.time()
        result = search(model, x, data=splits, budget=["flops=0.5"], agent=agent, episodes=episodes, seed=seed,
                        val_size=1000, bn_calibration=512)
        rewards = [h["reward"] for h in result.history]
        print(json.dumps({"agent": agent, "seed": seed, "episodes": episodes, "best_val": result.reward,
                          "test": evaluate(result.prune(), splits.test)["top1"],
                          "last20": float(np.mean(rewards[-20:])), "s": round(time.time() - started)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
