"""The typed events a run reports to its sink (DESIGN.md section 3).

Every event is a frozen dataclass with a ``type`` and a ``schema_version`` and turns into plain
JSON data and back: ``event.to_dict()`` / ``Event.from_dict(data)`` (which dispatches on
``type``), ``to_json`` / ``from_json`` for one JSONL line.

Images are uint8 numpy arrays [H, W, 3] in memory. In plain data they become
``{"dtype": "uint8", "shape": [H, W, 3], "base64": <the raw bytes, row-major>}``: lossless, exact
and dependency-free. A sink that stores images elsewhere (the web side writes files under media)
passes its own ``encode_image`` to ``to_dict`` (e.g. returning a URL) and the matching
``decode_image`` to ``from_dict``. Non-finite floats (a diverged loss) become the strings "NaN",
"Infinity" and "-Infinity", so the JSON stays strict and a browser can parse it (the conversion
is ``engine.plain``'s).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import time as _now
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, get_args, get_origin, get_type_hints

import numpy as np
import numpy.typing as npt

from engine.plain import field_hints, from_plain, to_plain

SCHEMA_VERSION = 1

Image = npt.NDArray[np.uint8]
ImageEncoder = Callable[[Image], Any]
ImageDecoder = Callable[[Any], Image]


def encode_image(image: Image) -> dict[str, Any]:
    """The default JSON form of an image: dtype, shape and base64 of the raw bytes."""
    return {
        "dtype": "uint8",
        "shape": list(image.shape),
        "base64": base64.b64encode(np.ascontiguousarray(image).tobytes()).decode("ascii"),
    }


def decode_image(data: Any) -> Image:
    """Inverse of ``encode_image``."""
    if data.get("dtype") != "uint8":
        raise ValueError(f"only uint8 images are supported, not {data.get('dtype')!r}")
    raw = np.frombuffer(base64.b64decode(data["base64"]), dtype=np.uint8)
    return raw.reshape(data["shape"]).copy()


class Record:
    """Base of events and their parts: validation on construction, plain-data conversion and
    value equality (dataclass equality would compare image arrays ambiguously)."""

    def __post_init__(self) -> None:
        for name, hint in field_hints(type(self)).items():
            value = getattr(self, name)
            if get_origin(hint) is Literal and value not in get_args(hint):
                raise ValueError(f"{name}={value!r} is not one of {get_args(hint)}")
            if hint == Image:
                _check_image(name, value)

    def to_dict(self, encode_image: ImageEncoder = encode_image) -> dict[str, Any]:
        """Plain JSON-ready data; images go through ``encode_image``."""
        data: dict[str, Any] = to_plain(self, encode_array=encode_image)
        return data

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, kw_only=True, eq=False)
class Event(Record):
    """Base of every event. ``time`` is when it happened, in seconds since the epoch."""

    type: ClassVar[str] = ""
    schema_version: ClassVar[int] = SCHEMA_VERSION
    time: float = field(default_factory=_now)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type in EVENT_TYPES:
            raise TypeError(f"event type {cls.type!r} is defined twice")
        EVENT_TYPES[cls.type] = cls

    def to_dict(self, encode_image: ImageEncoder = encode_image) -> dict[str, Any]:
        return {
            "type": self.type,
            "schema_version": self.schema_version,
            **super().to_dict(encode_image),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any], decode_image: ImageDecoder = decode_image) -> Event:
        """Rebuild the event of ``data["type"]``; raises ``ValueError`` for an unknown type or a
        schema newer than this code understands."""
        kind = data.get("type")
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r}: known are {sorted(EVENT_TYPES)}")
        cls = EVENT_TYPES[kind]
        version = data.get("schema_version")
        if version != cls.schema_version:
            raise ValueError(
                f"{kind} event has schema_version {version!r}; this code reads {cls.schema_version}"
            )
        body = {k: v for k, v in data.items() if k not in ("type", "schema_version")}
        return from_plain(cls, body, decode_array=decode_image)

    def to_json(self) -> str:
        """One strict-JSON line (no NaN literals), as the headless CLI writes to JSONL."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> Event:
        return Event.from_dict(json.loads(line))


#: Every event class by its ``type``.
EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, kw_only=True, eq=False)
class RunStarted(Event):
    """The run began (or resumed) with this recipe and the layout derived from it."""

    type: ClassVar[str] = "run_started"
    recipe: dict[str, Any]
    layout: dict[str, Any]
    #: 0 for a new run; the checkpoint's step when a run resumes.
    start_step: int = 0


@dataclass(frozen=True, kw_only=True, eq=False)
class Sample(Record):
    """One image of a prompt group with its scores."""

    sample_index: int
    seed: int
    image: Image
    reward: float
    reward_components: dict[str, float]
    advantage: float


@dataclass(frozen=True, kw_only=True, eq=False)
class PromptGroup(Record):
    """All samples of one prompt in one rollout."""

    group_index: int
    prompt: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, kw_only=True, eq=False)
class RolloutFinished(Event):
    """A rollout was sampled and scored; ``step`` counts the optimizer steps taken before it."""

    type: ClassVar[str] = "rollout_finished"
    step: int
    rollout_index: int
    rollout_seed: int
    sde_window: tuple[int, ...]
    groups: tuple[PromptGroup, ...]


class StepMetrics(NamedTuple):
    """One optimizer step's numbers (means over its samples and stochastic steps), as the trainer
    returns them: the one list of train metrics, which ``TrainStepFinished`` and the metrics table
    (``engine.run.metrics_table``) take theirs from."""

    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    ratio_min: float
    ratio_max: float
    grad_norm: float
    lr: float


_E = TypeVar("_E", bound=Event)


def _with_step_metrics(cls: type[_E]) -> type[_E]:
    """``cls`` with a field of its own per ``StepMetrics`` field, in that order, after those it
    declares; ``dataclass`` then makes them its fields (flat in the plain data: ``loss``, ...)."""
    cls.__annotations__.update(get_type_hints(StepMetrics))
    return cls


@dataclass(frozen=True, kw_only=True, eq=False)
@_with_step_metrics
class TrainStepFinished(Event):
    """An optimizer step; ``step`` counts the steps taken including this one (1 for the first).

    Its metrics are fields of its own, one per ``StepMetrics`` field (``loss``, ``kl``, ...):
    ``TrainStepFinished(step=s, rollout_index=r, **metrics._asdict())``.
    """

    type: ClassVar[str] = "train_step_finished"
    step: int
    rollout_index: int


@dataclass(frozen=True, kw_only=True, eq=False)
class EvalSample(Record):
    """One evaluation image, sampled as an ODE."""

    prompt: str
    seed: int
    image: Image
    reward: float
    reward_components: dict[str, float]


@dataclass(frozen=True, kw_only=True, eq=False)
class EvaluationFinished(Event):
    """An evaluation pass; means are over its samples."""

    type: ClassVar[str] = "evaluation_finished"
    step: int
    reward_mean: float
    reward_components: dict[str, float]
    samples: tuple[EvalSample, ...]


@dataclass(frozen=True, kw_only=True, eq=False)
class Throughput(Event):
    """Speed over the last rollout: images per second and seconds per phase."""

    type: ClassVar[str] = "throughput"
    step: int
    images_per_second: float
    rollout_seconds: float
    reward_seconds: float
    train_seconds: float
    weight_sync_seconds: float
    #: A colocated server's memory release before the update and resume after it.
    memory_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True, eq=False)
class HealthCheck(Record):
    """One check, e.g. the replay tolerance of backend log-probs; ``value`` is what it measured."""

    name: str
    status: Literal["pass", "warn", "fail"]
    message: str
    value: float | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class Health(Event):
    """The outcome of the run's health checks at ``step``."""

    type: ClassVar[str] = "health"
    step: int
    checks: tuple[HealthCheck, ...]


@dataclass(frozen=True, kw_only=True, eq=False)
class CheckpointSaved(Event):
    """A checkpoint of ``step`` was written to ``path``."""

    type: ClassVar[str] = "checkpoint_saved"
    step: int
    path: str


@dataclass(frozen=True, kw_only=True, eq=False)
class LogLine(Event):
    """A line for the run's log."""

    type: ClassVar[str] = "log_line"
    level: Literal["debug", "info", "warning", "error"]
    message: str


@dataclass(frozen=True, kw_only=True, eq=False)
class RunEnded(Event):
    """The run stopped after ``step`` optimizer steps; ``error`` says why when it failed."""

    type: ClassVar[str] = "run_ended"
    status: Literal["finished", "cancelled", "failed", "interrupted"]
    step: int
    error: str | None = None


def _check_image(name: str, image: Any) -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        shape = getattr(image, "shape", None)
        raise ValueError(
            f"{name} must be a uint8 array [H, W, 3], not {type(image).__name__} "
            f"{getattr(image, 'dtype', '')} {shape}"
        )
