"""GroupNorm + SiLU on video feature maps: launchers, torch.library ops with autograd, dispatch,
public function.

Forward: two Triton launches (statistics partials, then combine + normalise + SiLU).
Backward: plain torch on the saved per-group mean and rstd (fp32 formulas below, no second
statistics pass); it is not a Triton kernel.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, triton_auto_reason, triton_reason
from ..validation import FLOAT_DTYPES, check_same_device, check_same_dtype, check_shape, check_tensor, fail
from . import _alloc
from .temporal_attention import _multiprocessors

OP = "group_norm_silu"
LAYOUT = "(B, C, F, H, W)"
MAX_TRITON_CHANNELS_PER_GROUP = 512
TILE = 4096  # elements of x per [BLOCK_C, BLOCK_P] tile


def _tiles(channels_per_group: int) -> Tuple[int, int]:
    import triton

    block_c = triton.next_power_of_2(channels_per_group)
    return block_c, max(16, TILE // block_c)


@torch.library.custom_op("fastvid::group_norm_silu_fwd", mutates_args=())
def group_norm_silu_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], num_groups: int, eps: float,
                        per_frame: bool) -> Tuple[Tensor, Tensor]:
    """Triton forward. Returns y (x's shape, memory order and dtype) and stats (2, B, G, F or 1) fp32:
    mean and rstd."""
    import triton

    from ..kernels.group_norm_silu import group_norm_silu_apply_kernel, group_norm_stats_kernel

    batch, channels, frames, height, width = x.shape
    y = _alloc.empty_in_order(x.shape, _alloc.dim_order(x), dtype=x.dtype, device=x.device)
    stats = _alloc.empty(2, batch, num_groups, frames if per_frame else 1, dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        return y, stats
    x4, y4 = x.flatten(3), y.flatten(3)  # views when H and W merge (always for y; copies x otherwise)
    pixels = height * width
    cpg = channels // num_groups
    block_c, block_p = _tiles(cpg)
    rows = batch * num_groups * frames
    # Split the pixels so that batch 1 still gives a few programs per SM.
    target = 4 * _multiprocessors(x.device.index or 0) if x.is_cuda else 4
    n_chunks = max(1, min(triton.cdiv(pixels, block_p), triton.cdiv(target, rows)))
    chunk_pixels = triton.cdiv(triton.cdiv(pixels, n_chunks), block_p) * block_p
    n_chunks = triton.cdiv(pixels, chunk_pixels)
    mean = torch.empty(rows * n_chunks, dtype=torch.float32, device=x.device)
    m2 = torch.empty_like(mean)
    group_norm_stats_kernel[(rows * n_chunks,)](
        x4, mean, m2, *x4.stride(), num_groups, cpg, frames, pixels, n_chunks, chunk_pixels,
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )
    n_p_blocks = triton.cdiv(pixels, block_p)
    parts = n_chunks * (1 if per_frame else frames)
    group_norm_silu_apply_kernel[(rows * n_p_blocks,)](
        x4, weight if weight is not None else x4, bias if bias is not None else x4, y4, mean, m2, stats,
        *x4.stride(), *y4.stride(), *stats.stride(), *(t.stride(0) if t is not None else 0 for t in (weight, bias)),
        num_groups, cpg, frames, pixels, n_chunks, chunk_pixels, n_p_blocks, eps,
        PER_FRAME=per_frame, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_C=block_c, BLOCK_P=block_p, BLOCK_PARTS=max(2, triton.next_power_of_2(parts)), num_warps=4,
    )
    return y, stats


@group_norm_silu_fwd.register_fake
def _(x, weight, bias, num_groups, eps, per_frame):
    y = _alloc.empty_in_order(x.shape, _alloc.dim_order(x), dtype=x.dtype, device=x.device)
    return y, x.new_empty(2, x.shape[0], num_groups, x.shape[2] if per_frame else 1, dtype=torch.float32)


@torch.library.custom_op("fastvid::group_norm_silu_bwd", mutates_args=())
def group_norm_silu_bwd(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], stats: Tensor,
                        num_groups: int, per_frame: bool) -> List[Tensor]:
    """Torch backward from the saved statistics, in fp32. Returns [dx, dweight, dbias] (empty when
    weight / bias is None). With xh = (x - mean) * rstd, z = xh * w + b, s = sigmoid(z):
    dz = dy * s * (1 + z * (1 - s)); dw = sum dz * xh; db = sum dz;
    dx = rstd * (dz * w - mean_group(dz * w) - xh * mean_group(dz * w * xh))."""
    batch, channels, frames, height, width = x.shape
    cpg = channels // num_groups
    grouped = (batch, num_groups, cpg, frames, height * width)
    xh = (x.float().reshape(grouped) - stats[0][:, :, None, :, None]) * stats[1][:, :, None, :, None]
    w = weight.float().view(1, num_groups, cpg, 1, 1) if weight is not None else None
    z = xh * w if w is not None else xh
    if bias is not None:
        z = z + bias.float().view(1, num_groups, cpg, 1, 1)
    s = torch.sigmoid(z)
    dz = dy.float().reshape(grouped) * s * (1 + z * (1 - s))
    dxh = dz * w if w is not None else dz
    dims = (2, 4) if per_frame else (2, 3, 4)
    dx = stats[1][:, :, None, :, None] * (dxh - dxh.mean(dims, keepdim=True)
                                          - xh * (dxh * xh).mean(dims, keepdim=True))
    dw = (dz * xh).sum((0, 3, 4)).reshape(channels).to(weight.dtype) if weight is not None else x.new_empty(0)
    db = dz.sum((0, 3, 4)).reshape(channels).to(bias.dtype) if bias is not None else x.new_empty(0)
    return [dx.reshape(x.shape).to(x.dtype), dw, db]


@group_norm_silu_bwd.register_fake
def _(dy, x, weight, bias, stats, num_groups, per_frame):
    return [x.new_empty(x.shape), weight.new_empty(weight.shape) if weight is not None else x.new_empty(0),
            bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, num_groups, eps, per_frame = inputs
    ctx.save_for_backward(x, weight, bias, output[1])
    ctx.num_groups, ctx.per_frame = num_groups, per_frame


def _backward(ctx, dy, dstats):
    x, weight, bias, stats = ctx.saved_tensors
    dx, dw, db = group_norm_silu_bwd(dy, x, weight, bias, stats, ctx.num_groups, ctx.per_frame)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    return (dx if need_x else None, dw if need_w and weight is not None else None,
            db if need_b and bias is not None else None, None, None, None)


group_norm_silu_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(x, num_groups, weight, bias, eps, per_frame):
    return group_norm_silu_fwd(x, weight, bias, num_groups, eps, per_frame)[0]


def _triton_reason(x, num_groups, weight, bias, eps, per_frame):
    why = triton_reason(x, weight, bias)
    if why:
        return why
    if x.dtype not in FLOAT_DTYPES:
        return f"dtype {x.dtype} is not supported by the Triton kernel (float32, float16, bfloat16)"
    if x.shape[1] // num_groups > MAX_TRITON_CHANNELS_PER_GROUP:
        return (f"{x.shape[1] // num_groups} channels per group > {MAX_TRITON_CHANNELS_PER_GROUP}: "
                "a group's channels form one tile")
    return None


def _run_torch(x, num_groups, weight, bias, eps, per_frame):
    """Eager GroupNorm + SiLU; per frame through a (B*F, C, H, W) view when x is frame-major."""
    if not per_frame:
        return Fn.silu(Fn.group_norm(x, num_groups, weight, bias, eps))
    frames = x.transpose(1, 2).flatten(0, 1)
    y = Fn.silu(Fn.group_norm(frames, num_groups, weight, bias, eps))
    return y.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)


def _run_reference(x, num_groups, weight, bias, eps, per_frame):
    return reference.group_norm_silu(x, num_groups, weight, bias, eps, per_frame=per_frame)


def _always(*args):
    return None


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda x, *a: triton_auto_reason(x)),
    Backend("torch", _run_torch, _always),
    Backend("reference", _run_reference, _always),
])


def _validate(x, num_groups, weight, bias, eps, per_frame):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(OP, "x", x, ndim=5, layout=LAYOUT, dtypes=dtypes)
    channels = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or channels % num_groups:
        fail(OP, "num_groups", f"is {num_groups!r}", f"a positive integer dividing C = {channels}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(OP, name, t, ndim=1, layout="(C,)", dtypes=dtypes)
            check_shape(OP, name, t, (channels,), "(C,)")
    check_same_dtype(OP, x=x, weight=weight, bias=bias)
    check_same_device(OP, x=x, weight=weight, bias=bias)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        fail(OP, "eps", f"is {eps!r}", "a float >= 0")
    if not isinstance(per_frame, bool):
        fail(OP, "per_frame", f"is {per_frame!r}", "a bool")


def group_norm_silu(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    eps: float = 1e-5, *, per_frame: bool = False, backend: str = "auto") -> Tensor:
    """silu(GroupNorm(x)) on a video feature map, fused (TemporalConvLayer, SVD's TemporalResnetBlock).

    Args:
        x: (B, C, F, H, W), contiguous, channels_last_3d or a frame-major view (read in place when
            H and W are adjacent in memory). fp32, fp16 or bf16 (float64 on the torch/reference backends).
        num_groups: G, dividing C.
        weight, bias: optional (C,) affine parameters, dtype of x.
        eps: added to the variance.
        per_frame: statistics over (C/G, H, W) of each frame, as a spatial ResNet applied per frame
            does; default over (C/G, F, H, W) of each sample, as GroupNorm on the 5D tensor does.
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        (B, C, F, H, W) in the memory order of x, dtype of x. Differentiable in x, weight, bias
        (the backward runs in torch from the saved statistics).
    """
    _validate(x, num_groups, weight, bias, eps, per_frame)
    return DISPATCH(backend, x, num_groups, weight, bias, float(eps), per_frame)
