"""The rules of the other sections: model, data, rewards, optimiser, run, rollout, and the
memory plan that reads them all."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from engine.memory.fit import memory_problems
from engine.models.families import FAMILIES
from engine.models.precision import DTYPES, OFFLOADS
from engine.net.egress import REFUSED
from engine.net.egress import SETTING as EGRESS_SETTING
from engine.net.egress import policy as egress_policy
from engine.problems import Problem, or_list
from engine.recipe import Recipe
from engine.rewards.ocr import ocr_prompt_problems
from engine.rewards.registry import reward_entry, reward_names
from engine.validation.arithmetic import multiples
from engine.validation.batching import at_least_one

LORA_TARGETS = ("attn", "attn+mlp", "full")
SEED_LIMIT = 2**31
ROLLOUT_BACKENDS = ("in_process", "sglang")
ROLLOUT_LAUNCHES = ("external", "colocated")


def check_model(recipe: Recipe, problems: list[Problem]) -> None:
    model = recipe.model
    if model.family not in FAMILIES:
        problems.append(
            Problem(
                "model.family",
                f"family='{model.family}' is not a known model family: use {or_list(FAMILIES)}",
            )
        )
    if model.lora_rank < 1:
        problems.append(
            Problem("model.lora_rank", f"lora_rank={model.lora_rank} must be at least 1: e.g. 32")
        )
    if not (math.isfinite(model.lora_alpha) and model.lora_alpha > 0):
        problems.append(
            Problem(
                "model.lora_alpha",
                f"lora_alpha={model.lora_alpha} must be positive: e.g. twice lora_rank",
            )
        )
    if model.lora_target not in LORA_TARGETS:
        problems.append(
            Problem(
                "model.lora_target",
                f"lora_target='{model.lora_target}' is unknown: use {or_list(LORA_TARGETS)}",
            )
        )
    if model.dtype is not None and model.dtype not in DTYPES:
        problems.append(
            Problem(
                "model.dtype",
                f"dtype='{model.dtype}' is unknown: use {or_list(DTYPES)}, or leave it empty "
                "(bfloat16 for real models on a GPU, float32 for the tiny model and on the CPU)",
            )
        )
    layout = recipe.layout
    if model.dtype == "float16" and layout.fsdp and layout.num_gpus > 1:
        problems.append(
            Problem(
                "model.dtype",
                "dtype='float16' needs loss scaling, whose overflow check runs per rank, and "
                f"fsdp ranks hold different gradient shards (num_gpus={layout.num_gpus}): use "
                "bfloat16, or set fsdp=false",
            )
        )
    offload = model.offload_text_encoders
    if offload is not None and offload not in OFFLOADS:
        problems.append(
            Problem(
                "model.offload_text_encoders",
                f"offload_text_encoders='{offload}' is unknown: use {or_list(OFFLOADS)}, or "
                "leave it empty (cpu for qwen-image, none otherwise)",
            )
        )


def check_data(recipe: Recipe, problems: list[Problem]) -> None:
    data = recipe.data
    if data.dataset is None and not data.prompts:
        problems.append(
            Problem(
                "data.prompts",
                "no prompts: set data.dataset to a prompt directory or list data.prompts",
            )
        )
    if data.dataset is not None and data.prompts:
        problems.append(
            Problem(
                "data.prompts",
                f"both dataset='{data.dataset}' and inline prompts are set: keep only one",
            )
        )
    for name, prompts in (("prompts", data.prompts), ("eval_prompts", data.eval_prompts)):
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                problems.append(
                    Problem(f"data.{name}[{index}]", f"{name}[{index}] is blank: remove it")
                )
    # The ocr reward scores the quoted text: say which inline prompts have none before any
    # compute (a dataset's prompts are checked by check_paths, where the files are).
    if any(spec.name == "ocr" for spec in recipe.rewards):
        problems.extend(ocr_prompt_problems(data.prompts, field="data.prompts"))
        problems.extend(ocr_prompt_problems(data.eval_prompts, field="data.eval_prompts"))


def check_rewards(recipe: Recipe, problems: list[Problem]) -> None:
    if not recipe.rewards:
        problems.append(
            Problem(
                "rewards",
                'rewards is empty: list at least one, e.g. [{"name": "color", "weight": 1.0}]',
            )
        )
        return
    known = reward_names()
    seen: set[str] = set()
    for index, spec in enumerate(recipe.rewards):
        where = f"rewards[{index}]"
        if spec.name not in known:
            problems.append(
                Problem(
                    f"{where}.name",
                    f"{where}.name='{spec.name}' is not a known reward: use {or_list(known)}",
                )
            )
        elif spec.path and not reward_entry(spec.name).needs_path:
            problems.append(
                Problem(
                    f"{where}.path",
                    f"{where}.path is set but '{spec.name}' has no weights to load: leave it empty",
                )
            )
        if spec.name in seen:
            problems.append(
                Problem(
                    f"{where}.name",
                    f"reward '{spec.name}' is listed twice: merge the entries into one weight",
                )
            )
        seen.add(spec.name)
        if not (math.isfinite(spec.weight) and spec.weight >= 0):
            problems.append(
                Problem(
                    f"{where}.weight",
                    f"{where}.weight={spec.weight} must be 0 or more: use e.g. 1.0",
                )
            )
    if all(spec.weight == 0 for spec in recipe.rewards):
        problems.append(
            Problem("rewards", "every reward weight is 0: give at least one a positive weight")
        )


def check_optimiser(recipe: Recipe, problems: list[Problem]) -> None:
    optimiser = recipe.optimiser
    positive = (
        ("lr", optimiser.lr, "e.g. 3e-4"),
        ("clip_range", optimiser.clip_range, "e.g. 1e-4, as Flow-GRPO"),
        ("adv_clip_max", optimiser.adv_clip_max, "e.g. 5"),
        ("max_grad_norm", optimiser.max_grad_norm, "e.g. 1.0"),
    )
    for name, value, hint in positive:
        if not (math.isfinite(value) and value > 0):
            problems.append(
                Problem(f"optimiser.{name}", f"{name}={value} must be positive: {hint}")
            )
    non_negative = (
        ("weight_decay", optimiser.weight_decay, "e.g. 1e-4"),
        ("kl_beta", optimiser.kl_beta, "0 turns the KL term off; Flow-GRPO uses 0.01 to 0.04"),
    )
    for name, value, hint in non_negative:
        if not (math.isfinite(value) and value >= 0):
            problems.append(
                Problem(f"optimiser.{name}", f"{name}={value} must be 0 or more: {hint}")
            )


def check_run(recipe: Recipe, problems: list[Problem]) -> None:
    run = recipe.run
    if not 0 <= run.seed < SEED_LIMIT:
        problems.append(Problem("run.seed", f"seed={run.seed} must lie in [0, 2^31): e.g. 42"))
    per_rollout = recipe.layout.num_steps_per_rollout
    if run.max_steps < 1:
        problems.append(
            Problem("run.max_steps", f"max_steps={run.max_steps} must be at least 1: e.g. 600")
        )
    elif per_rollout >= 1 and run.max_steps % per_rollout:
        problems.append(
            Problem(
                "run.max_steps",
                f"max_steps={run.max_steps} is not a multiple of num_steps_per_rollout="
                f"{per_rollout}: a run ends on a rollout boundary; use "
                f"{multiples(run.max_steps, per_rollout)}",
            )
        )
    for name, every, what in (
        ("checkpoint_every", run.checkpoint_every, "checkpoints fall between rollouts"),
        ("eval_every", run.eval_every, "evaluations fall between rollouts"),
    ):
        if every < 0:
            problems.append(Problem(f"run.{name}", f"{name}={every} must be 0 (never) or more"))
        elif per_rollout >= 1 and every % per_rollout:
            problems.append(
                Problem(
                    f"run.{name}",
                    f"{name}={every} is not a multiple of num_steps_per_rollout={per_rollout}: "
                    f"{what}; use {multiples(every, per_rollout)}",
                )
            )


def check_rollout(recipe: Recipe, problems: list[Problem]) -> None:
    rollout = recipe.rollout
    if rollout.backend not in ROLLOUT_BACKENDS:
        problems.append(
            Problem(
                "rollout.backend",
                f"backend='{rollout.backend}' is unknown: use {or_list(ROLLOUT_BACKENDS)}",
            )
        )
    if rollout.launch not in ROLLOUT_LAUNCHES:
        problems.append(
            Problem(
                "rollout.launch",
                f"launch='{rollout.launch}' is unknown: use {or_list(ROLLOUT_LAUNCHES)}",
            )
        )
    egress = egress_policy()
    for index, url in enumerate(rollout.server_urls):
        try:
            parsed = urlsplit(url)
            valid = parsed.scheme in ("http", "https") and bool(parsed.hostname)
            parsed.port  # noqa: B018 -- raises ValueError for a port out of range
        except ValueError:
            valid = False
        if not valid:
            problems.append(
                Problem(
                    f"rollout.server_urls[{index}]",
                    f"server_urls[{index}]='{url}' is not an http(s) URL: "
                    "write it as http://HOST:PORT",
                )
            )
        elif egress.url_problem(url):
            problems.append(
                Problem(
                    f"rollout.server_urls[{index}]",
                    f"server_urls[{index}]='{url}' is {REFUSED}: loopback, private and "
                    "link-local addresses are reachable only where the administrator lists "
                    f"them in {EGRESS_SETTING} (docs/deploy.md); use a server it allows",
                )
            )
    if len(set(rollout.server_urls)) != len(rollout.server_urls):
        problems.append(
            Problem("rollout.server_urls", "server_urls lists a URL twice: list each once")
        )
    if rollout.backend == "sglang" and rollout.launch == "external" and not rollout.server_urls:
        problems.append(
            Problem(
                "rollout.server_urls",
                "backend='sglang' with launch='external' needs server_urls: list the "
                "servers, e.g. [\"http://gpu1:30000\"], or set launch='colocated'",
            )
        )
    at_least_one(problems, "rollout", "server_concurrency", rollout.server_concurrency, "e.g. 4")
    if rollout.max_retries < 0:
        problems.append(
            Problem(
                "rollout.max_retries",
                f"max_retries={rollout.max_retries} must be 0 (no retry) or more: e.g. 3",
            )
        )
    for name, seconds in (
        ("request_timeout", rollout.request_timeout),
        ("startup_timeout", rollout.startup_timeout),
    ):
        if not (math.isfinite(seconds) and seconds > 0):
            problems.append(
                Problem(f"rollout.{name}", f"{name}={seconds} must be positive seconds: e.g. 600")
            )


def check_memory(recipe: Recipe, problems: list[Problem]) -> None:
    """The memory plan must fit one GPU; it reads the model, layout and sampler settings, so it
    waits until those are valid."""
    budget = recipe.layout.gpu_memory_gb
    if not (math.isfinite(budget) and budget > 0):
        problems.append(
            Problem(
                "layout.gpu_memory_gb",
                f"gpu_memory_gb={budget} must be positive: the memory of one GPU, e.g. 80 for "
                "an H100 or A100 80 GB",
            )
        )
        return
    if any(p.field.startswith(("model.", "layout.", "sampler.")) for p in problems):
        return
    problems.extend(memory_problems(recipe))
