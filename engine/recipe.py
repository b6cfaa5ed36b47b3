"""The recipe: one serialisable description of a run, nested by concern.

A ``Recipe`` holds a model, data, rewards, layout, sampler, optimiser, run and rollout section
(names as in DESIGN.md section 1). It round-trips through plain dicts, JSON and TOML. Building one
from data checks only shapes and types (unknown keys, text where a number belongs);
``engine.validation.validate(recipe)`` checks the meaning and returns every problem at once. The
defaults are the tiny CPU demo.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
import types
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union, get_args, get_origin

import tomli_w

from engine.plain import field_hints, to_plain
from engine.problems import Problem, RecipeError

#: Settings that recipes no longer hold, each with where its value comes from now. A recipe that
#: sets one is refused with that message (form, API and CLI alike), never obeyed or dropped.
RETIRED: Mapping[str, str] = MappingProxyType(
    {
        "rollout.server_command": (
            "the colocated server's command is the worker host's to configure, never a recipe's "
            "(it runs as the worker): an administrator sets GROUPWISE_ROLLOUT_SERVER_COMMAND on "
            "the worker (docs/deploy.md); remove this setting from the recipe"
        ),
    }
)


def _setting(
    default: Any,
    doc: str,
    *,
    most: int | None = None,
    items: int | None = None,
    chars: int | None = None,
) -> Any:
    """A dataclass field with its one-line help text (shown by forms and ``--help``) and its
    upper bounds, which the validator enforces and ``field_docs`` states: ``most`` bounds a
    number (each number of a pair), ``items`` a list's length, ``chars`` a text's length (each
    text's, in a list of texts)."""
    bounds = {k: v for k, v in (("most", most), ("items", items), ("chars", chars)) if v}
    return field(default=default, metadata={"doc": doc, **bounds})


@dataclass(frozen=True)
class ModelConfig:
    """Which model is fine-tuned and how."""

    family: str = _setting("tiny", "model family: tiny, sd3, qwen-image or flux")
    path: str | None = _setting(
        None,
        "local directory of the diffusers weights; empty uses the built-in tiny model",
        chars=4096,
    )
    lora_rank: int = _setting(8, "LoRA rank r", most=1024)
    lora_alpha: float = _setting(16.0, "LoRA alpha; adapters scale by lora_alpha / lora_rank")
    lora_target: str = _setting(
        "attn",
        "layers given LoRA adapters: attn, attn+mlp or full (every linear layer)",
    )
    dtype: str | None = _setting(
        None,
        "dtype frozen weights are stored and the DiT computes in: bfloat16, float16 or float32; "
        "empty means bfloat16 for real models on a GPU, float32 for the tiny model and on the CPU",
    )
    offload_text_encoders: str | None = _setting(
        None,
        "where the text encoders wait between rollouts: cpu (off the GPU) or none; empty means "
        "cpu for qwen-image (a 7 B encoder), none otherwise",
    )


@dataclass(frozen=True)
class DataConfig:
    """Where prompts come from: a dataset directory or an inline list."""

    dataset: str | None = _setting(
        None,
        "directory with train.txt and test.txt, one prompt per line (Flow-GRPO layout)",
        chars=4096,
    )
    prompts: tuple[str, ...] = _setting(
        ("a red image", "a green image", "a blue image", "a yellow image"),
        "inline training prompts, used when no dataset is set",
        items=100_000,
        chars=4096,
    )
    eval_prompts: tuple[str, ...] = _setting(
        (),
        "inline evaluation prompts; empty uses the dataset's test.txt or the training prompts",
        items=100_000,
        chars=4096,
    )


@dataclass(frozen=True)
class RewardSpec:
    """One reward model and its weight in the summed reward."""

    name: str = _setting("color", "name in the reward registry")
    weight: float = _setting(1.0, "weight in the summed reward (>= 0)")
    path: str | None = _setting(
        None, "local directory of the reward model's weights, if it has any", chars=4096
    )


@dataclass(frozen=True)
class LayoutConfig:
    """How a rollout is cut into groups, requests, optimizer steps and per-rank tiles."""

    rollout_batch_size: int = _setting(4, "prompts per rollout (P)", most=1024)
    n_samples_per_prompt: int = _setting(4, "GRPO group size: samples per prompt (G)", most=256)
    diffusion_microgroup_size: int = _setting(
        4, "same-prompt samples generated together in one request (M)", most=256
    )
    num_steps_per_rollout: int = _setting(1, "optimizer steps taken on one rollout", most=1024)
    global_batch_size: int | None = _setting(
        None,
        "samples per optimizer step; empty means samples_per_rollout / num_steps_per_rollout",
        most=1024 * 256,
    )
    num_gpus: int = _setting(1, "data-parallel trainer ranks", most=1024)
    fsdp: bool = _setting(
        True, "with num_gpus > 1, shard weights, gradients and optimizer state over the ranks"
    )
    micro_batch_size_sample: int = _setting(4, "samples in one training tile, per rank", most=1024)
    micro_batch_size_tstep: int = _setting(1, "SDE steps in one training tile, per rank", most=1000)
    gradient_checkpointing: bool | None = _setting(
        None,
        "recompute each DiT block's activations in the backward instead of keeping them; empty "
        "means on for real models, off for the tiny one",
    )
    gpu_memory_gb: float = _setting(
        80.0,
        "memory of one GPU in GB (10^9 bytes); a recipe whose memory plan needs more per rank "
        "is refused with what to change",
        most=4096,
    )


@dataclass(frozen=True)
class SamplerConfig:
    """How images are sampled in rollouts and evaluation."""

    height: int = _setting(32, "image height in pixels", most=4096)
    width: int = _setting(32, "image width in pixels", most=4096)
    num_inference_steps: int = _setting(8, "denoising steps in a training rollout", most=1000)
    eval_num_inference_steps: int = _setting(8, "denoising steps in evaluation", most=1000)
    guidance_scale: float = _setting(
        1.0, "SD3 classifier-free guidance or FLUX embedded guidance; 1.0 is none"
    )
    true_cfg_scale: float = _setting(
        1.0, "Qwen-Image classifier-free guidance (a negative-prompt pass); 1.0 is none"
    )
    sde_type: str = _setting("sde", "stochastic sampler: sde (Flow-GRPO) or cps")
    noise_level: float = _setting(0.7, "the sampler's noise level a")
    sde_window_size: int = _setting(
        2, "consecutive stochastic, trained steps per rollout", most=1000
    )
    sde_window_range: tuple[int, int] = _setting(
        (0, 4), "inclusive range the window's first step is drawn from, once per rollout", most=1000
    )


@dataclass(frozen=True)
class OptimiserConfig:
    """The GRPO objective and its AdamW optimizer."""

    lr: float = _setting(1e-3, "AdamW learning rate")
    weight_decay: float = _setting(1e-4, "AdamW weight decay")
    clip_range: float = _setting(1e-4, "PPO ratio clip range")
    adv_clip_max: float = _setting(5.0, "advantages are clipped to [-adv_clip_max, adv_clip_max]")
    kl_beta: float = _setting(0.0, "weight of the KL term to the reference model; 0 turns it off")
    globalize_reward_std: bool = _setting(
        True, "divide advantages by the std of the whole rollout instead of the group's"
    )
    max_grad_norm: float = _setting(1.0, "gradient norm clip")


@dataclass(frozen=True)
class RunConfig:
    """Length, seeding and bookkeeping of a run; every count is in optimizer steps."""

    seed: int = _setting(42, "the run's seed, in [0, 2^31)")
    max_steps: int = _setting(20, "optimizer steps in the run", most=1_000_000)
    checkpoint_every: int = _setting(
        10, "optimizer steps between checkpoints; 0 saves only at the end", most=1_000_000
    )
    eval_every: int = _setting(
        5,
        "optimizer steps between evaluations, and one at the end; 0 never evaluates",
        most=1_000_000,
    )


@dataclass(frozen=True)
class RolloutConfig:
    """Which backend generates rollouts, and where its servers are (docs/sglang.md)."""

    backend: str = _setting("in_process", "in_process (this process) or sglang (HTTP servers)")
    server_urls: tuple[str, ...] = _setting(
        (),
        "SGLang-D server URLs (external mode), e.g. http://gpu1:30000",
        items=64,
        chars=2048,
    )
    server_concurrency: int = _setting(4, "requests in flight per server", most=256)
    request_timeout: float = _setting(600.0, "seconds to wait for one rollout request", most=86_400)
    max_retries: int = _setting(3, "retries of a request after a transient failure", most=20)
    launch: str = _setting(
        "external",
        "external (server_urls started elsewhere) or colocated (the worker starts one; its "
        "command is the worker host's GROUPWISE_ROLLOUT_SERVER_COMMAND)",
    )
    startup_timeout: float = _setting(
        900.0,
        "seconds to wait for a server's /health: a colocated one to start, an external one "
        "that answers 503 while it warms up",
        most=86_400,
    )


@dataclass(frozen=True)
class Recipe:
    """A whole run. Build with ``Recipe.from_dict`` / ``load``; check with
    ``engine.validation.validate``."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "the model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "the prompts"})
    rewards: tuple[RewardSpec, ...] = _setting(
        (RewardSpec(),), "rewards and their weights, summed into one score", items=16
    )
    layout: LayoutConfig = field(default_factory=LayoutConfig, metadata={"doc": "batching"})
    sampler: SamplerConfig = field(default_factory=SamplerConfig, metadata={"doc": "sampling"})
    optimiser: OptimiserConfig = field(
        default_factory=OptimiserConfig, metadata={"doc": "objective and optimizer"}
    )
    run: RunConfig = field(default_factory=RunConfig, metadata={"doc": "length and seeding"})
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"doc": "rollout backend and servers"}
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build a recipe from nested plain data; missing settings take their defaults.

        Raises ``RecipeError`` listing every unknown key and every value of the wrong type.
        """
        problems: list[Problem] = []
        recipe = _parse(cls, data, "", problems)
        if problems:
            raise RecipeError(problems)
        assert isinstance(recipe, Recipe)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data (dicts, lists, numbers, text, None) that ``from_dict`` accepts."""
        # Non-finite floats stay floats: the recipe's JSON and TOML forms write them as numbers
        # (NaN, inf), which is what ``from_dict`` reads back.
        result: dict[str, Any] = to_plain(self, nonfinite_as_text=False)
        return result

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse the JSON form; raises ``RecipeError`` for malformed JSON too."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            problem = Problem("recipe", f"the recipe is not valid JSON: {error}")
            raise RecipeError([problem]) from None
        except RecursionError:
            problem = Problem("recipe", "the recipe is nested too deeply: a recipe is 3 levels")
            raise RecipeError([problem]) from None
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_toml(cls, text: str) -> Recipe:
        """Parse the TOML form; raises ``RecipeError`` for malformed TOML too."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            problem = Problem("recipe", f"the recipe is not valid TOML: {error}")
            raise RecipeError([problem]) from None
        return cls.from_dict(data)

    def to_toml(self) -> str:
        """TOML has no null, so unset optional settings are left out (they default to unset)."""
        return tomli_w.dumps(_drop_none(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a ``.toml`` or ``.json`` file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            return cls.from_toml(text)
        if path.suffix == ".json":
            return cls.from_json(text)
        raise RecipeError([Problem("recipe", f"{path} is neither .toml nor .json: rename it")])

    def save(self, path: str | Path) -> None:
        """Write a ``.toml`` or ``.json`` file, chosen by the suffix."""
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise RecipeError([Problem("recipe", f"{path} is neither .toml nor .json: rename it")])
        path.write_text(self.to_toml() if path.suffix == ".toml" else self.to_json(), "utf-8")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Plain recipe data (``Recipe.to_dict()``) as {dotted path: value}, lists kept whole."""
    if not isinstance(data, Mapping):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def settings() -> Iterator[tuple[str, Field[Any]]]:
    """Every setting's dotted path (``rewards[].name`` for a reward's) and its field."""
    for section in fields(Recipe):
        yield section.name, section
        section_type = field_hints(Recipe)[section.name]
        if is_dataclass(section_type):
            for leaf in fields(section_type):
                yield f"{section.name}.{leaf.name}", leaf
    for leaf in fields(RewardSpec):
        yield f"rewards[].{leaf.name}", leaf


def field_docs() -> dict[str, str]:
    """One-line help per setting, keyed by dotted path (``optimiser.lr``), for forms and CLIs,
    with its upper bounds."""
    return {path: leaf.metadata["doc"] + _bounds_text(leaf.metadata) for path, leaf in settings()}


def _bounds_text(metadata: Mapping[str, Any]) -> str:
    said = [
        text.format(metadata[key])
        for key, text in (
            ("most", "at most {:,}"),
            ("items", "at most {:,} items"),
            ("chars", "at most {:,} characters"),
        )
        if key in metadata
    ]
    return f" ({', '.join(said)})" if said else ""


def drop_retired(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without ``RETIRED`` settings, for records written before they were retired
    (checkpoints, exports) that are read, never run."""
    result = dict(data)
    for path in RETIRED:
        section, _, name = path.partition(".")
        if isinstance(result.get(section), Mapping) and name in result[section]:
            result[section] = {k: v for k, v in result[section].items() if k != name}
    return result


def unencodable(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (a lone surrogate, which JSON's
    ``\\ud800`` escapes can carry), or None when it all encodes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode written as escapes, safe to echo in a message."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_INVALID = object()


def _parse(cls: type, data: Any, path: str, problems: list[Problem]) -> Any:
    """Build dataclass ``cls`` from a mapping, appending a problem per bad key or value."""
    where = path or "recipe"
    if not isinstance(data, Mapping):
        problems.append(
            Problem(where, f"{where} must be a table of settings, not {_describe(data)}")
        )
        return _INVALID
    hints = field_hints(cls)
    known = list(hints)
    for key in data:
        if key not in known:
            name = printable(str(key))
            where_key = _join(path, name)
            if where_key in RETIRED:
                problems.append(
                    Problem(where_key, f"{where_key} is not a recipe setting: {RETIRED[where_key]}")
                )
                continue
            close = difflib.get_close_matches(name, known, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(known)}"
            problems.append(Problem(where_key, f"{where} has no setting '{name}': {fix}"))
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = _coerce(data[f.name], hints[f.name], _join(path, f.name), problems)
            if value is not _INVALID:
                kwargs[f.name] = value
        elif f.default is MISSING and f.default_factory is MISSING:
            problems.append(Problem(_join(path, f.name), f"{f.name} is missing: set it"))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str, problems: list[Problem]) -> Any:
    """Check ``value`` against type ``hint``; return it converted, or ``_INVALID``."""
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint) and isinstance(hint, type):
        return _parse(hint, value, path, problems)
    if origin in (Union, types.UnionType):
        # A blank form field means "unset", like null.
        if value is None or value == "":
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, path, problems)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(Problem(path, f"{path} must be a list, not {_describe(value)}"))
            return _INVALID
        variable = len(args) == 2 and args[1] is Ellipsis
        if not variable and len(value) != len(args):
            problems.append(
                Problem(path, f"{path} must have {len(args)} items, not {len(value)}: e.g. [0, 4]")
            )
            return _INVALID
        item_types = [args[0]] * len(value) if variable else list(args)
        items = [
            _coerce(item, item_type, _join(path, index), problems)
            for index, (item, item_type) in enumerate(zip(value, item_types, strict=True))
        ]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        # Forms and JavaScript send 16.0 for 16; a whole float is unambiguous.
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        bad = unencodable(value)
        if bad is None:
            return value
        problems.append(
            Problem(
                path,
                f"{path} holds a lone surrogate at character {bad} "
                f"('{printable(value[max(0, bad - 20) : bad + 20])}'), which is not text UTF-8 "
                "can store: remove it or write the character it was meant to be",
            )
        )
        return _INVALID
    problems.append(Problem(path, f"{path} must be {_KINDS[hint]}, not {_describe(value)}"))
    return _INVALID


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value) if isinstance(value, str | int | float | bool) else None
    return f"{type(value).__name__} {text}" if text else type(value).__name__
