"""VDM 3D U-Net (Ho et al. 2022): 1x3x3 inflated convs; every block runs spatial attention, then
temporal attention with a T5 relative-position bias, then cross-attention to the text. Sampled
with ancestral DDPM and classifier-free guidance."""
from __future__ import annotations

from ..samplers import ddpm_sample
from .common import guided_sampler, unet_sizes
from .unet import VideoUNet

BLOCK = ("spatial", "temporal_bias", "cross")
SIZES = unet_sizes(BLOCK, "inflated")


build = VideoUNet


sample = guided_sampler(ddpm_sample)
