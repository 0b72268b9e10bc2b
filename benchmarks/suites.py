"""Every benchmark adc runs, as data: cells x variants, one setting each (:mod:`benchmarks.harness`).

Run one with ``python -m benchmarks SUITE``; ``python -m benchmarks --list``
names them. The suites replace the separate harnesses of the first rounds
(``benchmarks.run``, ``v2``, ``survey``, ``speedup``, ``ablate_ddpg``); the
pages those wrote stay in ``benchmarks/results/`` as the findings they were
(see ``benchmarks/results/README.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.harness import Cell, Goal, Settings, Suite, Variant


def grid(models: tuple[str, ...], budgets: tuple[str, ...]) -> tuple[Cell, ...]:
    """Every model at every budget."""
    return tuple(Cell(m, b) for m in models for b in budgets)


UNIFORM = Variant("uniform", "uniform", seeded=False, note="every unit pruned by the same fraction (the reference)")
SENSITIVITY = Variant("sensitivity", "sensitivity", seeded=False,
                      note="per-unit sensitivity scan then bisection on one threshold (ModelOpt FastNAS's method)")
RANDOM = Variant("random", "random", note="random policies, clipped to the budget: what a search must beat")
CMAES = Variant("cmaes", "cmaes", note="CMA-ES on the policy vector")
TPE = Variant("tpe", "tpe", note="Optuna's TPE on the policy vector")
DDPG = Variant("ddpg", "ddpg", note="AMC's agent with adc's defaults (warm-up, decaying noise, CMA-ES refinement)")
RIVALS = (UNIFORM, SENSITIVITY, RANDOM, CMAES, TPE, DDPG)


def _within(target: float, tolerance: float) -> Any:
    """Goal check: a latency row's measured ratio (onnxruntime when the search measured there, else torch) is
    within ``tolerance`` of ``target``."""

    def check(row: dict[str, Any]) -> bool | None:
        if not row["budget"].startswith("latency="):
            return None
        runtime = dict(row.get("options", {})).get("runtime", "torch")
        speed = row.get(f"{runtime}_speedup")
        return None if speed is None else abs(1.0 / speed - target) <= tolerance * target

    return check


def _speedup_at_least(value: float) -> Any:
    def check(row: dict[str, Any]) -> bool | None:
        if not (row["budget"].startswith("flops=") and row["model"].startswith("torchvision:")):
            return None
        return all(row[k] >= value for k in row if k.endswith("_speedup"))

    return check


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


register(Suite(
    "smoke", "Does the harness run end to end? (tiny: a 1-epoch reference, 4 episodes)",
    grid(("zoo:plain20",), ("flops=0.5",)), (UNIFORM, RANDOM, DDPG), "uniform",
    Settings(episodes=4, seeds=1, val_size=300, bn_calibration=64, select_top=2, select_size=500, train_epochs=1,
             finetune_epochs=1, finetune_samples=1000, runtimes=("torch",))))

register(Suite(
    "quick", "Does a short ddpg search beat uniform and random pruning on plain20 at half the FLOPs?",
    grid(("zoo:plain20",), ("flops=0.5",)), (UNIFORM, RANDOM, DDPG), "uniform",
    Settings(episodes=60, seeds=1, finetune_epochs=1, runtimes=("torch", "onnxruntime"))))

register(Suite(
    "fashion", "Does the searched policy beat uniform, random and sensitivity pruning, and what do "
               "reconstruction and BN recalibration add? (was benchmarks.run --full)",
    grid(("zoo:plain20", "zoo:resnet20"), ("flops=0.5", "flops=0.25")),
    (UNIFORM, SENSITIVITY, RANDOM, DDPG,
     Variant("ddpg-no-reconstruct", "ddpg", (("reconstruct", False),), seeded=False,
             note="ddpg without least-squares reconstruction of the next layer"),
     Variant("ddpg-no-bn-recal", "ddpg", (("bn_calibration", 0),), seeded=False,
             note="ddpg without batch-norm recalibration of each candidate"),
     Variant("uniform-no-reconstruct", "uniform", (("reconstruct", False),), seeded=False,
             note="uniform without reconstruction")),
    "uniform", Settings(finetune_epochs=1, finetune_samples=27000, runtimes=("torch", "onnxruntime"))))

register(Suite(
    "rivals", "Does ddpg beat strong black-box rivals (random, CMA-ES, TPE) and sensitivity at the same episodes? "
              "(was benchmarks.v2 --full)",
    grid(("zoo:resnet20", "zoo:mobilenet", "zoo:resnet56"), ("flops=0.5", "flops=0.3")), RIVALS, "uniform",
    Settings(workers=2, finetune_epochs=2, finetune_samples=10000, distill=True)))

DDPG_CHANGES = (
    ("ddpg-reward-loss", (("reward", "loss"),), "minus the cross-entropy on the reward's images in place of top-1"),
    ("ddpg-warmup-20", (("agent_options", (("warmup", 20),)),), "20 random warm-up episodes instead of 50"),
    ("ddpg-warmup-uniform", (("agent_options", (("warmup_sigma", 0.2),)),),
     "warm-up actions drawn around the uniform policy (sigma 0.2)"),
    ("ddpg-observe-bounds", (("observe_bounds", True),), "the clipping's interval in the observation"),
    ("ddpg-updates-x2", (("agent_options", (("updates_per_step", 2.0),)),), "two gradient steps per transition"),
    ("ddpg-refine-100", (("refine_episodes", 100),), "the CMA-ES refinement 100 of the 200 episodes instead of 60"),
    ("td3", (), "TD3 (twin critics, delayed actor, target smoothing) in place of DDPG"),
)
register(Suite(
    "ddpg-variants", "Does one change to ddpg help on the rivals' cells? (was benchmarks.v2 --variant and "
                     "benchmarks.ablate_ddpg --part real)",
    grid(("zoo:resnet20", "zoo:resnet56"), ("flops=0.5", "flops=0.3")),
    (DDPG, *(Variant(name, "td3" if name == "td3" else "ddpg", options, note=note)
             for name, options, note in DDPG_CHANGES)),
    "ddpg", Settings(workers=2, finetune_epochs=2, finetune_samples=10000, distill=True)))


def _criteria() -> tuple[Variant, ...]:
    from adc.pruning.criteria import CRITERIA

    return tuple(Variant(f"{agent}-{name}", agent, (("criterion", name),), seeded=agent != "uniform",
                         note=f"{agent} with the {name} channel criterion")
                 for name in CRITERIA.names() for agent in ("uniform", "ddpg"))


register(Suite(
    "criteria", "Which channel criterion? Each with the uniform policy and with ddpg. (was benchmarks.survey, part 1)",
    grid(("zoo:plain20", "zoo:resnet20"), ("flops=0.5", "flops=0.3")), _criteria(), "uniform-l1",
    Settings(episodes=100, seeds=1)))

SPARSE = tuple(
    Variant(f"{agent}-{prep}", agent, seeded=False, prepare=None if prep == "none" else prep,
            note={"none": "the reference as trained", "finetune": "the same fine-tune without a regulariser (control)"}
            .get(prep, f"a sparse fine-tune with {prep} first"))
    for prep in ("none", "finetune", "slimming:1e-3", "slimming:5e-3", "group_lasso:1e-3", "group_lasso:5e-3")
    for agent in ("uniform", "ddpg"))
register(Suite(
    "sparse-first", "Does a sparse fine-tune before pruning help, beyond the extra training? "
                    "(was benchmarks.survey, part 2)",
    grid(("zoo:plain20", "zoo:resnet20"), ("flops=0.5", "flops=0.3")), SPARSE, "uniform-finetune",
    Settings(episodes=100, seeds=1, prepare_epochs=2, prepare_samples=None)))

register(Suite(
    "strategies", "Greedy and global rivals beside the search (was benchmarks.survey, part 3)",
    grid(("zoo:plain20", "zoo:resnet20"), ("flops=0.5", "flops=0.3")),
    (UNIFORM, SENSITIVITY, RANDOM, DDPG,
     Variant("netadapt", "netadapt", seeded=False, note="NetAdapt's greedy per-layer steps (AIMET-like)"),
     Variant("global", "global", seeded=False, note="one global threshold on the criterion's scores")),
    "uniform", Settings(episodes=100, seeds=1)))

_SPEED_VARIANTS = (
    Variant("round-1", "random", (("round_to", 1),), seeded=False, note="channels kept to any count"),
    Variant("round-auto-torch", "random", (("round_to", "auto"), ("runtime", "torch")), seeded=False,
            note="channel counts rounded where torch is faster (timed probe)"),
    Variant("round-auto-ort", "random", (("round_to", "auto"), ("runtime", "onnxruntime")), seeded=False,
            note="channel counts rounded where onnxruntime is faster"),
)
register(Suite(
    "speed", "Really faster? Measured speedups of the models handed back, and latency budgets checked on them "
               "(was benchmarks.speedup)",
    grid(("zoo:plain20", "zoo:resnet20", "zoo:mobilenet", "torchvision:resnet18", "torchvision:mobilenet_v2",
          "torchvision:efficientnet_b0"), ("flops=0.5", "latency=0.5")),
    _SPEED_VARIANTS, "round-1",
    Settings(episodes=30, seeds=1, runtimes=("torch", "onnxruntime"), timing_rounds=5),
    goals=(Goal("torchvision rows at flops=0.5 at least 1.8x faster in both runtimes", _speedup_at_least(1.8)),
           Goal("latency=0.5 measured within 5% of 0.5 in the runtime searched for", _within(0.5, 0.05)))))


SYNTHETIC_CELLS = grid(tuple(f"synthetic:{k}" for k in ("hard6", "spread12", "spread30", "noisy12")),
                       ("cost=0.5", "cost=0.3"))
register(Suite(
    "ddpg-synthetic", "Does one change to ddpg close more of the gap to a known optimum? Synthetic cells, seconds a "
                      "search (was benchmarks.ablate_ddpg --part synthetic)",
    SYNTHETIC_CELLS,
    (DDPG, *(Variant(name, "td3" if name == "td3" else "ddpg", options, note=note)
             for name, options, note in DDPG_CHANGES if name != "ddpg-reward-loss"),
     Variant("ddpg-sigma-0.2", "ddpg", (("agent_options", (("noise_sigma", 0.2), ("noise_final_sigma", 0.02))),),
             note="narrower exploration noise"),
     Variant("ddpg-refine-gaussian", "ddpg", (("refine_method", "gaussian"),), note="the refinement by Gaussian steps"),
     RANDOM, CMAES, TPE),
    "ddpg", Settings(seeds=5)))

register(Suite(
    "rivals-settings", "How the black-box rivals' defaults were chosen, on the synthetic cells "
                       "(was benchmarks.rivals_tuning)",
    SYNTHETIC_CELLS,
    (RANDOM, CMAES, TPE,
     *(Variant(f"cmaes-{k}-{v}", "cmaes", (("agent_options", ((k, v),)),), note=f"cmaes with {k}={v}")
       for k, v in (("learn_from", "applied"), ("sigma0", 0.05), ("sigma0", 0.2), ("popsize", 6), ("popsize", 20))),
     *(Variant(f"tpe-{k}-{v}", "tpe", (("agent_options", ((k, v),)),), note=f"tpe with {k}={v}")
       for k, v in (("learn_from", "proposal"), ("multivariate", False), ("startup", 5), ("startup", 20)))),
    "random", Settings(seeds=5)))


register(Suite(
    "parallel", "How much faster is a search with two Ray workers than with one? (was benchmarks.workers)",
    grid(("zoo:plain20",), ("flops=0.5",)),
    (Variant("ddpg-1-worker", "ddpg", (("workers", 1),), seeded=False, note="one process"),
     Variant("ddpg-2-workers", "ddpg", (("workers", 2),), seeded=False, note="two Ray workers score each round"),
     Variant("random-2-workers", "random", (("workers", 2),), seeded=False, note="random search on two workers")),
    "ddpg-1-worker", Settings(episodes=100, seeds=1)))


_QUANTIZE = Settings(episodes=60, seeds=1, quantize=("int8", "auto"), timing_rounds=5)
_AUTO_NOT_SLOWER = Goal("int8 where faster (auto) never slower than the pruned fp32 graph (5% timing tolerance)",
                        lambda r: None if "ort_auto_speedup" not in r
                        else r["ort_auto_speedup"] >= 0.95 * r["ort_fp32_speedup"])
register(Suite(
    "quantize", "What does int8 (onnxruntime, static QDQ) add to pruning on the Fashion-MNIST zoo nets: every layer "
                "in int8 against int8 only where measured faster, before fine-tuning, beside int8 alone (no pruning)? "
                "Speedups against the unpruned fp32 graph.",
    grid(("zoo:plain20", "zoo:mobilenet"), ("flops=0.5", "flops=0.3")),
    (UNIFORM, Variant("ddpg", "ddpg", seeded=False, note=DDPG.note)), "uniform", _QUANTIZE,
    goals=(_AUTO_NOT_SLOWER,)))
register(Suite(
    "quantize-speed", "The same on torchvision's resnet18 and mobilenet_v2 at 224 px (random weights: speed and size "
                      "only), the uniform policy that meets each budget.",
    grid(("torchvision:resnet18", "torchvision:mobilenet_v2"), ("flops=0.5", "flops=0.3")), (UNIFORM,), "uniform",
    _QUANTIZE, goals=(_AUTO_NOT_SLOWER,)))


def suite(name: str) -> Suite:
    """The suite called ``name``; a one-line error naming the valid ones otherwise."""
    from adc.utils.errors import AdcError

    if name not in SUITES:
        raise AdcError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")
    return SUITES[name]


def with_episodes(s: Suite, episodes: int) -> Suite:
    """``s`` with another episode count (its rows get other cache keys)."""
    return dataclasses.replace(s, settings=dataclasses.replace(s.settings, episodes=episodes))
