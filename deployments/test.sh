#!/usr/bin/env bash
# Every test under tests/, the end-to-end stack test included (what .ci/run runs):
#
#     bash deployments/test.sh                       # all tests (pyproject's testpaths: tests/)
#     bash deployments/test.sh -m "not slow"         # without the tests that start servers
#     bash deployments/test.sh tests/e2e/test_stack.py   # just these
#
# Installs from uv.lock (uv's cache, default ~/.cache/uv or $UV_CACHE_DIR, makes reruns fast).
# Nothing else needs starting: tests/e2e starts its own stack (Prefect server + worker,
# MLflow, Ray) in a temp AVFF_HOME on free ports, and stops it; the flow tests start their
# own throwaway Prefect server. A user's running stack (./.avff/stack, 4200/5000) is untouched.
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --user uv || python3 -m pip install uv
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --extra test --frozen
# the web page test drives the system Chromium headless (playwright downloads no browser of its own);
# installed here when it can be (root with apt), else that test skips and says why
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; } \
        || echo "warning: could not install chromium: the web page test will skip" >&2
fi

export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
# Ray 2.60 sees `uv run` in a driver's parents and makes every worker `uv run` a fresh env in its
# working_dir copy (no .venv there: the workers die and tasks hang). Workers use this venv instead.
export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
# a shell that ran `eval "$(avff stack env)"` must not point the tests at the user's servers
unset PREFECT_API_URL MLFLOW_TRACKING_URI RAY_ADDRESS
status=0
uv run --frozen --no-sync pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
