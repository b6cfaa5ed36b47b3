"""The ready-to-paste Python that loads a run's exported weights (``engine.export.weights``).

It depends on the recipe alone, so the run page shows it before anything is exported. SD3.5,
FLUX and Qwen-Image load an adapter with diffusers' ``pipe.load_lora_weights(folder)`` (the
LoRA loader mixin of each pipeline) and full weights with ``pipe.transformer.load_state_dict``;
the tiny model has no diffusers pipeline and loads with the engine's own loader.
"""

from __future__ import annotations

from pathlib import Path

from engine.recipe import Recipe

#: Where the export puts an adapter, full transformer weights, and the whole tiny model.
ADAPTER_DIR = "adapter"
FULL_WEIGHTS = "transformer.safetensors"
MODEL_DIR = "model"
#: The diffusers pipeline class of each family.
PIPELINES = {
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "qwen-image": "QwenImagePipeline",
}
#: What the snippet draws when the recipe names no prompt (a dataset run).
FALLBACK_PROMPT = "a photo of a cat"


def loading_snippet(recipe: Recipe, folder: str, *, base_model: str | Path | None = None) -> str:
    """Python that loads the export unpacked at ``folder`` and saves one image as sample.png.

    ``base_model`` is the model directory the run trained (its ``model.path`` when empty);
    without one the snippet says where to put it.
    """
    if recipe.model.family == "tiny":
        return _tiny(recipe, folder)
    return _pipeline(recipe, folder, base_model)


def _prompt(recipe: Recipe) -> str:
    prompts = recipe.data.eval_prompts or recipe.data.prompts
    return prompts[0] if prompts else FALLBACK_PROMPT


def _tiny(recipe: Recipe, folder: str) -> str:
    sampler = recipe.sampler
    return (
        "from PIL import Image\n\n"
        "from engine.models.loading import load_model\n"
        "from engine.rollout.in_process import InProcessBackend\n"
        "from engine.rollout.types import RolloutRequest\n\n"
        f"FOLDER = {folder!r}  # where this export was unzipped\n"
        f'model = load_model("tiny", f"{{FOLDER}}/{MODEL_DIR}")\n'
        "request = RolloutRequest(\n"
        f"    prompt={_prompt(recipe)!r},\n"
        "    seeds=(0,),\n"
        f"    height={sampler.height},\n"
        f"    width={sampler.width},\n"
        f"    num_inference_steps={sampler.eval_num_inference_steps},\n"
        f"    guidance_scale={sampler.guidance_scale!r},\n"
        ")\n"
        "image = InProcessBackend(model).generate(request).images[0]\n"
        'Image.fromarray(image).save("sample.png")\n'
    )


def _pipeline(recipe: Recipe, folder: str, base_model: str | Path | None) -> str:
    family, sampler = recipe.model.family, recipe.sampler
    pipeline = PIPELINES[family]
    base = (
        f"BASE = {str(base_model)!r}  # the model the run trained\n"
        if base_model
        else f'BASE = "/path/to/{family}"  # the diffusers directory of the model the run trained\n'
    )
    if recipe.model.lora_target == "full":
        imports = (
            "import torch\nfrom diffusers import {p}\nfrom safetensors.torch import load_file\n"
        )
        load = (
            "missing, unexpected = pipe.transformer.load_state_dict(\n"
            f'    load_file(f"{{FOLDER}}/{FULL_WEIGHTS}"), strict=False\n'
            ")\n"
            'assert not unexpected, f"not weights of this transformer: {unexpected[:3]}"\n'
        )
    else:
        imports = "import torch\nfrom diffusers import {p}\n"
        load = f'pipe.load_lora_weights(f"{{FOLDER}}/{ADAPTER_DIR}", adapter_name="groupwise")\n'
    guidance = (
        f'    negative_prompt=" ",\n    true_cfg_scale={sampler.true_cfg_scale!r},\n'
        if family == "qwen-image"
        else f"    guidance_scale={sampler.guidance_scale!r},\n"
    )
    return (
        imports.format(p=pipeline)
        + "\n"
        + f"FOLDER = {folder!r}  # where this export was unzipped\n"
        + base
        + f'pipe = {pipeline}.from_pretrained(BASE, torch_dtype=torch.bfloat16).to("cuda")\n'
        + load
        + "image = pipe(\n"
        + f"    {_prompt(recipe)!r},\n"
        + f"    height={sampler.height},\n"
        + f"    width={sampler.width},\n"
        + f"    num_inference_steps={sampler.eval_num_inference_steps},\n"
        + guidance
        + '    generator=torch.Generator("cuda").manual_seed(0),\n'
        + ").images[0]\n"
        + 'image.save("sample.png")\n'
    )
