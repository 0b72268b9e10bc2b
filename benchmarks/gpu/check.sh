#!/bin/bash
# The one prepared GPU check (run through the device tool from the repo root, with .whl carried):
#   bash benchmarks/gpu/check.sh
# Installs the carried wheels, then runs benchmarks/gpu/check.py: the CUDA path end to end (search, latency
# table with CUDA events, fine-tune, export), 1 vs 4 workers sharing the GPU on ResNet-50 at 224, and
# channels_last / bf16 autocast for evaluation (speed and whether they keep the candidates' ranking).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 ADC_CACHE_DIR=/tmp/adc-cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 benchmarks/gpu/check.py --out "$OUT" 2>&1 | tee "$OUT/check.log"
