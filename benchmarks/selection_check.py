"""Follow-up to the full benchmark: does the final selection pick a better policy than the top search reward?

Searches a full-benchmark reference model (zoo plain20 or resnet20, trained on
the Fashion-MNIST train split) at flops=0.5 for 200 episodes with the search's
defaults, then prints the test top-1 of the chosen policy and, for every
candidate the final selection re-scored, its search reward (1,000 validation
images), its held-out reward (5,000 other validation images) and its test
top-1, one JSON line each::

    .venv/bin/python -m benchmarks.selection_check resnet20 ddpg 0
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch


def main(argv: list[str]) -> None:
    from adc.inputs.data import example_input, load_data
    from adc.engine.loop import search
    from adc.inputs.training import evaluate
    from benchmarks.run import DATA, load_reference

    torch.set_num_threads(1)
    name, agent, seed = argv[0], argv[1], int(argv[2])
    splits = load_data(DATA)
    model, _ = load_reference(name, splits)
    started = time.time()
    result = search(model, example_input(splits), data=splits, budget=["flops=0.5"], agent=agent, episodes=200,
                    seed=seed, val_size=1000, bn_calibration=512)
    print(json.dumps({"model": name, "agent": agent, "seed": seed, "search_s": round(time.time() - started),
                      "chosen_episode": result.episode, "test": evaluate(result.prune(), splits.test)["top1"]}), flush=True)
    for candidate in result.selection:
        record = result.history[candidate["episode"]]
        other = dataclasses.replace(result, policy=record["policy"], kept=record["kept"])
        print(json.dumps({**candidate, "phase": record["phase"], "test": evaluate(other.prune(), splits.test)["top1"]}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
