"""Every torchvision classification model through adc: pruned correctly, or refused with one line.

For each model of ``torchvision.models.list_models(module=torchvision.models)``,
in its own process (a memory cap and a time limit, so one giant model cannot
take the machine down): build it small (``tests/torchvision_cases.py``),
analyse it, prune it with a random policy and check it (forward pass, every
layer's channels, analytic cost == ``FlopCounterMode``), save it without a
spec, export it to ONNX and compare onnxruntime with torch. Then one fresh
process loads every saved file and compares its outputs. Writes
``benchmarks/results/torchvision_models.md``.

    .venv/bin/python benchmarks/torchvision_models.py                       # all 80 models (about 20 min)
    .venv/bin/python benchmarks/torchvision_models.py --models resnet18 swin_t
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
import torchvision  # noqa: E402

from torchvision_cases import ALL_MODELS, load_in_fresh_process  # noqa: E402

ONE = """
import dataclasses, json, resource, sys, torch
limit = int(sys.argv[3]) << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
from pathlib import Path
from torchvision_cases import check_model
row = dataclasses.asdict(check_model(sys.argv[1], Path(sys.argv[2])))
row["saved"] = str(row["saved"]) if row["saved"] else None
row["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(row))
"""


def run_one(name: str, folder: Path, memory_gb: int, timeout: int) -> dict:
    clock = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", ONE, name, str(folder), str(memory_gb), str(ROOT / "tests")],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"name": name, "failure": f"over {timeout} s", "wall": time.perf_counter() - clock}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"name": name, "failure": tail[0][:300], "wall": time.perf_counter() - clock}
    row = json.loads(lines[-1])
    row["wall"] = time.perf_counter() - clock
    return row


def table(rows: list[dict], loaded: dict) -> str:
    lines = ["| model | input | status | units | excluded | FLOPs before -> after | params before -> after | "
             "ONNX max diff | fresh-process load max diff | analyse s | prune+check s | save s | onnx s | total s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failure" in r:
            lines.append(f"| {r['name']} | | FAILED: {r['failure']} | | | | | | | | | | | {r['wall']:.1f} |")
            continue
        if r["refused"]:
            lines.append(f"| {r['name']} | {r['size']} | refused: {r['refused']} | | | | | | | | | | | {r['wall']:.1f} |")
            continue
        s = r["seconds"]
        load = loaded.get(r["saved"], "not run")
        load_text = f"{load:.2g}" if isinstance(load, float) else str(load)
        status = "pruned OK" if isinstance(load, float) and load <= 1e-5 else "CHECK"
        lines.append(
            f"| {r['name']} | {r['size']} | {status} | {r['units']} | {len(r['excluded'])} | "
            f"{r['flops'][0] / 1e6:.1f}M -> {r['flops'][1] / 1e6:.1f}M | {r['params'][0] / 1e6:.2f}M -> "
            f"{r['params'][1] / 1e6:.2f}M | {r['onnx_error']:.2g} | {load_text} | {s['analyze']:.1f} | {s['prune']:.1f} | "
            f"{s['save']:.1f} | {s['onnx']:.1f} | {r['wall']:.1f} |")
    return "\n".join(lines)


def exclusions(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r.get("excluded"):
            out.append(f"- **{r['name']}**")
            out += [f"  - `{n}`: {why}" for n, why in r["excluded"]]
    return "\n".join(out) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=ALL_MODELS)
    parser.add_argument("--memory-gb", type=int, default=12, help="address-space cap per model process")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "torchvision_models.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(run_one(name, Path(tmp), args.memory_gb, args.timeout))
            r = rows[-1]
            print(f"{name}: {r.get('failure') or r.get('refused') or 'ok'} ({r['wall']:.1f} s)", flush=True)
        saved = [Path(r["saved"]) for r in rows if r.get("saved")]
        clock = time.perf_counter()
        loaded = load_in_fresh_process(saved) if saved else {}
        load_s = time.perf_counter() - clock
    ok = sum(1 for r in rows if isinstance(loaded.get(r.get("saved")), float) and loaded[r["saved"]] <= 1e-5)
    text = (f"# torchvision classification models through adc\n\n"
            f"`.venv/bin/python benchmarks/torchvision_models.py` on {platform.node()} "
            f"({platform.processor() or platform.machine()}), torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, 1 thread, one process per model.\n\n"
            f"{ok} of {len(rows)} pruned correctly (random policy, sparsity U(0, 0.8) per unit; forward, every "
            f"layer's channels and analytic FLOPs/params == FlopCounterMode checked; saved without a spec and "
            f"loaded in a fresh process ({load_s:.0f} s for all); ONNX export compared with onnxruntime); "
            f"{sum(1 for r in rows if r.get('refused'))} refused; "
            f"{sum(1 for r in rows if 'failure' in r)} failed.\n\n"
            f"{table(rows, loaded)}\n\n## Excluded channel groups\n\n{exclusions(rows)}\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
