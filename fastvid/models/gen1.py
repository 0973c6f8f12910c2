"""Gen-1 (Esser et al. 2023): a latent video U-Net with a temporal conv after every spatial conv
(pseudo-3D convs) and a temporal attention after every spatial attention, conditioned on

- structure: a per-frame single-channel map (depth, or any structure map), blurred by the
  structure-fidelity control t_s, downsampled to the latent size and concatenated to the latents;
- content: an image embedding (CLIP's in the paper), through cross-attention.

Sampled with DDIM and classifier-free guidance on the content (the unconditional half sees a zero
embedding). The paper's t_s obscures the structure by a blurring process; here t_s rounds of a
3 x 3 binomial blur (heat diffusion on the map) stand in for it, t_s = 0 leaving the map as is.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as Fn

from ..samplers import ddim_sample, randn
from ..validation import check_tensor, fail
from .common import ModelSize, guided_run, make_inputs, with_condition
from .unet import UNetConfig, VideoUNet

BLOCK = ("spatial", "temporal", "cross")
VAE_FACTOR = 8  # structure maps come at pixel resolution: 8 x the latents


def _sizes() -> dict:
    def config(channels, attention, **kw):
        return UNetConfig(channels=channels, attention_levels=attention, block_spec=BLOCK, conv="pseudo3d",
                          cond_channels=1, **kw)

    return {
        "tiny": ModelSize(config((16, 32), (False, True)), frames=3, height=8, width=8, steps=2, context_len=1),
        "cpu": ModelSize(config((32, 64), (True, True)), frames=4, height=16, width=16, steps=3, context_len=1),
        "gpu": ModelSize(config((320, 640, 1280, 1280), (True, True, True, False), layers_per_block=2, heads=8,
                                context_dim=768, groups=32), frames=16, height=40, width=64, steps=20, context_len=1),
    }


SIZES = _sizes()


build = VideoUNet


def blur_structure(structure: torch.Tensor, t_s: int) -> torch.Tensor:
    """t_s rounds of a separable [1, 2, 1] / 4 blur per frame (replicate padding) on (B, 1, F, H, W)."""
    if isinstance(t_s, bool) or not isinstance(t_s, int) or t_s < 0:
        fail("gen1", "t_s", f"is {t_s!r}", "a non-negative integer (0: the structure map unblurred)")
    kernel = torch.tensor([1.0, 2.0, 1.0], device=structure.device, dtype=structure.dtype) / 4
    b, c, f, h, w = structure.shape
    x = structure.transpose(1, 2).reshape(b * f, c, h, w)
    for _ in range(t_s):
        x = Fn.conv2d(Fn.pad(x, (1, 1, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 3))
        x = Fn.conv2d(Fn.pad(x, (0, 0, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 1))
    return x.reshape(b, f, c, h, w).transpose(1, 2)


def structure_condition(structure: torch.Tensor, size: ModelSize, t_s: int = 0) -> torch.Tensor:
    """(B, 1, F, H * k, W * k) structure maps (any integer k >= 1) -> blurred by t_s, area-downsampled
    to the (B, 1, F, H, W) latent grid."""
    check_tensor("gen1", "structure", structure, ndim=5, layout="(B, 1, F, H, W)", dtypes=())
    b, c, f, h, w = structure.shape
    if (b, c, f) != (size.batch, 1, size.frames) or h % size.height or w % size.width or h < size.height \
            or w < size.width or h // size.height != w // size.width:
        fail("gen1", "structure", f"has shape {tuple(structure.shape)}",
             f"({size.batch}, 1, {size.frames}, k * {size.height}, k * {size.width}) for an integer k >= 1")
    return Fn.avg_pool3d(blur_structure(structure, t_s), (1, h // size.height, w // size.width))


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None, structure: Optional[torch.Tensor] = None, t_s: int = 0) -> torch.Tensor:
    """``structure`` (B, 1, F, H * k, W * k) defaults to a seeded smooth stand-in depth video at 8 x the latents."""
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype)
    if structure is None:
        coarse = randn((size.batch, 1, size.frames, size.height, size.width), inp.generator, device, dtype)
        structure = Fn.interpolate(coarse, scale_factor=(1, VAE_FACTOR, VAE_FACTOR), mode="trilinear")
    condition = structure_condition(structure.to(device=device, dtype=dtype), size, t_s)
    inp.uncond_context = torch.zeros_like(inp.context)
    return guided_run(ddim_sample, with_condition(model, condition), size, seed=seed, device=device, dtype=dtype,
                      progress=progress, inputs=inp)
