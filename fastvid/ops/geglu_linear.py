"""GEGLU's projection and activation in one GEMM: launchers, torch.library ops with autograd, dispatch,
public function.

Forward: one Triton GEMM whose programs compute, for their tile of output columns j, both the hidden
column j and the gate column inner + j of ``x @ weight.T + bias`` and write only
``hidden * gelu(gate)``: the (..., 2 * inner) projection output is never written or read back. The launch
(its strides, sizes and flags) is planned once per call signature (``_FwdPlan``); the autotuner picks the
tiles once per (N, K) bucket.
Backward (recompute): the projection output is computed again with one torch matmul, its gradient
comes from the GEGLU activation's backward (``fastvid.geglu``'s Triton kernel), and dx, dweight,
dbias are torch matmuls and a sum, as ``nn.Linear``'s backward does.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import FLOAT_DTYPES, check_choice, check_gemm_operands, check_same_device, check_same_dtype, fail
from . import _launch
from ._library import TritonOp, custom_op
from .geglu import APPROXIMATIONS, _bwd_op as _geglu_bwd_op, geglu

OUTPUT_LAYOUT = "contiguous"  # whichever backend runs
OP = "geglu_linear"
WEIGHT_LAYOUT = "(2 * inner, K)"


def _rows(x: Tensor) -> Tensor:
    """x as an (M, K) matrix: a view when its leading dims merge (contiguous inputs and slices of the
    last dim of a wider buffer do), else a copy."""
    return x.reshape(-1, x.shape[-1])


class _FwdPlan:
    """The output's shape and the GEMM's launch: x as (M, K) rows (the strides ``_rows`` gives this signature,
    read on a meta copy of the layout), the weight's and bias's strides, M, N = inner, K and the flags."""

    def __init__(self, x, weight, bias, approximate):
        from ..kernels.geglu_linear import geglu_linear_fwd_kernel

        self.shape = (*x.shape[:-1], weight.shape[0] // 2)
        self.out = _launch.allocator(self.shape, _launch.contiguous_strides(self.shape), x.dtype, x.device)
        self.launch = None
        m, n, k = math.prod(x.shape[:-1]), weight.shape[0] // 2, x.shape[-1]
        if m * n:
            x_meta = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
            x2 = _rows(x_meta)
            self.x_merged = x2._base is x_meta  # a view: the launch takes x itself (the same data pointer)
            self.launch = _launch.Launch(
                geglu_linear_fwd_kernel,
                lambda meta: (_launch.cdiv(m, meta["BLOCK_M"]) * _launch.cdiv(n, meta["BLOCK_N"]),),
                (*x2.stride(), *weight.stride(), bias.stride(0) if bias is not None else 0, n, 1,
                 m, n, k, _launch.next_pow2(n), _launch.next_pow2(k)),
                HAS_BIAS=bias is not None, APPROX_TANH=approximate == "tanh",
                DOT_PRECISION=_launch.dot_precision(x.dtype),
            )


def _fwd_run(plan: _FwdPlan, x, weight, bias, approximate):
    y = plan.out()
    if plan.launch is not None:
        plan.launch(x if plan.x_merged else _rows(x), weight, weight if bias is None else bias, y)
    return y


@custom_op("fastvid::geglu_linear_fwd")
def geglu_linear_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], approximate: str) -> Tensor:
    """Triton forward: (..., K) x (2 * inner, K) [+ (2 * inner,)] -> (..., inner) contiguous."""
    return _fwd_op.planned(x, weight, bias, approximate)


@geglu_linear_fwd.register_fake
def _(x, weight, bias, approximate):
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)


@custom_op("fastvid::geglu_linear_bwd")
def geglu_linear_bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                     approximate: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Backward by recompute: (dx like x, dweight (2 * inner, K), dbias (2 * inner,)). The projection output
    (M, 2 * inner) is computed again (torch matmul); GEGLU's Triton backward gives its gradient dP; then
    dx = dP @ weight, dweight = dP^T @ x, dbias = dP summed over rows."""
    x2 = _rows(x)
    proj_out = Fn.linear(x2, weight, bias)
    dp = _geglu_bwd_op(dy.reshape(-1, dy.shape[-1]), proj_out, approximate)
    return (dp @ weight).view(x.shape), dp.t() @ x2, dp.sum(0)


@geglu_linear_bwd.register_fake
def _(dy, x, weight, bias, approximate):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output):
    x, weight, bias, approximate = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.approximate = approximate


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dweight, dbias = _bwd_op(dy, x, weight, bias, ctx.approximate)
    return dx, dweight, dbias if bias is not None else None, None


_fwd_op, _bwd_op = TritonOp(geglu_linear_fwd, _FwdPlan, _fwd_run), TritonOp(geglu_linear_bwd)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(x, weight, bias, approximate):
    return _fwd_op(x, weight, bias, approximate)


def _triton_reason(x, weight, bias, approximate):
    return _launch.triton_reason(x, weight, bias)


def _features(x, weight, bias, approximate):
    return {"dtype": x.dtype}


def _triton_auto_reason(x, weight, bias, approximate):
    return _launch.gemm_auto_reason(x, weight, bias)


def _run_torch(x, weight, bias, approximate):
    """diffusers' GEGLU with the activation fused: F.linear, then ``fastvid.geglu`` ("auto")."""
    return geglu(Fn.linear(x, weight, bias), approximate=approximate)


def _run_reference(x, weight, bias, approximate):
    return reference.geglu_linear(x, weight, bias, approximate=approximate).contiguous()


def _validate(x, weight, bias, approximate):
    check_gemm_operands(OP, x, weight, bias, weight_layout=WEIGHT_LAYOUT, bias_layout="(2 * inner,)")
    if weight.shape[0] % 2:
        fail(OP, "weight", f"has shape {tuple(weight.shape)}", f"an even number of rows {WEIGHT_LAYOUT}")
    check_same_device(OP, x=x, weight=weight, bias=bias)
    check_same_dtype(OP, x=x, weight=weight, bias=bias)
    check_choice(OP, "approximate", approximate, APPROXIMATIONS)


def _backend_arguments(x, weight, bias=None, approximate="none"):
    """The public function's arguments (its defaults, in the backends' order) validated."""
    _validate(x, weight, bias, approximate)
    return x, weight, bias, approximate


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=_triton_auto_reason, limits=Limits(dtypes=FLOAT_DTYPES),
            prepare=lambda *a: _fwd_op.prepare(*a)),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def geglu_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, approximate: str = "none",
                 backend: str = "auto") -> Tensor:
    """diffusers' GEGLU (projection, then ``hidden * gelu(gate)``) as one GEMM whose epilogue applies the
    activation: ``hidden, gate = (x @ weight.T + bias).chunk(2, -1)`` without writing the projection output.

    Args:
        x: (..., K), any leading dims and strides: read in place when the leading dims merge into one
            (a contiguous tensor, or a slice of a wider last dim), else copied once to (M, K). fp32, fp16 or
            bf16 (float64 on the torch/reference backends).
        weight: (2 * inner, K), as ``nn.Linear(K, 2 * inner)`` stores it: rows [0, inner) project the
            hidden half, rows [inner, 2 * inner) the gate. Same dtype and device as x.
        bias: (2 * inner,) or None.
        approximate: "none" (exact erf GELU, diffusers' GEGLU) or "tanh" (torch's tanh approximation).
        backend: "auto" (Triton on CUDA for fp16/bf16, and fp32 where TF32 matmuls are allowed; else the
            torch path: F.linear then ``fastvid.geglu``), "triton", "torch" or "reference".

    Returns:
        (..., inner), contiguous, dtype of x. Differentiable in x, weight and bias (the Triton backward
        recomputes the projection output with a torch matmul).
    """
    return DISPATCH.call(backend, x, weight, bias, approximate)
