"""Model families: what recipe checks and layout arithmetic need to know of each architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: How a family applies guidance, which decides how many DiT rows a denoising step costs:
#: ``cfg`` batches an unconditional row beside each conditional one when ``guidance_scale > 1``
#: (SD3/SD3.5); ``true-cfg`` runs a separate negative-prompt forward when ``true_cfg_scale > 1``
#: (Qwen-Image); ``embedded`` feeds ``guidance_scale`` to the DiT as an input and costs nothing
#: extra (FLUX.1-dev).
GuidanceKind = Literal["cfg", "true-cfg", "embedded"]


@dataclass(frozen=True)
class ModelFamily:
    """A text-to-image architecture.

    An image side must be a multiple of ``resolution_factor``: the VAE shrinks it by
    ``vae_scale`` and the DiT then cuts the latent into ``patch_size`` x ``patch_size`` patches.
    """

    name: str
    vae_scale: int
    patch_size: int
    guidance: GuidanceKind

    @property
    def resolution_factor(self) -> int:
        """Pixels per DiT token along one side."""
        return self.vae_scale * self.patch_size


#: Every family a recipe may name. The built-in tiny model works in pixel space (no VAE) with
#: 4 x 4 patches, so its images are multiples of 4 px: 32 x 32 is 64 tokens, small enough to
#: train on a CPU.
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("tiny", vae_scale=1, patch_size=4, guidance="cfg"),
        ModelFamily("sd3", vae_scale=8, patch_size=2, guidance="cfg"),
        ModelFamily("qwen-image", vae_scale=8, patch_size=2, guidance="true-cfg"),
        ModelFamily("flux", vae_scale=8, patch_size=2, guidance="embedded"),
    )
}
