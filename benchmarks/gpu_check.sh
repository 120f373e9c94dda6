#!/usr/bin/env bash
# The GPU check: one script, about 5-8 minutes on one GPU, a JSON summary at the end.
#
#   bash benchmarks/gpu_check.sh                 # results in benchmarks/results/gpu_check/
#   OUT=/some/folder PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# What it measures (each step has its own time limit, so a hung step cannot eat the rest):
#   1. models: our ConViT-S vs timm's (same weights), ConViT-S vs DeiT-S, our DeiT-S vs timm's; 224 px, batch 128,
#      bf16 autocast, training steps (forward + backward + AdamW) interleaved over 20 rounds
#      (benchmarks/bench_models.py). Targets: ours/timm >= 2x throughput and <= 0.6x peak memory; ConViT/DeiT >= 0.8x.
#   2. engine: a CIFAR-10 trial's pipeline (cifar preset: ConViT-Ti, 32 px, patch 4, RandAugment, mixup/cutmix)
#      with 8 loader workers: loader alone, training step alone, end to end (benchmarks/bench_engine.py), with
#      torch.compile off and on. Loader-bound when the end-to-end rate is well below the step-only rate and close
#      to the loader's.
# Needs: the project's environment (make setup: the pinned torch wheel carries CUDA), CIFAR-10 as numpy arrays at
# $CONVIT_DATA_ROOT (default ../shared/data/cifar10_jpeg), one visible GPU. Exits 2 when there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
export CONVIT_DATA_ROOT=${CONVIT_DATA_ROOT:-$(cd .. && pwd)/shared/data/cifar10_jpeg}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); run it on a GPU machine" >&2
  exit 2
fi
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
step() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$OUT/steps.txt"
  tail -n 12 "$OUT/$name.log"
}
: > "$OUT/steps.txt"
step models 180 "$PY" benchmarks/bench_models.py --devices cuda --cases small-224px-p16 --cuda-batch-size 128 \
  --steps 20 --warmup 5 --out "$OUT/models.json"
step engine 120 "$PY" benchmarks/bench_engine.py --device cuda --batch-size 256 --workers 8 --steps 300 --warmup 10 \
  --json "$OUT/engine.json"
step engine_compile 180 "$PY" benchmarks/bench_engine.py --device cuda --batch-size 256 --workers 8 --steps 300 \
  --warmup 10 --compile --json "$OUT/engine_compile.json"
"$PY" benchmarks/gpu_summary.py "$OUT" --seconds $(( $(date +%s) - start )) | tee "$OUT/summary.json"
