"""Sora-style diffusion transformer on spacetime patches.

(B, C, F, H, W) latents are cut into (pt, ph, pw) patches, one token each: (B, F/pt, N, hidden)
with N = (H/ph)(W/pw). Blocks are DiT blocks (adaLN modulation from the timestep, attention,
cross-attention to the text, MLP) whose attention is either full spatio-temporal
(``FrameAttention("all")``: every token attends to all F*N tokens) or alternates spatial
(``FrameAttention("self")``) and temporal (``TemporalAttention``) blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from .. import reference
from ..samplers import ddim_sample
from ..validation import check_tensor, fail
from .common import ModelSize, guided_sampler
from .layers import CrossAttention, FeedForward, TimestepEmbedding, timestep_features


@dataclass(frozen=True)
class DiTConfig:
    hidden: int = 64
    depth: int = 2
    heads: int = 2
    patch: Tuple[int, int, int] = (1, 2, 2)
    attention: str = "full"  # "full" | "alternating"
    in_channels: int = 4
    context_dim: int = 32

    @property
    def spatial_multiple(self) -> int:
        return self.patch[1]


class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, context_dim: int, attention: str):
        super().__init__()
        dim_head = hidden // heads
        if attention == "temporal":
            self.attn = reference.TemporalAttention(hidden, heads, dim_head, rel_pos_bias=False)
        else:
            self.attn = reference.FrameAttention(hidden, heads, dim_head, frames={"spatial": "self"}.get(attention, attention))
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.cross = CrossAttention(hidden, context_dim, heads, dim_head)
        self.norm3 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(hidden)
        self.modulation = nn.Linear(hidden, 6 * hidden)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(nn.functional.silu(temb))[:, None, None].chunk(6, -1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        x = x + self.cross(self.norm2(x), context)
        return x + gate2 * self.mlp(self.norm3(x) * (1 + scale2) + shift2)


class VideoDiT(nn.Module):
    """eps = dit(x (B, C, F, H, W), t (B,), context (B, L, context_dim)); F, H, W divisible by the patch."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        c = self.config = config
        self.patchify = nn.Conv3d(c.in_channels, c.hidden, c.patch, stride=c.patch)
        self.time_embed = TimestepEmbedding(c.hidden, c.hidden)
        kinds = ["all"] * c.depth if c.attention == "full" else ["spatial", "temporal"] * (c.depth // 2) + ["spatial"] * (c.depth % 2)
        if c.attention not in ("full", "alternating"):
            raise ValueError(f"DiTConfig: attention {c.attention!r}; expected 'full' or 'alternating'")
        self.blocks = nn.ModuleList(DiTBlock(c.hidden, c.heads, c.context_dim, k) for k in kinds)
        self.norm_out = nn.LayerNorm(c.hidden, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Linear(c.hidden, 2 * c.hidden)
        self.proj_out = nn.Linear(c.hidden, c.in_channels * math.prod(c.patch))

    def check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        check_tensor(name, "x", x, ndim=5, layout="(B, C, F, H, W)", dtypes=())
        if x.shape[1] != self.config.in_channels:
            fail(name, "x", f"has {x.shape[1]} channels", f"{self.config.in_channels} latent channels")
        if any(s % p for s, p in zip(x.shape[2:], self.config.patch)):
            fail(name, "x", f"has (F, H, W) = {tuple(x.shape[2:])}", f"each divisible by the patch {self.config.patch}")

    def position_embedding(self, frames: int, tokens: int, device) -> torch.Tensor:
        """Sinusoidal (F, N, hidden): frame index plus token index, computed for any size."""
        h = self.config.hidden
        pe_f = timestep_features(torch.arange(frames, device=device), h)
        pe_n = timestep_features(torch.arange(tokens, device=device), h)
        return pe_f[:, None] + pe_n[None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check_input(x)
        b, c, f, hh, ww = x.shape
        pt, ph, pw = self.config.patch
        tokens = self.patchify(x)  # (B, hidden, F', H', W')
        gf, gh, gw = tokens.shape[2:]
        h = tokens.flatten(3).transpose(1, 3).transpose(1, 2)  # (B, F', N, hidden)
        h = h + self.position_embedding(gf, gh * gw, x.device).to(h.dtype)
        temb = self.time_embed(t.expand(b))
        for block in self.blocks:
            h = block(h, temb, context)
        shift, scale = self.modulation_out(nn.functional.silu(temb))[:, None, None].chunk(2, -1)
        h = self.proj_out(self.norm_out(h) * (1 + scale) + shift)  # (B, F', N, C*pt*ph*pw)
        h = h.reshape(b, gf, gh, gw, c, pt, ph, pw)
        return h.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, f, hh, ww)


def _sizes(attention: str) -> dict:
    small = DiTConfig(hidden=64, depth=2, heads=2, attention=attention)
    return {
        "tiny": ModelSize(DiTConfig(hidden=32, depth=2, heads=2, attention=attention), frames=3, height=8, width=8,
                          steps=2),
        "cpu": ModelSize(small, frames=8, height=16, width=16, steps=5),
        # DiT-XL width and depth on 16 x 40 x 64 latents: 16 x 640 spacetime tokens.
        "gpu": ModelSize(DiTConfig(hidden=1152, depth=28, heads=16, attention=attention, context_dim=768),
                         frames=16, height=40, width=64, steps=20, context_len=77),
    }


SIZES = _sizes("full")
SIZES_ALTERNATING = _sizes("alternating")


def build(config: DiTConfig) -> VideoDiT:
    return VideoDiT(config)


sample = guided_sampler(ddim_sample)
