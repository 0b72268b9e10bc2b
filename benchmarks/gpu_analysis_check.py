"""Does analysis on a CUDA device find the same units as on the CPU, with TF32 on?

Analysis prunes trial copies and compares the pruned copy's outputs with the
unpruned model's (``adc.analysis.verify``); TF32 convolutions and matmuls
would make those differ by ~1e-3 and exclude good units, so the comparison
turns TF32 off. This script checks it where it matters: each model is analysed
on the CPU and on ``cuda`` (TF32 allowed, as PyTorch's cuDNN default is), the
unit and exclusion lists must agree, and a random policy pruned on the GPU
must pass ``check_pruned`` there (FLOPs counted on the device).

    python3 benchmarks/gpu_analysis_check.py                 # needs a CUDA device and torch-pruning
    python3 benchmarks/gpu_analysis_check.py --size 64 --models resnet50 swin_t     # ViTs always at 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from adc.analysis.cost import kept_vector  # noqa: E402
from adc.analysis.graph import analyze  # noqa: E402
from adc.pruning.pruner import ChannelPruner, check_pruned  # noqa: E402
from torchvision_cases import SIZES, build, input_size, random_policy  # noqa: E402

MODELS = ["resnet50", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
          "shufflenet_v2_x1_0", "swin_t", "vit_b_16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    failures = 0
    for name in args.models:
        model = build(name)
        size = input_size(name) if name in SIZES or name.startswith("vit_") else args.size  # built for its size
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        clock = time.perf_counter()
        cpu = analyze(model, x)
        cpu_s = time.perf_counter() - clock
        model, x = model.cuda(), x.cuda()
        clock = time.perf_counter()
        gpu = analyze(model, x)
        gpu_s = time.perf_counter() - clock
        same = [u.name for u in cpu.units] == [u.name for u in gpu.units] and \
            [n for n, _ in cpu.excluded] == [n for n, _ in gpu.excluded]
        policy = random_policy(gpu)
        pruned = ChannelPruner(model, x, graph=gpu).prune(policy)
        try:
            check_pruned(pruned, gpu, kept_vector(gpu, policy), x)
            checked = "check_pruned ok"
        except Exception as exc:  # report and go on to the next model
            checked = f"check_pruned FAILED: {exc}"
        failures += (not same) + checked.startswith("check_pruned FAILED")
        print(f"{name}: {len(gpu.units)} units, {len(gpu.excluded)} excluded on cuda; same as cpu: {same}; {checked}; "
              f"analysis {cpu_s:.1f} s cpu, {gpu_s:.1f} s cuda", flush=True)
        if not same:
            print("  cpu excluded:", cpu.excluded, "\n  cuda excluded:", gpu.excluded)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
