#!/usr/bin/env bash
# bench/gpu_scale.py on a CUDA machine (the lent GPU machine), or its dry run on the CPU.
#
#   bench/gpu_scale.sh                # the GPU run: prints the tables and appends them to
#                                     # docs/performance.md; with $OUT set (the device machine's
#                                     # return folder) the log and that file are copied there
#   bench/gpu_scale.sh --tiny         # dry run on the CPU: shrunk configs, same code path,
#                                     # nothing published
#   bench/gpu_scale.sh --families sd3 --sizes 1,4    # any bench/gpu_scale.py arguments
#
# The lent machine (python3 with PyTorch, transformers, peft, accelerate; no network) lacks
# diffusers and tomli-w. Fetch their wheels here once, into an ignored folder the run carries:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 tomli-w==1.2.0
#
# and run `bench/gpu_scale.sh` there with `.whl` carried; this script installs what .whl holds
# into /tmp/site first. Every import the bench needs is checked before any model is built, so a
# missing package costs seconds, not a model build. Expected on an H200: a few minutes (the
# 20.43 B DiT's 31 rows x 10 steps of rollouts at ~70 TFLOP per 2-row forward, and two tiles).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY'
import importlib.util
import sys

needed = ("torch", "numpy", "PIL", "safetensors", "diffusers", "transformers", "peft", "tomli_w")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing: {', '.join(missing)}: carry their wheels in .whl (bench/gpu_scale.sh)")
import diffusers  # noqa: E402  (a diffusers too new or old for this torch fails here, not later)

print(f"diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
PY

if [[ " $* " != *" --tiny "* ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

log=$(mktemp)
status=0
"$PYTHON" bench/gpu_scale.py "$@" 2>&1 | tee "$log" || status=$?
if [[ -n "${OUT:-}" ]]; then
    cp "$log" "$OUT/gpu_scale.log"
    cp docs/performance.md "$OUT/performance.md"
fi
exit "$status"
