"""Plain torch layers shared by the reference video models (no fastvid.reference twin needed).

Attention and convolution that fastvid accelerates come from fastvid.reference, so that
``fastvid.patch`` finds them; the rest (timestep embedding, text cross-attention, norms,
feed-forward, resampling) is ordinary torch.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as Fn
from torch import nn

from .. import reference
from ..reference.modules import tokens_from_video, video_from_tokens

# Attention layer names used in the models' block specs -> constructor of the module.
ATTENTION_LAYERS = ("spatial", "first", "sparse_causal", "all", "temporal", "temporal_bias", "cross")


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the (B,) timesteps: (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class CrossAttention(nn.Module):
    """Attention from video tokens (B, F, N, dim) to text embeddings (B, L, context_dim)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, f, n, _ = x.shape
        q = self.to_q(x.reshape(b, f * n, -1)).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = (proj(context).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.to_k, self.to_v))
        out = Fn.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(-2)).reshape(b, f, n, -1)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(approximate="tanh"), nn.Linear(dim * mult, dim))


def attention_layer(kind: str, dim: int, heads: int, dim_head: int, context_dim: Optional[int]) -> nn.Module:
    """One attention layer of a block spec; fastvid.reference modules for every kind but "cross"."""
    if kind in ("spatial", "first", "all"):
        return reference.FrameAttention(dim, heads, dim_head, frames={"spatial": "self"}.get(kind, kind))
    if kind == "sparse_causal":
        return reference.SparseCausalAttention(dim, heads, dim_head)
    if kind in ("temporal", "temporal_bias"):
        return reference.TemporalAttention(dim, heads, dim_head, rel_pos_bias=kind == "temporal_bias")
    if kind == "cross":
        return CrossAttention(dim, context_dim, heads, dim_head)
    raise ValueError(f"attention_layer: unknown kind {kind!r}; expected one of {ATTENTION_LAYERS}")


class TokenBlock(nn.Module):
    """Per layer of ``spec`` h += layer(LayerNorm(h)), then h += FeedForward(LayerNorm(h)), on (B, F, N, dim) tokens."""

    def __init__(self, dim: int, spec: Sequence[str], heads: int, dim_head: int, context_dim: Optional[int]):
        super().__init__()
        self.spec = tuple(spec)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.spec)
        self.attns = nn.ModuleList(attention_layer(k, dim, heads, dim_head, context_dim) for k in self.spec)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        for kind, norm, attn in zip(self.spec, self.norms, self.attns):
            h = h + (attn(norm(h), context) if kind == "cross" else attn(norm(h)))
        return h + self.ff(self.norm_ff(h))


class VideoTransformer(nn.Module):
    """GroupNorm, proj_in, a :class:`TokenBlock` of ``spec``, proj_out, and the residual: the transformer
    block of an (inflated) video U-Net, on (B, C, F, H, W)."""

    def __init__(self, dim: int, spec: Sequence[str], heads: int, dim_head: int, context_dim: Optional[int],
                 groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.block = TokenBlock(dim, spec, heads, dim_head, context_dim)
        self.proj_out = nn.Linear(dim, dim)

    def tokens(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        return self.block(h, context)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        height, width = x.shape[-2:]
        h = self.tokens(self.proj_in(tokens_from_video(self.norm(x))), context)
        return x + video_from_tokens(self.proj_out(h), height, width)


def spatial_conv3d(dim: int, dim_out: int, stride: int = 1) -> nn.Conv3d:
    """A 3x3 image conv inflated to a (1, 3, 3) Conv3d (VDM, Tune-A-Video)."""
    return nn.Conv3d(dim, dim_out, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1))


def make_conv(kind: str, dim: int, dim_out: int) -> nn.Module:
    if kind == "inflated":
        return spatial_conv3d(dim, dim_out)
    if kind == "pseudo3d":
        return reference.PseudoConv3d(dim, dim_out)
    raise ValueError(f"make_conv: unknown conv kind {kind!r}; expected 'inflated' or 'pseudo3d'")


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + timestep embedding, GroupNorm-SiLU-conv, + skip."""

    def __init__(self, dim: int, dim_out: int, temb_dim: int, conv: str, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim, eps=1e-6)
        self.conv1 = make_conv(conv, dim, dim_out)
        self.temb = nn.Linear(temb_dim, dim_out)
        self.norm2 = nn.GroupNorm(groups, dim_out, eps=1e-6)
        self.conv2 = make_conv(conv, dim_out, dim_out)
        self.skip = nn.Identity() if dim == dim_out else nn.Conv3d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(Fn.silu(self.norm1(x)))
        h = h + self.temb(Fn.silu(temb))[:, :, None, None, None]
        h = self.conv2(Fn.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = spatial_conv3d(dim, dim, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = spatial_conv3d(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(Fn.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))


class SpatioTemporalResBlock(nn.Module):
    """A spatial ResBlock, then a temporal residual block on its output, mixed by an AlphaBlender
    (SVD's SpatioTemporalResBlock, Video LDM's temporal conv layers)."""

    def __init__(self, dim: int, dim_out: int, temb_dim: int, groups: int):
        super().__init__()
        self.spatial_res_block = ResBlock(dim, dim_out, temb_dim, "inflated", groups)
        self.temporal_res_block = reference.TemporalResBlock(dim_out, temb_dim, groups)
        self.time_mixer = reference.AlphaBlender()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.spatial_res_block(x, temb)
        return self.time_mixer(h, self.temporal_res_block(h, temb))


class SpatioTemporalTransformer(VideoTransformer):
    """A spatial transformer block (self-attention, cross-attention, feed-forward), then a temporal one
    (temporal attention, cross-attention, feed-forward) on its output plus a frame-position embedding,
    mixed by an AlphaBlender (SVD's TransformerSpatioTemporalModel, Video LDM's temporal attention layers)."""

    def __init__(self, dim: int, heads: int, context_dim: int, groups: int):
        super().__init__(dim, ("spatial", "cross"), heads, dim // heads, context_dim, groups)
        self.time_pos_embed = TimestepEmbedding(dim, dim)
        self.temporal_block = TokenBlock(dim, ("temporal", "cross"), heads, dim // heads, context_dim)
        self.time_mixer = reference.AlphaBlender()

    def tokens(self, h: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.block(h, context)
        frames = torch.arange(h.shape[1], device=h.device)
        temporal = self.temporal_block(h + self.time_pos_embed(frames).to(h.dtype)[None, :, None], context)
        return self.time_mixer(h, temporal)


@torch.no_grad()
def perturb_identity_inits(model: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Random weights stand in for trained ones: the identity-initialised temporal convs of
    PseudoConv3d get noise, so that they mix frames as a trained model's do."""
    for module in model.modules():
        if isinstance(module, reference.PseudoConv3d):
            w = module.temporal_conv.weight
            w.add_(scale * torch.randn(w.shape, generator=generator).to(w))
