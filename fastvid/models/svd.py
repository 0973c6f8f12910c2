"""Stable Video Diffusion (Blattmann et al. 2023): an image-to-video U-Net with the layout of diffusers'
``UNetSpatioTemporalConditionModel``: every ResNet block is a spatial block, then a temporal residual
block (``reference.TemporalResBlock``, (3, 1, 1) convs), mixed by an AlphaBlender; every transformer is
a spatial block (self-attention, cross-attention, feed-forward), then a temporal block (temporal
attention, cross-attention, feed-forward) on the tokens plus a frame-position embedding, mixed the same
way. Conditioning: the (noise-augmented) image latent concatenated to every frame, the image embedding
for cross-attention, and fps / motion bucket / noise-augmentation micro-conditioning added to the
timestep embedding. Sampled with the EDM sampler: Karras sigmas, Euler steps, v-prediction
preconditioning, and classifier-free guidance rising linearly over the frames (1 to ``guidance_scale``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..samplers import euler_sample, karras_sigmas, preconditioning, randn
from ..validation import check_tensor, fail
from .common import ModelSize, make_inputs
from .layers import SpatioTemporalResBlock, SpatioTemporalTransformer, timestep_features
from .unet import UNetConfig, VideoUNet

SIGMA_MIN, SIGMA_MAX = 0.002, 700.0


@dataclass(frozen=True)
class SVDConfig(UNetConfig):
    cond_channels: int = 4  # the image latent
    addition_time_embed_dim: int = 8  # per micro-conditioning value (fps, motion bucket, noise augmentation)


class SVDUNet(VideoUNet):
    """v = unet(x (B, 2C, F, H, W): noisy latents (times c_in) ++ image latents, c_noise (B,),
    image embedding (B, 1, context_dim), added_time_ids (B, 3): fps, motion bucket, noise augmentation)."""

    def __init__(self, config: SVDConfig):
        super().__init__(config)
        temb_dim = 4 * config.channels[0]
        self.add_embedding = nn.Sequential(nn.Linear(3 * config.addition_time_embed_dim, temb_dim), nn.SiLU(),
                                           nn.Linear(temb_dim, temb_dim))

    def res_block(self, dim: int, dim_out: int, temb_dim: int) -> nn.Module:
        return SpatioTemporalResBlock(dim, dim_out, temb_dim, self.config.groups)

    def attention_block(self, dim: int) -> nn.Module:
        c = self.config
        return SpatioTemporalTransformer(dim, c.heads, c.context_dim, c.groups)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None,
                added_time_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check_input(x)
        b = x.shape[0]
        check_tensor(type(self).__name__, "added_time_ids", added_time_ids, ndim=2, layout="(B, 3)", dtypes=())
        if tuple(added_time_ids.shape) != (b, 3):
            fail(type(self).__name__, "added_time_ids", f"has shape {tuple(added_time_ids.shape)}",
                 f"({b}, 3): fps, motion bucket id, noise augmentation strength")
        d = self.config.addition_time_embed_dim
        micro = timestep_features(added_time_ids.flatten(), d).reshape(b, 3 * d).to(x.dtype)
        temb = self.time_embed(t.expand(b)) + self.add_embedding(micro)
        return self.denoise(x, temb, context)


def _sizes() -> dict:
    def config(channels, attention, **kw):
        return SVDConfig(channels=channels, attention_levels=attention, block_spec=(), conv="inflated", **kw)

    return {
        "tiny": ModelSize(config((16, 32), (False, True)), frames=3, height=8, width=8, steps=2, context_len=1,
                          guidance_scale=3.0),
        "cpu": ModelSize(config((32, 64), (True, True)), frames=4, height=16, width=16, steps=3, context_len=1,
                         guidance_scale=3.0),
        # SVD-XT: 14 frames at 576 x 1024 (latents 72 x 128), 25 Euler steps, CLIP image embedding 1024.
        "gpu": ModelSize(config((320, 640, 1280, 1280), (True, True, True, False), layers_per_block=2, heads=5,
                                context_dim=1024, groups=32, addition_time_embed_dim=256),
                         frames=14, height=72, width=128, steps=25, context_len=1, guidance_scale=3.0),
    }


SIZES = _sizes()


build = SVDUNet


def image_to_video_denoiser(model, image_latents: torch.Tensor, image_embedding: torch.Tensor,
                            added_time_ids: torch.Tensor, guidance: torch.Tensor, prediction: str = "v"):
    """D(x; sigma) of an SVD-like ``model(x ++ image, c_noise, embedding, added_time_ids=...)``: EDM
    preconditioning, with classifier-free guidance (unconditional half: zero image latents and embedding)
    scaled per frame by ``guidance`` (broadcastable to the latents)."""
    cond = torch.cat([torch.zeros_like(image_latents), image_latents])
    context = torch.cat([torch.zeros_like(image_embedding), image_embedding])
    ids = torch.cat([added_time_ids, added_time_ids])

    def denoised(x: torch.Tensor, sigma: float) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, prediction=prediction)
        t = torch.full((2 * x.shape[0],), c_noise, device=x.device, dtype=torch.float32)
        out = model(torch.cat([torch.cat([c_in * x] * 2), cond], dim=1), t, context, added_time_ids=ids)
        uncond, text = out.chunk(2)
        return c_skip * x + c_out * (uncond + guidance * (text - uncond))

    return denoised


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None, fps: int = 7, motion_bucket_id: int = 127,
           noise_aug_strength: float = 0.02, min_guidance_scale: float = 1.0) -> torch.Tensor:
    """Image to video from a seeded image latent and embedding (the noise-augmented image latent on every frame)."""
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype)
    b, c, f, h, w = inp.noise.shape
    image = randn((b, c, 1, h, w), inp.generator, device, dtype)
    image = image + noise_aug_strength * randn(image.shape, inp.generator, device, dtype)
    added = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]] * b, device=device, dtype=dtype)
    guidance = torch.linspace(min_guidance_scale, size.guidance_scale, f, device=device, dtype=dtype)
    denoised = image_to_video_denoiser(model, image.expand(b, c, f, h, w), inp.context, added,
                                       guidance.view(1, 1, f, 1, 1))
    sigmas = karras_sigmas(size.steps, SIGMA_MIN, SIGMA_MAX)
    return euler_sample(denoised, inp.noise * sigmas[0], sigmas, progress)
