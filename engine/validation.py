"""The one recipe validator: every rule, every problem at once, each naming its field and fix.

The form, the REST API and the CLI all call ``validate``; none re-implements a rule. Rules that
depend on a setting another rule rejected are skipped, so one mistake is reported once rather
than echoed by every rule downstream of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.memory.fit import memory_problems
from engine.models.families import FAMILIES
from engine.models.precision import DTYPES, OFFLOADS
from engine.net.egress import REFUSED
from engine.net.egress import SETTING as EGRESS_SETTING
from engine.net.egress import policy as egress_policy
from engine.problems import Problem, RecipeError, or_list
from engine.prompts import load_prompts
from engine.recipe import Recipe
from engine.rewards.ocr import ocr_prompt_problems, unquoted_prompts
from engine.rewards.registry import reward_entry, reward_names, reward_path

#: Above this Flow-GRPO noise level the first step's mean coefficient on x, 1 - a^2 / 2 at t = 1,
#: turns negative and the step flips the sign of the latent.
SDE_NOISE_LEVEL_MAX = math.sqrt(2.0)
SDE_TYPES = ("sde", "cps")
LORA_TARGETS = ("attn", "attn+mlp", "full")
SEED_LIMIT = 2**31
ROLLOUT_BACKENDS = ("in_process", "sglang")
ROLLOUT_LAUNCHES = ("external", "colocated")


def validate(recipe: Recipe) -> list[Problem]:
    """Return every problem with ``recipe`` (empty when it is valid), in section order."""
    problems = bound_problems(recipe)
    # The layout's rules list divisors and ranges of these numbers: cheap only within bounds.
    within_bounds = not any(p.field.startswith(("layout.", "sampler.")) for p in problems)
    _check_model(recipe, problems)
    _check_data(recipe, problems)
    _check_rewards(recipe, problems)
    if within_bounds:
        _check_layout(recipe, problems)
    _check_sampler(recipe, problems, within_bounds)
    _check_optimiser(recipe, problems)
    _check_run(recipe, problems)
    _check_rollout(recipe, problems)
    _check_memory(recipe, problems)
    return problems


def bound_problems(recipe: Recipe) -> list[Problem]:
    """Every setting beyond the upper bound its field declares (``engine.recipe._setting``).

    Each bound fits what the product can run (and what its database columns hold); checking
    them first keeps every other rule cheap whatever the values are.
    """
    problems: list[Problem] = []
    sections: list[tuple[str, Any]] = [(f.name, getattr(recipe, f.name)) for f in fields(recipe)]
    sections += [(f"rewards[{i}]", spec) for i, spec in enumerate(recipe.rewards)]
    for prefix, section in sections:
        if not is_dataclass(section):
            continue
        for leaf in fields(section):
            _bound(f"{prefix}.{leaf.name}", getattr(section, leaf.name), leaf.metadata, problems)
    rewards = next(f for f in fields(recipe) if f.name == "rewards")
    _bound("rewards", recipe.rewards, rewards.metadata, problems)
    return problems


def _bound(path: str, value: Any, limits: Mapping[str, Any], problems: list[Problem]) -> None:
    name = path.rpartition(".")[2]
    most, items, chars = limits.get("most"), limits.get("items"), limits.get("chars")
    if items is not None and len(value) > items:
        problems.append(
            Problem(path, f"{name} lists {len(value):,} items; at most {items:,} fit: remove some")
        )
        return
    values = value if isinstance(value, tuple) else (value,)
    for index, item in enumerate(values):
        where = f"{path}[{index}]" if isinstance(value, tuple) else path
        if most is not None and isinstance(item, int | float) and item > most:
            leaf = where.rpartition(".")[2]
            problems.append(Problem(where, f"{leaf}={item} is over {most:,}: use at most {most:,}"))
        elif chars is not None and isinstance(item, str) and len(item) > chars:
            problems.append(
                Problem(
                    where,
                    f"{where.rpartition('.')[2]} is {len(item):,} characters long; at most "
                    f"{chars:,} fit: shorten it",
                )
            )


def check_paths(recipe: Recipe, root: str | Path | None = None) -> list[Problem]:
    """Problems with the recipe's local paths, on the machine that will run it.

    Separate from ``validate`` because the web server need not see the GPU host's disks: call it
    where the run executes. Relative paths resolve against ``root`` (default: the working
    directory). Nothing is ever downloaded, so every weight and prompt file must be here.
    """
    base = Path.cwd() if root is None else Path(root)
    problems: list[Problem] = []
    model = recipe.model
    if model.path is None:
        if model.family != "tiny":
            problems.append(
                Problem(
                    "model.path",
                    f"model.path is empty but family='{model.family}' has no built-in weights: "
                    "set it to the local diffusers directory",
                )
            )
    elif not (base / model.path).is_dir():
        problems.append(
            Problem("model.path", f"model.path='{model.path}' is not a directory: fix the path")
        )
    if recipe.data.dataset is not None:
        problems.extend(_dataset_problems(recipe, base))
    known = reward_names()
    for index, spec in enumerate(recipe.rewards):
        if spec.name not in known or not reward_entry(spec.name).needs_path:
            continue
        where = f"rewards[{index}].path"
        path = reward_path(spec.name, spec.path)
        if not path:
            problems.append(
                Problem(
                    where,
                    f"{where} is empty but '{spec.name}' loads its model from a local "
                    "directory: set it",
                )
            )
        elif not (base / path).is_dir():
            problems.append(Problem(where, f"{where}='{path}' is not a directory: fix the path"))
    return problems


def _dataset_problems(recipe: Recipe, base: Path) -> list[Problem]:
    """A dataset that cannot be read, or whose prompts the OCR reward cannot score."""
    try:
        prompts = load_prompts(recipe.data, base)
    except RecipeError as error:
        return list(error.problems)
    if not any(spec.name == "ocr" for spec in recipe.rewards):
        return []
    # Evaluation falls back to the training prompts: count each prompt once.
    every = list(dict.fromkeys(prompts.train + prompts.eval))
    missing = unquoted_prompts(every)
    if not missing:
        return []
    return [
        Problem(
            "data.dataset",
            f"{len(missing)} of {len(every)} prompts have no text in double quotes for the ocr "
            f"reward, e.g. {missing[0][1]!r}: quote the text to render",
        )
    ]


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n`` in increasing order, in O(sqrt n) steps."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0] if n > 0 else []
    return small + [n // d for d in reversed(small) if d * d != n]


def _near(candidates: list[int], wanted: int, keep: int = 8) -> str:
    """The ``keep`` candidates closest to ``wanted``, in order, as prose."""
    closest = sorted(sorted(candidates, key=lambda c: (abs(c - wanted), c))[:keep])
    return or_list(closest)


def _check_model(recipe: Recipe, problems: list[Problem]) -> None:
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


def _check_data(recipe: Recipe, problems: list[Problem]) -> None:
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


def _check_rewards(recipe: Recipe, problems: list[Problem]) -> None:
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


def _at_least_one(problems: list[Problem], section: str, name: str, value: int, hint: str) -> bool:
    if value >= 1:
        return True
    problems.append(Problem(f"{section}.{name}", f"{name}={value} must be at least 1: {hint}"))
    return False


def _check_layout(recipe: Recipe, problems: list[Problem]) -> None:
    layout = recipe.layout
    prompts = _at_least_one(
        problems, "layout", "rollout_batch_size", layout.rollout_batch_size, "e.g. 16"
    )
    group = layout.n_samples_per_prompt
    if group < 2:
        problems.append(
            Problem(
                "layout.n_samples_per_prompt",
                f"n_samples_per_prompt={group} leaves no group to compare: GRPO needs at least 2 "
                "samples per prompt, e.g. 16",
            )
        )
    else:
        micro = layout.diffusion_microgroup_size
        valid = divisors(group)
        if micro < 1 or micro > group:
            problems.append(
                Problem(
                    "layout.diffusion_microgroup_size",
                    f"diffusion_microgroup_size={micro} must lie between 1 and "
                    f"n_samples_per_prompt={group}: use {or_list(valid)}",
                )
            )
        elif group % micro:
            problems.append(
                Problem(
                    "layout.diffusion_microgroup_size",
                    f"n_samples_per_prompt={group} is not a multiple of "
                    f"diffusion_microgroup_size={micro}: use {or_list(valid)}",
                )
            )
    steps = _at_least_one(
        problems, "layout", "num_steps_per_rollout", layout.num_steps_per_rollout, "e.g. 2"
    )
    gpus = _at_least_one(problems, "layout", "num_gpus", layout.num_gpus, "e.g. 1")
    tiles = _at_least_one(
        problems, "layout", "micro_batch_size_sample", layout.micro_batch_size_sample, "e.g. 4"
    )
    _at_least_one(
        problems, "layout", "micro_batch_size_tstep", layout.micro_batch_size_tstep, "e.g. 1"
    )
    window = recipe.sampler.sde_window_size
    if window >= 1 and layout.micro_batch_size_tstep > window:
        problems.append(
            Problem(
                "layout.micro_batch_size_tstep",
                f"micro_batch_size_tstep={layout.micro_batch_size_tstep} exceeds "
                f"sde_window_size={window}: a tile holds at most the window's steps; "
                f"use {_near(list(range(1, window + 1)), layout.micro_batch_size_tstep)}",
            )
        )
    if not (prompts and group >= 2 and steps):
        return
    per_rollout = layout.rollout_batch_size * group
    n_steps = layout.num_steps_per_rollout
    if per_rollout % n_steps:
        problems.append(
            Problem(
                "layout.num_steps_per_rollout",
                f"samples_per_rollout = rollout_batch_size x n_samples_per_prompt = "
                f"{layout.rollout_batch_size} x {group} = {per_rollout} does not split evenly "
                f"into num_steps_per_rollout={n_steps} optimizer steps: "
                f"use {_near(divisors(per_rollout), n_steps)}",
            )
        )
        return
    global_batch = per_rollout // n_steps
    given = layout.global_batch_size
    if given is not None and given != global_batch:
        problems.append(
            Problem(
                "layout.global_batch_size",
                f"global_batch_size={given} must equal samples_per_rollout / "
                f"num_steps_per_rollout = {per_rollout} / {n_steps} = {global_batch}: "
                f"set global_batch_size={global_batch} or leave it empty",
            )
        )
    if not gpus:
        return
    if global_batch % layout.num_gpus:
        problems.append(
            Problem(
                "layout.num_gpus",
                f"global_batch_size={global_batch} does not split evenly over "
                f"num_gpus={layout.num_gpus}: use {_near(divisors(global_batch), layout.num_gpus)}",
            )
        )
        return
    per_rank = global_batch // layout.num_gpus
    if tiles and per_rank % layout.micro_batch_size_sample:
        problems.append(
            Problem(
                "layout.micro_batch_size_sample",
                f"global_batch_size / num_gpus = {global_batch} / {layout.num_gpus} = {per_rank} "
                f"samples per rank do not split into micro_batch_size_sample="
                f"{layout.micro_batch_size_sample} tiles: "
                f"use {_near(divisors(per_rank), layout.micro_batch_size_sample)}",
            )
        )


def _check_sampler(recipe: Recipe, problems: list[Problem], within_bounds: bool) -> None:
    sampler = recipe.sampler
    family = FAMILIES.get(recipe.model.family)
    for name, side in (("height", sampler.height), ("width", sampler.width)):
        if side < 1:
            problems.append(Problem(f"sampler.{name}", f"{name}={side} must be positive: e.g. 512"))
        elif family is not None and side % family.resolution_factor:
            factor = family.resolution_factor
            below, above = side // factor * factor, (side // factor + 1) * factor
            fix = or_list([v for v in (below, above) if v > 0])
            problems.append(
                Problem(
                    f"sampler.{name}",
                    f"{name}={side} is not a multiple of {factor} ({family.name}: VAE "
                    f"{family.vae_scale} x patch {family.patch_size}): use {fix}",
                )
            )
    n_steps = sampler.num_inference_steps
    if n_steps < 2:
        problems.append(
            Problem(
                "sampler.num_inference_steps",
                f"num_inference_steps={n_steps} must be at least 2: the last step is never "
                "trained, so fewer leave nothing to train; e.g. 10",
            )
        )
    _at_least_one(
        problems, "sampler", "eval_num_inference_steps", sampler.eval_num_inference_steps, "e.g. 40"
    )
    _check_guidance(recipe, problems)
    _check_noise(recipe, problems)
    if within_bounds:
        _check_window(recipe, problems)


def _check_guidance(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    family = FAMILIES.get(recipe.model.family)
    for name, scale in (
        ("guidance_scale", sampler.guidance_scale),
        ("true_cfg_scale", sampler.true_cfg_scale),
    ):
        if not (math.isfinite(scale) and scale >= 1.0):
            problems.append(
                Problem(
                    f"sampler.{name}",
                    f"{name}={scale} must be at least 1.0: 1.0 turns guidance off",
                )
            )
    if family is None:
        return
    if family.guidance != "true-cfg" and sampler.true_cfg_scale != 1.0:
        problems.append(
            Problem(
                "sampler.true_cfg_scale",
                f"true_cfg_scale={sampler.true_cfg_scale} applies to qwen-image only: set it to "
                f"1.0 and use guidance_scale for {family.name}",
            )
        )
    if family.guidance == "true-cfg" and sampler.guidance_scale != 1.0:
        problems.append(
            Problem(
                "sampler.guidance_scale",
                f"guidance_scale={sampler.guidance_scale} has no effect on qwen-image: set it to "
                "1.0 and use true_cfg_scale for guidance",
            )
        )


def _check_noise(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    level = sampler.noise_level
    if sampler.sde_type == "sde":
        if not (math.isfinite(level) and 0 < level < SDE_NOISE_LEVEL_MAX):
            problems.append(
                Problem(
                    "sampler.noise_level",
                    f"noise_level={level} is outside (0, 1.41) for sde_type='sde': 0 samples "
                    "nothing to train on and from sqrt(2) up the first step flips the latent's "
                    "sign; Flow-GRPO uses 0.7 (SD3.5) and 1.2 (Qwen-Image)",
                )
            )
    elif sampler.sde_type == "cps":
        if not (math.isfinite(level) and 0 < level <= 1):
            problems.append(
                Problem(
                    "sampler.noise_level",
                    f"noise_level={level} is outside (0, 1] for sde_type='cps': the step's std "
                    "is t_next x sin(noise_level x pi / 2); e.g. 0.8",
                )
            )
    else:
        problems.append(
            Problem(
                "sampler.sde_type",
                f"sde_type='{sampler.sde_type}' is unknown: use {or_list(SDE_TYPES)}",
            )
        )


def _check_window(recipe: Recipe, problems: list[Problem]) -> None:
    sampler = recipe.sampler
    size, (first, last) = sampler.sde_window_size, sampler.sde_window_range
    n_steps = sampler.num_inference_steps
    if size < 1:
        problems.append(
            Problem(
                "sampler.sde_window_size",
                f"sde_window_size={size} trains no step: use at least 1",
            )
        )
        return
    if first < 0 or first > last:
        problems.append(
            Problem(
                "sampler.sde_window_range",
                f"sde_window_range=({first}, {last}) must satisfy 0 <= first <= last: "
                f"use e.g. ({max(0, min(first, last))}, {max(0, first, last)})",
            )
        )
        return
    if n_steps < 2:
        return
    latest_start = n_steps - 1 - size
    if latest_start < 0:
        problems.append(
            Problem(
                "sampler.sde_window_size",
                f"sde_window_size={size} does not fit before the last of num_inference_steps="
                f"{n_steps} steps, which is never stochastic: use at most {n_steps - 1}",
            )
        )
    elif last > latest_start:
        problems.append(
            Problem(
                "sampler.sde_window_range",
                f"sde_window_range=({first}, {last}) with sde_window_size={size} reaches step "
                f"{last + size - 1}, but the last step, {n_steps - 1} of num_inference_steps="
                f"{n_steps}, is never stochastic (its tiny sigma overflows the Gaussian "
                f"likelihood): keep the range within (0, {latest_start})",
            )
        )


def _check_optimiser(recipe: Recipe, problems: list[Problem]) -> None:
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


def _check_run(recipe: Recipe, problems: list[Problem]) -> None:
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
                f"{_multiples(run.max_steps, per_rollout)}",
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
                    f"{what}; use {_multiples(every, per_rollout)}",
                )
            )


def _multiples(value: int, step: int) -> str:
    below = value // step * step
    return or_list([v for v in (below, below + step) if v > 0])


def _check_rollout(recipe: Recipe, problems: list[Problem]) -> None:
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
    _at_least_one(problems, "rollout", "server_concurrency", rollout.server_concurrency, "e.g. 4")
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


def _check_memory(recipe: Recipe, problems: list[Problem]) -> None:
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
