"""VDM 3D U-Net (Ho et al. 2022): 1x3x3 inflated convs; every block runs spatial attention, then
temporal attention with a T5 relative-position bias, then cross-attention to the text. Sampled
with ancestral DDPM and classifier-free guidance."""
from __future__ import annotations

from typing import Optional

import torch

from ..samplers import ddpm_sample
from .common import ModelSize, guided_run, unet_sizes
from .unet import VideoUNet

BLOCK = ("spatial", "temporal_bias", "cross")
SIZES = unet_sizes(BLOCK, "inflated")


build = VideoUNet


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None) -> torch.Tensor:
    return guided_run(ddpm_sample, model, size, seed=seed, device=device, dtype=dtype, progress=progress)
