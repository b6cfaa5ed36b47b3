"""The memory plan: every preset fits its GPU, the items are worked out by hand, and the
activation constants are what autograd keeps for each block class."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, SD3Transformer2DModel

from engine.memory.plan import (
    SAVED_OUTSIDE_BLOCKS,
    SAVED_PER_BLOCK,
    SAVED_PER_CHECKPOINTED_BLOCK,
    memory_plan,
    recipe_architecture,
)
from engine.overrides import apply_overrides
from engine.presets import PRESETS, preset
from tests.engine.models import tiny_pipelines

GB = 1e9


def items(plan):
    return {item.name: item for item in plan.items}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_fits_its_gpu(name):
    recipe = preset(name)
    plan = memory_plan(recipe)
    assert plan.gpu_memory_gb == recipe.layout.gpu_memory_gb == 80.0
    assert plan.fits and plan.total_gb <= 80.0
    counted = [i.gb for i in plan.items if i.phase in ("resident", plan.peak_phase)]
    assert plan.total_gb == pytest.approx(sum(counted))


def test_ocr_qwen_image_2gpu_worked_out():
    plan = memory_plan(preset("ocr-qwen-image-2gpu"))
    got = items(plan)
    # DiT: 20 430 401 088 weights x 2 bytes (bf16) over 2 FSDP ranks, plus two gathered blocks
    # of 339 831 296 weights: 20.430 + 1.359 = 21.790 GB.
    assert got["DiT weights"].gb == pytest.approx((20_430_401_088 + 2 * 339_831_296 * 2) / GB)
    # LoRA r=64 on attention and MLPs: 60 blocks x (8 x (3072 + 3072) + 4 x (3072 + 12288))
    # = 6 635 520 fan, x 64 = 424.7 M float32 weights over 2 ranks: 0.849 GB; gradients the same,
    # AdamW twice that.
    lora = 64 * 6_635_520 * 4 / 2 / GB
    assert got["trainable weights"].gb == pytest.approx(lora)
    assert got["gradients"].gb == pytest.approx(lora)
    assert got["optimizer state"].gb == pytest.approx(2 * lora)
    # Qwen2.5-VL-7B: 8 292 166 656 weights + 168 buffer values in bf16, offloaded: on the GPU
    # through the rollout, in host memory through the update.
    assert got["text encoders"].gb == pytest.approx(8_292_166_824 * 2 / GB)
    assert got["text encoders"].phase == "rollout"
    # A tile: 4 samples x 1 step x 2 (true CFG's negative rows) = 8 rows of 1024 image tokens
    # (512 / 16 per side, squared) + 256 text tokens, 3072 wide; checkpointed: 60 blocks x 2
    # bytes + one block recomputed (51) + 10 outside the blocks = 181 bytes per token and unit.
    assert got["training activations"].gb == pytest.approx(8 * 1280 * 3072 * 181 / GB)
    # Rollout: 32 rows (M=16, doubled) x 1280 x 3072 x 48 bytes = 6.04 GB for the DiT; the VAE
    # decodes 16 images of 512 x 512 px at 96 channels x 2 bytes x 18.1 = 14.57 GB, the larger.
    assert got["rollout activations"].gb == pytest.approx(16 * 512 * 512 * 96 * 2 * 18.1 / GB)
    # The rollout (encoders 16.58 + decode 14.57 GB) outweighs the tile (5.69).
    assert plan.peak_phase == "rollout"
    resident = sum(i.gb for i in plan.items if i.phase == "resident" and i.name != "headroom")
    held = resident + got["text encoders"].gb + got["rollout activations"].gb
    assert got["headroom"].gb == pytest.approx(1.5 + 0.1 * held)
    assert plan.total_gb == pytest.approx(held + got["headroom"].gb)


def test_checkpointing_keeps_one_value_per_block_instead_of_the_block():
    recipe = preset("ocr-qwen-image-2gpu")
    on = items(memory_plan(recipe))["training activations"].gb
    off = items(memory_plan(apply_overrides(recipe, {"gradient_checkpointing": False})))
    # Without checkpointing every block keeps its 51 bytes: 60 x 51 + 10 = 3070 vs 181.
    assert off["training activations"].gb == pytest.approx(on * 3070 / 181)


def test_sglang_servers_generate_off_the_trainer():
    recipe = apply_overrides(
        preset("ocr-qwen-image-2gpu"),
        {"rollout.backend": "sglang", "server_urls": ["http://gpu1:30000"]},
    )
    assert items(memory_plan(recipe))["rollout activations"].gb == 0


def test_a_colocated_server_counts_its_own_pipeline_while_it_generates():
    external = {"rollout.backend": "sglang", "server_urls": ["http://gpu1:30000"]}
    colocated = {"rollout.backend": "sglang", "launch": "colocated"}
    base = preset("ocr-qwen-image-2gpu")
    assert items(memory_plan(apply_overrides(base, external)))["colocated server"].gb == 0
    assert items(memory_plan(base))["colocated server"].gb == 0
    plan = memory_plan(apply_overrides(base, colocated))
    got = items(plan)
    server = got["colocated server"]
    # Its whole pipeline in bf16, unsharded: the DiT's 20 430 401 088 weights, Qwen2.5-VL's
    # 8 292 166 824 values and the VAE's (its own item's count), plus the same M=16 working
    # memory as an in-process rollout, the VAE decode's 14.57 GB.
    vae_values = got["VAE"].gb * GB / 2
    pipeline = (20_430_401_088 + 8_292_166_824 + vae_values) * 2 / GB
    assert server.gb == pytest.approx(pipeline + 16 * 512 * 512 * 96 * 2 * 18.1 / GB)
    # Released during the update: it belongs to the rollout phase, which it makes the peak.
    assert server.phase == "rollout" and plan.peak_phase == "rollout"
    assert got["rollout activations"].gb == 0
    # Beside a trainer's resident state it no longer fits 80 GB: what the validator says.
    assert not plan.fits


def test_text_encoders_kept_on_the_gpu_are_resident():
    recipe = apply_overrides(preset("ocr-qwen-image-2gpu"), {"offload_text_encoders": "none"})
    assert items(memory_plan(recipe))["text encoders"].phase == "resident"
    assert items(memory_plan(preset("ocr-sd35")))["text encoders"].phase == "resident"


def test_whole_copies_without_fsdp():
    recipe = apply_overrides(preset("ocr-qwen-image-2gpu"), {"fsdp": False})
    got = items(memory_plan(recipe))
    # Every rank holds the whole DiT and the whole LoRA state, and gathers nothing.
    assert got["DiT weights"].gb == pytest.approx(20_430_401_088 * 2 / GB)
    assert got["optimizer state"].gb == pytest.approx(2 * 64 * 6_635_520 * 4 / GB)


def test_a_full_fine_tune_counts_float32_master_weights_and_its_reference():
    recipe = apply_overrides(
        preset("ocr-sd35"), {"lora_target": "full", "kl_beta": 0.04, "num_gpus": 8}
    )
    got = items(memory_plan(recipe))
    params, buffers = 2_243_171_520, 226_492_416
    # The float32 weights, their gradients and AdamW's moments are sharded over 8 ranks; what
    # stays in bf16 is SD3's position table and two gathered blocks of 101 506 944 weights.
    assert got["trainable weights"].gb == pytest.approx(params * 4 / 8 / GB)
    assert got["optimizer state"].gb == pytest.approx(params * 8 / 8 / GB)
    assert got["DiT weights"].gb == pytest.approx((buffers * 2 + 2 * 101_506_944 * 2) / GB)
    assert got["reference model"].gb == pytest.approx(params * 2 / 8 / GB)


def test_a_full_fine_tune_on_one_gpu_keeps_autocasts_weight_copies():
    recipe = apply_overrides(preset("ocr-sd35"), {"lora_target": "full", "num_gpus": 1})
    on = items(memory_plan(recipe))["training activations"].gb
    off = items(memory_plan(apply_overrides(recipe, {"gradient_checkpointing": False})))
    # A tile of 9 x 2 rows x 1357 tokens x 1536 wide; full-fine-tune blocks keep 59 bytes (80
    # with the second attention: 13 of the 24 blocks). Without checkpointing autocast's bf16
    # copy of every float32 weight is kept too; with it, one block's (101 506 944 weights).
    per_row = 1357 * 1536
    kept_off = 18 * per_row * (13 * 80 + 11 * 59 + 10) + 2_243_171_520 * 2
    kept_on = 18 * per_row * (24 * 2 + 80 + 10) + 101_506_944 * 2
    assert off["training activations"].gb == pytest.approx(kept_off / GB)
    assert on == pytest.approx(kept_on / GB)


def test_model_path_configs_replace_the_shipped_ones(tmp_path):
    directory = tiny_pipelines.save_sd3(tmp_path / "sd3")
    recipe = apply_overrides(preset("ocr-sd35"), {"model.path": str(directory)})
    arch = recipe_architecture(recipe)
    assert arch.source == str(directory.resolve())
    plan = memory_plan(recipe, arch)
    assert items(plan)["DiT weights"].gb < 0.01 and plan.architecture == "sd3"
    # A path this machine cannot see falls back to the family's published configs.
    elsewhere = apply_overrides(preset("ocr-sd35"), {"model.path": str(tmp_path / "absent")})
    assert recipe_architecture(elsewhere).name == "sd3.5-medium"


# The activation constants, measured again: one and two blocks of each class at width 256 in
# bf16 under autocast, with LoRA adapters on a frozen base; the difference is one block.
BF16 = torch.bfloat16


def _saved_bytes(module, forward):
    """Bytes of the tensors autograd keeps for the backward, each storage once, weights not."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast("cpu", dtype=BF16),
    ):
        forward()
    return sum(kept.values())


def _trainable(module, lora):
    from peft import LoraConfig

    from engine.policy import ATTENTION_MODULES, MLP_MODULES

    module = module.to(BF16).requires_grad_(not lora)
    if lora:
        targets = [
            name
            for name in ATTENTION_MODULES + MLP_MODULES
            if any(n.endswith("." + name) for n, _ in module.named_modules())
        ]
        module.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        # float32 adapters, as engine.policy makes them. A full fine-tune's weights stay bf16
        # here: the plan counts autocast's copies of float32 master weights on their own.
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    return module


def _qwen(blocks, lora, checkpointing=False):
    torch.manual_seed(0)
    dit = _trainable(
        QwenImageTransformer2DModel(
            num_layers=blocks,
            num_attention_heads=2,
            attention_head_dim=128,
            joint_attention_dim=64,
            in_channels=64,
            out_channels=16,
            axes_dims_rope=(16, 56, 56),
        ),
        lora,
    )
    if checkpointing:
        dit.enable_gradient_checkpointing()
    x, text = torch.randn(2, 1024, 64, dtype=BF16), torch.randn(2, 256, 64, dtype=BF16)
    forward = lambda: dit(  # noqa: E731
        hidden_states=x, timestep=torch.full((2,), 0.5, dtype=BF16), encoder_hidden_states=text,
        encoder_hidden_states_mask=torch.ones(2, 256, dtype=torch.long),
        img_shapes=[[(1, 32, 32)]] * 2, return_dict=False,
    )  # fmt: skip
    return _saved_bytes(dit, forward), 2 * 1280 * 256


def _sd3(blocks, lora, dual=False):
    torch.manual_seed(0)
    dit = _trainable(
        SD3Transformer2DModel(
            num_layers=blocks,
            num_attention_heads=4,
            attention_head_dim=64,
            joint_attention_dim=64,
            caption_projection_dim=256,
            pooled_projection_dim=32,
            in_channels=16,
            out_channels=16,
            sample_size=64,
            pos_embed_max_size=32,
            qk_norm="rms_norm",
            dual_attention_layers=tuple(range(blocks)) if dual else (),
        ),
        lora,
    )
    x, text = torch.randn(2, 16, 64, 64, dtype=BF16), torch.randn(2, 333, 64, dtype=BF16)
    forward = lambda: dit(  # noqa: E731
        hidden_states=x, timestep=torch.full((2,), 500.0, dtype=BF16),
        encoder_hidden_states=text, pooled_projections=torch.randn(2, 32, dtype=BF16),
        return_dict=False,
    )  # fmt: skip
    return _saved_bytes(dit, forward), 2 * 1357 * 256


def _flux(double, single, lora):
    torch.manual_seed(0)
    dit = _trainable(
        FluxTransformer2DModel(
            num_layers=double,
            num_single_layers=single,
            num_attention_heads=2,
            attention_head_dim=128,
            joint_attention_dim=64,
            pooled_projection_dim=32,
            in_channels=64,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ),
        lora,
    )
    x, text = torch.randn(2, 1024, 64, dtype=BF16), torch.randn(2, 512, 64, dtype=BF16)
    forward = lambda: dit(  # noqa: E731
        hidden_states=x, timestep=torch.full((2,), 0.5, dtype=BF16),
        guidance=torch.full((2,), 3.5), encoder_hidden_states=text,
        pooled_projections=torch.randn(2, 32, dtype=BF16), txt_ids=torch.zeros(512, 3),
        img_ids=torch.zeros(1024, 3), return_dict=False,
    )  # fmt: skip
    return _saved_bytes(dit, forward), 2 * 1536 * 256


BUILDS = {
    "QwenImageTransformerBlock": lambda n, lora: _qwen(n, lora),
    "JointTransformerBlock": lambda n, lora: _sd3(n, lora),
    "JointTransformerBlock+dual": lambda n, lora: _sd3(n, lora, dual=True),
    "FluxTransformerBlock": lambda n, lora: _flux(n, 0, lora),
    # One double block in both builds: the difference is one single block.
    "FluxSingleTransformerBlock": lambda n, lora: _flux(1, n, lora),
}


@pytest.mark.parametrize("kind", list(SAVED_PER_BLOCK))
def test_saved_activations_per_block_match_the_plan(kind):
    lora_constant, full_constant = SAVED_PER_BLOCK[kind]
    for lora, constant in ((True, lora_constant), (False, full_constant)):
        one, per_unit = BUILDS[kind](1, lora)
        two, _ = BUILDS[kind](2, lora)
        assert (two - one) / per_unit == pytest.approx(constant, rel=0.05), (kind, lora)


def test_checkpointed_blocks_keep_only_their_input():
    one, per_unit = _qwen(1, lora=True, checkpointing=True)
    three, _ = _qwen(3, lora=True, checkpointing=True)
    assert (three - one) / 2 / per_unit == pytest.approx(SAVED_PER_CHECKPOINTED_BLOCK, rel=0.05)
    # What stays outside the blocks is within the plan's allowance.
    assert one / per_unit - SAVED_PER_CHECKPOINTED_BLOCK <= SAVED_OUTSIDE_BLOCKS
