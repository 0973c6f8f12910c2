"""Make-A-Video (Singer et al. 2022): a U-Net of pseudo-3D convolutions (2D conv per frame, then a
1D conv over frames) and pseudo-3D attention (spatial attention, then temporal attention), with
cross-attention to the text. Sampled with DDIM and classifier-free guidance."""
from __future__ import annotations

from ..samplers import ddim_sample
from .common import guided_sampler, unet_sizes
from .unet import VideoUNet

BLOCK = ("spatial", "temporal", "cross")
SIZES = unet_sizes(BLOCK, "pseudo3d")


build = VideoUNet


sample = guided_sampler(ddim_sample)
