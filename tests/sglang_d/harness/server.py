"""sglang 0.5.23's real routes and rollout code served on the CPU, the GPU worker replaced.

``python -m tests.sglang_d.harness.server [--model-path tiny] [--host 127.0.0.1] --port 0
[--packed] [--warmup-file F] [--hold-dir D]`` prints ``serving on URL`` once its socket
listens. The routes, the request model, the sampling params, the rollout controller, hooks
and scheduler ``step`` are the wheel's own (``modules``); ``HarnessWorker`` stands in for
``managers/gpu_worker.py``: it denoises with the project's tiny model as the DiT
(deterministic, float32, on the CPU), keeping the latents packed 2 x 2 as sglang's Qwen-Image
and FLUX pipelines do when ``--packed``.

- ``--warmup-file F``: ``/health`` answers 503 (sglang's warm-up, ``http_server.py`` line 243)
  until F exists, and writes ``F.asked`` on its first 503.
- ``--hold-dir D``: every generation writes ``D/started`` and waits for ``D/release`` (a server
  to kill mid-rollout).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import logging
import pickle
import socket
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import torch
from fastapi import FastAPI, HTTPException, Request, Response

from engine.models.base import FlowModel
from engine.models.packing import pack_2x2, unpack_2x2
from engine.models.tiny.weights import load_tiny
from engine.rollout.weights import load_full, load_lora
from tests.sglang_d.harness.modules import RUNTIME, install, real, real_function

#: How often a held generation looks for its release file.
HOLD_POLL_SECONDS = 0.05
#: server_args.py line 105.
MERGE_MODES = ("auto", "merge", "dynamic")


class Req:
    """Stand-in for ``schedule_batch.Req``: the request's sampling params, read through, and
    the per-request state the rollout hooks write."""

    def __init__(self, sampling_params: Any, **_: Any) -> None:
        self.sampling_params = sampling_params
        self.rollout_controllers: dict[str, Any] = {}
        self.rollout_trajectory_data: Any = None
        self._rollout_denoising_env_state: Any = None
        self.scheduler: Any = None
        self.did_sp_shard_latents = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["sampling_params"], name)


class OutputBatch:
    """Stand-in for ``schedule_batch.OutputBatch`` with the fields the routes read."""

    def __init__(self, output: Any = None, error: str | None = None,
                 rollout_trajectory_data: Any = None) -> None:  # fmt: skip
        self.output, self.error = output, error
        self.rollout_trajectory_data = rollout_trajectory_data
        self.metrics, self.peak_memory_mb = None, 0.0


class _PipelineConfig:
    """The two sequence-parallel hooks the rollout controller calls: one rank, no sharding."""

    @staticmethod
    def shard_latents_for_sp(batch: Any, latents: torch.Tensor) -> tuple[torch.Tensor, bool]:
        return latents, False


class _Platform:
    """The one device of this server, named as a GPU so payload selection has one to match."""

    UUID = "GPU-00000000-harn-ess0-0000-000000000000"

    def get_device_uuid(self, rank: int) -> str:
        return self.UUID


class ServerArgs:
    """Stand-in for ``server_args.ServerArgs``: what the routes read."""

    def __init__(self, model_path: str) -> None:
        self.model_path, self.attention_backend_config = model_path, None
        self.tp_size, self.batching_max_size = 1, 1


def _stubs(args: ServerArgs, scheduler: list[Any]) -> dict[str, dict[str, Any]]:
    def build_sampling_params(request_id: str, **kwargs: Any) -> Any:
        # openai/utils.py lines 297-308: None dropped, then SamplingParams; its errors are 400s.
        params = real(".configs.sample.sampling_params").SamplingParams
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return params(request_id=request_id, **kwargs)
        except (ValueError, TypeError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    class Client:
        #: Why the backend failed, which /health reports (None: it has not).
        failure_reason = None

        async def forward(self, req: Any) -> Any:
            return await asyncio.to_thread(scheduler[0].dispatch, req)

    client = Client()
    return {
        f"{RUNTIME}.server_args": {
            "ServerArgs": ServerArgs,
            "get_global_server_args": lambda: args,
        },
        f"{RUNTIME}.scheduler_client": {"async_scheduler_client": client},
        f"{RUNTIME}.pipelines_core.schedule_batch": {"Req": Req, "OutputBatch": OutputBatch},
        f"{RUNTIME}.entrypoints.openai.utils": {"build_sampling_params": build_sampling_params},
        f"{RUNTIME}.entrypoints.utils": {
            "prepare_request": lambda server_args, sampling_params: Req(sampling_params),
            "format_lora_message": lambda *a: scheduler[1](*a),
        },
        f"{RUNTIME}.post_training.sp_utils": {
            "gather_stacked_latents_for_sp": lambda pipeline_config, batch, stacked_latents: (
                stacked_latents
            )
        },
        "sglang.multimodal_gen.registry": {"get_model_info": None, "get_pipeline_class": None},
        f"{RUNTIME}.managers.memory_managers.layerwise_offload": {
            "finish_offload_writeback": lambda: None
        },
    }


class _OneRank:
    """``torch.distributed`` as ``set_lora`` asks it: this process is rank 0 of one."""

    @staticmethod
    def get_rank() -> int:
        return 0


class HarnessLoRA:
    """sglang's ``LoRAPipeline.set_lora`` control flow, run for real (with its
    ``_normalize_lora_params``, ``_resolve_lora_merge_mode``, ``_should_merge_lora_for_layers``
    and ``_check_lora_config_matches``) on this stand-in of the pipeline's state and LoRA
    layers: the adapter is read with diffusers into the tiny transformer, where sglang reads it
    into its own LoRA layers. Dynamic (unmerged) LoRA, the mode a trained adapter is served in."""

    VALID_TARGETS: ClassVar[list[str]] = ["all", "transformer", "transformer_2", "critic"]
    REAL = ("set_lora", "_normalize_lora_params", "_resolve_lora_merge_mode",
            "_should_merge_lora_for_layers", "_check_lora_config_matches")  # fmt: skip

    def __init__(self, transformer: torch.nn.Module, root: Path) -> None:
        names = {
            "dist": _OneRank,
            "logger": logging.getLogger("sglang.lora"),
            "nullcontext": contextlib.nullcontext,
            "LORA_MERGE_MODES": MERGE_MODES,
        }
        for name in self.REAL:
            function = real_function(root, "runtime/pipelines_core/lora/pipeline.py",
                                     f"LoRAPipeline.{name}", names)  # fmt: skip
            setattr(self, name, types.MethodType(function, self))
        self.transformer = transformer
        self.server_args = types.SimpleNamespace(lora_merge_mode="dynamic")
        self.lora_initialized = True
        self.lora_adapters: dict[str, Any] = {}
        self.loaded_adapter_paths: dict[str, str] = {}
        self.loaded_adapter_alphas: dict[str, int | None] = {}
        self.cur_adapter_name: dict[str, str] = {}
        self.cur_adapter_path: dict[str, str] = {}
        self.cur_adapter_strength: dict[str, float] = {}
        self.cur_adapter_config: dict[str, tuple[list[str], list[float]]] = {}
        self.is_lora_merged: dict[str, bool] = {}

    def _invalidate_lora_conditioning(self) -> None:
        pass  # no conditioning cache here

    def _reject_lora_on_packed_weights(self) -> None:
        pass  # the tiny DiT has no packed (quantised) weights

    def _has_layerwise_offload(self) -> bool:
        return False

    def load_lora_adapter(self, path: str, nickname: str, rank: int,
                          lora_alpha: int | None = None) -> None:  # fmt: skip
        # pipeline.py lines 972-1075, whose bookkeeping ends in these two maps.
        load_lora(self.transformer, Path(path), nickname)
        self.lora_adapters[nickname] = path
        self.loaded_adapter_paths[nickname] = path
        self.loaded_adapter_alphas[nickname] = lora_alpha

    def _get_target_lora_layers(self, target: str) -> tuple[list[tuple[str, Any]], str | None]:
        return [("transformer", {})], None

    def _needs_lora_weight_update_context(self, *_: Any) -> bool:
        return False  # dynamic LoRA leaves the base weights alone

    def _reactivate_cached_dynamic_lora_layers(self, *_: Any) -> int | None:
        return None  # nothing cached: apply

    def _merge_cache_for(self, *_: Any, **__: Any) -> None:
        return None

    def _apply_lora_to_layers(self, layers: Any, nicknames: list[str], *_: Any,
                              **__: Any) -> int:  # fmt: skip
        self.transformer.set_adapter(nicknames[0])  # type: ignore[operator]
        return 1


class HarnessWorker:
    """Stand-in for ``GPUWorker``: the tiny model as the DiT, driven by sglang's real rollout
    hooks and scheduler; LoRA, weight loads, checksums and sleep as the worker answers them."""

    def __init__(self, model: FlowModel, root: Path, *, packed: bool, hold: Path | None) -> None:
        self.model, self.packed, self.hold = model, packed, hold
        self.hooks = real(".runtime.post_training.rollout_hooks")
        self.euler = real(".runtime.models.schedulers.scheduling_flow_match_euler_discrete")
        self.checksum = real_function(root, "runtime/loader/weight_utils.py",
                                      "compute_weights_checksum",
                                      {"hashlib": __import__("hashlib"), "torch": torch,
                                       "DTensor": torch.distributed.tensor.DTensor})  # fmt: skip
        self.lora = HarnessLoRA(model.transformer, root)
        self.output_seeds = real_function(root, "runtime/pipelines_core/request_utils.py",
                                          "normalize_output_seeds", {})  # fmt: skip
        # gpu_worker_post_training_mixin.py: which payload is this GPU's, then sglang's
        # SafeUnpickler on it (MultiprocessingSerializer.deserialize).
        mixin = "runtime/post_training/gpu_worker_post_training_mixin.py"
        normalize = real_function(root, mixin, "_normalize_gpu_uuid", {})
        self.local_rank, self.platform = 0, _Platform()
        self.select_payload = real_function(root, mixin,
                                            "GPUWorkerPostTrainingMixin._select_own_gpu_payload",
                                            {"current_platform": self.platform,
                                             "_normalize_gpu_uuid": normalize})  # fmt: skip
        unsafe = {"pickle": pickle, "_safe_load_torch_storage": None}
        self.unpickler = real_function(root, "sglang/srt/utils/common.py", "SafeUnpickler", unsafe)
        self.sleeping = False

    def execute_forward(self, reqs: list[Req]) -> OutputBatch:
        (req,) = reqs
        if self.hold is not None:
            (self.hold / "started").touch()
            while not (self.hold / "release").exists():
                time.sleep(HOLD_POLL_SECONDS)
        model, steps = self.model, req.num_inference_steps
        count, height, width = req.num_outputs_per_prompt, req.height, req.width
        seeds = self.output_seeds(req.seed, num_outputs_per_prompt=count)
        # input_validation.py lines 168-184: one generator per output, on the CPU platform.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        guidance, true_cfg = req.guidance_scale or 1.0, req.true_cfg_scale or 1.0
        negative = [req.negative_prompt] if model.needs_negative(guidance, true_cfg) else None
        conditioning = model.encode_prompts([req.prompt], negative).repeat(count)
        latents = model.initial_latents(generators, height, width)
        spatial_shape = latents.shape
        if self.packed:
            latents = pack_2x2(latents)
        scheduler = self.euler.FlowMatchEulerDiscreteScheduler(shift=1.0)
        # rollout_scheduler.py line 443: the grid handed over as sigmas, kept verbatim.
        grid = model.sigmas(steps, height, width)[:-1].tolist()
        scheduler.set_timesteps(sigmas=grid, device="cpu")
        req.scheduler, req.latents, req.generator = scheduler, latents, generators
        req.timesteps = scheduler.timesteps
        self.hooks.prepare_rollout_if_enabled(batch=req, pipeline_config=_PipelineConfig)
        step_kwargs = self.hooks.rollout_step_kwargs(req)
        for index, timestep in enumerate(scheduler.timesteps):
            spatial = unpack_2x2(latents, *spatial_shape[2:]) if self.packed else latents
            sigma = scheduler.sigmas[index].expand(count)
            velocity = model.velocity(spatial, sigma, conditioning, guidance_scale=guidance,
                                      true_cfg_scale=true_cfg)  # fmt: skip
            output = pack_2x2(velocity) if self.packed else velocity
            latents = scheduler.step(model_output=output, timestep=timestep, sample=latents,
                                     **step_kwargs, return_dict=False)[0]  # fmt: skip
        self.hooks.finalize_rollout_if_enabled(
            batch=req, latents=latents, num_inference_steps=steps,
            final_timestep=scheduler.timesteps.new_zeros(()), pipeline_config=_PipelineConfig,
        )  # fmt: skip
        final = unpack_2x2(latents, *spatial_shape[2:]) if self.packed else latents
        images = torch.from_numpy(model.decode(final, height, width))
        # The decoding stage's [B, C, frames, H, W] in [0, 1] (decoding.py line 106).
        output = (images.permute(0, 3, 1, 2).float() / 255)[:, :, None]
        return OutputBatch(output=output, rollout_trajectory_data=req.rollout_trajectory_data)

    def set_lora(self, nickname: Any, path: Any, target: Any, strength: Any,
                 merge_mode: Any, lora_alpha: Any) -> OutputBatch:  # fmt: skip
        # gpu_worker.py lines 1661-1675: the pipeline's set_lora, then an empty answer.
        self.lora.set_lora(nickname, path, target, strength, merge_mode=merge_mode,
                           lora_alpha=lora_alpha)  # fmt: skip
        return OutputBatch()

    def update_weights_from_disk(self, model_path: str, flush_cache: bool,
                                 target_modules: list[str] | None) -> tuple[bool, str]:  # fmt: skip
        try:
            load_full(self.model.transformer, Path(model_path))
        except (ValueError, OSError) as error:
            return False, f"Failed to update weights: {error}"
        return True, "Updated weights from disk"

    def update_weights_from_tensor(self, req: Any) -> tuple[bool, str]:
        # The GPU worker's path up to the load (gpu_worker_post_training_mixin.py lines 58-86);
        # the load itself copies the named tensors into the tiny transformer.
        payload, error = self.select_payload(self, req.serialized_named_tensors,
                                             req.payload_gpu_uuids)  # fmt: skip
        if error is not None:
            return False, error
        data = base64.b64decode(payload, validate=True) if isinstance(payload, str) else payload
        named = dict(self.unpickler(io.BytesIO(data)).load())
        state = self.model.transformer.state_dict()
        unknown = sorted(set(named) - set(state))
        if unknown or req.target_modules not in (None, ["transformer"]):
            return False, f"cannot load {unknown[:3]} into {req.target_modules}"
        self.model.transformer.load_state_dict(named, strict=False)
        return True, "Updated 1 modules from tensor (transformer)."

    def get_weights_checksum(self, module_names: list[str] | None) -> dict[str, str]:
        names = module_names or ["transformer"]
        return {name: self.checksum(self.model.transformer.named_parameters())
                if name == "transformer" else "not_found" for name in names}  # fmt: skip

    def is_sleeping(self) -> bool:
        return self.sleeping

    def _sleep(self, sleeping: bool) -> dict[str, Any]:
        # memory_occupation_controller.py lines 104-111 and 181-240.
        state = "sleeping" if sleeping else "awake"
        message = f"already {state}" if self.sleeping == sleeping else state
        self.sleeping = sleeping
        return {"success": True, "sleeping": sleeping, "message": message}

    def release_memory_occupation(self) -> dict[str, Any]:
        return self._sleep(True)

    def resume_memory_occupation(self) -> dict[str, Any]:
        return self._sleep(False)


def _scheduler_class() -> type:
    mixin = real(".runtime.post_training.scheduler_post_training_mixin").SchedulerPostTrainingMixin
    control = real(".runtime.entrypoints.control_requests")
    io = real(".runtime.entrypoints.post_training.io_struct")

    class HarnessScheduler(mixin):  # type: ignore[misc, valid-type]
        """``managers/scheduler.py``'s dispatch, one request at a time (batching size 1)."""

        def __init__(self, worker: HarnessWorker, args: ServerArgs) -> None:
            self.worker, self.server_args, self._lock = worker, args, threading.Lock()
            self.handlers = {
                control.SetLoraReq: lambda r: worker.set_lora(
                    r.lora_nickname, r.lora_path, r.target, r.strength, r.merge_mode,
                    r.lora_alpha),
                Req: self._generate,
                io.UpdateWeightFromDiskReqInput: self._update_from_disk,
                io.UpdateWeightFromTensorReqInput: lambda r: (
                    self._handle_update_weights_from_tensor([r])),
                io.GetWeightsChecksumReqInput: lambda r: self._handle_get_weights_checksum([r]),
                io.ReleaseMemoryOccupationReqInput: lambda r: OutputBatch(
                    output=worker.release_memory_occupation()),
                io.ResumeMemoryOccupationReqInput: lambda r: OutputBatch(
                    output=worker.resume_memory_occupation()),
            }  # fmt: skip

        def dispatch(self, req: Any) -> Any:
            with self._lock:
                try:
                    return self.handlers[type(req)](req)
                except Exception as error:  # scheduler.py lines 1582-1587
                    return OutputBatch(error=str(error))

        def _generate(self, req: Req) -> OutputBatch:
            if self.worker.is_sleeping():  # scheduler.py lines 358-361
                raise RuntimeError("Server is sleeping. Call resume_memory_occupation first.")
            return self.worker.execute_forward([req])

        def _update_from_disk(self, req: Any) -> OutputBatch:
            if self.worker.is_sleeping():  # scheduler.py lines 301-307
                raise RuntimeError(
                    "Cannot update weights while the server is sleeping. "
                    "Call resume_memory_occupation first."
                )
            return self._handle_update_weights_from_disk([req])

    return HarnessScheduler


def build_app(*, packed: bool, warmup: Path | None, hold: Path | None) -> Any:
    """The FastAPI app: sglang's rollout, weights and LoRA routers, and its health checks."""
    args = ServerArgs("tiny")
    holder: list[Any] = []
    root = install(_stubs(args, holder))

    worker = HarnessWorker(load_tiny(), root, packed=packed, hold=hold)
    holder.append(_scheduler_class()(worker, args))
    holder.append(real_function(root, "runtime/entrypoints/utils.py", "format_lora_message",
                                {"Union": Any, "List": list}))  # fmt: skip
    app = FastAPI()
    # http_server.py's own /health (lines 237-245, and _backend_failure, 209-222): 503 without
    # a body until the warm-up event is set, which here is when the warm-up file exists.
    http = "runtime/entrypoints/http_server.py"
    # psutil is read only for worker processes, of which the harness has none.
    failure = real_function(root, http, "_backend_failure", {"psutil": None})
    json_response = real("sglang.srt.utils.json_response").orjson_response
    real_health = real_function(root, http, "health", {
        "async_scheduler_client": real(f"{RUNTIME}.scheduler_client").async_scheduler_client,
        "_backend_failure": failure,
        "orjson_response": json_response, "Response": Response, "Request": Request,
    })  # fmt: skip
    app.state.disagg_server = app.state.broker_task = None
    app.state.worker_processes = []
    app.state.server_warmup_done = asyncio.Event()
    if warmup is None:
        app.state.server_warmup_done.set()

    @app.get("/health")
    async def health(request: Request) -> Any:
        if warmup is not None and warmup.exists():
            app.state.server_warmup_done.set()
        answer = await real_health(request)
        if not app.state.server_warmup_done.is_set():
            assert warmup is not None
            warmup.with_suffix(".asked").touch()
        return answer

    @app.get("/model_info")
    async def model_info() -> Any:
        # http_server.py lines 322-338, the fields that need no pipeline class.
        return {"model_path": args.model_path, "is_generation": True, "model_type": "diffusion"}

    for module in ("weights_api", "rollout_api"):
        app.include_router(real(f".runtime.entrypoints.post_training.{module}").router)
    app.include_router(real(".runtime.entrypoints.openai.common_api").router)
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    # sglang serve's flags, as a colocated run passes them (only the tiny model, on loopback).
    parser.add_argument("--model-path", choices=["tiny"], default="tiny")
    parser.add_argument("--host", choices=["127.0.0.1"], default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--packed", action="store_true")
    parser.add_argument("--warmup-file", type=Path)
    parser.add_argument("--hold-dir", type=Path)
    options = parser.parse_args()
    app = build_app(packed=options.packed, warmup=options.warmup_file, hold=options.hold_dir)
    listener = socket.socket()
    listener.bind(("127.0.0.1", options.port))
    listener.listen(64)
    print(f"serving on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
