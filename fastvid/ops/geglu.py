"""GEGLU activation on a projection's output: launchers, torch.library ops with autograd, dispatch,
public function.

Forward: one Triton launch reads both halves of the projection output in place (no chunk copy)
and writes hidden * gelu(gate); eager torch writes gelu(gate) and then the product, one more
write and read of an (..., inner) tensor. Backward: one Triton launch from dY and the saved
projection output (gelu recomputed) writes both halves of its gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import FLOAT_DTYPES, check_choice, check_tensor, fail
from . import _launch
from ._library import TritonOp, custom_op

OUTPUT_LAYOUT = "contiguous"  # whichever backend runs
OP = "geglu"
LAYOUT = "(..., 2 * inner)"
APPROXIMATIONS = ("none", "tanh")  # torch.nn.functional.gelu's
TILE = 4096  # elements of each half per [BLOCK_R, BLOCK_N] tile
MAX_BLOCK_N = 512  # columns per tile: a wide row splits into column blocks
NUM_WARPS = 8  # a full tile: 16 elements of each half per thread


def _rows(t: Tensor) -> Tensor:
    """t as a (rows, last dim) matrix: a view when its leading dims merge (contiguous inputs and slices
    of the last dim of a wider buffer do), else a copy."""
    return t.reshape(-1, t.shape[-1])


def _launch_grid(rows: int, inner: int):
    """(programs, column blocks per row block, tile constexprs) for a (rows, inner) output."""
    block_n = min(_launch.next_pow2(inner), MAX_BLOCK_N)
    block_r = min(TILE // block_n, _launch.next_pow2(rows))
    n_col_blocks = _launch.cdiv(inner, block_n)
    return _launch.cdiv(rows, block_r) * n_col_blocks, n_col_blocks, dict(BLOCK_R=block_r, BLOCK_N=block_n)


def _out_like(proj_out: Tensor) -> Tensor:
    return _launch.empty(*proj_out.shape[:-1], proj_out.shape[-1] // 2, dtype=proj_out.dtype, device=proj_out.device)


class _Plan:
    """Everything a launch of one call signature needs but the tensors, forward or backward: the output's
    shape (contiguous), and the launch over the (rows, last dim) matrices of the inputs, whose strides
    (:func:`_rows`: a view, or a contiguous copy of an input whose leading dims do not merge) the
    signature fixes; ``merged`` says which inputs the launch takes as they are (their matrix a view)."""

    def __init__(self, kernel, out_shape, inputs, approximate):
        self.out_shape = tuple(out_shape)
        self.out = _launch.allocator(self.out_shape, _launch.contiguous_strides(self.out_shape), inputs[-1].dtype,
                                     inputs[-1].device)
        self.launch = None
        if inputs[0].numel() == 0:
            return
        rows_in = [_rows(t) for t in inputs]
        # A launch takes an input itself where its (rows, last dim) matrix is a view (the same data pointer).
        self.merged = tuple(r.data_ptr() == t.data_ptr() for r, t in zip(rows_in, inputs))
        rows, inner = rows_in[0].shape[0], inputs[-1].shape[-1] // 2
        out_strides = _launch.contiguous_strides((rows, self.out_shape[-1]))
        programs, n_col_blocks, tiles = _launch_grid(rows, inner)
        self.launch = _launch.Launch(
            kernel, (programs,),
            (*(s for t in rows_in for s in t.stride()), *out_strides, rows, inner, n_col_blocks),
            APPROX_TANH=approximate == "tanh", num_warps=NUM_WARPS, **tiles,
        )


def _fwd_plan(proj_out, approximate):
    from ..kernels.geglu import geglu_fwd_kernel

    return _Plan(geglu_fwd_kernel, (*proj_out.shape[:-1], proj_out.shape[-1] // 2), (proj_out,), approximate)


def _fwd_run(plan: _Plan, proj_out, approximate):
    y = plan.out()
    if plan.launch is not None:  # y (contiguous) is its own (rows, inner) matrix
        plan.launch(proj_out if plan.merged[0] else _rows(proj_out), y)
    return y


@custom_op("fastvid::geglu_fwd")
def geglu_fwd(proj_out: Tensor, approximate: str) -> Tensor:
    """Triton forward: (..., 2 * inner) -> (..., inner) contiguous, hidden * gelu(gate)."""
    return _fwd_op.planned(proj_out, approximate)


@geglu_fwd.register_fake
def _(proj_out, approximate):
    return _out_like(proj_out)


def _bwd_plan(dy, proj_out, approximate):
    from ..kernels.geglu import geglu_bwd_kernel

    return _Plan(geglu_bwd_kernel, proj_out.shape, (dy, proj_out), approximate)


def _bwd_run(plan: _Plan, dy, proj_out, approximate):
    dp = plan.out()
    if plan.launch is None:
        return dp.zero_()
    merged = plan.merged
    plan.launch(dy if merged[0] else _rows(dy), proj_out if merged[1] else _rows(proj_out), dp)
    return dp


@custom_op("fastvid::geglu_bwd")
def geglu_bwd(dy: Tensor, proj_out: Tensor, approximate: str) -> Tensor:
    """Triton backward: d(proj_out) (proj_out's shape, contiguous), both halves in one launch:
    dhidden = dy * gelu(gate), dgate = dy * hidden * gelu'(gate)."""
    return _bwd_op.planned(dy, proj_out, approximate)


@geglu_bwd.register_fake
def _(dy, proj_out, approximate):
    return proj_out.new_empty(proj_out.shape)


def _setup_context(ctx, inputs, output):
    proj_out, approximate = inputs
    ctx.save_for_backward(proj_out)
    ctx.approximate = approximate


def _backward(ctx, dy):
    (proj_out,) = ctx.saved_tensors
    return _bwd_op(dy, proj_out, ctx.approximate), None


_fwd_op = TritonOp(geglu_fwd, _fwd_plan, _fwd_run)
_bwd_op = TritonOp(geglu_bwd, _bwd_plan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(proj_out, approximate):
    return _fwd_op(proj_out, approximate)


def _prepare_triton(proj_out, approximate):
    return _fwd_op.prepare(proj_out, approximate)


def _triton_reason(proj_out, approximate):
    return _launch.triton_reason(proj_out)


def _features(proj_out, approximate):
    return {"dtype": proj_out.dtype}


def _run_torch(proj_out, approximate):
    """Eager: diffusers' GEGLU (chunk, F.gelu, multiply)."""
    hidden, gate = proj_out.chunk(2, dim=-1)
    return (hidden * Fn.gelu(gate, approximate=approximate)).contiguous()


def _run_reference(proj_out, approximate):
    return reference.geglu(proj_out, approximate=approximate).contiguous()


def _validate(proj_out, approximate):
    check_tensor(OP, "proj_out", proj_out, layout=LAYOUT, dtypes=FLOAT_DTYPES + (torch.float64,))
    if proj_out.dim() < 1 or proj_out.shape[-1] % 2:
        fail(OP, "proj_out", f"has shape {tuple(proj_out.shape)}", f"an even last dim {LAYOUT}")
    check_choice(OP, "approximate", approximate, APPROXIMATIONS)


def _backend_arguments(proj_out, approximate="none"):
    """The public function's arguments (its defaults, in the backends' order) validated."""
    _validate(proj_out, approximate)
    return proj_out, approximate


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda p, *a: _launch.triton_auto_reason(p),
            limits=Limits(dtypes=FLOAT_DTYPES), prepare=_prepare_triton),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def geglu(proj_out: Tensor, *, approximate: str = "none", backend: str = "auto") -> Tensor:
    """GEGLU's activation, fused: ``hidden * gelu(gate)`` with ``hidden, gate = proj_out.chunk(2, -1)``
    (diffusers' GEGLU after its projection; Shazeer 2020, "GLU Variants Improve Transformer").

    Args:
        proj_out: (..., 2 * inner), the projection's output, any strides (read in place when the
            leading dims merge into one, e.g. a contiguous tensor or a slice of a wider last dim).
            fp32, fp16 or bf16 (float64 on the torch/reference backends).
        approximate: "none" (exact erf GELU, diffusers' GEGLU) or "tanh" (torch's tanh approximation).
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        (..., inner), contiguous, dtype of proj_out. Differentiable in proj_out (Triton backward from
        the saved proj_out, gelu recomputed).
    """
    return DISPATCH.call(backend, proj_out, approximate)
