"""The benchmark harness: a suite is cells x variants x seeds, one runner measures each row, one reporter writes it.

A *cell* is what is compressed and to what (a model and a budget); a
*variant* is how (a strategy and its search options, or a preparation of the
model first); a *row* is one (cell, variant, seed). :class:`Runner` measures a
row -- search, prune, test top-1 right after pruning and after a short
fine-tune, the real costs of the model handed back, and its measured speedup
beside the unpruned model in each runtime -- and caches it as JSON in
``benchmarks/cache/<suite>/`` under a hash of everything that changes its
numbers, so an interrupted run resumes and a changed setting runs again.
:mod:`benchmarks.reporter` writes the page from the cached rows.

Suites are data, in :mod:`benchmarks.suites`; run one with
``python -m benchmarks SUITE`` (see :mod:`benchmarks.__main__`).

Model specs: ``zoo:NAME`` is the reference trained on the suite's data (on
first use, cached outside git by :func:`adc.inputs.pretrained.ensure_trained`);
``torchvision:NAME`` has random weights at ``3 x size x size``: its speed
depends on its shapes only, so its rows carry no accuracy and take the
uniform policy that meets the budget (every policy scores the same).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE_ROOT = HERE / "cache"
RESULTS_DIR = HERE / "results"


@dataclass(frozen=True)
class Cell:
    """What is compressed and to what.

    Attributes:
        model: ``zoo:NAME`` (trained on the suite's data) or ``torchvision:NAME`` (random weights, speed only).
        budget: One adc budget, e.g. ``flops=0.5`` or ``latency=0.5``.
    """

    model: str
    budget: str

    @property
    def label(self) -> str:
        return f"{self.model.split(':', 1)[-1]} @ {self.budget}"


@dataclass(frozen=True)
class Variant:
    """How a cell is compressed: a strategy with search options, optionally on a prepared model.

    Attributes:
        name: Shown in the tables; unique in a suite.
        agent: The ``adc.search`` agent (``uniform``, ``random``, ``cmaes``, ``tpe``, ``ddpg``, ...).
        options: More ``adc.search`` options (``criterion``, ``reward``, ``agent_options``, ``round_to``, ...).
        seeded: Run with every seed of the suite (a deterministic strategy runs once).
        prepare: ``finetune`` or ``REGULARISER:STRENGTH`` (``slimming:1e-4``): a short (sparse) fine-tune of the
            reference before the search, trained once per suite and cached.
        note: What the variant changes and why (shown on the page).
    """

    name: str
    agent: str
    options: tuple[tuple[str, Any], ...] = ()
    seeded: bool = True
    prepare: str | None = None
    note: str = ""

    def search_options(self) -> dict[str, Any]:
        return {"agent": self.agent, **{k: (dict(v) if k == "agent_options" else v) for k, v in self.options}}


@dataclass(frozen=True)
class Settings:
    """The measurement, shared by every row of a suite (hashed into each row's cache key)."""

    data: str = "fashion-mnist"
    episodes: int = 200
    seeds: int = 3
    val_size: int = 1000
    bn_calibration: int = 512
    select_top: int = 8
    select_size: int | None = 5000
    workers: int = 1
    train_epochs: int = 8                 # zoo references
    finetune_epochs: int = 0              # 0: no fine-tune
    finetune_samples: int | None = None   # training images per fine-tune epoch (None: the whole split)
    finetune_lr: float = 0.01
    distill: bool = False                 # fine-tune with the unpruned reference as teacher
    runtimes: tuple[str, ...] = ()        # measured speedup at batch 1, one thread, in each runtime
    timing_rounds: int = 3
    size: int = 224                       # torchvision input: 3 x size x size
    prepare_epochs: int = 2               # Variant.prepare fine-tunes
    prepare_samples: int | None = 20000
    prepare_lr: float = 0.01
    quantize: tuple[str, ...] = ()        # after pruning (and fine-tuning): int8 (every layer) and/or auto (int8
                                          # where faster), measured on onnxruntime against the unpruned fp32 graph
    calibration_images: int = 256

    def keyed(self) -> dict[str, Any]:
        """The fields a row's numbers depend on: the quantization's only when the suite quantizes (so adding a
        setting that does not apply keeps the rows already measured)."""
        fields = dataclasses.asdict(self)
        if not self.quantize:
            del fields["quantize"], fields["calibration_images"]
        return fields


@dataclass(frozen=True)
class Goal:
    """A target a suite is judged against, checked on every row it applies to.

    Attributes:
        text: The goal as the page states it.
        check: ``check(row) -> bool | None`` (None: the goal does not apply to the row).
    """

    text: str
    check: Callable[[dict[str, Any]], bool | None]


@dataclass(frozen=True)
class Suite:
    """A benchmark: every cell with every variant (seeded ones with every seed), one setting, one page.

    Attributes:
        name: The page's stem (``benchmarks/results/<name>.md``) and cache folder.
        question: What the suite answers, the page's first line.
        cells / variants: The grid.
        baseline: The variant the others are compared with, seed by seed.
        settings: The measurement.
        goals: Targets the page reports as met or not, row by row.
    """

    name: str
    question: str
    cells: tuple[Cell, ...]
    variants: tuple[Variant, ...]
    baseline: str
    settings: Settings = field(default_factory=Settings)
    goals: tuple[Goal, ...] = ()

    def rows(self) -> list[Row]:
        """Every row, cell by cell."""
        return [Row(cell, variant, seed) for cell in self.cells for variant in self.variants
                for seed in (range(self.settings.seeds) if variant.seeded else range(1))]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


@dataclass(frozen=True)
class Row:
    cell: Cell
    variant: Variant
    seed: int

    def key(self, settings: Settings) -> str:
        """A readable name and a hash of everything that changes the row's numbers (the note does not)."""
        spec = {"cell": dataclasses.asdict(self.cell), "seed": self.seed, "settings": settings.keyed(),
                "variant": {k: v for k, v in dataclasses.asdict(self.variant).items() if k not in ("name", "note")}}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
        budget = self.cell.budget.replace("=", "")
        return f"{self.cell.model.split(':', 1)[-1]}-{budget}-{self.variant.name}-s{self.seed}-{digest}"


def _write_json(path: Path, value: Any) -> None:
    from adc.utils.files import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=1, default=str))


class Runner:
    """Loads the data and the models once, measures rows, caches each one.

    Args:
        suite: What to run.
        cache: The row cache folder (default ``benchmarks/cache/<suite>``).
        log: Where progress lines go.
    """

    def __init__(self, suite: Suite, cache: Path | None = None, log: Callable[[str], None] = print) -> None:
        self.suite, self.settings, self.log = suite, suite.settings, log
        self.cache = cache or CACHE_ROOT / suite.name
        self.cache.mkdir(parents=True, exist_ok=True)
        self._splits: Any = None
        self._models: dict[tuple[str, str | None], tuple[Any, Any, dict[str, Any]]] = {}
        self._unpruned_graphs: dict[int, tuple[bytes, bytes]] = {}  # id(unpruned model) -> fp32 and int8 ONNX

    @property
    def splits(self) -> Any:
        if self._splits is None:
            from adc.inputs.data import load_data

            self._splits = load_data(self.settings.data)
        return self._splits

    def model(self, spec: str, prepare: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
        """``(model, example input, record)`` of a spec, prepared when asked; loaded (and trained) once."""
        if (spec, prepare) in self._models:
            return self._models[(spec, prepare)]
        import torch

        from adc.analysis.cost import count
        from adc.inputs.data import example_input
        from adc.inputs.models import build_model, load_checkpoint
        from adc.inputs.pretrained import ensure_trained
        from adc.inputs.training import evaluate

        s = self.settings
        if spec.startswith("zoo:"):
            splits = self.splits
            path = ensure_trained(spec, s.data, epochs=s.train_epochs, seed=0,
                                  progress=lambda e, loss: self.log(f"  training {spec}: epoch {e}, loss {loss:.4f}"))
            model = load_checkpoint(build_model(spec, num_classes=splits.num_classes,
                                                in_channels=splits.in_channels), path).eval()
            x = example_input(splits)
            if prepare is not None:
                model = self._prepared(spec, model, x, prepare)
            record = {"test_top1": evaluate(model, splits.test)["top1"]}
        else:
            if prepare is not None:
                raise ValueError(f"{spec}: a torchvision model has random weights; nothing to prepare")
            torch.manual_seed(0)
            model = build_model(spec, num_classes=1000, in_channels=3).eval()
            x = torch.randn(1, 3, s.size, s.size)
            record = {"test_top1": None}
        costs = count(model, x)
        record.update(flops=costs.flops, params=costs.params)
        self._models[(spec, prepare)] = (model, x, record)
        return model, x, record

    def _prepared(self, spec: str, reference: Any, x: Any, prepare: str) -> Any:
        """The reference after a (sparse) fine-tune, trained once and cached as an adc model file."""
        from adc.analysis.graph import analyze
        from adc.inputs.finetune import finetune
        from adc.pruning.serialization import load, save
        from adc.pruning.sparsity import SPARSITY

        s = self.settings
        tag = hashlib.sha256(json.dumps([s.data, s.train_epochs, s.prepare_epochs, s.prepare_samples,
                                         s.prepare_lr]).encode()).hexdigest()[:8]
        path = self.cache / f"prepared-{spec.replace(':', '_')}-{prepare.replace(':', '@')}-{tag}.pt"
        if path.is_file():
            return load(path).eval()
        method, _, strength = prepare.partition(":")
        regulariser = None if prepare == "finetune" else SPARSITY.get(method).regulariser(analyze(reference, x),
                                                                                          float(strength))
        started = time.perf_counter()
        model, _ = finetune(reference, self.splits, epochs=s.prepare_epochs, lr=s.prepare_lr, seed=0, keep_last=True,
                            train_samples=s.prepare_samples, extra_loss=regulariser)
        self.log(f"  {prepare} fine-tune of {spec}: {time.perf_counter() - started:.0f} s")
        save(model, path, meta={"prepare": prepare})
        return model.eval()

    def measure(self, row: Row) -> dict[str, Any]:
        """One row: search, prune, score the model handed back, fine-tune it, time it."""
        import adc
        from adc.analysis.cost import count
        from adc.analysis.timers import measured_speedup
        from adc.inputs.finetune import finetune, kept_epoch
        from adc.inputs.training import evaluate
        from adc.utils.errors import AdcError
        from adc.utils.formatting import one_line

        if row.cell.model.startswith("synthetic:"):
            return self.measure_synthetic(row)
        s = self.settings
        model, x, reference = self.model(row.cell.model, row.variant.prepare)
        trained = reference["test_top1"] is not None
        options: dict[str, Any] = {"budget": [row.cell.budget], "episodes": s.episodes, "seed": row.seed,
                                   "workers": s.workers, "select_top": s.select_top if trained else 0,
                                   "cache_dir": str(self.cache / "latency")}
        if trained:
            options.update(data=self.splits, val_size=s.val_size, select_size=s.select_size,
                           bn_calibration=s.bn_calibration)
        options.update(row.variant.search_options())  # the variant's settings over the suite's
        if not trained:  # random weights: speed only, the uniform policy that meets the budget
            options.update(evaluate=lambda m: 0.0, bn_calibration=0, reconstruct=False, agent="uniform", episodes=1)
        out: dict[str, Any] = {"model": row.cell.model, "budget": row.cell.budget, "variant": row.variant.name,
                               "seed": row.seed, "agent": options["agent"], "options": dict(row.variant.options),
                               "input": "x".join(map(str, x.shape[1:])), "test_top1_unpruned": reference["test_top1"]}
        started = time.perf_counter()
        try:
            result = adc.search(model, x, **options)
        except AdcError as exc:
            return {**out, "error": one_line(exc, 400), "search_s": time.perf_counter() - started}
        out["search_s"] = time.perf_counter() - started
        pruned = result.prune()
        costs = count(pruned, x)
        history = result.history
        out.update({
            "episodes": len(history), "round_to": result.round_to,
            "flops_ratio": costs.flops / reference["flops"], "params_ratio": costs.params / reference["params"],
            "predicted_latency_ratio": result.metrics.get("latency_ratio"),
            "val_top1": result.metrics["top1"] if trained else None,
            "test_top1_pruned": evaluate(pruned, self.splits.test)["top1"] if trained else None,
            "kept_fraction": {u.name: result.kept[u.name] / u.channels for u in result.graph.units},
            "best_reward": [h["best_reward"] for h in history],
        })
        final = pruned  # what the quantization starts from: the fine-tuned model when there is one
        if trained and s.finetune_epochs:
            t0 = time.perf_counter()
            final, records = finetune(pruned, self.splits, teacher=model if s.distill else None,
                                      epochs=s.finetune_epochs, lr=s.finetune_lr, seed=row.seed,
                                      train_samples=s.finetune_samples)
            out.update(test_top1_finetuned=kept_epoch(records)["test_top1"], finetune_s=time.perf_counter() - t0)
        for runtime in s.runtimes:
            speed = measured_speedup(model, pruned, x, runtime=runtime, threads=1, batch=1, rounds=s.timing_rounds)
            out[f"{runtime}_speedup"] = speed["speedup"]
            out[f"{runtime}_pruned_ms"] = 1e3 * speed["pruned_s"]
            out[f"{runtime}_original_ms"] = 1e3 * speed["original_s"]
        if s.quantize:
            out.update(self.measure_quantized(model, final, x, trained))
        out["row_s"] = time.perf_counter() - started
        return out

    def measure_quantized(self, model: Any, final: Any, x: Any, trained: bool) -> dict[str, Any]:
        """The final model in int8 (every layer, and/or where faster), timed on onnxruntime beside the unpruned and
        the pruned fp32 graphs (batch 1, one thread), with its test top-1 and size measured on the ONNX files."""
        import torch

        from adc.analysis.qdq import QdqBuilder
        from adc.analysis.timers import SPEEDUP_TIMING, OnnxTimer, side_by_side
        from adc.inputs.calibration import fixed_images
        from adc.pruning.quantize import choose_precisions, onnx_accuracy

        s = self.settings
        images = (fixed_images(self.splits.train, s.calibration_images, seed=0) if trained
                  else torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(0)))
        builder = QdqBuilder(final, x, images)
        if id(model) not in self._unpruned_graphs:  # the unpruned fp32 graph, and int8 alone (no pruning): the
            reference = QdqBuilder(model, x, images)  # rival a pruned int8 model must beat
            self._unpruned_graphs[id(model)] = (reference.fp32, reference.program().data)
        unpruned, unpruned_int8 = self._unpruned_graphs[id(model)]
        graphs: dict[str, bytes] = {"fp32": builder.fp32, "unpruned_int8": unpruned_int8}
        out: dict[str, Any] = {}
        for mode in s.quantize:
            t0 = time.perf_counter()
            if mode == "int8":
                program = builder.program()
            else:
                program = choose_precisions(final, x, images, builder=builder).program
            graphs[mode] = program.data
            out[f"{mode}_fp32_layers"] = list(program.fp32_layers)
            out[f"{mode}_quantize_s"] = time.perf_counter() - t0
        names = list(graphs)
        timed = side_by_side(OnnxTimer("cpu", 1, **SPEEDUP_TIMING), unpruned, [graphs[n] for n in names], x,
                             rounds=s.timing_rounds)
        for name, ratio in zip(names, timed.ratios):
            out[f"ort_{name}_speedup"] = 1.0 / ratio
            out[f"ort_{name}_size_ratio"] = len(graphs[name]) / len(unpruned)
            if trained and name != "fp32":
                out[f"test_top1_{name}"] = onnx_accuracy(graphs[name], self.splits.test)["top1"]
        if trained:
            out["test_top1_ort_fp32"] = onnx_accuracy(graphs["fp32"], self.splits.test)["top1"]
        return out

    def measure_synthetic(self, row: Row) -> dict[str, Any]:
        """One search of a synthetic cell (:mod:`benchmarks.synthetic`): the share of the gap to the optimum closed."""
        from benchmarks import synthetic

        kind = row.cell.model.split(":", 1)[1]
        name, _, value = row.cell.budget.partition("=")
        if name != "cost":
            raise ValueError(f"a synthetic cell's budget is cost=B, got {row.cell.budget!r}")
        options = row.variant.search_options()
        agent = options.pop("agent")
        return {"model": row.cell.model, "budget": row.cell.budget, "variant": row.variant.name, "seed": row.seed,
                "agent": agent, "options": dict(row.variant.options),
                **synthetic.measure(kind, float(value), agent, options, row.seed, self.settings.episodes)}

    def run(self, rows: list[Row] | None = None, *, report_only: bool = False) -> list[dict[str, Any]]:
        """Every row's record: cached ones read back, the others measured and cached (none with ``report_only``)."""
        rows = self.suite.rows() if rows is None else rows
        done: list[dict[str, Any]] = []
        started, fresh = time.perf_counter(), 0
        for i, row in enumerate(rows, 1):
            path = self.cache / f"{row.key(self.settings)}.json"
            if path.is_file():
                done.append(json.loads(path.read_text()))
                continue
            if report_only:
                continue
            t0 = time.perf_counter()
            record = self.measure(row)
            _write_json(path, record)
            done.append(record)
            fresh += 1
            left = (time.perf_counter() - started) / fresh * (len(rows) - i) / 60
            self.log(f"[{i}/{len(rows)}] {row.cell.label} {row.variant.name} seed {row.seed}: {summary(record)}, "
                     f"{time.perf_counter() - t0:.0f} s (about {left:.0f} min left)")
        return done


def summary(record: dict[str, Any]) -> str:
    """One progress line's worth of a row."""
    if "error" in record:
        return f"refused: {record['error']}"
    if "gap_closed" in record:
        return f"gap closed {record['gap_closed']:.3f}"
    parts = [f"FLOPs {record['flops_ratio']:.3f}"]
    if record.get("test_top1_pruned") is not None:
        parts.insert(0, f"test {100 * record['test_top1_pruned']:.2f}%")
    if record.get("test_top1_finetuned") is not None:
        parts.insert(1, f"-> {100 * record['test_top1_finetuned']:.2f}% fine-tuned")
    parts += [f"{k.removesuffix('_speedup')} {v:.2f}x" for k, v in record.items() if k.endswith("_speedup")]
    return ", ".join(parts)
