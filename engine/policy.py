"""The trained policy: which weights of the DiT learn, and the frozen reference the KL term uses.

``lora_target`` picks the weights: ``attn`` puts LoRA adapters (peft) on the attention
projections, ``attn+mlp`` on the feed-forward layers too, ``full`` fine-tunes every weight (the
tiny model's choice: it has too few weights for adapters to learn fast). The reference policy is
the same transformer with its adapters disabled (never a second copy), or, for a full fine-tune,
a frozen copy of the starting weights in the model dtype, kept only when ``kl_beta`` > 0.

Precision (DESIGN.md): the model arrives in ``model.dtype``; frozen weights stay in it, and the
weights that learn are turned into float32 master weights, so AdamW's moments (made like the
parameters) are float32 too. Compute stays in the model dtype: ``FlowModel.velocity`` runs the
DiT under autocast, which casts a float32 weight to the model dtype for each matmul and sends
its gradient back in float32. Why float32 parameters under autocast rather than a model-dtype
module with a separate float32 copy for the optimizer: the gradients then accumulate over a
step's tiles in float32 (a bf16 ``.grad`` would round at every tile), the checkpoint holds the
master weights under the module's own names, and FSDP shards the float32 parameters with no
second mechanism; the cost is the same 4 bytes per trainable weight either way, plus autocast's
transient model-dtype copy of each weight in use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.models.base import FlowModel
from engine.recipe import ModelConfig

#: Attention projections of diffusers' DiT blocks (image and, in joint blocks, text streams).
ATTENTION_MODULES = (
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
)  # fmt: skip
#: Feed-forward layers of the same blocks.
MLP_MODULES = (
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
)  # fmt: skip
ADAPTER = "groupwise"


class Policy:
    """The model being trained and the weights that learn."""

    def __init__(
        self,
        model: FlowModel,
        config: ModelConfig,
        *,
        keep_reference: bool,
        seed: int,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``gradient_checkpointing``: recompute each DiT block's activations in the backward
        (``layout.gradient_checkpointing`` resolved); forwards without gradients, the rollout's
        and the replay's, are unaffected."""
        self.model = model
        self.full = config.lora_target == "full"
        transformer = model.transformer
        transformer.requires_grad_(False)
        self._reference: torch.nn.Module | None = None
        if self.full:
            if keep_reference:
                # Copied before the master weights exist: the reference stays in the model dtype.
                self._reference = copy.deepcopy(transformer).requires_grad_(False)
            transformer.requires_grad_(True)
        else:
            from peft import LoraConfig

            wanted = ATTENTION_MODULES + (MLP_MODULES if config.lora_target == "attn+mlp" else ())
            present = _present(transformer, wanted)
            if not present:
                raise ValueError(
                    f"model.lora_target={config.lora_target!r} found no layer to adapt in this "
                    "transformer: use lora_target='full'"
                )
            # The adapters' random start comes from the run's seed, not from whatever the
            # process's generator holds: the same recipe starts from the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                transformer.add_adapter(  # type: ignore[operator]
                    LoraConfig(
                        r=config.lora_rank,
                        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft: floats ok
                        init_lora_weights="gaussian",
                        target_modules=present,
                    ),
                    adapter_name=ADAPTER,
                )
        self.parameters = [p for p in transformer.parameters() if p.requires_grad]
        _as_master_weights(self.parameters)
        if gradient_checkpointing:
            # diffusers checkpoints each block (non-reentrant) whenever gradients are on.
            transformer.enable_gradient_checkpointing()  # type: ignore[operator]

    @property
    def reference_module(self) -> torch.nn.Module | None:
        """A full fine-tune's frozen reference copy (None with LoRA or ``kl_beta`` = 0)."""
        return self._reference

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights by name: what a checkpoint stores."""
        return {
            name: value.detach().clone()
            for name, value in self.model.transformer.named_parameters()
            if value.requires_grad
        }

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``; raises ``ValueError`` when the names differ."""
        params = {n: p for n, p in self.model.transformer.named_parameters() if p.requires_grad}
        if set(params) != set(weights):
            missing = sorted(set(params) - set(weights))[:3]
            extra = sorted(set(weights) - set(params))[:3]
            raise ValueError(
                f"checkpoint weights do not fit this policy (missing {missing}, unexpected "
                f"{extra}): it was saved with another model or lora_target"
            )
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(weights[name].to(param.dtype))

    @contextmanager
    def reference(self) -> Iterator[None]:
        """Run the model as the reference policy inside the block."""
        transformer = self.model.transformer
        if self.full:
            if self._reference is None:
                raise RuntimeError("the reference copy is kept only when kl_beta > 0")
            live = transformer
            self.model.transformer = self._reference
            try:
                yield
            finally:
                self.model.transformer = live
        else:
            transformer.disable_adapters()  # type: ignore[operator]
            try:
                yield
            finally:
                transformer.enable_adapters()  # type: ignore[operator]


def _as_master_weights(parameters: list[torch.nn.Parameter]) -> None:
    """Trainable weights in float32, in place (the optimizer is made after): a bf16 weight
    cannot take an update smaller than 1/256 of itself, and lr x Adam's step is far smaller.
    peft makes LoRA adapters in their base layer's dtype, so they come through here too."""
    for parameter in parameters:
        if parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def _present(module: torch.nn.Module, suffixes: tuple[str, ...]) -> list[str]:
    """The suffixes that name at least one linear layer of ``module``."""
    names = [name for name, child in module.named_modules() if isinstance(child, torch.nn.Linear)]
    return [s for s in suffixes if any(n == s or n.endswith("." + s) for n in names)]
