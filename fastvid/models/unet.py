"""A configurable video U-Net (Stable-Diffusion layout, inflated to video) shared by the U-Net models.

Each model picks its convolution ("inflated" 1x3x3 or "pseudo3d") and the attention layers of
its transformer blocks (``block_spec``); everything else is the same U-Net.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import nn

from ..validation import check_tensor, fail
from .layers import Downsample, ResBlock, TimestepEmbedding, Upsample, VideoTransformer, make_conv


@dataclass(frozen=True)
class UNetConfig:
    channels: Tuple[int, ...] = (32, 64)
    attention_levels: Tuple[bool, ...] = (True, True)
    layers_per_block: int = 1
    block_spec: Tuple[str, ...] = ("spatial", "temporal_bias", "cross")
    conv: str = "inflated"
    in_channels: int = 4
    cond_channels: int = 0  # conditioning channels concatenated to the latents at the input
    prediction: str = "eps"  # what the network outputs: "eps" or "v"
    heads: int = 2
    context_dim: int = 32
    groups: int = 8

    @property
    def spatial_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)


class VideoUNet(nn.Module):
    """eps = unet(x (B, C, F, H, W), t (B,), context (B, L, context_dim)); H and W divisible by
    2 ** (levels - 1); C = in_channels + cond_channels. Subclasses change the blocks through
    :meth:`res_block` and :meth:`attention_block` and the embedding through :meth:`forward`."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        c = config
        self.config = c
        self.prediction = c.prediction
        temb_dim = 4 * c.channels[0]
        self.time_embed = TimestepEmbedding(c.channels[0], temb_dim)
        self.conv_in = make_conv(c.conv, c.in_channels + c.cond_channels, c.channels[0])

        def res(dim, dim_out):
            return self.res_block(dim, dim_out, temb_dim)

        def attn(dim, level):
            return self.attention_block(dim) if c.attention_levels[level] else nn.Identity()

        self.down = nn.ModuleList()
        skips: List[int] = [c.channels[0]]
        dim = c.channels[0]
        for level, dim_out in enumerate(c.channels):
            blocks = nn.ModuleList()
            for _ in range(c.layers_per_block):
                blocks.append(nn.ModuleList([res(dim, dim_out), attn(dim_out, level)]))
                dim = dim_out
                skips.append(dim)
            last = level == len(c.channels) - 1
            self.down.append(nn.ModuleDict({"blocks": blocks, "resample": nn.Identity() if last else Downsample(dim)}))
            if not last:
                skips.append(dim)
        self.mid = nn.ModuleList([res(dim, dim), attn(dim, len(c.channels) - 1), res(dim, dim)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(c.channels))):
            dim_out = c.channels[level]
            blocks = nn.ModuleList()
            for _ in range(c.layers_per_block + 1):
                blocks.append(nn.ModuleList([res(dim + skips.pop(), dim_out), attn(dim_out, level)]))
                dim = dim_out
            self.up.append(nn.ModuleDict({"blocks": blocks, "resample": Upsample(dim) if level else nn.Identity()}))
        self.norm_out = nn.GroupNorm(c.groups, dim, eps=1e-6)
        self.conv_out = make_conv(c.conv, dim, c.in_channels)

    def res_block(self, dim: int, dim_out: int, temb_dim: int) -> nn.Module:
        return ResBlock(dim, dim_out, temb_dim, self.config.conv, self.config.groups)

    def attention_block(self, dim: int) -> nn.Module:
        c = self.config
        return VideoTransformer(dim, c.block_spec, c.heads, dim // c.heads, c.context_dim, c.groups)

    def check_input(self, x: torch.Tensor) -> None:
        check_tensor(type(self).__name__, "x", x, ndim=5, layout="(B, C, F, H, W)", dtypes=())
        c, m = self.config, self.config.spatial_multiple
        if x.shape[1] != c.in_channels + c.cond_channels:
            what = f"{c.in_channels} latent" + (f" + {c.cond_channels} conditioning" if c.cond_channels else "")
            fail(type(self).__name__, "x", f"has {x.shape[1]} channels", f"{what} channels")
        if x.shape[-2] % m or x.shape[-1] % m:
            fail(type(self).__name__, "x", f"has latent size {tuple(x.shape[-2:])}",
                 f"height and width divisible by {m}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check_input(x)
        return self.denoise(x, self.time_embed(t.expand(x.shape[0])), context)

    def denoise(self, x: torch.Tensor, temb: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """The U-Net body on checked input, given the (B, temb_dim) embedding."""

        def run(block, h):
            res, attn = block
            h = res(h, temb)
            return h if isinstance(attn, nn.Identity) else attn(h, context)

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for block in level["blocks"]:
                h = run(block, h)
                hs.append(h)
            if not isinstance(level["resample"], nn.Identity):
                h = level["resample"](h)
                hs.append(h)
        h = run(self.mid[:2], h)
        h = self.mid[2](h, temb)
        for level in self.up:
            for block in level["blocks"]:
                h = run(block, torch.cat([h, hs.pop()], dim=1))
            h = level["resample"](h)
        return self.conv_out(Fn.silu(self.norm_out(h)))
