#!/usr/bin/env bash
# The GPU check of issue 18: `laptop` and `paper`, both AVFF stages, a few hundred optimizer
# steps each, AMP (bf16 where the GPU supports it, else fp16 + GradScaler), with and without
# activation checkpointing. Reuses bench/train.py (loader alone, step alone, real training).
#
#   bench/gpu.sh                       # the bench's own ingested sample, made once under $TMPDIR
#   SHARDS=/data/shards STEPS=300 BATCH=8 bench/gpu.sh
#
# Writes bench/results/gpu-<gpu name>/{amp,amp-ckpt}.json (bench/train.py's format, documented in
# docs/performance.md) and prints a table per run. Exit 2 without an NVIDIA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || { echo "bench/gpu.sh: no NVIDIA GPU here" >&2; exit 2; }
STEPS=${STEPS:-200}
BATCH=${BATCH:-8}
CONFIGS=${CONFIGS:-laptop,paper}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '__')
out=bench/results/gpu-$gpu
mkdir -p "$out"
run() { uv run --frozen --no-sync python bench/train.py --device cuda --configs "$CONFIGS" --batch "$BATCH" \
          --steps "$STEPS" --reps 1 --loader-batches 20 ${SHARDS:+--shards "$SHARDS"} "$@"; }
run --out "$out/amp.json"
run --grad-checkpointing --out "$out/amp-ckpt.json"
echo "wrote $out/amp.json $out/amp-ckpt.json"
