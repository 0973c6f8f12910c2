"""GroupNorm + SiLU (or plain GroupNorm, silu=False) on video feature maps: launchers, torch.library
ops with autograd, dispatch, public function.

Forward: one Triton launch where the statistics are per frame, a program can hold whole groups of a
frame and there are enough such programs (both passes over the group in one program), else two (per-channel
statistics partials; then each tile combines its groups' partials, normalises, applies SiLU, and one program
per statistic saves its mean and rstd).
Backward: three Triton launches from the saved per-group mean and rstd (per-channel partial sums;
those summed in a fixed order into the group means the dx formula needs and the weight and bias
gradients; then dx), no torch kernel.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import FLOAT_DTYPES, check_same_device, check_same_dtype, check_shape, check_tensor, fail
from . import _launch
from ._library import TritonOp, _needs_grad, bound, custom_op

OUTPUT_LAYOUT = "input"  # the memory order of x, dense, whichever backend runs
OP = "group_norm_silu"
LAYOUT = "(B, C, F, H, W)"
IMAGE_LAYOUT = "(N, C, H, W)"
ADD_LAYOUT = "(B, C), (B, C, F) or, for images, (N, C)"
TILE = 4096  # elements of x per [BLOCK_C, BLOCK_P] tile
MAX_BLOCK_C_CHANNELS_INNER = 64  # channels per tile when channels have unit stride (8 x 128-bit per row)
COEF_BLOCK_C = 256  # channels per program of the backward's weight and bias gradient sums
COMBINE_TILE = 512  # partials per [BLOCK_G, BLOCK_R * BLOCK_J] tile of the forward's statistics combine
# The apply tile's pixels, times the statistics pass's, where its program would combine partials in more than one
# step (channels innermost, statistics over all frames): fewer programs, each combining once for more pixels.
APPLY_WIDEN = 4


# The one-launch forward (per-frame statistics): a program holds whole groups of one frame, up to
# GROUP_BLOCK_C channel lanes and GROUP_MAX_ELEMENTS elements of x per group (its two passes over them stay
# short), and is taken where such programs fill the GPU twice over (_launch.target_programs).
GROUP_BLOCK_C = 128
GROUP_MAX_ELEMENTS = 32768
GROUP_PROGRAMS_PER_SM = 2


def _groups_per_program(cpg: int) -> int:
    """Whole groups per program: the fewest whose channels fill at least 7/8 of their power-of-two lanes (3
    groups of 10 channels in 32 lanes, not 1 in 16), else the count that fills its lanes best; at most
    GROUP_BLOCK_C lanes."""
    fits = range(1, GROUP_BLOCK_C // cpg + 1)

    def filled(k: int) -> float:
        return k * cpg / _launch.next_pow2(k * cpg)

    return next((k for k in fits if filled(k) >= 7 / 8), max(fits, key=lambda k: (filled(k), -k)))


def _one_launch(x: Tensor, num_groups: int, per_frame: bool) -> bool:
    """Whether the forward runs as one launch (group_norm_silu_group_kernel)."""
    batch, channels, frames, height, width = x.shape
    cpg = channels // num_groups
    if not (per_frame or frames == 1) or cpg > GROUP_BLOCK_C or cpg * height * width > GROUP_MAX_ELEMENTS:
        return False
    programs = batch * frames * _launch.cdiv(num_groups, _groups_per_program(cpg))
    return programs >= _launch.target_programs(x, per_sm=GROUP_PROGRAMS_PER_SM, off_gpu=GROUP_PROGRAMS_PER_SM)


def _pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two dividing n, at most cap: a channel block that never pads C."""
    return min(n & -n, cap)


class _Plan:
    """Tile sizes and the pixel-chunk split shared by the forward and backward launches."""

    def __init__(self, x: Tensor, num_groups: int, per_frame: bool):

        batch, channels, frames, height, width = x.shape
        self.groups, self.frames, self.pixels = num_groups, frames, height * width
        self.cpg = channels // num_groups
        self.stat_frames = frames if per_frame else 1
        pixels_pow2 = _launch.next_pow2(self.pixels)
        self.channels_inner = x.stride(1) == 1 and self.pixels > 1
        if self.channels_inner:  # channels_last_3d: vectorise along channels
            self.block_c = _pow2_divisor(channels, MAX_BLOCK_C_CHANNELS_INNER)
            self.block_p = min(pixels_pow2, TILE // self.block_c)
        else:
            self.block_p = min(pixels_pow2, TILE)
            self.block_c = _pow2_divisor(channels, TILE // self.block_p)
        self.n_c_blocks = channels // self.block_c
        rows = batch * frames * self.n_c_blocks
        # Split the pixels into chunks so that batch 1 still gives a few programs per SM.
        target = _launch.target_programs(x, per_sm=4, off_gpu=4)
        n_chunks = max(1, min(_launch.cdiv(self.pixels, self.block_p), _launch.cdiv(target, rows)))
        self.chunk_pixels = _launch.cdiv(_launch.cdiv(self.pixels, n_chunks), self.block_p) * self.block_p
        self.n_chunks = _launch.cdiv(self.pixels, self.chunk_pixels)
        self.n_p_blocks = _launch.cdiv(self.pixels, self.block_p)
        self.partial_rows = batch * frames * self.n_chunks
        self.reduce_programs = rows * self.n_chunks
        self.apply_programs = rows * self.n_p_blocks

    def stats_strides(self, strides: tuple, per_frame: bool):
        # Per-sample statistics have one entry per (b, g): every frame reads it (stride 0).
        sk, sb, sg, sf = strides
        return sk, sb, sg, sf if per_frame else 0


def _groups_per_block(channels: int, block_c: int, cpg: int) -> int:
    """The most groups one channel block [c, c + block_c) touches (blocks need not follow groups)."""
    return max((c + block_c - 1) // cpg - c // cpg + 1 for c in range(0, channels, block_c))


def _affine_strides(weight: Optional[Tensor], bias: Optional[Tensor]):
    return tuple(t.stride(0) if t is not None else 0 for t in (weight, bias))


def _add_strides(add: Optional[Tensor]):
    """(b, c, f) strides of a (B, C, F or 1) ``add``; a single frame is read by every frame (stride 0)."""
    if add is None:
        return 0, 0, 0
    sb, sc, sf = add.stride()
    return sb, sc, sf if add.shape[2] > 1 else 0


def _like_x(x: Tensor) -> Tensor:
    return _launch.empty_like_video(x)


class _FwdPlan:
    """The forward launches (one or two) of one call signature, and the output layouts. ``keep_stats`` False (a call
    that needs no gradient): the statistics are neither allocated nor written (``stats`` is None)."""

    def __init__(self, x, weight, bias, num_groups, eps, per_frame, add=None, silu=True, keep_stats=True):
        from ..kernels.group_norm_silu import (group_norm_silu_apply_kernel, group_norm_silu_group_kernel,
                                               group_norm_stats_kernel)

        self.stats_shape = (2, x.shape[0], num_groups, x.shape[2] if per_frame else 1)
        self.shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        self.pixel_dim = 3  # x's H and W, flattened where they do not merge in place
        self.strides = _launch.video_strides(self.shape, _launch.video_layout(x))  # y's, in x's memory order
        stats_strides = _launch.contiguous_strides(self.stats_shape)
        self.y = _launch.allocator(self.shape, self.strides, x.dtype, x.device)
        self.stats = (_launch.allocator(self.stats_shape, stats_strides, torch.float32, x.device) if keep_stats
                      else _none)
        self.launches = None
        if x.numel() == 0:
            return
        channels = x.shape[1]
        x4 = x.flatten(3)
        y4_strides = torch.empty_strided(self.shape, self.strides, device="meta").flatten(3).stride()
        self.x_merged = _launch.merges_pixels(x)
        has_add = add is not None
        flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_ADD=has_add, SILU=silu,
                     STORE_STATS=keep_stats, num_warps=4)
        if _one_launch(x, num_groups, per_frame):
            cpg = channels // num_groups
            groups = _groups_per_program(cpg)
            block_c = _launch.next_pow2(groups * cpg)
            pixels = x.shape[3] * x.shape[4]
            n_g_blocks = _launch.cdiv(num_groups, groups)
            self.partial = None
            self.launches = (_launch.Launch(
                group_norm_silu_group_kernel, (x.shape[0] * x.shape[2] * n_g_blocks,),
                (*x4.stride(), *y4_strides, *stats_strides, *_affine_strides(weight, bias), *_add_strides(add),
                 cpg, num_groups, x.shape[2], pixels, n_g_blocks, eps),
                GROUPS=groups, GROUPS_POW2=_launch.next_pow2(groups), BLOCK_C=block_c,
                BLOCK_P=min(_launch.next_pow2(pixels), max(1, TILE // block_c)), **flags),)
            return
        plan = _Plan(x, num_groups, per_frame)
        # Per-channel partial means, then M2s, one row per (b, f, chunk): every entry written by the first launch.
        self.partial = _launch.allocator((plan.partial_rows, 2 * channels), (2 * channels, 1), torch.float32,
                                         x.device, poison=False)
        block_j = _launch.next_pow2(plan.cpg)
        block_g = _launch.next_pow2(_groups_per_block(channels, plan.block_c, plan.cpg))
        # Partial rows per statistic: its chunks, of one frame or of all; a tile no taller than that.
        rows_per_stat = plan.n_chunks * (plan.frames // plan.stat_frames)
        block_r = min(max(1, COMBINE_TILE // (block_g * block_j)), _launch.next_pow2(rows_per_stat))
        widen = APPLY_WIDEN if plan.channels_inner and rows_per_stat > block_r else 1
        apply_block_p = min(plan.block_p * widen, _launch.next_pow2(plan.pixels))
        apply_p_blocks = _launch.cdiv(plan.pixels, apply_block_p)
        self.launches = (
            _launch.Launch(group_norm_stats_kernel, (plan.reduce_programs,),
                           (*x4.stride(), *_add_strides(add), channels, plan.frames, plan.pixels, plan.n_c_blocks,
                            plan.n_chunks, plan.chunk_pixels), HAS_ADD=has_add, BLOCK_C=plan.block_c,
                           BLOCK_P=plan.block_p, num_warps=4),
            _launch.Launch(group_norm_silu_apply_kernel,
                           (x.shape[0] * plan.frames * plan.n_c_blocks * apply_p_blocks,),
                           (*x4.stride(), *y4_strides, *stats_strides, *_affine_strides(weight, bias),
                            *_add_strides(add), channels, plan.cpg, plan.frames, plan.pixels, plan.n_c_blocks,
                            apply_p_blocks, plan.n_chunks, plan.chunk_pixels, eps), PER_FRAME=per_frame,
                           BLOCK_C=plan.block_c, BLOCK_P=apply_block_p, BLOCK_R=block_r, BLOCK_G=block_g,
                           BLOCK_J=block_j, **dict(flags, num_warps=8 if widen > 1 else 4)),
        )


def _none():
    return None


def _image_plan(plan: _FwdPlan) -> _FwdPlan:
    """``plan`` (of images seen as one-frame videos) run on the (N, C, H, W) images and (N, C) add themselves:
    the kernels read them through the plan's strides, and y is allocated as (N, C, H, W)."""
    shape, strides = plan.shape[:2] + plan.shape[3:], plan.strides[:2] + plan.strides[3:]
    plan.y = _launch.allocator(shape, strides, plan.dtype, plan.device)
    plan.pixel_dim = 2
    return plan


def _fwd_run(plan: _FwdPlan, x, weight, bias, num_groups, eps, per_frame, add=None, silu=True):
    y, stats = plan.y(), plan.stats()
    if plan.launches is None:
        return y, stats
    # (B, C, F, H * W): y itself (H and W adjacent), x itself where they merge, else a copy
    x4 = x if plan.x_merged else x.flatten(plan.pixel_dim)
    add_or_x = x4 if add is None else add
    if plan.partial is None:  # one launch
        plan.launches[0](x4, x4 if weight is None else weight, x4 if bias is None else bias, add_or_x, y,
                         y if stats is None else stats)
        return y, stats
    stats_launch, apply = plan.launches
    partial = plan.partial()
    stats_launch(x4, add_or_x, partial)
    apply(x4, x4 if weight is None else weight, x4 if bias is None else bias, add_or_x, partial, y,
          y if stats is None else stats)
    return y, stats


@custom_op("fastvid::group_norm_silu_fwd")
def group_norm_silu_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], num_groups: int, eps: float,
                        per_frame: bool, add: Optional[Tensor] = None, silu: bool = True) -> Tuple[Tensor, Tensor]:
    """Triton forward of silu(GroupNorm(x + add)) (GroupNorm(x + add) when not silu), add (B, C, F or 1)
    or None. Returns y (x's shape, memory order and dtype) and stats (2, B, G, F or 1) fp32: mean and
    rstd of x + add."""
    return _fwd_op.planned(x, weight, bias, num_groups, eps, per_frame, add, silu)


@group_norm_silu_fwd.register_fake
def _(x, weight, bias, num_groups, eps, per_frame, add=None, silu=True):
    return _like_x(x), x.new_empty(2, x.shape[0], num_groups, x.shape[2] if per_frame else 1, dtype=torch.float32)


class _BwdPlan:
    """The three backward launches of one call signature."""

    def __init__(self, dy, x, weight, bias, stats, num_groups, per_frame, add=None, silu=True):
        from ..kernels.group_norm_silu import (group_norm_silu_bwd_apply_kernel, group_norm_silu_bwd_coef_kernel,
                                               group_norm_silu_bwd_reduce_kernel)

        self.launches = None
        if x.numel() == 0:
            return
        plan = self.plan = _Plan(x, num_groups, per_frame)
        channels = x.shape[1]
        self.partial_shape = (plan.partial_rows, channels)
        count = plan.cpg * plan.pixels * (plan.frames // plan.stat_frames)
        self.stats_shape = tuple(stats.shape)
        self.stats_strides = _launch.contiguous_strides(self.stats_shape)  # coef shares them
        x4, dy4 = x.flatten(3), dy.flatten(3)
        self.x_merged, self.dy_merged = _launch.merges_pixels(x), _launch.merges_pixels(dy)
        self.shape = tuple(x.shape)
        self.strides = _launch.video_strides(self.shape, _launch.video_layout(x))  # dx's, in x's memory order
        dx4_strides = torch.empty_strided(self.shape, self.strides, device="meta").flatten(3).stride()
        common = (*plan.stats_strides(self.stats_strides, per_frame), *_affine_strides(weight, bias),
                  *_add_strides(add))
        flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_ADD=add is not None,
                     SILU=silu, BLOCK_C=plan.block_c, BLOCK_P=plan.block_p, num_warps=4)
        n_stats = x.shape[0] * num_groups * plan.stat_frames
        affine_stride = weight.stride(0) if weight is not None else 0
        self.launches = (
            _launch.Launch(group_norm_silu_bwd_reduce_kernel, (plan.reduce_programs,),
                           (*x4.stride(), *dy4.stride(), *common, channels, plan.cpg, plan.frames, plan.pixels,
                            plan.n_c_blocks, plan.n_chunks, plan.chunk_pixels), **flags),
            _launch.Launch(group_norm_silu_bwd_coef_kernel, (n_stats + _launch.cdiv(channels, COEF_BLOCK_C),),
                           (affine_stride, *self.stats_strides, channels, plan.cpg, num_groups, plan.stat_frames,
                            plan.partial_rows // (x.shape[0] * plan.stat_frames), plan.partial_rows, count, n_stats),
                           HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                           BLOCK_J=_launch.next_pow2(plan.cpg), BLOCK_C=COEF_BLOCK_C, num_warps=4),
            _launch.Launch(group_norm_silu_bwd_apply_kernel, (plan.apply_programs,),
                           (*x4.stride(), *dy4.stride(), *dx4_strides, *common, plan.cpg, plan.frames, plan.pixels,
                            plan.n_c_blocks, plan.n_p_blocks), **flags),
        )


def _bwd_run(plan: _BwdPlan, dy, x, weight, bias, stats, num_groups, per_frame, add=None, silu=True):
    channels = x.shape[1]
    if plan.launches is None:
        zeros = torch.zeros(channels, dtype=x.dtype, device=x.device)
        return [_like_x(x), zeros if weight is not None else x.new_empty(0),
                zeros.clone() if bias is not None else x.new_empty(0),
                torch.zeros_like(add) if add is not None else x.new_empty(0)]
    reduce, coef_sums, apply = plan.launches
    dx = _launch.empty_strided(plan.shape, plan.strides, dtype=x.dtype, device=x.device)
    if stats.stride() != plan.stats_strides:
        stats = stats.contiguous()
    # (B, C, F, H * W): dx itself (H and W adjacent), x and dy themselves where they merge, else copies
    x4, dy4 = (x if plan.x_merged else x.flatten(3)), (dy if plan.dy_merged else dy.flatten(3))
    affine = (x4 if weight is None else weight, x4 if bias is None else bias, x4 if add is None else add)
    # Per-channel partial sums of dz * xh and dz (and of xh with add), one row per (b, f, chunk).
    dw_part = torch.empty(plan.partial_shape, dtype=torch.float32, device=x.device)
    db_part = torch.empty(plan.partial_shape, dtype=torch.float32, device=x.device)
    xh_part = dw_part if add is None else torch.empty(plan.partial_shape, dtype=torch.float32, device=x.device)
    reduce(x4, dy4, *affine, stats, dw_part, db_part, xh_part)
    # Group means of dz * w and dz * w * xh, laid out like stats; the weight and bias gradients.
    coef = torch.empty(plan.stats_shape, dtype=torch.float32, device=x.device)
    dw = torch.empty(channels, dtype=weight.dtype, device=x.device) if weight is not None else x.new_empty(0)
    db = torch.empty(channels, dtype=bias.dtype, device=x.device) if bias is not None else x.new_empty(0)
    coef_sums(dw_part, db_part, dw_part if weight is None else weight, coef,
              dw_part if weight is None else dw, dw_part if bias is None else db)
    apply(x4, dy4, *affine, stats, coef, dx)
    if add is None:
        return [dx, dw, db, x.new_empty(0)]
    w32 = weight.float() if weight is not None else torch.ones(channels, device=x.device)
    return [dx, dw, db, _add_grad(plan.plan, add, w32, stats, coef, db_part, xh_part)]


def _add_grad(plan: _Plan, add: Tensor, w32: Tensor, stats: Tensor, coef: Tensor, dz_part: Tensor,
              xh_part: Tensor) -> Tensor:
    """add's gradient, dx summed over each (b, c, f)'s pixels (and over F for a (B, C, 1) add), from the
    per-channel partial sums of dz and xh: no pass over dx."""
    batch, channels = add.shape[:2]

    def per_frame_channel(part: Tensor) -> Tensor:  # (B * F * chunks, C) -> (B, F, C)
        return part.view(batch, plan.frames, plan.n_chunks, channels).sum(2)

    def per_channel(t: Tensor) -> Tensor:  # (B, G, F or 1) -> (B, F or 1, C)
        return t.repeat_interleave(plan.cpg, dim=1).transpose(1, 2)

    rstd, mean_dzw, mean_dzw_xh = per_channel(stats[1]), per_channel(coef[0]), per_channel(coef[1])
    dadd = rstd * (w32 * per_frame_channel(dz_part) - plan.pixels * mean_dzw - mean_dzw_xh * per_frame_channel(xh_part))
    if add.shape[2] == 1:
        dadd = dadd.sum(1, keepdim=True)
    return dadd.transpose(1, 2).to(add.dtype)


@custom_op("fastvid::group_norm_silu_bwd")
def group_norm_silu_bwd(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], stats: Tensor,
                        num_groups: int, per_frame: bool, add: Optional[Tensor] = None,
                        silu: bool = True) -> List[Tensor]:
    """Triton backward from the saved statistics. Returns [dx, dweight, dbias, dadd] (empty when weight /
    bias / add is None). With xh = (x + add - mean) * rstd, z = xh * w + b, dz = dy * silu'(z) (dy when
    not silu):
    dw = sum dz * xh; db = sum dz; dx = rstd * (dz * w - mean_group(dz * w) - xh * mean_group(dz * w * xh));
    dadd = dx summed over the pixels (and the frames add is broadcast over), formed from per-channel sums
    of dz and xh: rstd * (w * sum dz - P * mean_group(dz * w) - mean_group(dz * w * xh) * sum xh)."""
    return _bwd_op.planned(dy, x, weight, bias, stats, num_groups, per_frame, add, silu)


@group_norm_silu_bwd.register_fake
def _(dy, x, weight, bias, stats, num_groups, per_frame, add=None, silu=True):
    return [_like_x(x), weight.new_empty(weight.shape) if weight is not None else x.new_empty(0),
            bias.new_empty(bias.shape) if bias is not None else x.new_empty(0),
            add.new_empty(add.shape) if add is not None else x.new_empty(0)]


def _setup_context(ctx, inputs, output):
    # The eager path passes the arguments as called: add and silu may be left to their defaults.
    x, weight, bias, num_groups, eps, per_frame, add, silu = (*inputs, None, True)[:8]
    ctx.save_for_backward(x, weight, bias, output[1], add)
    ctx.num_groups, ctx.per_frame, ctx.silu = num_groups, per_frame, silu


def _backward(ctx, dy, dstats):
    x, weight, bias, stats, add = ctx.saved_tensors
    dx, dw, db, dadd = _bwd_op(dy, x, weight, bias, stats, ctx.num_groups, ctx.per_frame, add, ctx.silu)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_add = len(ctx.needs_input_grad) > 6 and ctx.needs_input_grad[6]
    grads = (dx if need_x else None, dw if need_w and weight is not None else None,
             db if need_b and bias is not None else None, None, None, None,
             dadd if need_add and add is not None else None, None)
    return grads[:len(ctx.needs_input_grad)]


_fwd_op = TritonOp(group_norm_silu_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(group_norm_silu_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

# Backends take (B, C, F, H, W) x and a (B, C, F or 1) add (see _backend_arguments).

def _as_video(x: Tensor, add: Optional[Tensor]):
    """Images (N, C, H, W) as one-frame videos (N, C, 1, H, W) and a (B, C) add as (B, C, 1): views."""
    return (x.unsqueeze(2) if x.dim() == 4 else x), (add.unsqueeze(2) if add is not None and add.dim() == 2 else add)


def _on_video(run_video):
    """A backend of (B, C, F, H, W) x and a (B, C, F or 1) add that takes images (and a (N, C) add) too and
    returns x's rank."""
    def run(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
        video, add = _as_video(x, add)
        y = run_video(video, num_groups, weight, bias, eps, per_frame, add, silu)
        return y.squeeze(2) if x.dim() == 4 else y

    return run


def _run_triton(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    return _fwd_op(x, weight, bias, num_groups, eps, per_frame, add, silu)[0]


def _prepare_triton(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    video, add_video = _as_video(x, add)
    if video is not x and not _needs_grad((x, weight, bias, add)):  # images, no gradient: no views per call
        plan = _image_plan(_FwdPlan(video, weight, bias, num_groups, eps, per_frame, add_video, silu, keep_stats=False))
        return bound(_fwd_run, 8, (0, 2, 3, 1, 4, 5, 6, 7), prefix=(plan,), output=0)
    call = _fwd_op.prepare(video, weight, bias, num_groups, eps, per_frame, add_video, silu, output=0,
                           inference_plan=lambda *args: _FwdPlan(*args, keep_stats=False))
    if video is x and add_video is add:
        return bound(call, 8, (0, 2, 3, 1, 4, 5, 6, 7))  # the backends' argument order -> the library op's
    return _on_video(lambda x, num_groups, weight, bias, eps, per_frame, add, silu: call(
        x, weight, bias, num_groups, eps, per_frame, add, silu))


def _triton_reason(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    return _launch.triton_reason(x, weight, bias, add)


def _features(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    return {"dtype": x.dtype, "channels per group": x.shape[1] // num_groups}


def _run_torch(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    """Eager GroupNorm (+ SiLU); per frame through a (B*F, C, H, W) view when x is frame-major."""
    if x.numel() == 0:
        return _run_reference(x, num_groups, weight, bias, eps, per_frame, add, silu)
    act = Fn.silu if silu else (lambda t: t)
    h = x if add is None else x + add[..., None, None]
    if not per_frame:
        return _launch.in_video_order(act(Fn.group_norm(h, num_groups, weight, bias, eps)), x)
    frames = h.transpose(1, 2).flatten(0, 1)
    y = act(Fn.group_norm(frames, num_groups, weight, bias, eps))
    return _launch.in_video_order(y.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2), x)


def _run_reference(x, num_groups, weight, bias, eps, per_frame, add=None, silu=True):
    return _launch.in_video_order(reference.group_norm_silu(x, num_groups, weight, bias, eps, per_frame=per_frame,
                                                            add=add, silu=silu), x)


def _validate(x, num_groups, weight, bias, eps, per_frame, add, silu):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(OP, "x", x, layout=LAYOUT, dtypes=dtypes)
    if x.dim() not in (4, 5):
        fail(OP, "x", f"has rank {x.dim()}", f"rank 5 {LAYOUT} or rank 4 {IMAGE_LAYOUT}")
    channels = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or channels % num_groups:
        fail(OP, "num_groups", f"is {num_groups!r}", f"a positive integer dividing C = {channels}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(OP, name, t, ndim=1, layout="(C,)", dtypes=dtypes)
            check_shape(OP, name, t, (channels,), "(C,)")
    if add is not None:
        check_tensor(OP, "add", add, dtypes=dtypes)
        shapes = [x.shape[:2]] + ([(*x.shape[:2], x.shape[2])] if x.dim() == 5 else [])
        if tuple(add.shape) not in [tuple(shape) for shape in shapes]:
            want = " or ".join(str(tuple(shape)) for shape in shapes)
            fail(OP, "add", f"has shape {tuple(add.shape)}", f"shape {want} ({ADD_LAYOUT})")
    check_same_dtype(OP, x=x, weight=weight, bias=bias, add=add)
    check_same_device(OP, x=x, weight=weight, bias=bias, add=add)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        fail(OP, "eps", f"is {eps!r}", "a float >= 0")
    for name, flag in (("per_frame", per_frame), ("silu", silu)):
        if not isinstance(flag, bool):
            fail(OP, name, f"is {flag!r}", "a bool")


def _backend_arguments(x, num_groups, weight=None, bias=None, eps=1e-5, per_frame=False, add=None, silu=True):
    """The public function's arguments (its defaults, in the backends' order) validated and resolved
    (per_frame off for images: each image is its own sample). Each backend views images (N, C, H, W) as
    one-frame videos and an add (B, C) as (B, C, 1) itself (``_on_video``), so a call's tensors are its
    arguments and the dispatcher caches the whole call."""
    _validate(x, num_groups, weight, bias, eps, per_frame, add, silu)
    return x, num_groups, weight, bias, float(eps), per_frame and x.dim() == 5, add, silu


TRITON_LIMITS = Limits(dtypes=FLOAT_DTYPES, maxima={"channels per group": (512, "a group's channels form one tile")})

DISPATCH = Dispatcher(OP, [
    Backend("triton", _on_video(_run_triton), _triton_reason, auto_reason=lambda x, *a: _launch.triton_auto_reason(x),
            limits=TRITON_LIMITS, prepare=_prepare_triton),
    Backend("torch", _on_video(_run_torch)),
    Backend("reference", _on_video(_run_reference)),
], arguments=_backend_arguments, features=_features)


def group_norm_silu(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    eps: float = 1e-5, *, per_frame: bool = False, add: Optional[Tensor] = None,
                    silu: bool = True, backend: str = "auto") -> Tensor:
    """silu(GroupNorm(x + add)) on a video feature map or a batch of frames, fused (ResNet blocks:
    TemporalConvLayer, SVD's TemporalResnetBlock, ResnetBlock2D applied per frame); with
    ``silu=False`` plain GroupNorm(x + add) (a temporal transformer's input norm).

    Args:
        x: (B, C, F, H, W), contiguous, channels_last_3d or a frame-major view (read in place when
            H and W are adjacent in memory); or (N, C, H, W) images (N = B*F frames), statistics per
            image. fp32, fp16 or bf16 (float64 on the torch/reference backends).
        num_groups: G, dividing C.
        weight, bias: optional (C,) affine parameters, dtype of x.
        eps: added to the variance.
        per_frame: statistics over (C/G, H, W) of each frame, as a spatial ResNet applied per frame
            does; default over (C/G, F, H, W) of each sample, as GroupNorm on the 5D tensor does.
            Ignored for (N, C, H, W) x (each image is its own sample).
        add: optional value added to x before the statistics, never materialised: (B, C) or
            (B, C, F) for video x, (N, C) for images; dtype of x. A ResNet's time embedding
            (``norm2(conv1(h) + temb[:, :, None, None])``).
        silu: apply SiLU after the affine (default); False gives GroupNorm alone, as AnimateDiff's
            motion module and TransformerTemporalModel normalise their input: a frame-major
            (B, C, F, H, W) view of (B*F, C, H, W) frames, statistics over all frames, read in place.
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        x's shape, in the memory order of x, dtype of x. Differentiable in x, weight, bias and add
        (Triton backward from the saved statistics).
    """
    return DISPATCH.call(backend, x, num_groups, weight, bias, eps, per_frame, add, silu)
