"""Tiny random-weight pipelines of each family, built in code and saved in the real format.

Sizes are the smallest the diffusers and transformers classes accept; tokenizers are character
level, built from a vocabulary made here, so nothing comes from a hub.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

# Printable ASCII covers the prompts and Qwen-Image's template.
_CHARS = [chr(c) for c in range(33, 127)]


def _clip_tokenizer() -> CLIPTokenizer:
    specials = ["<|startoftext|>", "<|endoftext|>"]
    words = [*specials, *_CHARS, *(c + "</w>" for c in _CHARS)]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=77)


def _clip(with_projection: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=2 + 2 * len(_CHARS),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _t5(d_model: int) -> tuple[T5EncoderModel, T5TokenizerFast]:
    pieces = ["<pad>", "</s>", "<unk>", "\u2581", *_CHARS]
    tokenizer = T5TokenizerFast(
        vocab=[(p, -1.0) for p in pieces], extra_ids=0, model_max_length=512
    )
    torch.manual_seed(3)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
    )
    return T5EncoderModel(config), tokenizer


def _vae(latent_channels: int) -> AutoencoderKL:
    torch.manual_seed(4)
    # Four blocks halve the image three times: the real 8x downscale.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        shift_factor=0.06,
        scaling_factor=1.5,
    )


def save_sd3(directory: Path) -> Path:
    """A tiny ``StableDiffusion3Pipeline`` (two CLIPs, T5, 4-channel VAE) in ``directory``."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,
        caption_projection_dim=16,
        pooled_projection_dim=64,
        pos_embed_max_size=8,
    )
    text_encoder_3, tokenizer_3 = _t5(64)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4),
        text_encoder=_clip(True, 1),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=_clip(True, 2),
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipeline.save_pretrained(directory)
    return directory


def save_flux(directory: Path) -> Path:
    """A tiny guidance-distilled ``FluxPipeline`` in ``directory``."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    text_encoder_2, tokenizer_2 = _t5(32)
    pipeline = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=_vae(4),
        text_encoder=_clip(False, 1),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    pipeline.save_pretrained(directory)
    return directory


def save_qwen_image(directory: Path) -> Path:
    """A tiny ``QwenImagePipeline`` (one-layer Qwen2.5-VL, 4-channel video VAE) in ``directory``."""
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    words = ["<|endoftext|>", *_CHARS, "\u0120", "\u010a"]
    tokenizer = Qwen2Tokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[])
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(words),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": 0,
            "eos_token_id": 0,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 32,
        },
    )
    torch.manual_seed(1)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    torch.manual_seed(2)
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    pipeline = QwenImagePipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    pipeline.save_pretrained(directory)
    return directory
