"""Which reward ranks candidate policies best? ``python -m benchmarks.reward_ranking [--policies N]``.

Benchmark v2's selections (:mod:`benchmarks.reward_noise`) show that at 50%
FLOPs the search's reward -- top-1 on 1,000 validation images -- cannot rank
the policies a search ends up comparing. This measures what would. A CMA-ES
search (seed 0) on the Fashion-MNIST ResNet-20 reference at 50% FLOPs plays
``--policies`` policies near the uniform one, as a search's late candidates
are. Each is pruned, reconstructed and BN-recalibrated as in an episode, then
scored by four candidate rewards on the validation split -- top-1 and mean
cross-entropy (negated), each on the first 1,000 and the first 5,000 images --
and by the truth it should predict: top-1 on the 10,000 test images (used
here only to judge the rewards, never to choose a model). Reported: Spearman's
rank correlation of each reward with the truth, over all policies and over
the 10 that reward ranks best (the ones a search's final choice is among),
and the seconds each costs per episode.

Cached in ``benchmarks/cache/reward_ranking/``; writes
``benchmarks/results/reward_ranking.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_page
from benchmarks.run import CACHE_ROOT, DATA, RESULTS_DIR, _write_json, load_reference

REWARDS = {"top-1, 1,000 images": ("correct", 1000), "-loss, 1,000 images": ("loss", 1000),
           "top-1, 5,000 images": ("correct", 5000), "-loss, 5,000 images": ("loss", 5000)}
"""Label -> (per-image quantity, images from the start of the validation split)."""


def per_image(model: Any, images: Any, labels: Any, batch: int = 500) -> tuple[list[float], list[float]]:
    """Whether each image is classified right, and its cross-entropy."""
    import torch
    import torch.nn.functional as F

    correct, loss = [], []
    with torch.no_grad():
        for xs, ys in zip(images.split(batch), labels.split(batch)):
            logits = model(xs)
            correct += (logits.argmax(1) == ys).float().tolist()
            loss += F.cross_entropy(logits, ys, reduction="none").tolist()
    return correct, loss


def measure(policies: int, cache: Path, log: Any = print) -> dict[str, Any]:
    """Score every policy (cached per policy count); see the module docs."""
    path = cache / f"scores-{policies}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import numpy as np
    import torch

    from adc.engine.loop import search
    from adc.inputs.calibration import image_range
    from adc.inputs.data import example_input, load_data

    torch.set_num_threads(1)
    splits = load_data(DATA)
    x = example_input(splits)
    model, _ = load_reference("resnet20", splits)
    result = search(model, x, data=splits, budget=["flops=0.5"], agent="cmaes", episodes=policies, val_size=1000,
                    bn_calibration=512, select_top=0, seed=0)
    names = [u.name for u in result.graph.units]
    val_images, val_labels = image_range(splits.val, 0, 5000)
    test_images, test_labels = image_range(splits.test, 0, len(splits.test))
    seen, rows = set(), []
    for entry in result.history:
        kept = tuple(int(entry["kept"][n]) for n in names)
        if kept in seen:
            continue
        seen.add(kept)
        started = time.perf_counter()
        pruned = result._evaluator.model(np.asarray(kept, dtype=np.float64))
        prune_s = time.perf_counter() - started
        started = time.perf_counter()
        correct, loss = per_image(pruned, val_images, val_labels)
        val_s = time.perf_counter() - started
        test_correct, _ = per_image(pruned, test_images, test_labels)
        rows.append({"episode": entry["episode"], "kept": list(kept), "correct": correct, "loss": loss,
                     "test_top1": float(np.mean(test_correct)), "prune_recalibrate_s": prune_s,
                     "val_s_per_image": val_s / len(correct)})
        log(f"  policy {len(rows)} (episode {entry['episode']}): test top-1 {100 * rows[-1]['test_top1']:.2f}%")
    record = {"policies": rows, "machine": f"{platform.platform()}, torch {torch.__version__}, 1 thread"}
    _write_json(path, record)
    return record


def reward(row: dict[str, Any], what: str, images: int) -> float:
    values = row[what][:images]
    mean = sum(values) / len(values)
    return mean if what == "correct" else -mean


def report(record: dict[str, Any], command: str) -> str:
    from scipy.stats import spearmanr

    rows = record["policies"]
    truth = [r["test_top1"] for r in rows]
    prune_s = sum(r["prune_recalibrate_s"] for r in rows) / len(rows)
    per_image_s = sum(r["val_s_per_image"] for r in rows) / len(rows)
    lines = ["# Which reward ranks candidate policies best?", "",
             f"- Command: `{command}`; {record['machine']}.",
             f"- {len(rows)} distinct policies of a CMA-ES search (seed 0) on the Fashion-MNIST ResNet-20 reference at "
             "50% FLOPs; each pruned, reconstructed and BN-recalibrated as in an episode. Truth: test top-1 on 10,000 "
             f"images (here only to judge the rewards). Its spread over the policies: {100 * min(truth):.2f} to "
             f"{100 * max(truth):.2f}%.",
             f"- Seconds per episode: pruning and BN recalibration {prune_s:.2f} s; scoring {1000 * per_image_s:.2f} ms an "
             "image (1,000 images: "
             f"{1000 * per_image_s:.2f} s, 5,000: {5000 * per_image_s:.2f} s). Top-1 and loss come from the same pass.",
             "", "| reward | rho with test top-1, all policies | rho over its own 10 best | test top-1 of its best policy |",
             "|---|---:|---:|---:|"]
    for label, (what, images) in REWARDS.items():
        scores = [reward(r, what, images) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -scores[i])
        top = order[:10]
        rho_all = spearmanr(scores, truth).statistic
        rho_top = spearmanr([scores[i] for i in top], [truth[i] for i in top]).statistic
        lines.append(f"| {label} | {rho_all:+.2f} | {rho_top:+.2f} | {100 * truth[order[0]]:.2f} |")
    lines.append(f"| (the truth's own best) | | | {100 * max(truth):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reward_ranking", description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=40, help="episodes of the CMA-ES search that supplies them")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.policies < 12:
        parser.error(f"--policies {args.policies}: must be at least 12 (the table ranks a reward's 10 best)")
    cache = CACHE_ROOT / "reward_ranking"
    cache.mkdir(parents=True, exist_ok=True)
    record = measure(args.policies, cache, log=lambda m: print(m, flush=True))
    command = "python -m benchmarks.reward_ranking " + " ".join(argv if argv is not None else sys.argv[1:])
    write_page(args.out, "reward_ranking", report(record, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
