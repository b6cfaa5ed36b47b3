#!/usr/bin/env bash
# Log-prob replay of a real SGLang-D server, on a CUDA machine (cannot run on the CPU hosts).
#
#   pip install -e '.[sglang]'           # the pinned sglang[diffusion], see docs/sglang.md
#   MODEL_DIR=/weights/Qwen-Image FAMILY=qwen-image bench/gpu_sglang.sh
#
# Starts `sglang serve --model-path $MODEL_DIR` (or uses $SERVER_URL when set), sends rollout
# requests through engine.rollout.sglang.SGLangBackend, then recomputes every stochastic step's
# log-prob in process (engine.rollout.steps.stochastic_step on the returned latents) and prints
# max |exp(recomputed - server) - 1|, the loop's replay health check. It exits 1 above
# $TOLERANCE (default 1e-2: bf16 on both sides; the loop warns above 1e-3 in fp32).
# Env: MODEL_DIR (required), FAMILY (qwen-image | sd3 | flux), SIZE (512), STEPS (10),
# WINDOW ("1,2"), NOISE (1.2), TRUE_CFG (4.0, qwen-image) / GUIDANCE (1.0), PORT (30000),
# REQUESTS (4), M (4), TOLERANCE.
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
import os
import sys

import torch

from engine.models.loading import load_model
from engine.rollout.sglang import SGLangBackend
from engine.rollout.steps import stochastic_step
from engine.rollout.types import RolloutRequest

env = os.environ.get
size, steps = int(env("SIZE", "512")), int(env("STEPS", "10"))
window = tuple(int(i) for i in env("WINDOW", "1,2").split(","))
m, count = int(env("M", "4")), int(env("REQUESTS", "4"))
tolerance = float(env("TOLERANCE", "1e-2"))
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
backend = SGLangBackend([env("SERVER_URL")], server_concurrency=2)
backend.check_servers()
results = list(backend.generate_many(requests))
print(f"{len(results)} results; latents {list(results[0].latents.shape)}, "
      f"log-probs {list(results[0].log_probs.shape)}")

model = load_model(env("FAMILY"), env("MODEL_DIR"), device="cuda", dtype=torch.bfloat16)
worst = 0.0
with torch.no_grad():
    for result in results:
        request = result.request
        negative = ([request.negative_prompt]
                    if model.needs_negative(request.guidance_scale, request.true_cfg_scale) else None)
        conditioning = model.encode_prompts([request.prompt], negative).repeat(request.num_outputs)
        chain = result.latents.to("cuda", torch.bfloat16)
        schedule = result.schedule.to("cuda")
        for k, index in enumerate(window):
            step = stochastic_step(model, chain[:, k], schedule, index, conditioning, request,
                                   prev_sample=chain[:, k + 1])
            server = result.log_probs[:, k].to("cuda")
            worst = max(worst, (torch.exp(step.log_prob.float() - server) - 1).abs().max().item())
print(f"max |exp(recomputed - server) - 1| = {worst:.3e} (tolerance {tolerance:.0e})")
sys.exit(0 if worst <= tolerance else 1)
PY
