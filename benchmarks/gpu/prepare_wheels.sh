#!/bin/bash
# Wheels the GPU machine lacks (it has torch, torchvision, numpy, onnx, typer, rich, ...; no registry):
# adc itself, gymnasium, stable-baselines3, torch-pruning, cma, optuna (+ its needs), ray (+ jsonschema),
# for CPython 3.12 on x86-64. Ray's wheel (79 MB) is stripped of its Java jars and of the libraries adc does
# not use (rllib, data, serve, tune, train, llm) to fit the device tool's 64 MiB transfer.
# Writes them to .whl/ (ignored by git); benchmarks/gpu/check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
rm -rf .whl && mkdir -p .whl
dl() { $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl "$@" 2>&1 | grep -v "is ignored" || true; }
dl gymnasium==1.4.0 farama-notifications stable-baselines3==2.9.2 torch-pruning==1.6.1 cma==4.5.0 \
   optuna==5.0.0 alembic sqlalchemy colorlog mako greenlet \
   jsonschema jsonschema-specifications referencing rpds-py
mkdir -p /tmp/raywhl && dl ray==2.60.0 && mv .whl/ray-*.whl /tmp/raywhl/
$PY - <<'PYEOF'
import base64, glob, hashlib, os, zipfile
src = glob.glob("/tmp/raywhl/ray-2.60.0-cp312-*.whl")[0]
drop = ("ray/jars/", "ray/rllib/", "ray/data/", "ray/serve/", "ray/tune/", "ray/train/", "ray/llm/")
zin = zipfile.ZipFile(src)
record = [n for n in zin.namelist() if n.endswith(".dist-info/RECORD")][0]
zout = zipfile.ZipFile(os.path.join(".whl", os.path.basename(src)), "w", zipfile.ZIP_DEFLATED, compresslevel=9)
rows = []
for info in zin.infolist():
    if info.filename.startswith(drop) or info.filename == record:
        continue
    data = zin.read(info.filename)
    zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    rows.append(f"{info.filename},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}")
zout.writestr(record, "\n".join(rows + [f"{record},,"]) + "\n")
zout.close()
PYEOF
$PY -m pip wheel -q --no-deps -w .whl . 2>&1 | grep -v "is ignored" || true
rm -rf build
du -sh .whl && ls .whl
