"""Residual add + LayerNorm (a transformer block's ``h = out + h; norm(h)``): launchers, torch.library
ops with autograd, dispatch, public function.

Forward: one Triton launch reads x and residual once and writes the sum (the new residual stream),
its LayerNorm (plus a per-frame table where one is given) and the per-row mean and rstd; without a
residual it reads x and writes only the LayerNorm. Backward: one Triton launch writes the gradient of the
sum (shared by x and residual) and per-program weight / bias partials, which a second launch sums in a
fixed order into the parameters' dtype (deterministic).
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
from ._library import TritonOp, custom_op

OUTPUT_LAYOUT = "contiguous"
OP = "add_layer_norm"
LAYOUT = "(B, N, C)"
MAX_TRITON_WIDTH = 8192  # a program holds whole rows in registers
TILE = 2048  # elements per [BLOCK_M, BLOCK_C] tile


def _tiles(width: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) for rows of ``width`` elements."""
    block_c = _launch.next_pow2(width)
    return max(1, TILE // block_c), block_c, 4 if block_c <= 2048 else 8


class _FwdPlan:
    """The forward launch of one call signature."""

    def __init__(self, x, residual, weight, bias, eps, frame_add):
        from ..kernels.add_layer_norm import add_layer_norm_fwd_kernel

        self.shape, self.rows = tuple(x.shape), x.shape[0] * x.shape[1]
        width = x.shape[2]
        self.out = _launch.allocator(self.shape, _launch.contiguous_strides(self.shape), x.dtype, x.device)
        sum_shape = self.shape if residual is not None else (0,)  # no residual: no sum written (it is x)
        self.sum = _launch.allocator(sum_shape, _launch.contiguous_strides(sum_shape), x.dtype, x.device)
        self.stats = _launch.allocator((2, self.rows), (self.rows, 1), torch.float32, x.device)
        self.launch = None
        if self.rows == 0 or width == 0:
            return
        block_m, block_c, warps = _tiles(width)
        self.launch = _launch.Launch(
            add_layer_norm_fwd_kernel, (_launch.cdiv(self.rows, block_m),),
            (*x.stride(), *(residual.stride() if residual is not None else (0, 0, 0)),
             weight.stride(0) if weight is not None else 0, bias.stride(0) if bias is not None else 0,
             *(frame_add.stride() if frame_add is not None else (0, 0)), self.rows, x.shape[1], width,
             frame_add.shape[0] if frame_add is not None else 1, eps),
            HAS_RES=residual is not None, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
            HAS_FRAME_ADD=frame_add is not None, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps)


def _fwd_run(plan: _FwdPlan, x, residual, weight, bias, eps, frame_add):
    s, y, stats = plan.sum(), plan.out(), plan.stats()
    if plan.launch is not None:  # absent tensors: x stands in (never read)
        plan.launch(x, x if residual is None else residual, x if weight is None else weight,
                    x if bias is None else bias, x if frame_add is None else frame_add, y if residual is None else s,
                    y, stats)
    return s, y, stats


@custom_op("fastvid::add_layer_norm_fwd")
def add_layer_norm_fwd(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float, frame_add: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Triton forward. Returns sum (contiguous (B, N, C), dtype of x; empty without a residual: the sum is x),
    normed (contiguous (B, N, C), dtype of x) and stats (2, B * N) fp32: each row's mean and rstd."""
    return _fwd_op.planned(x, residual, weight, bias, eps, frame_add)


@add_layer_norm_fwd.register_fake
def _(x, residual, weight, bias, eps, frame_add):
    return (x.new_empty(x.shape if residual is not None else (0,)), x.new_empty(x.shape),
            x.new_empty(2, x.shape[0] * x.shape[1], dtype=torch.float32))


class _BwdPlan:
    """The backward launch of one call signature: rows split over a fixed number of programs."""

    def __init__(self, dsum, dnormed, s, weight, stats, has_bias):
        from ..kernels.add_layer_norm import add_layer_norm_bwd_kernel
        # The temporal conv's fixed-order sum of per-program partials into the parameters' dtype, shared.
        from ..kernels.temporal_conv import temporal_conv_grad_sum_kernel

        self.shape, rows, width = tuple(s.shape), s.shape[0] * s.shape[1], s.shape[2]
        block_m, block_c, warps = _tiles(width)
        programs = max(1, min(_launch.cdiv(rows, block_m), _launch.target_programs(s, per_sm=2, off_gpu=3)))
        rows_per_program = _launch.cdiv(_launch.cdiv(rows, programs), block_m) * block_m if rows else 0
        programs = _launch.cdiv(rows, rows_per_program) if rows else 0
        self.partial_shape = (max(programs, 1), width)
        self.dx = _launch.allocator(self.shape, _launch.contiguous_strides(self.shape), s.dtype, s.device)
        # Every program writes its whole row of partials (no fill needed).
        self.partial = _launch.allocator(self.partial_shape, (width, 1), torch.float32, s.device, poison=False)
        self.dweight = _launch.allocator((width,), (1,), weight.dtype if weight is not None else s.dtype, s.device)
        self.dbias = _launch.allocator((width,), (1,), s.dtype, s.device)
        self.launch = self.sums = None
        if programs and width:
            if weight is not None or has_bias:
                block = 1024
                blocks = _launch.cdiv(width, block)
                self.sums = _launch.Launch(
                    temporal_conv_grad_sum_kernel, (blocks * ((weight is not None) + has_bias),),
                    (programs, width, width), WEIGHT_GRAD=weight is not None, BLOCK=block, num_warps=4)
            self.launch = _launch.Launch(
                add_layer_norm_bwd_kernel, (programs,),
                (*(dsum.stride() if dsum is not None else (0, 0, 0)), *dnormed.stride(),
                 weight.stride(0) if weight is not None else 0, rows, s.shape[1], width, rows_per_program),
                HAS_DSUM=dsum is not None, HAS_WEIGHT=weight is not None, BLOCK_M=block_m, BLOCK_C=block_c,
                num_warps=warps)


def _bwd_run(plan: _BwdPlan, dsum, dnormed, s, weight, stats, has_bias):
    dx = plan.dx()
    if plan.launch is None:  # no row or no column: zero parameter gradients
        width = plan.partial_shape[1]
        dweight = torch.zeros(width, dtype=weight.dtype, device=s.device) if weight is not None else None
        dbias = torch.zeros(width, dtype=s.dtype, device=s.device) if has_bias else None
    else:
        dw_part, db_part = plan.partial(), plan.partial()
        plan.launch(dnormed if dsum is None else dsum, dnormed, s, s if weight is None else weight, stats, dx,
                    dw_part, db_part)
        dweight = plan.dweight() if weight is not None else None
        dbias = plan.dbias() if has_bias else None
        if plan.sums is not None:  # the partials summed over their rows in a fixed order: deterministic
            plan.sums(dw_part, db_part, dbias if dweight is None else dweight, dweight if dbias is None else dbias)
    return [dx, s.new_empty(0) if dweight is None else dweight, s.new_empty(0) if dbias is None else dbias]


@custom_op("fastvid::add_layer_norm_bwd")
def add_layer_norm_bwd(dsum: Optional[Tensor], dnormed: Tensor, s: Tensor, weight: Optional[Tensor], stats: Tensor,
                       has_bias: bool) -> List[Tensor]:
    """Triton backward from the saved sum and statistics. Returns [dx, dweight, dbias]: dx (contiguous
    (B, N, C)) is the gradient of x and of residual alike; dweight / dbias are empty when absent."""
    return _bwd_op.planned(dsum, dnormed, s, weight, stats, has_bias)


@add_layer_norm_bwd.register_fake
def _(dsum, dnormed, s, weight, stats, has_bias):
    return [s.new_empty(s.shape), weight.new_empty(weight.shape) if weight is not None else s.new_empty(0),
            s.new_empty(s.shape[2]) if has_bias else s.new_empty(0)]


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps, frame_add = inputs
    ctx.save_for_backward(output[0] if residual is not None else x, weight, output[2])
    ctx.has_residual, ctx.has_bias = residual is not None, bias is not None
    ctx.frames = frame_add.shape[0] if frame_add is not None else 0


def _backward(ctx, dsum, dnormed, dstats):
    s, weight, stats = ctx.saved_tensors
    s = s.contiguous()  # x itself without a residual: the backward reads the sum dense
    if dnormed is None:
        dnormed = torch.zeros_like(s)
    dx, dw, db = _bwd_op(dsum if ctx.has_residual else None, dnormed, s, weight, stats, ctx.has_bias)
    need_x, need_r, need_w, need_b, _, need_f = ctx.needs_input_grad[:6]
    # The frame table is added after the norm: its gradient is dnormed summed over each frame's rows.
    dframe = dnormed.unflatten(0, (-1, ctx.frames)).sum(dim=(0, 2)) if need_f else None
    return (dx if need_x else None, dx if need_r and ctx.has_residual else None,
            dw if need_w and weight is not None else None, db if need_b and ctx.has_bias else None, None, dframe)


_fwd_op = TritonOp(add_layer_norm_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(add_layer_norm_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _sum(x, residual, s):
    """The public ``sum``: the op's sum, or x itself where there is no residual."""
    return x if residual is None else s


def _run_triton(x, residual, weight, bias, eps, frame_add):
    s, y, _ = _fwd_op(x, residual, weight, bias, eps, frame_add)
    return _sum(x, residual, s), y


def _prepare_triton(x, residual, weight, bias, eps, frame_add):
    call = _fwd_op.prepare(x, residual, weight, bias, eps, frame_add)
    if residual is None:
        return lambda *args: (args[0], call(*args)[1])
    return lambda *args: call(*args)[:2]


def _triton_reason(x, residual, weight, bias, eps, frame_add):
    return _launch.triton_reason(x, residual, weight, bias, frame_add)


def _features(x, residual, weight, bias, eps, frame_add):
    return {"dtype": x.dtype, "C": x.shape[2]}


def _run_torch(x, residual, weight, bias, eps, frame_add):
    """Eager add, F.layer_norm, then the frame table's add (one to three kernels); sum and normed contiguous
    (x itself as the sum without a residual)."""
    s = x if residual is None else (x + residual).contiguous()
    y = Fn.layer_norm(s, (s.shape[-1],), weight, bias, eps)
    if frame_add is not None:
        y = reference.add_per_frame(y, frame_add)
    return s, y.contiguous()


def _run_reference(x, residual, weight, bias, eps, frame_add):
    s, y = reference.add_layer_norm(x, residual, weight, bias, eps, frame_add=frame_add)
    return _sum(x, residual, s.contiguous()), y.contiguous()


def _validate(x, residual, weight, bias, eps, frame_add):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(OP, "x", x, ndim=3, layout=LAYOUT, dtypes=dtypes)
    if residual is not None:
        check_tensor(OP, "residual", residual, layout=LAYOUT, dtypes=dtypes)
        check_shape(OP, "residual", residual, tuple(x.shape), LAYOUT)
    width = x.shape[2]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(OP, name, t, ndim=1, layout="(C,)", dtypes=dtypes)
            check_shape(OP, name, t, (width,), "(C,)")
    if frame_add is not None:
        check_tensor(OP, "frame_add", frame_add, ndim=2, layout="(F, C)", dtypes=dtypes)
        check_shape(OP, "frame_add", frame_add, (None, width), "(F, C)")
        if frame_add.shape[0] == 0 or x.shape[0] % frame_add.shape[0]:
            fail(OP, "frame_add", f"has {frame_add.shape[0]} frames, which do not divide x's {x.shape[0]} rows",
                 "(F, C) with F >= 1 dividing B (x frame-major: (B' * F, N, C))")
    check_same_dtype(OP, x=x, residual=residual, weight=weight, bias=bias, frame_add=frame_add)
    check_same_device(OP, x=x, residual=residual, weight=weight, bias=bias, frame_add=frame_add)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        fail(OP, "eps", f"is {eps!r}", "a float >= 0")


def _backend_arguments(x, residual, weight=None, bias=None, eps=1e-5, frame_add=None):
    """The public function's arguments (its defaults, in the backends' order) validated and resolved."""
    _validate(x, residual, weight, bias, eps, frame_add)
    return x, residual, weight, bias, float(eps), frame_add


TRITON_LIMITS = Limits(dtypes=FLOAT_DTYPES, maxima={"C": (MAX_TRITON_WIDTH, "a program holds whole rows")})

DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda x, *a: _launch.triton_auto_reason(x),
            limits=TRITON_LIMITS, prepare=_prepare_triton),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def add_layer_norm(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor] = None,
                   bias: Optional[Tensor] = None, eps: float = 1e-5, *, frame_add: Optional[Tensor] = None,
                   backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """A transformer block's residual add and the next LayerNorm in one pass (the fused add-norm of
    Liger-Kernel and Apex): ``sum = x + residual`` and ``normed = LayerNorm(sum)`` over the last dim,
    plus, optionally, a per-frame table added to ``normed`` (AnimateDiff's positional embedding over
    frames, which diffusers adds right after the norm).

    Args:
        x: (B, N, C) tokens, e.g. a sublayer's output; any strides. fp32, fp16 or bf16 (float64 on the
            torch/reference backends).
        residual: (B, N, C), the residual stream; any strides, dtype of x. None: no add (``sum`` is x,
            ``normed`` its LayerNorm).
        weight, bias: optional (C,) LayerNorm affine parameters, dtype of x.
        eps: added to the variance.
        frame_add: optional (F, C), dtype of x, F dividing B: x is frame-major (B = B' * F, sample b being
            frame b % F) and ``normed[b] += frame_add[b % F]``, before the one rounding to x's dtype.
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        (sum, normed): both (B, N, C) in the dtype of x, ``normed`` contiguous; ``sum`` contiguous, or x
        itself where ``residual`` is None. ``normed`` is the LayerNorm of ``sum`` as stored (rounded to the
        dtype), as an add followed by a LayerNorm computes it. Differentiable in x, residual, weight, bias and
        frame_add (Triton backward from the saved sum and statistics).
    """
    return DISPATCH.call(backend, x, residual, weight, bias, eps, frame_add)
