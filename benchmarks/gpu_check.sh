#!/usr/bin/env bash
# The app's GPU path checked in one run of at most 5 minutes, on a CUDA machine without
# network whose Python has torch, timm and peft (with scikit-learn, numpy, grpcio, ...:
# benchmarks/gpu_target_packages.txt). What else the run imports travels as wheels in
# .whl/ (flwr, opacus, datasets, flwr-datasets and the few of their requirements that
# Python lacks; benchmarks/gpu_wheels.sh fetches them on a machine with network). No Ray:
# the federation runs in one process (fedpeft.tools.inprocess) on scikit-learn's bundled digits.
#
# On the CUDA machine, from the repository's root, in one command:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
#       .whl/*.whl && PYTHONPATH=/tmp/site bash benchmarks/gpu_check.sh
#
# It prints one JSON summary on stdout (logs go to stderr) and writes it to
# $OUT/gpu_check.json ($OUT: outputs/gpu-check unless set), rewritten after each section:
# the GPU and its compute capability; what train.device='auto' and train.precision='auto'
# resolve to and the TF32 flags; train and eval img/s of ViT-B/16 at 224 px (random
# weights) for LoRA, head and full in bf16 and fp32 at batch 64 and 128, with peak reserved
# GPU memory per row; a 2-round in-process federation of 8 LoRA clients (accuracy and
# seconds per round); one local DP-SGD round; the largest difference between two identical
# client rounds; tests/test_gpu_paths.py on the GPU. Sections plan for 270 s in all
# (later ones are skipped when time runs short); the run is killed at 290 s.
#
#   bash benchmarks/gpu_check.sh --cpu   # the same on the CPU, tiny: ~20 s on 2 cores (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-outputs/gpu-check}
mkdir -p "$OUT"
exec timeout --kill-after=10 290 "$PY" -m benchmarks.gpu_check --out "$OUT/gpu_check.json" "$@"
