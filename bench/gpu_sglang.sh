#!/usr/bin/env bash
# Log-prob replay of a real SGLang-D server, on a CUDA machine (cannot run on the CPU hosts).
#
#   pip install -e '.[sglang]'           # the pinned sglang[diffusion], see docs/sglang.md
#   MODEL_DIR=/weights/Qwen-Image FAMILY=qwen-image bench/gpu_sglang.sh
#
# Starts `sglang serve --model-path $MODEL_DIR` (or uses $SERVER_URL when set), loads the
# model, sends rollout requests through engine.rollout.sglang.SGLangBackend (latents unpacked
# to the model's layout, in its dtype on its device), then recomputes every stochastic step's
# log-prob in process (engine.rollout.steps.stochastic_step on the returned latents) and prints
# max |exp(recomputed - server) - 1|, the loop's replay health check. It exits 1 above
# $TOLERANCE (default 1e-2: bf16 on both sides; a window holding the last step measures up to
# ~1.8e-2, use 5e-2 there). Then it times the colocated turn-taking (release and resume of the
# server's memory) and, on CUDA, sends the model's weights by CUDA IPC
# (/update_weights_from_tensor, engine.rollout.tensor_sync) and requires success.
# Env: MODEL_DIR (required; "tiny" for the built-in model), FAMILY (qwen-image | sd3 | flux |
# tiny), SIZE (512), STEPS (10), WINDOW ("1,2"), NOISE (1.2), TRUE_CFG (4.0, qwen-image) /
# GUIDANCE (1.0), PORT (30000), REQUESTS (4), M (4), TOLERANCE, DEVICE (cuda), DTYPE (bfloat16).
# A CPU dry run against sglang's own code (tests/sglang_d's harness as the server):
#   python -m tests.sglang_d.harness.server --port 30001 &
#   SERVER_URL=http://127.0.0.1:30001 MODEL_DIR=tiny FAMILY=tiny SIZE=32 STEPS=6 M=2 \
#     DEVICE=cpu DTYPE=float32 bench/gpu_sglang.sh
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MODEL_DIR:?set MODEL_DIR to a local diffusers directory}"
FAMILY=${FAMILY:-qwen-image}
PORT=${PORT:-30000}
SERVER_URL=${SERVER_URL:-}
server_pid=""

if [[ -z "$SERVER_URL" ]]; then
    SERVER_URL="http://127.0.0.1:${PORT}"
    sglang serve --model-path "$MODEL_DIR" --host 127.0.0.1 --port "$PORT" >sglang-server.log 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT
    deadline=$((SECONDS + ${STARTUP_TIMEOUT:-900}))
    until curl -sf "$SERVER_URL/health" >/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "sglang serve exited; see sglang-server.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "sglang serve not healthy after ${STARTUP_TIMEOUT:-900} s" >&2
            exit 1
        fi
        sleep 2
    done
fi

SERVER_URL="$SERVER_URL" MODEL_DIR="$MODEL_DIR" FAMILY="$FAMILY" python - <<'PY'
import json
import os
import sys
import time
import urllib.request

import torch

from engine.models.loading import load_model
from engine.rollout.in_process import encode_request
from engine.rollout.latents import LatentLayout
from engine.rollout.sglang import RolloutServerError, SGLangBackend
from engine.rollout.steps import stochastic_step
from engine.rollout.tensor_sync import gpu_uuid, tensor_update_request
from engine.rollout.types import RolloutRequest

env = os.environ.get
size, steps = int(env("SIZE", "512")), int(env("STEPS", "10"))
window = tuple(int(i) for i in env("WINDOW", "1,2").split(","))
m, count = int(env("M", "4")), int(env("REQUESTS", "4"))
tolerance = float(env("TOLERANCE", "1e-2"))
device, dtype = env("DEVICE", "cuda"), getattr(torch, env("DTYPE", "bfloat16"))
directory = None if env("MODEL_DIR") == "tiny" else env("MODEL_DIR")
model = load_model(env("FAMILY"), directory, device=device, dtype=dtype)
requests = [
    RolloutRequest(
        f"a photo of a sign that says \"{word}\"",
        seeds=tuple(1000 + g * m + i for i in range(m)),
        height=size,
        width=size,
        num_inference_steps=steps,
        sde_step_indices=window,
        noise_level=float(env("NOISE", "1.2")),
        guidance_scale=float(env("GUIDANCE", "1.0")),
        true_cfg_scale=float(env("TRUE_CFG", "4.0" if env("FAMILY") == "qwen-image" else "1.0")),
        group_index=g,
    )
    for g, word in enumerate(["open", "closed", "exit", "sale"][:count])
]
backend = SGLangBackend([env("SERVER_URL")], server_concurrency=2, latents=LatentLayout.of(model))
backend.check_servers(startup_timeout=float(env("STARTUP_TIMEOUT", "900")))
results = list(backend.generate_many(requests))
print(f"{len(results)} results; latents {list(results[0].latents.shape)} "
      f"{results[0].latents.dtype} on {results[0].latents.device}, "
      f"log-probs {list(results[0].log_probs.shape)}")

worst = 0.0
with torch.no_grad():
    for result in results:
        request = result.request
        conditioning = encode_request(model, request)
        chain, schedule = result.latents, result.schedule.to(device)
        for k, index in enumerate(window):
            step = stochastic_step(model, chain[:, k], schedule, index, conditioning, request,
                                   prev_sample=chain[:, k + 1])
            server = result.log_probs[:, k].to(device)
            worst = max(worst, (torch.exp(step.log_prob.float() - server) - 1).abs().max().item())
print(f"max |exp(recomputed - server) - 1| = {worst:.3e} (tolerance {tolerance:.0e})")

# Colocated turn-taking: the server frees its memory for the update and takes it back.
released = backend.release_memory()
try:
    SGLangBackend([env("SERVER_URL")], max_retries=0).generate(requests[0])
    print("generation while released did not fail")
    sys.exit(1)
except RolloutServerError as error:
    print(f"while released: {str(error)[:80]}")
resumed = backend.resume_memory()
print(f"release {released:.3f} s, resume {resumed:.3f} s")

if device.startswith("cuda"):
    body = tensor_update_request(model.transformer.named_parameters(), gpu_uuid(0))
    started = time.perf_counter()
    call = urllib.request.Request(env("SERVER_URL") + "/update_weights_from_tensor",
                                  json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=600) as answer:
        outcome = json.loads(answer.read())
    print(f"CUDA IPC update: {outcome} in {time.perf_counter() - started:.2f} s")
    if not outcome.get("success"):
        sys.exit(1)
sys.exit(0 if worst <= tolerance else 1)
PY
