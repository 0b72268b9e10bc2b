"""The GPU check: the CUDA path end to end, parallel workers on one GPU, channels_last and bf16 for evaluation.

Run by benchmarks/gpu/check.sh on the device machine; every section prints what it measured and adds it to
``OUT/gpu_check.json``. A section that fails prints its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

RESULTS: dict = {}
DEVICE = os.environ.get("CHECK_DEVICE", "cuda")  # CHECK_DEVICE=cpu CHECK_SMALL=1: a dry run of the code paths here
SMALL = bool(os.environ.get("CHECK_SMALL"))


def section(name):
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            print(f"\n=== {name}", flush=True)
            try:
                RESULTS[name] = fn(*args, **kwargs)
                RESULTS[name]["seconds"] = round(time.perf_counter() - t0, 1)
            except Exception as exc:  # report and go on with the next section
                traceback.print_exc()
                RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(json.dumps(RESULTS[name], indent=1, default=str), flush=True)
        return run
    return wrap


def adc_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["adc", *args], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, COLUMNS="200"))
    print("$ adc " + " ".join(args), "->", result.returncode, flush=True)
    print(result.stdout[-1500:], result.stderr[-1500:], flush=True)
    return result


@section("cli_cuda")
def cli_cuda(out: Path) -> dict:
    run = out / "run"
    search = adc_cli("search", "--device", DEVICE, "--episodes", "12", "--warmup", "3", "--agent-option", "hidden=64,64",
                     "--eval-batch-size", "512", "--out", str(run))
    finetune = adc_cli("finetune", str(run), "--device", DEVICE, "--epochs", "1")
    export = adc_cli("export", str(run), "--format", "onnx")
    table = adc_cli("latency-table", "--device", DEVICE, "--model", "torchvision:resnet18", "--input-shape",
                    "3,224,224", "--batch", "8", "--points", "3")
    budget = adc_cli("search", "--device", DEVICE, "--budget", "latency=0.7", "--latency-batch", "8", "--agent", "random",
                     "--episodes", "6", "--out", str(out / "run_latency"))
    report = (run / "report.md").read_text() if (run / "report.md").exists() else ""
    return {"search": search.returncode, "finetune": finetune.returncode, "export": export.returncode,
            "latency_table": table.returncode, "latency_budget_search": budget.returncode,
            "report_speed_lines": [l for l in report.splitlines() if "batch" in l and "->" in l][:4],
            "latency_table_tail": table.stdout.strip().splitlines()[-2:] if table.stdout else []}


@section("workers_resnet50")
def workers(out: Path) -> dict:
    import adc
    from adc.inputs.data import example_input, load_data

    splits = load_data(f"{Path(__file__).with_name('fake224.py')}:{'small' if SMALL else 'data'}")
    model = adc.build_model("torchvision:resnet18" if SMALL else "torchvision:resnet50", num_classes=1000,
                            in_channels=3).eval()
    x = example_input(splits)
    rows = {}
    for workers, episodes in (((1, 4), (2, 6)) if SMALL else ((1, 8), (4, 24))):
        stamps = []
        t0 = time.perf_counter()
        result = adc.search(model, x, data=splits, agent="random", episodes=episodes, workers=workers, device=DEVICE,
                            bn_calibration=256, val_size=128, select_top=0, reconstruct=False, eval_batch_size=128,
                            threads=2, seed=0, progress=lambda r, b: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
        steady = (len(stamps) - workers) / max(1e-9, stamps[-1] - stamps[workers - 1]) * 60  # after the first round
        rows[workers] = {"episodes": len(result.history), "episodes_per_min": round(steady, 2),
                         "wall_s": round(total, 1), "eval_share": round(
                             sum(h["evaluate_time"] for h in result.history) / sum(h["wall_time"] for h in result.history), 3)}
        print(workers, rows[workers], flush=True)
    most = max(rows)
    return {"rows": rows, f"speedup_{most}_vs_1": round(rows[most]["episodes_per_min"] / rows[1]["episodes_per_min"], 2)}


@section("eval_precision")
def precision(out: Path) -> dict:
    """channels_last and bf16 autocast: time per evaluation (ResNet-50, 224) and ranking of 24 candidates (digits)."""
    import adc
    from adc.envs.task import ModelTask
    from adc.inputs.pretrained import ensure_trained
    from scipy.stats import spearmanr

    dev = DEVICE
    net = adc.build_model("torchvision:resnet18" if SMALL else "torchvision:resnet50", num_classes=1000,
                          in_channels=3).eval().to(dev)
    size, count = (32, 128) if SMALL else (224, 512)
    images = torch.randn(count, 3, size, size, device=dev)
    timings = {}
    for name, layout, dtype in (("fp32", torch.contiguous_format, None), ("fp32_channels_last", torch.channels_last, None),
                                ("bf16", torch.contiguous_format, torch.bfloat16),
                                ("bf16_channels_last", torch.channels_last, torch.bfloat16)):
        m = net.to(memory_format=layout)
        xb = images.contiguous(memory_format=layout)
        with torch.inference_mode(), torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(3):
                m(xb[:128])
            sync()
            t0 = time.perf_counter()
            for i in range(0, count, 128):
                m(xb[i:i + 128])
            sync()
        timings[name] = round((time.perf_counter() - t0) * 1e3, 2)
    data = adc.load_data("digits")
    model = adc.load_checkpoint(adc.build_model("zoo:resnet20", num_classes=10, in_channels=1),
                                ensure_trained("zoo:resnet20", "digits", epochs=30)).eval().to(dev)
    xs = torch.stack([data.val[i][0] for i in range(len(data.val))] + [data.test[i][0] for i in range(len(data.test))])
    ys = torch.tensor([int(data.val[i][1]) for i in range(len(data.val))] + [int(data.test[i][1]) for i in range(len(data.test))])
    xs, ys = xs.to(dev), ys.to(dev)

    def scorer(layout, dtype):
        def score(m):
            m = m.to(memory_format=layout)
            with torch.inference_mode(), torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None):
                return (m(xs.contiguous(memory_format=layout)).argmax(1) == ys).float().mean().item()
        return score

    bn = torch.stack([data.train[i][0] for i in range(256)]).to(dev)
    task = ModelTask.build(model, torch.zeros(1, 1, 8, 8, device=dev), score=scorer(torch.contiguous_format, None),
                           budgets=["flops=0.4"], bn_images=bn)
    rng = np.random.default_rng(0)
    kepts = [task.play_actions(rng.uniform(0, 1, task.num_units).tolist())[0] for _ in range(6 if SMALL else 24)]
    acc = {}
    for name, layout, dtype in (("fp32", torch.contiguous_format, None), ("fp32_channels_last", torch.channels_last, None),
                                ("bf16", torch.contiguous_format, torch.bfloat16)):
        ev = task.evaluator.with_score(scorer(layout, dtype))
        acc[name] = [ev(k).metrics["top1"] for k in kepts]
    rho = {k: round(float(spearmanr(acc["fp32"], v).statistic), 4) for k, v in acc.items() if k != "fp32"}
    same_best = {k: int(np.argmax(v)) == int(np.argmax(acc["fp32"])) for k, v in acc.items()}
    diffs = {k: round(float(np.max(np.abs(np.array(v) - np.array(acc["fp32"])))), 4) for k, v in acc.items()}
    return {"resnet50_eval_512_ms" if not SMALL else "resnet18_eval_128_ms": timings, "ranking_spearman_vs_fp32": rho, "same_best_candidate": same_best,
            "max_top1_difference": diffs, "fp32_top1_range": [round(min(acc["fp32"]), 4), round(max(acc["fp32"]), 4)]}


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "", flush=True)
    for name, fn in (("cli_cuda", cli_cuda), ("workers_resnet50", workers), ("eval_precision", precision)):
        if args.only is None or name in args.only:
            fn(args.out)
            (args.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    print("\nDONE", json.dumps({k: ("error" not in v) for k, v in RESULTS.items()}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
