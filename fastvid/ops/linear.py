"""nn.Linear with strided token reads and the residual add in its epilogue: launchers, torch.library ops with
autograd, dispatch, public function.

Forward: one Triton GEMM (``kernels/linear.py``) that addresses rows of x, of the residual and of the output
as (batch, row) with two strides each, so a transposed channel-first view (``t.view(B, C, H*W).transpose(1, 2)``
of an NCHW tensor) is read in place and the output ``x @ weight.T + bias + residual`` is written straight into
the residual's memory order (e.g. back into NCHW): no permute copy before the projection, no add pass after
it. The launch (its row split, strides, sizes and flags) is planned once per call signature (``_FwdPlan``);
the autotuner picks the tiles once per (N, K) bucket.
Backward: torch matmuls and a sum, as ``nn.Linear``'s backward does; the residual's gradient is dy itself.
"""
from __future__ import annotations

import itertools
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import FLOAT_DTYPES, check_gemm_operands, check_same_device, check_same_dtype, check_tensor, fail
from . import _launch
from ._library import TritonOp, custom_op

OUTPUT_LAYOUT = "residual"  # residual's memory order, dense (contiguous without a residual), whichever backend runs
OP = "linear"
WEIGHT_LAYOUT = "(N, K)"
_DTYPES = FLOAT_DTYPES + (torch.float64,)


def output_strides(shape: Sequence[int], residual: Optional[Tensor]) -> Tuple[int, ...]:
    """The output's strides: the residual's when it is dense and non-overlapping, else dense in its dim order
    (``torch.empty_like``'s rule); contiguous without a residual."""
    if residual is None:
        return _launch.contiguous_strides(shape)
    return torch.empty_like(torch.empty_strided(residual.shape, residual.stride(), device="meta")).stride()


def _merged(shape: Sequence[int], strides: Sequence[int]) -> Optional[Tuple[int, int]]:
    """(size, stride) of ``shape``'s dims read as one index, or None where their strides do not allow it."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if any(outer != inner * n for (_, outer), (n, inner) in zip(dims, dims[1:])):
        return None
    return math.prod(shape), dims[-1][1] if dims else 0


def _row_split(lead: Sequence[int], *strides: Sequence[int]):
    """The leading dims split into (batch, row) so that each tensor's batch dims and row dims each merge into
    one index: (rows per batch, [(batch stride, row stride) per tensor]), or None where no split does."""
    for split in range(len(lead) + 1):
        pairs = []
        for s in strides:
            batch, row = _merged(lead[:split], s[:split]), _merged(lead[split:], s[split:])
            if batch is None or row is None:
                break
            pairs.append((batch[1], row[1]))
        else:
            return math.prod(lead[split:]), pairs
    return None


class _FwdPlan:
    """The output's shape and strides and the GEMM's launch. x, the residual and the output are each read or
    written in place where one (batch, row) split of the leading dims addresses all three; else the fewest
    of them are laid out contiguously for the kernel (x or the residual copied once, or the output written
    contiguously and copied into its layout)."""

    def __init__(self, x, weight, bias, residual):
        from ..kernels.linear import linear_fwd_kernel

        lead = x.shape[:-1]
        m, (n, k) = math.prod(lead), weight.shape
        self.shape = (*lead, n)
        self.strides = output_strides(self.shape, residual)
        self.copy_x = self.copy_residual = self.copy_out = False
        self.launch = None
        if not m * n:
            return
        dense = _launch.contiguous_strides(self.shape)
        # Every choice of copies, fewest first; all three contiguous always splits.
        for copies in sorted(itertools.product((False, True), repeat=3), key=sum):
            copy_x, copy_residual, copy_out = copies
            if copy_residual and residual is None:
                continue
            x_strides = _launch.contiguous_strides(x.shape) if copy_x else x.stride()
            r_strides = dense if copy_residual or residual is None else residual.stride()
            out_strides = dense if copy_out else self.strides
            split = _row_split(lead, x_strides[:-1], r_strides[:-1], out_strides[:-1])
            if split is not None:
                break
        self.copy_x, self.copy_residual, self.copy_out = copy_x, copy_residual, copy_out
        per_batch, ((sxb, sxm), (srb, srm), (syb, sym)) = split
        batches = m // per_batch
        self.launch = _launch.Launch(  # row tiles per batch (none straddles two) x column tiles
            linear_fwd_kernel,
            lambda meta: (batches * _launch.cdiv(per_batch, meta["BLOCK_M"]) * _launch.cdiv(n, meta["BLOCK_N"]),),
            (sxb, sxm, x_strides[-1], *weight.stride(), bias.stride(0) if bias is not None else 0,
             srb, srm, r_strides[-1], syb, sym, out_strides[-1],
             m, n, k, per_batch, _launch.next_pow2(n), _launch.next_pow2(k), min(_launch.next_pow2(per_batch), 128)),
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
            DOT_PRECISION=_launch.dot_precision(x.dtype),
        )


def _fwd_run(plan: _FwdPlan, x, weight, bias, residual):
    y = _launch.empty_strided(plan.shape, plan.strides, dtype=x.dtype, device=x.device)
    if plan.launch is None:
        return y
    out = _launch.empty(*plan.shape, dtype=x.dtype, device=x.device) if plan.copy_out else y
    plan.launch(x.contiguous() if plan.copy_x else x, weight, weight if bias is None else bias,
                weight if residual is None else residual.contiguous() if plan.copy_residual else residual, out)
    return y.copy_(out) if plan.copy_out else y


@custom_op("fastvid::linear_fwd")
def linear_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor]) -> Tensor:
    """Triton forward: (..., K) x (N, K) [+ (N,)] [+ (..., N)] -> (..., N) in the residual's memory order."""
    return _fwd_op.planned(x, weight, bias, residual)


@linear_fwd.register_fake
def _(x, weight, bias, residual):
    if residual is not None:  # residual has the output's shape and dtype
        return torch.empty_like(residual)
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@custom_op("fastvid::linear_bwd")
def linear_bwd(dy: Tensor, x: Tensor, weight: Tensor, input_grad: bool, weight_grad: bool,
               bias_grad: bool) -> List[Tensor]:
    """[dx (x's shape, contiguous), dweight (N, K), dbias (N,)]: dx = dy @ weight, dweight = dy^T x, dbias = dy
    summed over rows (torch matmuls and a sum); a gradient not asked for is an empty tensor."""
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx = (dy2 @ weight).view(x.shape) if input_grad else x.new_empty(0)
    dw = dy2.t() @ x.reshape(-1, x.shape[-1]) if weight_grad else weight.new_empty(0)
    db = dy2.sum(0) if bias_grad else weight.new_empty(0)
    return [dx, dw, db]


@linear_bwd.register_fake
def _(dy, x, weight, input_grad, weight_grad, bias_grad):
    return [x.new_empty(x.shape) if input_grad else x.new_empty(0),
            weight.new_empty(weight.shape) if weight_grad else weight.new_empty(0),
            weight.new_empty(weight.shape[0]) if bias_grad else weight.new_empty(0)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, dy):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
    need_b = ctx.has_bias and need_b
    dx, dw, db = _bwd_op(dy, x, weight, need_x, need_w, need_b)
    return dx if need_x else None, dw if need_w else None, db if need_b else None, dy if need_r else None


_fwd_op, _bwd_op = TritonOp(linear_fwd, _FwdPlan, _fwd_run), TritonOp(linear_bwd)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(x, weight, bias, residual):
    return _fwd_op(x, weight, bias, residual)


def _triton_reason(x, weight, bias, residual):
    return _launch.triton_reason(x, weight, bias, residual)


def _features(x, weight, bias, residual):
    return {"dtype": x.dtype}


def _triton_auto_reason(x, weight, bias, residual):
    return _launch.gemm_auto_reason(x, weight, bias, residual)


def _in_layout(out: Tensor, residual: Optional[Tensor]) -> Tensor:
    """``out`` laid out as the Triton backend lays out its output (a copy only when it is not already)."""
    strides = output_strides(out.shape, residual)
    if all(n == 1 or s == e for n, s, e in zip(out.shape, out.stride(), strides)):
        return out
    return torch.empty_strided(out.shape, strides, dtype=out.dtype, device=out.device).copy_(out)


def _run_torch(x, weight, bias, residual):
    """F.linear, then the residual added (first operand: the sum takes its memory order)."""
    y = Fn.linear(x, weight, bias)
    return _in_layout(y if residual is None else residual + y, residual)


def _run_reference(x, weight, bias, residual):
    return _in_layout(reference.linear(x, weight, bias, residual=residual), residual)


def _validate(x, weight, bias, residual):
    check_gemm_operands(OP, x, weight, bias, weight_layout=WEIGHT_LAYOUT, bias_layout="(N,)")
    if residual is not None:
        check_tensor(OP, "residual", residual, layout="(..., N)", dtypes=_DTYPES)
        shape = (*x.shape[:-1], weight.shape[0])
        if tuple(residual.shape) != shape:
            fail(OP, "residual", f"has shape {tuple(residual.shape)}", f"{shape}, x's leading dims + (N,)")
    check_same_device(OP, x=x, weight=weight, bias=bias, residual=residual)
    check_same_dtype(OP, x=x, weight=weight, bias=bias, residual=residual)


def _backend_arguments(x, weight, bias=None, residual=None):
    """The public function's arguments (its defaults, in the backends' order) validated."""
    _validate(x, weight, bias, residual)
    return x, weight, bias, residual


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=_triton_auto_reason, limits=Limits(dtypes=FLOAT_DTYPES),
            prepare=lambda *a: _fwd_op.prepare(*a)),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, residual: Optional[Tensor] = None,
           backend: str = "auto") -> Tensor:
    """x @ weight.T + bias (+ residual).

    Args:
        x: (..., K) any strides. Read in place when its leading dims merge into one row index (contiguous),
            or when it is 3-D (B, M, K) with any strides (e.g. ``t.view(B, C, H*W).transpose(1, 2)`` of an NCHW
            tensor: rows of one batch entry have stride 1, channels stride H*W) — the kernel addresses row r
            as (r // M, r % M) with two strides; other layouts copied once. fp32, fp16 or bf16 (float64 on
            the torch/reference backends).
        weight: (N, K) as nn.Linear stores it; bias: (N,) or None; same dtype/device as x.
        residual: None or x's leading shape + (N,): added in the epilogue (in fp32, one rounding). The output
            is written in residual's memory order (same strides when residual is dense and non-overlapping;
            e.g. the (B, H*W, C) transposed view of an NCHW tensor gives an output whose .transpose(1, 2) is
            that NCHW tensor's layout), else dense in residual's dim order (``torch.empty_like``'s rule).
        backend: "auto" (Triton on CUDA for fp16/bf16, and fp32 where TF32 matmuls are allowed; else the
            torch path: F.linear, then the residual added), "triton", "torch" or "reference".

    Returns:
        (..., N), dtype of x; in residual's memory order when residual is given, else contiguous.
        Differentiable in x, weight, bias, residual.
    """
    return DISPATCH.call(backend, x, weight, bias, residual)
