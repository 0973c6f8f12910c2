"""Temporal convolution: launchers, torch.library ops with autograd, dispatch, public function."""
from __future__ import annotations

from typing import List, Optional, Union

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import FLOAT_DTYPES, check_same_device, check_same_dtype, check_shape, check_tensor, fail
from . import _launch
from ._library import TritonOp, custom_op

OUTPUT_LAYOUT = "input"  # the memory order of x, dense, whichever backend runs
OP = "temporal_conv"
LAYOUT = "(B, C_in, F, H, W)"


def _block(size: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, _launch.next_pow2(max(size, 1))))


def _block_co(c_out: int) -> int:
    """Output-channel tile: 128 or 64, whichever pads C_out less (320 -> 64, 640 -> 128); small C_out
    take the next power of two."""
    if c_out < 64:
        return _block(c_out, 16, 64)
    return min((128, 64), key=lambda b: (-(-c_out // b) * b, -b))


def _full_tiles(*size_and_block) -> bool:
    """Every (size, tile) pair tiles exactly: the kernel may load and store without bounds masks."""
    return all(size % block == 0 for size, block in size_and_block)


def _wave_efficiency(programs: int, sms: int) -> float:
    """Busy fraction of the SMs over the grid's waves (one program per SM per wave)."""
    return programs / (-(-programs // sms) * sms)


def _block_p(x: Tensor, pixels: int, block_co: int, tiles_per_p_block: int) -> int:
    """Pixel tile: the largest up to a 128 x 128 (or 64 x 256) fp32 accumulator, halved once when that
    leaves the last wave under 90% full and the half fills it better (C_out 320 at 32x32: 2.4 -> 4.8 waves)."""
    largest = _block(pixels, 16, 16384 // block_co)
    sms = _launch.target_programs(x, per_sm=1, off_gpu=1)
    candidates = [largest] + ([largest // 2] if largest >= 32 else [])
    efficiency = [_wave_efficiency(tiles_per_p_block * -(-pixels // bp), sms) for bp in candidates]
    if efficiency[0] >= 0.9:
        return largest
    return candidates[max(range(len(candidates)), key=efficiency.__getitem__)]


def _conv_launch(x: Tensor, w_k: Tensor, bias: Optional[Tensor], residual: Optional[Tensor], out: Tensor,
                 pad: int) -> "_launch.Launch":
    """The launch of out = conv over frames of x (B, C_in, F_in, H, W) with ``w_k`` (k, C_out, C_in), C_in
    contiguous (each tap's [C_out, C_in] tile a dense load), any strides; ``out`` may be a meta tensor
    with the output's layout. Tensors at launch: x4, w_k, bias (or w_k), residual4 (or out4), out4."""

    from ..kernels.temporal_conv import temporal_conv_fwd_kernel

    # (B, C, F, H*W) views: out has H and W adjacent (video_order); inputs whose H and W do not merge are copied.
    x4, out4 = x.flatten(3), out.flatten(3)
    res4 = residual.flatten(3) if residual is not None else out4
    batch, c_in, frames_in, pixels = x4.shape
    c_out, frames_out = out4.shape[1], out4.shape[2]
    wide = x.element_size() == 2
    block_co = _block_co(c_out)
    block_ci = _block(c_in, 16, 64 if wide else 32)
    n_co = _launch.cdiv(c_out, block_co)
    block_p = _block_p(x, pixels, block_co, n_co * batch * frames_out)
    grid = (n_co * _launch.cdiv(pixels, block_p), batch * frames_out)
    return _launch.Launch(
        temporal_conv_fwd_kernel, grid,
        (*x4.stride(), w_k.stride(1), w_k.stride(2), w_k.stride(0), bias.stride(0) if bias is not None else 0,
         *(res4.stride() if residual is not None else (0,) * 4), *out4.stride(),
         c_in, c_out, frames_in, frames_out, pixels, w_k.shape[0], pad, n_co),
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, PRECISION=_launch.dot_precision(x.dtype),
        EVEN=_full_tiles((c_in, block_ci), (c_out, block_co), (pixels, block_p)),
        BLOCK_CO=block_co, BLOCK_P=block_p, BLOCK_CI=block_ci,
        num_warps=8 if block_co * block_p >= 128 * 128 else 4, num_stages=3,
    )


def _out_frames(frames: int, taps: int, pad: int) -> int:
    return frames + 2 * pad - taps + 1


def _tap_major(weight: Tensor) -> Tensor:
    """The weight as (k, C_out, C_in), C_in contiguous: one copy (one aten op)."""
    return torch.permute_copy(weight, (2, 0, 1))


class _FwdPlan:
    def __init__(self, x, weight, bias, residual, pad):
        batch, _, frames, height, width = x.shape
        self.shape = (batch, weight.shape[0], _out_frames(frames, weight.shape[-1], pad), height, width)
        self.strides = _launch.video_strides(self.shape, _launch.video_layout(x))  # in x's memory order
        self.x_merged = _launch.merges_pixels(x)
        self.res_merged = residual is None or _launch.merges_pixels(residual)
        self.out = _launch.allocator(self.shape, self.strides, x.dtype, x.device)
        self.launch = None
        if batch * weight.shape[0] * self.shape[2] * height * width:
            out = torch.empty_strided(self.shape, self.strides, dtype=x.dtype, device="meta")
            self.launch = _conv_launch(x, _tap_major(weight), bias, residual, out, pad)


def _fwd_run(plan: _FwdPlan, x, weight, bias, residual, pad):
    out = plan.out()
    if plan.launch is not None:  # (B, C, F, H * W) views: the tensors themselves where H and W merge
        w_k = _tap_major(weight)
        plan.launch(x if plan.x_merged else x.flatten(3), w_k, w_k if bias is None else bias,
                    out if residual is None else residual if plan.res_merged else residual.flatten(3), out)
    return out


@custom_op("fastvid::temporal_conv_fwd")
def temporal_conv_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
                      pad: int) -> Tensor:
    """Triton forward: (B, C_out, F_out, H, W) in the memory order of x."""
    return _fwd_op.planned(x, weight, bias, residual, pad)


@temporal_conv_fwd.register_fake
def _(x, weight, bias, residual, pad):
    batch, _, frames, height, width = x.shape
    shape = (batch, weight.shape[0], _out_frames(frames, weight.shape[-1], pad), height, width)
    return _launch.empty_like_video(x, shape)


class _WeightGradPlan:
    """The dW kernel (per-program fp32 partials of dW (C_out, C_in, k) and dbias (C_out,)) and the kernel
    summing them over the frame splits in a fixed order, into the weight dtype."""

    def __init__(self, dout: Tensor, x: Tensor, taps: int, pad: int, weight_grad: bool, bias_grad: bool):
        from ..kernels.temporal_conv import temporal_conv_dw_kernel, temporal_conv_grad_sum_kernel

        x4, dout4 = x.flatten(3), dout.flatten(3)
        batch, c_in, frames_in, pixels = x4.shape
        c_out, frames_out = dout4.shape[1], dout4.shape[2]
        block_co, block_ci = _block(c_out, 16, 64), _block(c_in, 16, 64)
        block_p = _block(pixels, 16, 64)
        n_co = _launch.cdiv(c_out, block_co)
        tiles = n_co * _launch.cdiv(c_in, block_ci) * taps
        # Split the frames until the GPU has a few programs per SM (at batch 1 the tiles alone are few).
        target = _launch.target_programs(x, per_sm=4, off_gpu=4)
        n_split = max(1, min(frames_out, _launch.cdiv(target, tiles)))
        per_split = _launch.cdiv(frames_out, n_split)
        n_split = _launch.cdiv(frames_out, per_split)
        self.dw_shape, self.db_shape = (n_split, c_out, c_in, taps), ((n_split, c_out) if bias_grad else None)
        self.dw_part = _launch.allocator(self.dw_shape, _launch.contiguous_strides(self.dw_shape), torch.float32,
                                         x.device, poison=False)
        self.db_part = (_launch.allocator(self.db_shape, _launch.contiguous_strides(self.db_shape), torch.float32,
                                          x.device, poison=False) if bias_grad else None)
        self.partials = _launch.Launch(
            temporal_conv_dw_kernel, (tiles // taps, taps, n_split),
            (*x4.stride(), *dout4.stride(), *_launch.contiguous_strides(self.dw_shape),
             *(_launch.contiguous_strides(self.db_shape) if bias_grad else (0, 0)),
             batch, c_in, c_out, frames_in, frames_out, pixels, pad, n_co, per_split),
            HAS_BIAS=bias_grad, PRECISION=_launch.dot_precision(x.dtype),
            EVEN=_full_tiles((c_in, block_ci), (c_out, block_co), (pixels, block_p)),
            BLOCK_CO=block_co, BLOCK_CI=block_ci, BLOCK_P=block_p, num_warps=4, num_stages=3,
        )
        dw_cells, block = c_out * c_in * taps, 1024
        programs = (_launch.cdiv(dw_cells, block) if weight_grad else 0) + (
            _launch.cdiv(c_out, block) if bias_grad else 0)
        self.sums = _launch.Launch(temporal_conv_grad_sum_kernel, (programs,), (n_split, dw_cells, c_out),
                                   WEIGHT_GRAD=weight_grad, BLOCK=block, num_warps=4)


def _flipped(weight: Tensor, reversed_taps: Tensor) -> Tensor:
    """The transposed, time-flipped weight of dx = conv(dY), tap-major: (k, C_in, C_out), C_out contiguous,
    in one gather (``reversed_taps``: k-1, ..., 0 on the weight's device)."""
    return weight.permute(2, 1, 0).index_select(0, reversed_taps)


class _BwdPlan:
    def __init__(self, dout, x, weight, pad, input_grad, weight_grad, bias_grad):
        taps = weight.shape[-1]
        self.shape = tuple(x.shape)
        self.strides = _launch.video_strides(self.shape, _launch.video_layout(x))  # dx's, in x's memory order
        self.x_merged, self.dout_merged = _launch.merges_pixels(x), _launch.merges_pixels(dout)
        self.dx_out = _launch.allocator(self.shape, self.strides, x.dtype, x.device)
        self.dweight = _launch.allocator(weight.shape, _launch.contiguous_strides(weight.shape), weight.dtype, x.device,
                                         poison=False)
        self.dbias = _launch.allocator((weight.shape[0],), (1,), weight.dtype, x.device, poison=False)
        self.dx = self.dw = None
        if input_grad and x.numel():
            dx = torch.empty_strided(self.shape, self.strides, dtype=x.dtype, device="meta")
            # dx = the same conv over dY with the transposed, time-flipped weight and padding k-1-pad.
            self.reversed_taps = torch.arange(taps - 1, -1, -1, device=weight.device)
            self.dx = _conv_launch(dout, _flipped(weight, self.reversed_taps), None, None, dx, taps - 1 - pad)
        if (weight_grad or bias_grad) and dout.numel():
            self.dw = _WeightGradPlan(dout, x, taps, pad, weight_grad, bias_grad)


def _bwd_run(plan: _BwdPlan, dout, x, weight, pad, input_grad, weight_grad, bias_grad):
    """[dx, dweight, dbias]; a gradient not asked for is an empty tensor."""
    dx = dw = db = None
    # (B, C, F, H * W) views: the tensors themselves where H and W merge (dx's always do)
    dout4 = dout if plan.dout_merged else dout.flatten(3)
    if input_grad:
        dx = plan.dx_out()
        if plan.dx is not None:
            w_k = _flipped(weight, plan.reversed_taps)
            plan.dx(dout4, w_k, w_k, dx, dx)
    if plan.dw is not None:
        wg = plan.dw
        dw_part = wg.dw_part()
        db_part = wg.db_part() if bias_grad else dw_part
        wg.partials(x if plan.x_merged else x.flatten(3), dout4, dw_part, db_part)
        dw = plan.dweight() if weight_grad else None
        db = plan.dbias() if bias_grad else None
        wg.sums(dw_part, db_part, db if dw is None else dw, dw if db is None else db)
    elif weight_grad or bias_grad:  # no output element: zero gradients
        dw = torch.zeros(weight.shape, dtype=weight.dtype, device=x.device) if weight_grad else None
        db = torch.zeros(weight.shape[0], dtype=weight.dtype, device=x.device) if bias_grad else None
    return [x.new_empty(0) if g is None else g for g in (dx, dw, db)]


@custom_op("fastvid::temporal_conv_bwd")
def temporal_conv_bwd(dout: Tensor, x: Tensor, weight: Tensor, pad: int, input_grad: bool, weight_grad: bool,
                      bias_grad: bool) -> List[Tensor]:
    """Triton backward: [dx, dweight, dbias]; a gradient not asked for is an empty tensor."""
    return _bwd_op.planned(dout, x, weight, pad, input_grad, weight_grad, bias_grad)


@temporal_conv_bwd.register_fake
def _(dout, x, weight, pad, input_grad, weight_grad, bias_grad):
    dx = _launch.empty_like_video(x) if input_grad else None
    dw = weight.new_empty(weight.shape) if weight_grad else weight.new_empty(0)
    db = weight.new_empty(weight.shape[0]) if bias_grad else weight.new_empty(0)
    dx = x.new_empty(0) if dx is None else dx
    return [dx, dw, db]


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, pad = inputs
    ctx.save_for_backward(x, weight)
    ctx.pad = pad
    ctx.has_bias = bias is not None


def _backward(ctx, dout):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
    dx, dw, db = _bwd_op(dout, x, weight, ctx.pad, need_x, need_w, ctx.has_bias and need_b)
    return (dx if need_x else None, dw if need_w else None, db if ctx.has_bias and need_b else None,
            dout if need_r else None, None)


_fwd_op = TritonOp(temporal_conv_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(temporal_conv_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(x, weight, bias, residual, pad):
    return _fwd_op(x, weight, bias, residual, pad)


def _triton_reason(x, weight, bias, residual, pad):
    return _launch.triton_reason(x, weight, bias, residual)


def _features(x, weight, bias, residual, pad):
    return {"dtype": x.dtype}


def _run_torch(x, weight, bias, residual, pad):
    """cuDNN's (k, 1, 1) Conv3d on x's own memory format, residual added after."""
    if x.numel() == 0:  # conv3d refuses H = 0 or W = 0
        return _run_reference(x, weight, bias, residual, pad)
    out = Fn.conv3d(x, weight[:, :, :, None, None], bias, padding=(pad, 0, 0))
    return _launch.in_video_order(out if residual is None else out + residual, x)


def _run_reference(x, weight, bias, residual, pad):
    return _launch.in_video_order(reference.temporal_conv(x, weight, bias, residual=residual, padding=pad), x)


def _padding(padding, taps: int) -> int:
    if padding == "same":
        if taps % 2 == 0:
            fail(OP, "padding", f"is 'same' with an even temporal kernel (k = {taps})",
                 "an odd kernel size for 'same', or an integer padding")
        return (taps - 1) // 2
    if padding == "valid":
        return 0
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        fail(OP, "padding", f"is {padding!r}", "'same', 'valid' or an integer >= 0")
    return padding


def _validate(x, weight, bias, residual, padding) -> int:
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(OP, "x", x, ndim=5, layout=LAYOUT, dtypes=dtypes)
    check_tensor(OP, "weight", weight, ndim=3, layout="(C_out, C_in, k)", dtypes=dtypes)
    check_shape(OP, "weight", weight, (None, x.shape[1], None),
                f"(C_out, C_in, k) with C_in = {x.shape[1]} (x's channels)")
    if weight.shape[-1] < 1:
        fail(OP, "weight", "has a temporal kernel of size 0", "k >= 1")
    pad = _padding(padding, weight.shape[-1])
    frames_out = _out_frames(x.shape[2], weight.shape[-1], pad)
    if frames_out < 1:
        fail(OP, "x", f"has {x.shape[2]} frames, too few for k = {weight.shape[-1]} and padding {pad}",
             "F + 2 * padding >= k")
    if bias is not None:
        check_tensor(OP, "bias", bias, ndim=1, layout="(C_out,)", dtypes=dtypes)
        check_shape(OP, "bias", bias, (weight.shape[0],), "(C_out,)")
    if residual is not None:
        check_tensor(OP, "residual", residual, ndim=5, layout="(B, C_out, F_out, H, W)", dtypes=dtypes)
        expected = (x.shape[0], weight.shape[0], frames_out, x.shape[3], x.shape[4])
        check_shape(OP, "residual", residual, expected, "(B, C_out, F_out, H, W), the output's shape")
    check_same_dtype(OP, x=x, weight=weight, bias=bias, residual=residual)
    check_same_device(OP, x=x, weight=weight, bias=bias, residual=residual)
    return pad


def _backend_arguments(x, weight, bias=None, residual=None, padding="same"):
    """The public function's arguments (its defaults, in the backends' order) validated and resolved."""
    return x, weight, bias, residual, _validate(x, weight, bias, residual, padding)


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda x, *a: _launch.triton_auto_reason(x),
            limits=Limits(dtypes=FLOAT_DTYPES), prepare=lambda *a: _fwd_op.prepare(*a)),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def temporal_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, residual: Optional[Tensor] = None,
                  padding: Union[str, int] = "same", backend: str = "auto") -> Tensor:
    """Conv1d over the frames at every pixel (Make-A-Video's Conv1D, TemporalConvLayer's (k,1,1) Conv3d),
    read in place on the video layout: no permute to ((B H W), C, F) and back.

    Args:
        x: (B, C_in, F, H, W), any strides: contiguous, channels_last_3d, or a frame-major view
            such as ``hidden_states.unflatten(0, (B, F)).permute(0, 2, 1, 3, 4)``.
            fp32, fp16 or bf16 (float64 on the torch/reference backends).
        weight: (C_out, C_in, k), e.g. ``conv1d.weight`` or ``conv3d.weight[:, :, :, 0, 0]``.
        bias: optional (C_out,).
        residual: optional (B, C_out, F_out, H, W), added in the epilogue (any strides).
        padding: "same" (odd k only; F_out = F), "valid" (0), or an integer number of zero frames
            on each side; F_out = F + 2 * padding - k + 1.
        backend: "auto" (Triton on CUDA, else the torch Conv3d path), "triton", "torch" or "reference".

    Returns:
        (B, C_out, F_out, H, W) in the memory order of x (channels_last_3d in, channels_last_3d out),
        dtype of x. Differentiable in x, weight, bias and residual.
    """
    return DISPATCH.call(backend, x, weight, bias, residual, padding)
