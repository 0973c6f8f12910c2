"""Reference torch modules: the layers video diffusion models use, written plainly.

Each fastvid module in ``fastvid.nn`` subclasses its twin here and overrides only the
attention or convolution call, so parameters and state_dict keys are identical by
construction and ``load_state_dict`` moves weights across unchanged.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..validation import check_module_input, fail
from . import functional as ref


def tokens_from_video(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) feature map -> (B, F, H*W, C) tokens."""
    return rearrange(x, "b c f h w -> b f (h w) c")


def video_from_tokens(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return rearrange(t, "b f (h w) c -> b c f h w", h=height, w=width)


class RelativePositionBias(nn.Module):
    """VDM's T5-bucketed relative position bias: a learned table bias[h, bucket(j - i)]."""

    def __init__(self, heads: int = 8, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, num_frames: int, device=None) -> torch.Tensor:
        """Returns the (heads, F, F) bias."""
        pos = torch.arange(num_frames, dtype=torch.long, device=device)
        rel = pos[None, :] - pos[:, None]
        buckets = ref.t5_relative_position_bucket(rel, self.num_buckets, self.max_distance)
        return rearrange(self.relative_attention_bias(buckets), "i j h -> h i j")


class _TokenAttention(nn.Module):
    """Shared shell: projections, (B, F, N, C) or (B, C, F, H, W) input, heads split in place."""

    def __init__(self, dim: int, heads: int, dim_head: int, out_bias_list: bool):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        # diffusers' Attention keeps to_out as [Linear, Dropout] ("to_out.0.weight").
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)]) if out_bias_list else nn.Linear(inner, dim)

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        out = out.flatten(-2)
        if isinstance(self.to_out, nn.ModuleList):
            for layer in self.to_out:
                out = layer(out)
            return out
        return self.to_out(out)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, self.dim_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F, N, dim) tokens, or a (B, dim, F, H, W) feature map (returned in the same form)."""
        check_module_input(type(self).__name__, "x", x, self, ranks=(4, 5), channel_dim=lambda r: -1 if r == 4 else 1,
                           channels=self.to_q.in_features,
                           layout="(B, F, N, dim) tokens or a (B, dim, F, H, W) feature map")
        if x.dim() == 5:
            height, width = x.shape[-2:]
            return video_from_tokens(self.forward(tokens_from_video(x)), height, width)
        q, k, v = self.project_qkv(x)
        return self.project_out(self.attend(q, k, v))

    def project_qkv(self, x: torch.Tensor):
        """(B, F, N, dim) -> q, k, v of shape (B, F, N, heads, dim_head)."""
        return tuple(self.split_heads(proj(x)) for proj in (self.to_q, self.to_k, self.to_v))

    def attend(self, q, k, v):
        raise NotImplementedError


class TemporalAttention(_TokenAttention):
    """VDM temporal attention: each spatial position attends over the frames, with a
    T5-bucketed relative position bias and an optional causal mask."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, rel_pos_bias: bool = True, causal: bool = False,
                 num_buckets: int = 32, max_distance: int = 128):
        super().__init__(dim, heads, dim_head, out_bias_list=False)
        self.causal = causal
        self.rel_pos_bias = RelativePositionBias(heads, num_buckets, max_distance) if rel_pos_bias else None

    def position_bias(self, num_frames: int, device) -> torch.Tensor | None:
        return None if self.rel_pos_bias is None else self.rel_pos_bias(num_frames, device)

    def attend(self, q, k, v):
        bias = self.position_bias(q.shape[1], q.device)
        bias = None if bias is None else bias.to(q.dtype)
        return ref.temporal_attention(q, k, v, bias=bias, causal=self.causal)


class FrameAttention(_TokenAttention):
    """Self-attention whose frame i attends to the frames of ``frames`` (see
    ``reference.functional.frame_table``): "self" is spatial attention, "first" is
    Text2Video-Zero, "sparse_causal" Tune-A-Video, "all" ControlVideo / full spatio-temporal."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, frames="self"):
        super().__init__(dim, heads, dim_head, out_bias_list=True)
        self.frames = frames

    def attend(self, q, k, v):
        return ref.frame_attention(q, k, v, frames=self.frames)


class SparseCausalAttention(FrameAttention):
    """Tune-A-Video's ST-Attn: frame i attends to frames 0 and i-1. With
    ``train_query_only=True`` only ``to_q`` is trainable, as in its one-shot tuning."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, train_query_only: bool = False):
        super().__init__(dim, heads, dim_head, frames="sparse_causal")
        if train_query_only:
            for module in (self.to_k, self.to_v, self.to_out):
                module.requires_grad_(False)


class PseudoConv3d(nn.Module):
    """Make-A-Video's pseudo-3D conv: a 2D conv per frame, then a 1D conv over frames
    initialised to identity (so an image model's behaviour is kept); images skip the latter."""

    def __init__(self, dim: int, dim_out: int | None = None, kernel_size: int = 3, temporal_kernel_size: int = 3):
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        self.spatial_conv = nn.Conv2d(dim, dim_out, kernel_size, padding=kernel_size // 2)
        self.temporal_conv = nn.Conv1d(dim_out, dim_out, temporal_kernel_size, padding=temporal_kernel_size // 2)
        nn.init.dirac_(self.temporal_conv.weight)
        nn.init.zeros_(self.temporal_conv.bias)

    def forward(self, x: torch.Tensor, enable_time: bool = True) -> torch.Tensor:
        """x: (B, C, F, H, W) video or (B, C, H, W) image."""
        check_module_input(type(self).__name__, "x", x, self, ranks=(4, 5), channel_dim=lambda r: 1,
                           channels=self.spatial_conv.in_channels, layout="(B, C, F, H, W) video or (B, C, H, W) image")
        if x.dim() == 4:
            return self.spatial_conv(x)
        h = self.spatial(x)
        if not enable_time:
            return h
        return self.temporal(h)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return ref.spatial_conv(x, self.spatial_conv.weight, self.spatial_conv.bias, padding=self.spatial_conv.padding)

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        return ref.temporal_conv(h, self.temporal_conv.weight, self.temporal_conv.bias)


def check_frames_input(module: nn.Module, hidden_states: torch.Tensor, num_frames: int) -> None:
    """The (B * F, C, H, W) input of a TemporalConvBlock-like module (with ``in_dim``) and its ``num_frames``."""
    op = type(module).__name__
    check_module_input(op, "hidden_states", hidden_states, module, ranks=(4,), channel_dim=lambda r: 1,
                       channels=module.in_dim, layout="(B * F, C, H, W)")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1 \
            or hidden_states.shape[0] % num_frames:
        fail(op, "num_frames", f"is {num_frames!r}",
             f"a positive integer dividing the {hidden_states.shape[0]} frames of 'hidden_states'")


class TemporalConvBlock(nn.Module):
    """diffusers' ``TemporalConvLayer`` (ModelScope T2V / UNet3DConditionModel), same structure and
    state_dict keys: four (GroupNorm, SiLU, [Dropout], (3, 1, 1) Conv3d) stages, the last conv
    zero-initialised so the block starts as the identity, and a residual around all four.
    Takes (B*F, C, H, W) frames and ``num_frames``, as diffusers does."""

    def __init__(self, in_dim: int, out_dim: int | None = None, dropout: float = 0.0, norm_num_groups: int = 32):
        super().__init__()
        out_dim = out_dim or in_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv1 = nn.Sequential(
            nn.GroupNorm(norm_num_groups, in_dim), nn.SiLU(), nn.Conv3d(in_dim, out_dim, (3, 1, 1), padding=(1, 0, 0))
        )
        self.conv2, self.conv3, self.conv4 = (
            nn.Sequential(nn.GroupNorm(norm_num_groups, out_dim), nn.SiLU(), nn.Dropout(dropout),
                          nn.Conv3d(out_dim, in_dim, (3, 1, 1), padding=(1, 0, 0)))
            for _ in range(3)
        )
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        check_frames_input(self, hidden_states, num_frames)
        x = hidden_states.unflatten(0, (-1, num_frames)).permute(0, 2, 1, 3, 4)
        h = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        h = x + h
        return h.permute(0, 2, 1, 3, 4).flatten(0, 1)


class TemporalResBlock(nn.Module):
    """diffusers' ``TemporalResnetBlock`` (SVD, Video LDM's temporal conv layers), same submodules:
    GroupNorm-SiLU-(3, 1, 1) Conv3d, + the timestep embedding, GroupNorm-SiLU-(3, 1, 1) Conv3d, + the input.
    Takes (B, C, F, H, W) and a (B, temb_dim) embedding (or None)."""

    def __init__(self, in_dim: int, temb_dim: int | None = None, norm_num_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.in_dim = in_dim
        self.norm1 = nn.GroupNorm(norm_num_groups, in_dim, eps=eps)
        self.conv1 = nn.Conv3d(in_dim, in_dim, (3, 1, 1), padding=(1, 0, 0))
        self.time_emb_proj = None if temb_dim is None else nn.Linear(temb_dim, in_dim)
        self.norm2 = nn.GroupNorm(norm_num_groups, in_dim, eps=eps)
        self.conv2 = nn.Conv3d(in_dim, in_dim, (3, 1, 1), padding=(1, 0, 0))

    def norm_silu(self, norm: nn.GroupNorm, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """silu(norm(x + add)), add a (B, C) time embedding or None."""
        return ref.group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, add=add)

    def conv(self, conv: nn.Conv3d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return ref.temporal_conv(x, conv.weight[:, :, :, 0, 0], conv.bias, residual=residual, padding=conv.padding[0])

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        check_module_input(type(self).__name__, "x", x, self, ranks=(5,), channel_dim=lambda r: 1, channels=self.in_dim,
                           layout="(B, C, F, H, W)")
        h = self.conv(self.conv1, self.norm_silu(self.norm1, x))
        add = None
        if self.time_emb_proj is not None and temb is not None:
            add = self.time_emb_proj(nn.functional.silu(temb))
        return self.conv(self.conv2, self.norm_silu(self.norm2, h, add), residual=x)


class AlphaBlender(nn.Module):
    """alpha * spatial + (1 - alpha) * temporal with alpha = sigmoid(mix_factor), a learned scalar
    (diffusers' AlphaBlender "learned", Video LDM's per-layer alpha)."""

    def __init__(self, mix_factor: float = 0.5):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor([float(mix_factor)]))

    def alpha(self, spatial: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mix_factor).to(spatial.dtype)

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        return ref.alpha_blend(spatial, temporal, self.alpha(spatial))


class AddLayerNorm(nn.LayerNorm):
    """A LayerNorm over the last dim applied right after a residual add, as in a pre-norm transformer
    block (``h = out + h; norm(h)``): ``forward(x, residual)`` returns ``(x + residual, LayerNorm(x + residual))``.
    Same parameters and state_dict keys as ``nn.LayerNorm(C)``. Takes (B, N, C) tokens."""

    def check_input(self, x: torch.Tensor) -> None:
        check_module_input(type(self).__name__, "x", x, self, ranks=(3,), channel_dim=lambda r: 2,
                           channels=self.normalized_shape[0], layout="(B, N, C)")

    def forward(self, x: torch.Tensor, residual: torch.Tensor):
        self.check_input(x)
        return ref.add_layer_norm(x, residual, self.weight, self.bias, self.eps)


class GEGLU(nn.Module):
    """diffusers' ``GEGLU`` (the first layer of the feed-forward of every video UNet's transformer
    blocks), same parameters and state_dict keys: ``proj`` Linear(dim_in, 2 * dim_out), then
    hidden * gelu(gate) on the two halves of its output. Takes (..., dim_in) tokens."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True, approximate: str = "none"):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2, bias=bias)
        self.approximate = approximate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        self.check_input(hidden_states)
        return self.activation(self.proj(hidden_states))

    def check_input(self, hidden_states: torch.Tensor) -> None:
        check_module_input(type(self).__name__, "hidden_states", hidden_states, self, ranks=(2, 3, 4, 5),
                           channel_dim=lambda rank: rank - 1, channels=self.proj.in_features, layout="(..., dim_in)")

    def activation(self, proj_out: torch.Tensor) -> torch.Tensor:
        return ref.geglu(proj_out, approximate=self.approximate)


class Linear(nn.Linear):
    """``nn.Linear`` whose ``forward(x, residual=None)`` adds a residual to its output (``proj_out(x) + residual``,
    ``ff(x) + h``): same parameters and state_dict keys as ``nn.Linear(in_features, out_features, bias)``.
    Takes (..., in_features) tokens."""

    def check_input(self, x: torch.Tensor) -> None:
        check_module_input(type(self).__name__, "x", x, self, ranks=(2, 3, 4, 5), channel_dim=lambda rank: rank - 1,
                           channels=self.in_features, layout="(..., in_features)")

    def forward(self, x: torch.Tensor, residual=None) -> torch.Tensor:
        self.check_input(x)
        return ref.linear(x, self.weight, self.bias, residual=residual)
