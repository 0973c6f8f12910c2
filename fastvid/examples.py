"""Example inputs and benchmark shapes of every op, held once; read through ``fastvid.registry.OPS[op].examples``.

Tests (robustness, dispatch, registration) and benchmarks (the bench scripts, the suite, the sm_90a
resource report) take their per-op inputs and shapes from here instead of their own tables.

Benchmark shapes come from the real models. Attention shapes are (B, F, N, heads, head_dim); N = latent
H * W at the layer's resolution.

- ModelScope T2V (diffusers UNet3DConditionModel): 16 frames, 256x256 video -> 32x32 latents,
  channels 320/640/1280, head_dim 64 (heads 5/10/20).
- Stable Video Diffusion (UNetSpatioTemporalConditionModel): 14 frames, 576x1024 -> 72x128 latents,
  channels 320/640/1280, head_dim 64.
- Latte / Open-Sora style DiT: 16 frames of 32x32 latents, patch 2 -> 256 tokens per frame, hidden 1152,
  16 heads of 72.
- Text2Video-Zero / ControlVideo (Stable Diffusion 1.5): 8 frames, 512x512 -> 64x64 latents, 8 heads of 40.
- AnimateDiff motion modules (SD 1.5 U-Net): 8 heads of 40 / 80 / 160 at channels 320 / 640 / 1280; 512x512 ->
  64x64 latents; a 32-frame clip at the 640-channel level (32x32).
- Transformer-block tokens (B, N, C): spatial blocks see (B*F, H*W, C), SVD's temporal blocks (B*H*W, F, C).

GEGLU shapes are (B * F, N, inner): the feed-forward of a transformer block at a UNet level with C channels
has inner = 4 * C and reads a (B * F, N, 2 * inner) projection output (CFG batch 2).
GEGLU projection shapes are (B * F, N, C): that feed-forward's input, projected by a (2 * 4 * C, C)
weight. ``linear`` runs on the same tokens: the block's proj_in and proj_out (C -> C, channel-first NCHW views)
and the feed-forward's last Linear (4 * C -> C, plus the residual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

Shapes = Dict[str, Tuple[int, ...]]
Check = Tuple[str, Dict[str, Tensor], Dict[str, object]]  # (case name, named tensor inputs, other arguments)

TEMPORAL_ATTENTION_SHAPES: Shapes = {  # name: (B, F, N, heads, head_dim)
    "modelscope-32x32-c320": (2, 16, 32 * 32, 5, 64),
    "modelscope-16x16-c640": (2, 16, 16 * 16, 10, 64),
    "svd-72x128-c320": (2, 14, 72 * 128, 5, 64),
    "svd-36x64-c640": (2, 14, 36 * 64, 10, 64),
    "vdm-64x64-h16": (2, 16, 64 * 64, 16, 64),  # 131,072 sequences: past 65,535
    "latte-16x16-h16": (2, 16, 16 * 16, 16, 72),
    "animatediff-32f-32x32-c640": (2, 32, 32 * 32, 8, 80),  # past 16 frames: the backward's key blocks
}

FRAME_ATTENTION_SHAPES: Shapes = {  # name: (B, F, N, heads, head_dim); keys M = N
    "t2vzero-64x64": (1, 8, 64 * 64, 8, 40),
    "controlvideo-64x64": (1, 8, 64 * 64, 8, 40),
    "modelscope-32x32-c320": (2, 16, 32 * 32, 5, 64),
    "latte-16x16": (2, 16, 16 * 16, 16, 72),
}

VIDEO_SHAPES: Shapes = {  # name: (B, C, F, H, W), the temporal conv's and GroupNorm+SiLU's
    "c320-32x32": (1, 320, 16, 32, 32),
    "c640-32x32": (1, 640, 16, 32, 32),
    "c1280-32x32": (1, 1280, 16, 32, 32),
    "c320-64x64": (1, 320, 16, 64, 64),
    "c640-64x64": (1, 640, 16, 64, 64),
    "c1280-64x64": (1, 1280, 16, 64, 64),
}

TOKEN_SHAPES: Shapes = {  # name: (B, N, C), add_layer_norm's
    "svd-spatial-72x128-c320": (50, 72 * 128, 320),  # CFG 2 x 25 frames
    "svd-spatial-36x64-c640": (50, 36 * 64, 640),
    "svd-spatial-18x32-c1280": (50, 18 * 32, 1280),
    "svd-temporal-72x128-c320": (2 * 72 * 128, 25, 320),
    "animatediff-64x64-c320": (32, 64 * 64, 320),  # CFG 2 x 16 frames
}

ALPHA_BLEND_SHAPES: Shapes = {  # name: (B, C, F, H, W), SVD's SpatioTemporalResBlock mix, frame-major (CFG batch 2)
    "svd-72x128-c320": (2, 320, 14, 72, 128),
    "svd-36x64-c640": (2, 640, 14, 36, 64),
    "svd-18x32-c1280": (2, 1280, 14, 18, 32),
}

GEGLU_SHAPES: Shapes = {  # name: (B * F, N, inner)
    "svd-72x128-c320": (2 * 14, 72 * 128, 4 * 320),
    "svd-36x64-c640": (2 * 14, 36 * 64, 4 * 640),
    "svd-18x32-c1280": (2 * 14, 18 * 32, 4 * 1280),
    "modelscope-32x32-c320": (2 * 16, 32 * 32, 4 * 320),
}

GEGLU_LINEAR_SHAPES: Shapes = {  # name: (B * F, N, C); inner = 4 * C; the released sizes of integrations/released.py
    "svdxt-72x128-c320": (2 * 25, 72 * 128, 320),
    "svdxt-36x64-c640": (2 * 25, 36 * 64, 640),
    "svdxt-18x32-c1280": (2 * 25, 18 * 32, 1280),
    "animatediff-64x64-c320": (2 * 16, 64 * 64, 320),
    "animatediff-32x32-c640": (2 * 16, 32 * 32, 640),
    "animatediff-16x16-c1280": (2 * 16, 16 * 16, 1280),
}

# Tiny stand-ins for CPU runs of the same scripts (harness checks only, not speed).
CPU_TEMPORAL_ATTENTION_SHAPES: Shapes = {"tiny": (1, 8, 64, 2, 32), "odd": (1, 13, 37, 3, 24)}
CPU_FRAME_ATTENTION_SHAPES: Shapes = {"tiny": (1, 4, 64, 2, 32), "odd": (1, 5, 37, 3, 40)}
CPU_VIDEO_SHAPES: Shapes = {"tiny": (1, 16, 8, 8, 8), "odd": (1, 20, 7, 5, 9)}
CPU_TOKEN_SHAPES: Shapes = {"tiny": (2, 16, 32), "odd": (2, 13, 77)}
CPU_GEGLU_SHAPES: Shapes = {"tiny": (2, 64, 64), "odd": (3, 13, 77)}
CPU_GEGLU_LINEAR_SHAPES: Shapes = {"tiny": (2, 32, 16), "odd": (3, 13, 24)}


@dataclass(frozen=True)
class Examples:
    """One op's example inputs and shapes.

    ``make(batch, n, device, dtype)`` returns the named tensor inputs of one small call (n: tokens per frame
    for attention, the video's height otherwise); ``call(fn, inputs)`` calls ``fastvid.<op>`` or
    ``fastvid.reference.<op>`` on them with ``kwargs`` (every argument by name, so both take the same call).
    ``main`` is the first tensor argument, ``other`` a second one whose dim ``other_dim`` is checked
    against ``main`` (bad-input tests); None for an op of one tensor, whose ``main`` has ``other_dim``
    checked; ``lower_rank(main)`` is main at a rank the op does not take. ``corners()`` lists dispatcher
    argument tuples (the op's ``DISPATCH`` argument order) covering the support matrix: dtypes, optional inputs, sizes past a
    backend's limits. ``checks(device, dtype)`` lists (case name, inputs, keyword arguments) at odd sizes,
    each with a non-contiguous input: the benchmark suite's correctness step (``fastvid.testing`` rule).
    """
    make: Callable[..., Dict[str, Tensor]]
    kwargs: Dict[str, object]
    main: str
    other: Optional[str]
    other_dim: int
    corners: Callable[[], List[tuple]]
    checks: Callable[[str, torch.dtype], List[Check]]
    benchmark_shapes: Shapes
    cpu_shapes: Shapes
    ranked: Optional[str] = None  # the argument of fixed rank the bad-input rank check breaks (None: main)
    stacked: bool = False  # the op returns a tuple of same-shape outputs: the checks stack them into one tensor
    lower_rank: Callable[[Tensor], Tensor] = lambda t: t[0]

    def output(self, result) -> Tensor:
        """The op's result as the one tensor the generic checks compare (several outputs stacked)."""
        return torch.stack(result) if self.stacked else result

    def call(self, fn: Callable, inputs: Dict[str, Tensor], **extra) -> Tensor:
        return self.output(fn(**inputs, **self.kwargs, **extra))

    def shapes(self, device: str) -> Shapes:
        """The benchmark shapes on CUDA, their tiny stand-ins elsewhere."""
        return self.benchmark_shapes if device == "cuda" else self.cpu_shapes


def _randn(*shape, device="cpu", dtype=torch.float32, transpose=None) -> Tensor:
    """Random values; ``transpose=(a, b)`` gives a non-contiguous view with ``shape``."""
    if transpose is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    a, b = transpose
    stored = list(shape)
    stored[a], stored[b] = stored[b], stored[a]
    return torch.randn(*stored, device=device, dtype=dtype).transpose(a, b)


def _temporal_attention(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(q=_randn(batch, 4, n, 2, 8, **r), k=_randn(batch, 4, n, 2, 8, **r), v=_randn(batch, 4, n, 2, 8, **r),
                bias=_randn(2, 4, 4, **r))


def _frame_attention(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(q=_randn(batch, 3, n, 2, 8, **r), k=_randn(batch, 3, 5, 2, 8, **r), v=_randn(batch, 3, 5, 2, 8, **r))


def _temporal_conv(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x=_randn(batch, 3, 4, n, 2, **r), weight=_randn(5, 3, 3, **r), bias=_randn(5, **r),
                residual=_randn(batch, 5, 4, n, 2, **r))


def _group_norm_silu(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x=_randn(batch, 4, 3, n, 2, **r), weight=_randn(4, **r), bias=_randn(4, **r))


def _add_layer_norm(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x=_randn(batch, n, 6, **r), residual=_randn(batch, n, 6, **r), weight=_randn(6, **r),
                bias=_randn(6, **r))


def _alpha_blend(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x_spatial=_randn(batch, 4, 3, n, 2, **r), x_temporal=_randn(batch, 4, 3, n, 2, **r),
                alpha=_randn(batch, 1, 3, 1, 1, **r))


def _geglu(batch, n, device="cpu", dtype=torch.float32):
    return dict(proj_out=_randn(batch, n, 10, device=device, dtype=dtype))


def _geglu_linear(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x=_randn(batch, n, 6, **r), weight=_randn(10, 6, **r), bias=_randn(10, **r))


def _linear(batch, n, device="cpu", dtype=torch.float32):
    r = dict(device=device, dtype=dtype)
    return dict(x=_randn(batch, n, 6, **r), weight=_randn(5, 6, **r), bias=_randn(5, **r),
                residual=_randn(batch, n, 5, transpose=(1, 2), **r))  # a (B, N, C) view of a channel-first tensor


def temporal_attention_args(frames=5, dtype=torch.float32, bias=True):
    """Dispatcher arguments (q, k, v, bias, causal, scale)."""
    q, k, v = (_randn(1, frames, 3, 2, 8, dtype=dtype) for _ in range(3))
    return (q, k, v, _randn(2, frames, frames, dtype=dtype) if bias else None, False, 0.35)


def frame_attention_args(frames="sparse_causal", dtype=torch.float32):
    """Dispatcher arguments (q, k, v, frames, scale)."""
    q = _randn(1, 4, 3, 2, 8, dtype=dtype)
    k, v = (_randn(1, 4, 5, 2, 8, dtype=dtype) for _ in range(2))
    return (q, k, v, frames, 0.35)


def temporal_conv_args(dtype=torch.float32, bias=True, residual=False, pad=1):
    """Dispatcher arguments (x, weight, bias, residual, padding)."""
    x, w = _randn(1, 4, 5, 2, 3, dtype=dtype), _randn(6, 4, 3, dtype=dtype)
    r = _randn(1, 6, 5 + 2 * pad - 2, 2, 3, dtype=dtype) if residual else None
    return (x, w, _randn(6, dtype=dtype) if bias else None, r, pad)


def group_norm_silu_args(dtype=torch.float32, groups=2, affine=True, per_frame=False, channels_per_group=4):
    """Dispatcher arguments (x, num_groups, weight, bias, eps, per_frame)."""
    channels = channels_per_group * groups
    x = _randn(1, channels, 3, 2, 3, dtype=dtype)
    w, b = (_randn(channels, dtype=dtype) if affine else None for _ in range(2))
    return (x, groups, w, b, 1e-5, per_frame)


def add_layer_norm_args(dtype=torch.float32, affine=True, width=6, frames=None):
    """Dispatcher arguments (x, residual, weight, bias, eps, frame_add); with ``frames``, no residual and a
    (frames, C) table added after the norm."""
    x, r = _randn(2, 3, width, dtype=dtype), _randn(2, 3, width, dtype=dtype)
    w, b = (_randn(width, dtype=dtype) if affine else None for _ in range(2))
    if frames is None:
        return (x, r, w, b, 1e-5, None)
    return (x, None, w, b, 1e-5, _randn(frames, width, dtype=dtype))


def alpha_blend_args(dtype=torch.float32, alpha_shape=(2, 1, 1)):
    """Dispatcher arguments (x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch) of
    ``fastvid.alpha_blend``: (B*F, N, C) tokens, alpha per row by default."""
    xs, xt = (_randn(2, 5, 3, dtype=dtype) for _ in range(2))
    return (xs, xt, torch.rand(alpha_shape, dtype=dtype), None, "alpha", False)


def learned_alpha_blend_args(dtype=torch.float32, merge_strategy="learned_with_images", switch=False):
    """Dispatcher arguments of ``fastvid.learned_alpha_blend``: (B, C, F, H, W) with B = 1, F = 2, the second
    frame an image (the indicator only for "learned_with_images", as the dispatcher passes it on)."""
    xs, xt = (_randn(1, 3, 2, 2, 5, dtype=dtype) for _ in range(2))
    images = torch.tensor([[0.0, 1.0]], dtype=dtype) if merge_strategy == "learned_with_images" else None
    return (xs, xt, _randn(1, dtype=dtype), images, merge_strategy, switch)


def geglu_args(dtype=torch.float32, approximate="none"):
    """Dispatcher arguments (proj_out, approximate)."""
    return (_randn(2, 3, 14, dtype=dtype), approximate)


def geglu_linear_args(dtype=torch.float32, bias=True, approximate="none", tokens=3):
    """Dispatcher arguments (x, weight, bias, approximate)."""
    return (_randn(2, tokens, 6, dtype=dtype), _randn(10, 6, dtype=dtype), _randn(10, dtype=dtype) if bias else None,
            approximate)


def linear_args(dtype=torch.float32, bias=True, residual=True, tokens=3):
    """Dispatcher arguments (x, weight, bias, residual)."""
    return (_randn(2, tokens, 6, dtype=dtype), _randn(4, 6, dtype=dtype), _randn(4, dtype=dtype) if bias else None,
            _randn(2, tokens, 4, dtype=dtype) if residual else None)


def _temporal_attention_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    B, F, N, H, D = 2, 13, 37, 3, 72
    q = _randn(B, F, N, H, D, transpose=(1, 2), **r)  # frames strided by N*H*D: a (B, N, F, ...) buffer
    k, v = _randn(B, F, N, H, D, **r), _randn(B, F, N, H, D, **r)
    return [("bias, q non-contiguous", dict(q=q, k=k, v=v, bias=_randn(H, F, F, **r)), {}),
            ("causal", dict(q=q, k=k, v=v), dict(causal=True))]


def _frame_attention_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    B, F, N, H, D = 1, 5, 37, 3, 40
    q, k, v = _randn(B, F, N, H, D, transpose=(2, 3), **r), _randn(B, F, N, H, D, **r), _randn(B, F, N, H, D, **r)
    return [(frames, dict(q=q, k=k, v=v), dict(frames=frames)) for frames in ("first", "sparse_causal", "all")]


def _temporal_conv_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    x = _randn(2, 20, 7, 5, 9, **r).to(memory_format=torch.channels_last_3d)
    inputs = dict(x=x, weight=_randn(36, 20, 3, **r), bias=_randn(36, **r), residual=_randn(2, 36, 7, 5, 9, **r))
    return [("channels_last_3d, bias, residual", inputs, {})]


def _group_norm_silu_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    inputs = dict(x=_randn(2, 32, 5, 6, 7, transpose=(3, 4), **r), weight=1 + 0.1 * _randn(32, **r),
                  bias=0.1 * _randn(32, **r))
    return [(f"8 groups, per_frame={per_frame}, x non-contiguous", inputs, dict(num_groups=8, per_frame=per_frame))
            for per_frame in (False, True)]


def _add_layer_norm_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    inputs = dict(x=_randn(2, 13, 77, transpose=(0, 1), **r), residual=_randn(2, 13, 77, **r),
                  weight=1 + 0.1 * _randn(77, **r), bias=0.1 * _randn(77, **r))
    return [("13 tokens x 77 channels, x non-contiguous", inputs, {})]


def _alpha_blend_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    B, C, F, H, W = 2, 20, 7, 5, 9
    xs, xt = (_randn(B, C, F, H, W, transpose=(1, 2), **r) for _ in range(2))  # SVD's frame-major views
    alpha = torch.rand(B, 1, F, 1, 1, **r)
    return [("frame-major, alpha per (sample, frame)", dict(x_spatial=xs, x_temporal=xt, alpha=alpha), {})]


def _geglu_checks(device, dtype) -> List[Check]:
    proj_out = _randn(3, 13, 2 * 77 + 6, device=device, dtype=dtype)[..., 3:-3]  # a slice of a wider last dim
    return [(f"inner 77, approximate={approximate}, proj_out a slice", dict(proj_out=proj_out),
             dict(approximate=approximate)) for approximate in ("none", "tanh")]


def _geglu_linear_checks(device, dtype) -> List[Check]:
    r = dict(device=device, dtype=dtype)
    x = _randn(3, 13, 24 + 5, **r)[..., 2:-3]  # a slice of a wider last dim
    inputs = dict(x=x, weight=_randn(2 * 40, 24, **r) / 5, bias=_randn(2 * 40, **r))
    return [(f"K 24, inner 40, approximate={approximate}, x a slice", inputs, dict(approximate=approximate))
            for approximate in ("none", "tanh")]


def _linear_checks(device, dtype) -> List[Check]:
    """A transformer block's proj_out on NCHW tensors: x read from and the output written into (B, H*W, C) views."""
    r = dict(device=device, dtype=dtype)
    inputs = dict(x=_randn(3, 13, 24, transpose=(1, 2), **r), weight=_randn(40, 24, **r) / 5, bias=_randn(40, **r),
                  residual=_randn(3, 13, 40, transpose=(1, 2), **r))
    return [("K 24 -> N 40, x and residual NCHW views", inputs, {})]


EXAMPLES: Dict[str, Examples] = {
    "temporal_attention": Examples(
        _temporal_attention, dict(causal=True), main="q", other="k", other_dim=-1,
        corners=lambda: [temporal_attention_args(), temporal_attention_args(dtype=torch.float64),
                         temporal_attention_args(frames=130, bias=False),  # past the Triton kernel's frames
                         temporal_attention_args(dtype=torch.float16)],
        checks=_temporal_attention_checks,
        benchmark_shapes=TEMPORAL_ATTENTION_SHAPES, cpu_shapes=CPU_TEMPORAL_ATTENTION_SHAPES),
    "frame_attention": Examples(
        _frame_attention, dict(frames="sparse_causal"), main="q", other="k", other_dim=-1,
        corners=lambda: [frame_attention_args(), frame_attention_args("all", torch.float64),
                         frame_attention_args("self", torch.float16),
                         frame_attention_args(torch.tensor([[0, -1], [1, 0], [3, 3], [2, -1]]))],
        checks=_frame_attention_checks,
        benchmark_shapes=FRAME_ATTENTION_SHAPES, cpu_shapes=CPU_FRAME_ATTENTION_SHAPES),
    "temporal_conv": Examples(
        _temporal_conv, {}, main="x", other="weight", other_dim=1,
        corners=lambda: [temporal_conv_args(), temporal_conv_args(dtype=torch.float64),
                         temporal_conv_args(dtype=torch.float16, bias=False, residual=True), temporal_conv_args(pad=0)],
        checks=_temporal_conv_checks,
        benchmark_shapes=VIDEO_SHAPES, cpu_shapes=CPU_VIDEO_SHAPES),
    "group_norm_silu": Examples(
        _group_norm_silu, dict(num_groups=2), main="x", other="weight", other_dim=-1,
        corners=lambda: [group_norm_silu_args(), group_norm_silu_args(dtype=torch.float64),
                         group_norm_silu_args(affine=False, per_frame=True),
                         group_norm_silu_args(groups=1, dtype=torch.float16),
                         group_norm_silu_args(groups=1, affine=False, channels_per_group=1024)],  # past one tile
        checks=_group_norm_silu_checks,
        benchmark_shapes=VIDEO_SHAPES, cpu_shapes=CPU_VIDEO_SHAPES,
        lower_rank=lambda t: t[0, 0]),  # rank 4 is a batch of images
    "add_layer_norm": Examples(
        _add_layer_norm, dict(eps=1e-5), main="x", other="residual", other_dim=-1,
        corners=lambda: [add_layer_norm_args(), add_layer_norm_args(dtype=torch.float64),
                         add_layer_norm_args(dtype=torch.float16, affine=False),
                         add_layer_norm_args(width=8193),  # past the Triton kernel's row width
                         add_layer_norm_args(dtype=torch.float16, frames=2)],
        checks=_add_layer_norm_checks,
        benchmark_shapes=TOKEN_SHAPES, cpu_shapes=CPU_TOKEN_SHAPES, stacked=True),
    "alpha_blend": Examples(
        _alpha_blend, {}, main="x_temporal", other="x_spatial", other_dim=-1,
        corners=lambda: [alpha_blend_args(), alpha_blend_args(torch.float64), alpha_blend_args(torch.float16, (1,)),
                         alpha_blend_args(alpha_shape=(3,)),  # alpha along the innermost dim: no Triton
                         learned_alpha_blend_args(), learned_alpha_blend_args(torch.float64, "learned", True),
                         learned_alpha_blend_args(torch.float16, "fixed")],
        checks=_alpha_blend_checks,
        benchmark_shapes=ALPHA_BLEND_SHAPES, cpu_shapes=CPU_VIDEO_SHAPES),
    "geglu": Examples(  # the shape check: an odd last dim (no halves)
        _geglu, {}, main="proj_out", other=None, other_dim=-1,
        corners=lambda: [geglu_args(), geglu_args(dtype=torch.float64), geglu_args(torch.float16, "tanh")],
        checks=_geglu_checks,
        benchmark_shapes=GEGLU_SHAPES, cpu_shapes=CPU_GEGLU_SHAPES),
    "geglu_linear": Examples(  # x of any rank: the rank check is weight's
        _geglu_linear, {}, main="x", other="weight", other_dim=1, ranked="weight",
        corners=lambda: [geglu_linear_args(), geglu_linear_args(dtype=torch.float64),
                         geglu_linear_args(torch.float16, bias=False, approximate="tanh"), geglu_linear_args(tokens=0)],
        checks=_geglu_linear_checks,
        benchmark_shapes=GEGLU_LINEAR_SHAPES, cpu_shapes=CPU_GEGLU_LINEAR_SHAPES),
    "linear": Examples(  # x of any rank: the rank check is weight's
        _linear, {}, main="x", other="weight", other_dim=1, ranked="weight",
        corners=lambda: [linear_args(), linear_args(dtype=torch.float64),
                         linear_args(torch.float16, bias=False, residual=False), linear_args(tokens=0)],
        checks=_linear_checks,
        benchmark_shapes=GEGLU_LINEAR_SHAPES, cpu_shapes=CPU_GEGLU_LINEAR_SHAPES),
}
