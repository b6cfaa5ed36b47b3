"""Load sglang 0.5.23's post-training HTTP layer and rollout code from its wheel, on the CPU.

Loaded for real, unchanged, from the wheel (``wheel.unpacked()``):

- ``runtime/entrypoints/post_training/rollout_api.py``: ``POST /rollout/generate``, its request
  to sampling-params mapping and its per-sample answer;
- ``runtime/entrypoints/post_training/weights_api.py``: ``/update_weights_from_disk``,
  ``/get_weights_checksum``, ``/release_memory_occupation``, ``/resume_memory_occupation``;
- ``runtime/entrypoints/openai/common_api.py``: ``/v1/set_lora`` and the other LoRA routes;
- ``runtime/entrypoints/post_training/io_struct.py`` and ``utils.py``: the request model (its
  defaults and 422s) and the tensor encoding;
- ``configs/sample/sampling_params.py``: ``SamplingParams`` and its validation (seeds >= 0);
- ``runtime/post_training/flow_rollout_controller.py``, ``rollout_hooks.py``,
  ``rl_dataclasses.py``: the SDE/CPS/ODE transition, its log-probs and the trajectory record;
- ``runtime/models/schedulers/scheduling_flow_match_euler_discrete.py``: the scheduler whose
  ``step`` calls the controller's transition;
- ``runtime/post_training/scheduler_post_training_mixin.py`` and
  ``runtime/entrypoints/control_requests.py``: the scheduler's weight handlers, the LoRA requests;
- single functions compiled from their files (``real_function``), whose modules import the GPU
  runtime: ``compute_weights_checksum`` (``loader/weight_utils.py``),
  ``LoRAPipeline.set_lora`` with ``_normalize_lora_params``, ``_resolve_lora_merge_mode``,
  ``_should_merge_lora_for_layers`` and ``_check_lora_config_matches``
  (``pipelines_core/lora/pipeline.py``: when an adapter is reloaded or skipped),
  ``format_lora_message`` (``entrypoints/utils.py``), ``normalize_output_seeds``
  (``pipelines_core/request_utils.py``), ``GPUWorkerPostTrainingMixin._select_own_gpu_payload``
  with ``_normalize_gpu_uuid`` (``post_training/gpu_worker_post_training_mixin.py``),
  ``SafeUnpickler`` (``sglang/srt/utils/common.py``), which reads a tensor update's payload, and
  the ``/health`` handler with ``_backend_failure`` (``entrypoints/http_server.py``, whose module
  imports every API of the server).

Replaced, each by the smallest stand-in (``STUBS``), because importing it pulls in CUDA kernels
or the LLM runtime (``sglang.srt.layers`` -> ``tvm_ffi``, IPython, sentencepiece, ...):

- the package initialisers of ``sglang``, ``sglang.multimodal_gen``, ``sglang.srt``,
  ``sglang.srt.utils`` and ``runtime.pipelines_core``, which re-export the whole runtime: they
  are entered as bare packages, their modules loaded one by one;
- ``runtime/server_args``: the server's settings object (every pipeline config behind it);
- ``runtime/scheduler_client``: the ZMQ client of the scheduler process, replaced by a call into
  ``server.HarnessScheduler`` in this process, which reproduces ``managers/scheduler.py``'s
  dispatch (one request at a time, the sleeping checks, exceptions answered as
  ``OutputBatch(error=...)``) around the real weight handlers;
- ``runtime/pipelines_core/schedule_batch``: ``Req`` and ``OutputBatch`` (their module imports
  the tracing and metrics stack); the stand-ins carry the fields the code above reads;
- ``entrypoints/openai/utils.build_sampling_params`` and ``entrypoints/utils.prepare_request``:
  their modules import ffmpeg and image IO; the stand-ins build the real ``SamplingParams``;
- ``runtime/post_training/sp_utils``: sequence parallelism, one rank here;
- ``registry``: the model registry, read only by the model-card routes;
- ``managers/memory_managers/layerwise_offload``: ``set_lora`` finishes its write-back, of which
  one CPU process without offload has none;
- ``/model_info``: its handler reads the pipeline registry; the harness answers its plain fields.
- The GPU worker itself (``managers/gpu_worker.py``): ``server.HarnessWorker`` runs a small
  deterministic DiT loop with the real scheduler and rollout hooks.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.sglang_d.harness.wheel import unpacked

RUNTIME = "sglang.multimodal_gen.runtime"
#: Packages entered without running their ``__init__``.
BARE = ("sglang", "sglang.multimodal_gen", "sglang.srt", "sglang.srt.utils",
        f"{RUNTIME}.pipelines_core")  # fmt: skip
#: Modules replaced by the stand-ins ``install`` gets, by their names.
STUBS = (
    f"{RUNTIME}.server_args",
    f"{RUNTIME}.scheduler_client",
    f"{RUNTIME}.pipelines_core.schedule_batch",
    f"{RUNTIME}.entrypoints.openai.utils",
    f"{RUNTIME}.entrypoints.utils",
    f"{RUNTIME}.post_training.sp_utils",
    "sglang.multimodal_gen.registry",
    f"{RUNTIME}.managers.memory_managers.layerwise_offload",
)


class _BarePackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the packages of ``BARE`` in the wheel and leaves their ``__init__`` unrun."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name in BARE:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = [str(self.root.joinpath(*spec.name.split(".")))]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install(stubs: dict[str, dict[str, Any]]) -> Path:
    """Put the wheel's code on the import path with ``stubs`` (module name -> its names) in
    place of the modules of ``STUBS``; returns the unpacked wheel's root."""
    if set(stubs) != set(STUBS):
        raise ValueError(f"stubs must replace exactly {STUBS}")
    root = unpacked()
    if "sglang" in sys.modules:
        raise RuntimeError("sglang is already imported: the harness must load it first")
    sys.meta_path.insert(0, _BarePackages(root))
    sys.path.insert(0, str(root))
    for name, names in stubs.items():
        module = types.ModuleType(name, f"harness stand-in for sglang's {name}")
        module.__dict__.update(names)
        sys.modules[name] = module
    return root


def real(name: str) -> types.ModuleType:
    """The wheel's module ``name`` (relative to ``sglang.multimodal_gen`` when it starts with a
    dot), imported unchanged."""
    return importlib.import_module("sglang.multimodal_gen" + name if name[0] == "." else name)


def real_function(root: Path, file: str, name: str, namespace: dict[str, Any]) -> Callable:
    """One function or class (``Class.method`` for a method) compiled from the wheel's
    ``file`` (under ``sglang/multimodal_gen`` unless it starts with ``sglang/``), its globals
    ``namespace``: for code whose module cannot be imported on the CPU."""
    file = file if file.startswith("sglang/") else f"sglang/multimodal_gen/{file}"
    source = (root / file).read_text()
    tree = ast.parse(source)
    owner, _, function = name.rpartition(".")
    scope: list[ast.stmt] = tree.body
    if owner:
        (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner]
        scope = cls.body
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    (node,) = [n for n in scope if isinstance(n, kinds) and n.name == function]
    node.decorator_list = []
    module = ast.Module(body=[node], type_ignores=[])
    glob = {"__name__": f"sglang_wheel.{file}", **namespace}
    # Annotations stay strings, as in the wheel's modules (they name types not loaded here).
    flags = __future__.annotations.compiler_flag
    code = compile(module, str(root / file), "exec", flags=flags)
    exec(code, glob)
    return glob[function]
