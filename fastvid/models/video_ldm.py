"""Video LDM (Blattmann et al. 2023, "Align your Latents"): an image latent U-Net whose spatial layers
are frozen, with temporal alignment layers after them: a temporal residual block ((3, 1, 1) convs,
``reference.TemporalResBlock``) after every spatial ResBlock and a temporal transformer (temporal
attention) after every spatial transformer, each mixed as alpha * spatial + (1 - alpha) * temporal
with a learned alpha = sigmoid(parameter) per layer. The latents are decoded by the temporally
fine-tuned VAE decoder: spatial conv blocks each followed by a temporal residual block (through
``fastvid.temporal_conv`` once patched). Only the temporal parameters train.

Two modes share the U-Net, whose input carries masked conditioning frames and their mask
(``cond_channels = in_channels + 1``): generation (no frame given) and frame interpolation (every
``stride``-th latent frame given, the frames between generated). Sampled with DDIM and
classifier-free guidance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import nn

from .. import reference
from ..samplers import ddim_sample, randn
from ..validation import fail
from .common import ModelSize, guided_run, make_inputs, with_condition
from .layers import SpatioTemporalResBlock, SpatioTemporalTransformer, Upsample, spatial_conv3d
from .unet import UNetConfig, VideoUNet

TEMPORAL = ("temporal_res_block", "temporal_block", "time_pos_embed", "time_mixer", "temporal")
MODES = ("generate", "interpolate")


@dataclass(frozen=True)
class VideoLDMConfig(UNetConfig):
    cond_channels: int = 5  # masked conditioning latents (4) and their mask (1)
    decoder_channels: Tuple[int, ...] = (32, 16)  # the decoder upsamples by 2 ** (len - 1)
    out_channels: int = 3


class VideoLDMUNet(VideoUNet):
    def res_block(self, dim: int, dim_out: int, temb_dim: int) -> nn.Module:
        return SpatioTemporalResBlock(dim, dim_out, temb_dim, self.config.groups)

    def attention_block(self, dim: int) -> nn.Module:
        c = self.config
        return SpatioTemporalTransformer(dim, c.heads, c.context_dim, c.groups)


class DecoderBlock(nn.Module):
    """GroupNorm-SiLU-conv twice per frame with a skip, then a temporal residual block."""

    def __init__(self, dim: int, dim_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim, eps=1e-6)
        self.conv1 = spatial_conv3d(dim, dim_out)
        self.norm2 = nn.GroupNorm(groups, dim_out, eps=1e-6)
        self.conv2 = spatial_conv3d(dim_out, dim_out)
        self.skip = nn.Identity() if dim == dim_out else nn.Conv3d(dim, dim_out, 1)
        self.temporal = reference.TemporalResBlock(dim_out, None, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.skip(x) + self.conv2(Fn.silu(self.norm2(self.conv1(Fn.silu(self.norm1(x))))))
        return self.temporal(h)


class TemporalDecoder(nn.Module):
    """(B, C, F, h, w) latents -> (B, 3, F, h * 2 ** (levels - 1), w * ...) frames."""

    def __init__(self, config: VideoLDMConfig):
        super().__init__()
        ch = config.decoder_channels
        self.conv_in = spatial_conv3d(config.in_channels, ch[0])
        self.blocks = nn.ModuleList()
        for i, (dim, dim_out) in enumerate(zip(ch, ch[1:] + ch[-1:])):
            self.blocks.append(DecoderBlock(dim, dim_out, config.groups))
            self.blocks.append(Upsample(dim_out) if i < len(ch) - 1 else nn.Identity())
        self.norm_out = nn.GroupNorm(config.groups, ch[-1], eps=1e-6)
        self.conv_out = spatial_conv3d(ch[-1], config.out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.blocks:
            h = block(h)
        return self.conv_out(Fn.silu(self.norm_out(h)))


class VideoLDM(nn.Module):
    """The U-Net (``forward``: eps of x ++ conditioning) and the temporal ``decoder``; the spatial
    parameters of both are frozen."""

    def __init__(self, config: VideoLDMConfig):
        super().__init__()
        self.config = config
        self.unet = VideoLDMUNet(config)
        self.decoder = TemporalDecoder(config)
        for name, p in self.named_parameters():
            p.requires_grad_(is_temporal(name))

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.unet(x, t, context)


def is_temporal(parameter_name: str) -> bool:
    return any(part in TEMPORAL for part in parameter_name.split("."))


def _sizes() -> dict:
    spec = ("spatial", "cross")
    tiny = VideoLDMConfig(channels=(16, 32), attention_levels=(False, True), block_spec=spec, groups=8)
    small = VideoLDMConfig(channels=(32, 64), attention_levels=(True, True), block_spec=spec, groups=8)
    # Stable-Diffusion-sized U-Net and VAE decoder: 16 frames of 40 x 64 latents -> 320 x 512 frames.
    gpu = VideoLDMConfig(channels=(320, 640, 1280, 1280), attention_levels=(True, True, True, False),
                         layers_per_block=2, block_spec=spec, heads=8, context_dim=768, groups=32,
                         decoder_channels=(512, 512, 256, 128))
    return {
        "tiny": ModelSize(tiny, frames=4, height=8, width=8, steps=2),
        "cpu": ModelSize(small, frames=4, height=16, width=16, steps=3),
        "gpu": ModelSize(gpu, frames=16, height=40, width=64, steps=20, context_len=77),
    }


SIZES = _sizes()


build = VideoLDM


def interpolation_condition(frames_given: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, C + 1, F, H, W): the latents of every ``stride``-th frame (others zero) and the mask (1 = given)."""
    mask = torch.zeros_like(frames_given[:, :1])
    mask[:, :, ::stride] = 1
    return torch.cat([frames_given * mask, mask], dim=1)


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None, mode: str = "generate", stride: int = 3,
           decode: bool = True) -> torch.Tensor:
    """Latents (``decode=False``) or decoded frames (B, 3, F, H', W'). ``mode="interpolate"``
    conditions on every ``stride``-th frame of a seeded stand-in clip and generates the rest."""
    if mode not in MODES:
        fail("video_ldm.sample", "mode", f"is {mode!r}", f"one of {MODES}")
    if mode == "interpolate" and not 2 <= stride < size.frames:
        fail("video_ldm.sample", "stride", f"is {stride} for {size.frames} frames", "2 <= stride < frames")
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype)
    b, c, f, h, w = inp.noise.shape
    if mode == "interpolate":
        condition = interpolation_condition(randn((b, c, f, h, w), inp.generator, device, dtype), stride)
    else:
        condition = torch.zeros(b, c + 1, f, h, w, device=device, dtype=dtype)
    latents = guided_run(ddim_sample, with_condition(model, condition), size, seed=seed, device=device, dtype=dtype,
                         progress=progress, inputs=inp)
    return model.decoder(latents) if decode else latents
