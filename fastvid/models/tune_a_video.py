"""Tune-A-Video (Wu et al. 2023): a text-to-image U-Net inflated to video (1x3x3 convs) whose
self-attention becomes sparse-causal ST-attention (frame i attends to frames 0 and i-1), followed
by cross-attention to the text and a temporal attention. Its inference starts from the DDIM
inversion of the source video, then samples with DDIM and classifier-free guidance."""
from __future__ import annotations

from typing import Optional

import torch

from ..samplers import ddim_invert, ddim_sample, randn
from .common import ModelSize, make_inputs, unet_sizes
from .unet import VideoUNet

BLOCK = ("sparse_causal", "cross", "temporal")
SIZES = unet_sizes(BLOCK, "inflated")


build = VideoUNet


def source_video(shape, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """A stand-in for the encoded source clip: one random frame drifting sideways, one latent pixel per frame."""
    first = randn(shape[:2] + (1,) + tuple(shape[3:]), generator, device, dtype)
    return torch.cat([torch.roll(first, shifts=k, dims=-1) for k in range(shape[2])], dim=2)


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None) -> torch.Tensor:
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype)
    video = source_video(inp.noise.shape, inp.generator, device, dtype)
    x_T = ddim_invert(model, video, steps=size.steps, context=inp.context, progress=progress)
    return ddim_sample(model, x_T, steps=size.steps, context=inp.context, uncond_context=inp.uncond_context,
                       guidance_scale=size.guidance_scale, generator=inp.generator, progress=progress)
