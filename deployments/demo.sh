#!/usr/bin/env bash
# The whole pipeline on this machine, through the orchestrator, in a few minutes on 2 CPUs:
# install (uv + uv.lock) -> local stack (Prefect server + process worker, MLflow, Ray head)
# -> sample data (or $DFDC_ROOT) -> `prefect deploy --all` -> ingest-dfdc/local ->
# train-avff/local -> MLflow run id, registered model version, report path.
#
#     bash deployments/demo.sh
#
# Idempotent: a second run reuses the running stack, the sample and the complete shards.
# Everything below can be overridden from the environment, e.g.
#     DFDC_ROOT=/data/dfdc AVFF_FACE_SIZE=224 AVFF_MODEL_CONFIG=laptop AVFF_EPOCHS=10 bash deployments/demo.sh
# Stop the stack with `uv run avff stack down` (state in $AVFF_HOME, default ./.avff/stack).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

AVFF_EXECUTOR=${AVFF_EXECUTOR:-ray}          # ray: the stack's Ray head; local: in the flow process
AVFF_FACE_SIZE=${AVFF_FACE_SIZE:-64}
AVFF_VIDEOS_PER_SHARD=${AVFF_VIDEOS_PER_SHARD:-8}
AVFF_MODEL_CONFIG=${AVFF_MODEL_CONFIG:-tiny}
AVFF_PRETRAIN_EPOCHS=${AVFF_PRETRAIN_EPOCHS:-1}
AVFF_EPOCHS=${AVFF_EPOCHS:-3}
AVFF_BATCH_SIZE=${AVFF_BATCH_SIZE:-8}
AVFF_LOADER_WORKERS=${AVFF_LOADER_WORKERS:-0}  # DataLoader workers: tiny data loads faster in-process
AVFF_DEVICE=${AVFF_DEVICE:-auto}
AVFF_SAMPLE_REAL=${AVFF_SAMPLE_REAL:-8}      # the sample: real videos (each gets 6 labelled fakes)
AVFF_SAMPLE_SIZE=${AVFF_SAMPLE_SIZE:-128}
AVFF_FLOW_TIMEOUT=${AVFF_FLOW_TIMEOUT:-7200}  # seconds per flow run (real DFDC parts take longer)
DATA=${DFDC_ROOT:-$ROOT/data/sample}
SHARDS=${AVFF_SHARDS:-$ROOT/data/shards}
TRAIN_OUT=${AVFF_TRAIN_OUT:-$ROOT/data/train}
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
# Ray 2.60 sees `uv run` in a driver's parents and makes every worker `uv run` a fresh env in its
# working_dir copy (no .venv there: the workers die and tasks hang). Workers use this venv instead.
export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
T0=$(date +%s)

step "install (uv sync --extra test --frozen)"
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --user uv || python3 -m pip install uv
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --extra test --frozen
run() { uv run --frozen --no-sync "$@"; }

step "stack"
t=$(date +%s)
ray_flag=()
[ "$AVFF_EXECUTOR" = ray ] && ray_flag=(--with-ray)
exports=$(run avff stack up ${ray_flag[@]+"${ray_flag[@]}"})   # a failed `up` stops here (set -e), unlike eval "$(...)"
eval "$exports"   # PREFECT_API_URL, MLFLOW_TRACKING_URI (, RAY_ADDRESS + its auth token)
echo "stack ready in $(elapsed "$t")" >&2

if [ -z "${DFDC_ROOT:-}" ]; then
    step "sample data"
    if [ -f "$DATA/dfdc_train_part_0/metadata.json" ]; then
        echo "reusing $DATA" >&2
    else
        t=$(date +%s)
        # --with-refusals: a listed video that is missing and a file with no entry, so the ingest flow run
        # shows its refusals (the `ingest-refused` artifact) and evaluate its unlabelled file
        run avff sample --out "$DATA" --n-real "$AVFF_SAMPLE_REAL" --size "$AVFF_SAMPLE_SIZE" --with-refusals >&2
        echo "sample written in $(elapsed "$t")" >&2
    fi
fi

step "deploy (prefect deploy --all)"
t=$(date +%s)
run prefect --no-prompt deploy --all >/dev/null
echo "deployed in $(elapsed "$t")" >&2

run_deployment() {  # NAME CONFIG_JSON: start a flow run through the worker and wait for it
    local out id t
    t=$(date +%s)
    out=$(run prefect deployment run "$1" --param "config=$2")
    id=$(run python -m deployments.runs id <<<"$out")
    echo "flow run $id of $1 (UI: ${PREFECT_API_URL%/api}/runs/flow-run/$id)" >&2
    run python -m deployments.runs wait "$id" --timeout "$AVFF_FLOW_TIMEOUT"   # prints its logs if it failed
    echo "$1 finished in $(elapsed "$t")" >&2
}

# `prefect deployment run --param config=...` replaces the whole default config: build it complete
export DATA SHARDS TRAIN_OUT AVFF_EXECUTOR AVFF_FACE_SIZE AVFF_VIDEOS_PER_SHARD AVFF_MODEL_CONFIG \
    AVFF_PRETRAIN_EPOCHS AVFF_EPOCHS AVFF_BATCH_SIZE AVFF_LOADER_WORKERS AVFF_DEVICE

step "ingest-dfdc/local"
run_deployment ingest-dfdc/local "$(run python -c '
import json, os
e = os.environ
print(json.dumps({"data": e["DATA"], "out": e["SHARDS"], "executor": e["AVFF_EXECUTOR"],
                  "preprocess": {"face_size": int(e["AVFF_FACE_SIZE"])},
                  "videos_per_shard": int(e["AVFF_VIDEOS_PER_SHARD"])}))')"

step "train-avff/local"
run_deployment train-avff/local "$(run python -c '
import json, os
e = os.environ
print(json.dumps({"data": e["SHARDS"], "output_dir": e["TRAIN_OUT"], "model_config": e["AVFF_MODEL_CONFIG"],
                  "pretrain_epochs": int(e["AVFF_PRETRAIN_EPOCHS"]), "epochs": int(e["AVFF_EPOCHS"]),
                  "batch_size": int(e["AVFF_BATCH_SIZE"]), "num_workers": int(e["AVFF_LOADER_WORKERS"]),
                  "device": e["AVFF_DEVICE"]}))')"

step "result (demo took $(elapsed "$T0"))"
run python -m deployments.runs summary
echo "Prefect UI:     ${PREFECT_API_URL%/api}"
echo "Drop a video:   http://127.0.0.1:${AVFF_WEB_PORT:-8765}/ (scores with avff-dfdc@champion, once one is registered)"
echo "To use the stack from this shell: eval \"\$(uv run avff stack env)\"; stop it: uv run avff stack down"
