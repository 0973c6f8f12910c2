"""Plain-torch reference implementations, written from the papers' equations.

Readable rather than fast: rearrange, matmul, softmax. Tests and benchmarks take their
baseline from here and nowhere else. Token tensors are frame-major (B, F, N, heads, head_dim).
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as Fn
from einops import rearrange

from ..frame_modes import FRAME_MODES
from ..frame_modes import describe as describe_modes

FrameSpec = Union[str, torch.Tensor]


def attention(q, k, v, *, bias=None, mask=None, scale=None):
    """softmax(q k^T * scale + bias, masked) v over the last two dims: (..., L, d), (..., S, d)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


def spatial_attention(q, k, v, *, scale=None):
    """VDM spatial attention: for each (b, f), attention over the N tokens of that frame."""
    qs, ks, vs = (rearrange(t, "b f n h d -> b f h n d") for t in (q, k, v))
    return rearrange(attention(qs, ks, vs, scale=scale), "b f h n d -> b f n h d")


def temporal_attention(q, k, v, *, bias=None, causal=False, scale=None):
    """VDM temporal attention: for each (b, n, head), attention over the F frames.

    q, k, v: (B, F, N, heads, head_dim); bias: (heads, F, F) added to the scores.
    """
    qt, kt, vt = (rearrange(t, "b f n h d -> b n h f d") for t in (q, k, v))
    frames = q.shape[1]
    mask = None
    if causal:
        mask = torch.ones(frames, frames, dtype=torch.bool, device=q.device).tril()
    out = attention(qt, kt, vt, bias=bias, mask=mask, scale=scale)
    return rearrange(out, "b n h f d -> b f n h d")


def frame_table(frames: FrameSpec, num_frames: int, device=None) -> torch.Tensor:
    """The (F, K) table of key frames per query frame for a mode string; -1 pads rows.

    The modes and their row rules are ``fastvid.frame_modes.FRAME_MODES`` ("self": [i]; "first": [0];
    "sparse_causal": [0, max(i-1, 0)]; "all": [0..F-1]). A tensor is returned as is.
    """
    if isinstance(frames, torch.Tensor):
        return frames
    mode = FRAME_MODES.get(frames)
    if mode is None:
        raise ValueError(f"frame_table: unknown frames mode {frames!r}; expected one of {describe_modes()}")
    return mode.table(num_frames, device)


def frame_attention(q, k, v, *, frames: FrameSpec = "self", scale=None):
    """Cross-frame attention by building the concatenated K/V explicitly, as the papers' code does.

    q: (B, F, N, h, d); k, v: (B, F, M, h, d). Frame i's queries attend to the tokens of the
    frames listed in row i of ``frame_table(frames)``, concatenated in row order (-1 entries
    are skipped; a frame listed twice is attended twice, and for sparse-causal frame 0 = [0, 0]
    that equals attending it once).
    """
    table = frame_table(frames, q.shape[1])  # read on the host: its rows pick the frames to concatenate
    outs = []
    for i in range(q.shape[1]):
        row = [j for j in table[i].tolist() if j >= 0]
        k_cat = torch.cat([k[:, j] for j in row], dim=1)  # (B, K*M, h, d)
        v_cat = torch.cat([v[:, j] for j in row], dim=1)
        qi, ki, vi = (rearrange(t, "b n h d -> b h n d") for t in (q[:, i], k_cat, v_cat))
        outs.append(rearrange(attention(qi, ki, vi, scale=scale), "b h n d -> b n h d"))
    return torch.stack(outs, dim=1)


def first_frame_attention(q, k, v, *, scale=None):
    """Text2Video-Zero: frame k attends to frame 1's keys and values."""
    return frame_attention(q, k, v, frames="first", scale=scale)


def sparse_causal_attention(q, k, v, *, scale=None):
    """Tune-A-Video ST-Attn: frame i attends to frames [1, i-1] (0-based [0, i-1])."""
    return frame_attention(q, k, v, frames="sparse_causal", scale=scale)


def all_frame_attention(q, k, v, *, scale=None):
    """ControlVideo fully cross-frame attention: every frame attends to every frame."""
    return frame_attention(q, k, v, frames="all", scale=scale)


def spatiotemporal_attention(q, k, v, *, scale=None):
    """Sora / DiT: one attention over all F*N tokens."""
    qs, ks, vs = (rearrange(t, "b f n h d -> b h (f n) d") for t in (q, k, v))
    out = attention(qs, ks, vs, scale=scale)
    return rearrange(out, "b h (f n) d -> b f n h d", f=q.shape[1])


def pseudo3d_attention(x_tokens, spatial_fn, temporal_fn):
    """Make-A-Video: Attn_P3D = flatten^-1(Attn1D(Attn2D(flatten(h)) o T) o T).

    x_tokens: (B, F, N, C); ``spatial_fn`` maps (B*F, N, C) -> same, ``temporal_fn`` maps
    (B*N, F, C) -> same. The two transposes are written out as rearranges.
    """
    b, f, n, _ = x_tokens.shape
    h = spatial_fn(rearrange(x_tokens, "b f n c -> (b f) n c"))
    h = temporal_fn(rearrange(h, "(b f) n c -> (b n) f c", b=b, f=f))
    return rearrange(h, "(b n) f c -> b f n c", b=b, n=n)


def temporal_conv(x, weight, bias=None, *, residual=None, padding="same"):
    """Conv1d over frames at every pixel: permute (b c f h w) -> ((b h w) c f), conv1d, back.

    x: (B, C_in, F, H, W); weight: (C_out, C_in, k); output (B, C_out, F', H, W).
    """
    b, _, f, hh, ww = x.shape
    seq = rearrange(x, "b c f h w -> (b h w) c f")
    pad = (weight.shape[-1] - 1) // 2 if padding == "same" else int(padding)
    out = Fn.conv1d(seq, weight, bias, padding=pad)
    out = rearrange(out, "(b h w) c f -> b c f h w", b=b, h=hh, w=ww)
    return out if residual is None else out + residual


def temporal_conv3d(x, weight, bias=None, *, padding="same"):
    """The same op as a (k, 1, 1) Conv3d, as diffusers' TemporalConvLayer runs it."""
    pad = (weight.shape[-1] - 1) // 2 if padding == "same" else int(padding)
    return Fn.conv3d(x, weight[:, :, :, None, None], bias, padding=(pad, 0, 0))


def spatial_conv(x, weight, bias=None, *, padding=1):
    """A 2D conv per frame of (B, C, F, H, W): the (1, kh, kw) inflated conv of VDM."""
    b, f = x.shape[:3:2]
    y = Fn.conv2d(rearrange(x, "b c f h w -> (b f) c h w"), weight, bias, padding=padding)
    return rearrange(y, "(b f) c h w -> b c f h w", b=b, f=f)


def pseudo3d_conv(x, weight2d, bias2d, weight1d, bias1d):
    """Make-A-Video: Conv_P3D(h) = Conv1D(Conv2D(h) o T) o T on (B, C, F, H, W)."""
    return temporal_conv(spatial_conv(x, weight2d, bias2d, padding=weight2d.shape[-1] // 2), weight1d, bias1d)


def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, *, per_frame=False, add=None, silu=True):
    """GroupNorm then SiLU (GroupNorm alone when not silu) of x + add on (B, C, F, H, W); statistics over
    (C/G, F, H, W), or (C/G, H, W) per frame; or on (N, C, H, W) images, statistics per image. add: None,
    (B, C), (B, C, F) or (N, C)."""
    act = Fn.silu if silu else (lambda t: t)
    if add is not None:
        x = x + add.view(*add.shape, *[1] * (x.dim() - add.dim()))
    if x.numel() == 0:  # torch's statistics of an empty group are NaN, and so its weight and bias gradients
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x if weight is None else x * weight.view(shape)
        return act(y if bias is None else y + bias.view(shape))
    if per_frame and x.dim() == 5:
        b, f = x.shape[:3:2]
        y = Fn.group_norm(rearrange(x, "b c f h w -> (b f) c h w"), num_groups, weight, bias, eps)
        y = rearrange(y, "(b f) c h w -> b c f h w", b=b, f=f)
    else:
        y = Fn.group_norm(x, num_groups, weight, bias, eps)
    return act(y)


def add_layer_norm(x, residual, weight=None, bias=None, eps=1e-5, frame_add=None):
    """A transformer block's residual add and the LayerNorm after it: sum = x + residual (x where residual is
    None), and sum normalised over its last dim, (sum - mean) / sqrt(var + eps) * weight + bias (biased
    variance), then ``frame_add`` (F, C) added per frame of the frame-major rows (:func:`add_per_frame`).
    Returns (sum, normed)."""
    s = x if residual is None else x + residual
    mean = s.mean(-1, keepdim=True)
    var = (s - mean).square().mean(-1, keepdim=True)
    y = (s - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return s, y if frame_add is None else add_per_frame(y, frame_add)


def add_per_frame(tokens, table):
    """Frame-major (B * F, N, C) tokens plus a (F, C) table, row f added to every token of frame f:
    AnimateDiff's sinusoidal positional embedding on diffusers' frame-major layout."""
    return (tokens.unflatten(0, (-1, table.shape[0])) + table[:, None, :]).flatten(0, 1)


def alpha_blend(x_spatial, x_temporal, alpha):
    """diffusers' AlphaBlender (SVD, Video LDM) after get_alpha: alpha * x_spatial + (1 - alpha) * x_temporal,
    alpha broadcast over x (one value, or one per sample and frame)."""
    return alpha * x_spatial + (1 - alpha) * x_temporal


def blender_alpha(mix_factor, image_only_indicator, ndims, merge_strategy, dtype):
    """diffusers' ``AlphaBlender.get_alpha`` and its cast to x's dtype: ``mix_factor`` itself ("fixed"),
    ``sigmoid(mix_factor)`` ("learned"), or 1 on the (B, F) indicator's image frames and ``sigmoid(mix_factor)``
    elsewhere, laid out (B, 1, F, 1, 1) for ndims 5 and (B*F, 1, 1) for ndims 3 ("learned_with_images")."""
    if merge_strategy == "fixed":
        return mix_factor.to(dtype)
    if merge_strategy == "learned":
        return torch.sigmoid(mix_factor).to(dtype)
    alpha = torch.where(image_only_indicator.bool(), torch.ones(1, 1, device=image_only_indicator.device),
                        torch.sigmoid(mix_factor)[..., None])
    alpha = alpha[:, None, :, None, None] if ndims == 5 else alpha.reshape(-1)[:, None, None]
    return alpha.to(dtype)


def gelu(x, approximate="none"):
    """GELU (Hendrycks & Gimpel 2016): x * Phi(x), or its tanh approximation
    x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2."""
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def geglu(proj_out, *, approximate="none"):
    """GEGLU's activation on a projection's output (..., 2 * inner): hidden * gelu(gate), hidden the first
    half of the last dim and gate the second (diffusers' GEGLU; Shazeer 2020)."""
    hidden, gate = proj_out.chunk(2, dim=-1)
    return hidden * gelu(gate, approximate)


def geglu_linear(x, weight, bias=None, *, approximate="none"):
    """diffusers' GEGLU from its input: the projection x @ weight.T + bias, (..., K) x (2 * inner, K) ->
    (..., 2 * inner), then :func:`geglu` on it."""
    return geglu(Fn.linear(x, weight, bias), approximate=approximate)


def linear(x, weight, bias=None, *, residual=None):
    """nn.Linear, then a residual add: x @ weight.T + bias + residual, (..., K) x (N, K) -> (..., N)."""
    y = Fn.linear(x, weight, bias)
    return y if residual is None else y + residual


def t5_relative_position_bucket(relative_position, num_buckets=32, max_distance=128):
    """T5's bucketing of j - i, as in VDM (video-diffusion-pytorch's RelativePositionBias)."""
    n = -relative_position
    num_buckets //= 2
    ret = (n < 0).long() * num_buckets
    n = torch.abs(n)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    val_if_large = torch.minimum(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
    return ret + torch.where(is_small, n, val_if_large)
