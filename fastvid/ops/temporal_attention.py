"""Temporal attention: launchers, torch.library ops with autograd, dispatch, public function."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..validation import (
    FLOAT_DTYPES,
    check_head_dim,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
    fail,
)
from . import _launch
from ._library import TritonOp, custom_op
from ._nonfinite import has_nonfinite_on_cpu

OUTPUT_LAYOUT = "input"  # the memory order of q, dense, whichever backend runs
OP = "temporal_attention"
LAYOUT = "(B, F, N, heads, head_dim)"


MAX_BATCHED_TILE = 2048  # frames x head_dim of one position above which one position fills a program
# The backward of such a position: key frames per block and warps (temporal_attention_bwd_key_blocks_kernel).
KEY_BLOCK, KEY_BLOCKS_WARPS = 16, 8


def _tiles(num_frames: int, head_dim: int, per_warp: int, max_batched_frames: int = 128) -> Tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_F, BLOCK_D, num_warps). A batched ``tl.dot`` gives each warp whole positions
    (Triton puts all warps on the batch axis), so BLOCK_N is a multiple of the 4 warps: as many
    positions per warp as keep one warp's [BLOCK_F, BLOCK_D] tiles near ``per_warp`` elements.
    A larger position (frames x head_dim past MAX_BATCHED_TILE, or more than ``max_batched_frames``
    frames) is one program (BLOCK_N = 1, a 2-D dot whose frames the warps split), 8 warps past 4,096
    elements or with ``max_batched_frames`` set (the backward runs such positions through its key-block kernel,
    KEY_BLOCKS_WARPS warps). A position past ``per_warp`` elements (but within
    MAX_BATCHED_TILE) gets more than one warp. ``tl.dot`` needs every tile dim >= 16."""
    block_f, block_d = max(16, _launch.next_pow2(num_frames)), max(16, _launch.next_pow2(head_dim))
    tile = block_f * block_d
    if tile > MAX_BATCHED_TILE or block_f > max_batched_frames:
        return 1, block_f, block_d, 4 if tile <= 4096 and max_batched_frames == 128 else 8
    if tile > per_warp:
        # Two warps per position where the frame count is a multiple of 16 (the JIT specialises it and the
        # frame masks fold); otherwise that tile spills under Triton 3.6 and one position takes 4 warps.
        return (4, block_f, block_d, 8) if num_frames % 16 == 0 else (1, block_f, block_d, 4)
    return 4 * (per_warp // tile), block_f, block_d, 4


def _vector_width(head_dim: int, *tensors: Tensor, outputs: Tuple[tuple, ...] = ()) -> int:
    """Elements per 128-bit load that every row provably starts on: the widest VEC (16 bytes at most)
    dividing head_dim and every stride but head_dim's, which must be 1. The kernel relies on it.
    ``outputs``: the strides of the outputs the plan allocates (of q's shape), checked alike."""
    vec = 16 // tensors[0].element_size()
    shape = tensors[0].shape
    layouts = [(t.shape, t.stride()) for t in tensors] + [(shape, s) for s in outputs]
    if any(st[-1] != 1 for sh, st in layouts if sh[-1] > 1):
        return 1
    strides = [s for sh, st in layouts for s, n in zip(st[:-1], sh[:-1]) if n > 1]
    while vec > 1 and any(x % vec for x in (head_dim, *strides)):
        vec //= 2
    return vec


def _bias_strides(bias: Optional[Tensor]) -> tuple:
    return (0, 0, 0) if bias is None else tuple(bias.stride())  # no bias: never read (HAS_BIAS is False)


class _FwdPlan:
    """Everything a forward launch of one call signature needs but the tensors. ``lse=False``: a call that
    keeps no log-sum-exp (no gradient to compute; the public function returns out alone) allocates and
    writes none."""

    def __init__(self, q, k, v, bias, causal, scale, lse=True):
        from ..kernels.temporal_attention import temporal_attention_fwd_kernel

        batch, frames, tokens, heads, head_dim = self.shape = tuple(q.shape)
        self.dtype, self.device = q.dtype, q.device
        self.lse_shape = (batch, heads, frames, tokens)
        self.strides = _launch.video_strides(self.shape, _launch.dim_order(q))  # q's memory order, dense
        self.lse_strides = _launch.contiguous_strides(self.lse_shape)
        self.out = _launch.allocator(self.shape, self.strides, q.dtype, q.device)
        self.lse = _launch.allocator(self.lse_shape, self.lse_strides, torch.float32, q.device) if lse else None
        self.launch = None
        if q.numel() == 0:
            return
        block_n, block_f, block_d, num_warps = _tiles(frames, head_dim, per_warp=2048)
        n_blocks = _launch.cdiv(tokens, block_n)
        self.launch = _launch.Launch(
            temporal_attention_fwd_kernel, (n_blocks * batch * heads,),
            (*q.stride(), *k.stride(), *v.stride(), *self.strides, *_bias_strides(bias),
             *self.lse_strides, heads, frames, tokens, head_dim, n_blocks, scale * _launch.LOG2E),
            HAS_BIAS=bias is not None, CAUSAL=causal, DOT_PRECISION=_launch.dot_precision(q.dtype),
            VEC=_vector_width(head_dim, q, k, v, outputs=(self.strides,)), BLOCK_N=block_n, BLOCK_F=block_f,
            BLOCK_D=block_d, STORE_LSE=lse, num_warps=num_warps,
        )


def _fwd_run(plan: _FwdPlan, q, k, v, bias, causal, scale):
    """(out, lse); lse None for a plan that keeps none."""
    out = plan.out()
    lse = plan.lse() if plan.lse is not None else None
    if plan.launch is not None:
        plan.launch(q, k, v, q if bias is None else bias, out, out if lse is None else lse)
    return out, lse


@custom_op("fastvid::temporal_attention_fwd")
def temporal_attention_fwd(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], causal: bool,
                           scale: float) -> Tuple[Tensor, Tensor]:
    """Triton forward. Returns out (B, F, N, h, d) in q's memory order, dense, and lse (B, h, F, N) fp32
    (contiguous, log2 units)."""
    return _fwd_op.planned(q, k, v, bias, causal, scale)


@temporal_attention_fwd.register_fake
def _(q, k, v, bias, causal, scale):
    batch, frames, tokens, heads, head_dim = q.shape
    return _like_q(q), q.new_empty(batch, heads, frames, tokens, dtype=torch.float32)


def _like_q(q: Tensor) -> Tensor:
    """A tensor of q's shape and dtype laid out as the Triton op lays its outputs out: q's memory order, dense."""
    return _launch.empty_in_order(q.shape, _launch.dim_order(q), dtype=q.dtype, device=q.device)


class _BwdPlan:
    """Everything a backward launch of one call signature needs but the tensors."""

    def __init__(self, dout, q, k, v, bias, out, lse, causal, scale, bias_grad):
        from ..kernels.temporal_attention import (temporal_attention_bias_grad_kernel, temporal_attention_bwd_kernel,
                                                  temporal_attention_bwd_key_blocks_kernel)

        batch, frames, tokens, heads, head_dim = self.shape = tuple(q.shape)
        # dQ, dK and dV share one layout, q's memory order made dense (the kernel takes one set of strides).
        self.dtype, self.device = q.dtype, q.device
        self.strides = _launch.video_strides(self.shape, _launch.dim_order(q))
        self.bias_grad, self.bias_dtype = bias_grad, (bias.dtype if bias_grad else torch.float32)
        self.dbias_shape = (heads, frames, frames) if bias_grad else (0,)
        self.grad = _launch.allocator(self.shape, self.strides, q.dtype, q.device)
        self.dbias = _launch.allocator(self.dbias_shape, _launch.contiguous_strides(self.dbias_shape), self.bias_dtype,
                                       q.device)
        self.launch = self.reduce = None
        if q.numel() == 0:
            return
        block_n, block_f, block_d, num_warps = _tiles(frames, head_dim, per_warp=1024, max_batched_frames=16)
        n_blocks = _launch.cdiv(tokens, block_n)
        # Enough programs to fill the GPU, few enough that the per-program bias partials stay small.
        target = _launch.target_programs(q, per_sm=4, off_gpu=8)
        n_chunks = max(1, min(n_blocks, _launch.cdiv(target, batch * heads)))
        programs = n_chunks * batch * heads
        self.partial_shape = (programs, frames, frames) if bias_grad else None
        self.partial = (_launch.allocator(self.partial_shape, _launch.contiguous_strides(self.partial_shape),
                                          torch.float32, q.device, poison=False) if bias_grad else None)
        strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *dout.stride(), *self.strides,
                   *_bias_strides(bias), *lse.stride(),
                   *(_launch.contiguous_strides(self.partial_shape) if bias_grad else (0, 0, 0)))
        flags = dict(HAS_BIAS=bias is not None, BIAS_GRAD=bias_grad, CAUSAL=causal,
                     DOT_PRECISION=_launch.dot_precision(q.dtype),
                     VEC=_vector_width(head_dim, q, k, v, out, dout, outputs=(self.strides,)), BLOCK_F=block_f,
                     BLOCK_D=block_d, num_stages=1)
        if block_n == 1:  # one position per step, its key frames in blocks
            kernel, sizes = temporal_attention_bwd_key_blocks_kernel, (n_chunks,)
            tiles = dict(BLOCK_J=KEY_BLOCK, num_warps=KEY_BLOCKS_WARPS)
        else:
            kernel, sizes, tiles = temporal_attention_bwd_kernel, (n_blocks, n_chunks), dict(BLOCK_N=block_n,
                                                                                          num_warps=num_warps)
        self.launch = _launch.Launch(kernel, (programs,), (*strides, heads, frames, tokens, head_dim, *sizes,
                                                           scale * _launch.LOG2E, scale), **tiles, **flags)
        if bias_grad:
            # Fixed-order sum over (batch, chunk) of the partials, written in the bias dtype: deterministic.
            cells = frames * frames
            block = min(1024, _launch.next_pow2(cells))
            self.reduce = _launch.Launch(
                temporal_attention_bias_grad_kernel, (heads * _launch.cdiv(cells, block),),
                (batch, heads, n_chunks, cells),
                BLOCK=block, num_warps=4,
            )


def _bwd_run(plan: _BwdPlan, dout, q, k, v, bias, out, lse, causal, scale, bias_grad):
    grad = plan.grad
    dq, dk, dv = grad(), grad(), grad()
    if plan.launch is None:
        dbias = torch.zeros(plan.dbias_shape, dtype=plan.bias_dtype, device=plan.device)
        return [dq, dk, dv, dbias]
    dbias = plan.dbias()
    partial = plan.partial() if plan.bias_grad else q
    plan.launch(q, k, v, q if bias is None else bias, out, dout, lse, dq, dk, dv, partial)
    if plan.reduce is not None:
        plan.reduce(partial, dbias)
    return [dq, dk, dv, dbias]


@custom_op("fastvid::temporal_attention_bwd")
def temporal_attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], out: Tensor,
                           lse: Tensor, causal: bool, scale: float, bias_grad: bool) -> List[Tensor]:
    """Triton backward, from dout of any strides. Returns [dq, dk, dv, dbias]: dq, dk and dv in q's memory
    order, dense; dbias (h, F, F) contiguous in the bias dtype, empty unless ``bias_grad``."""
    return _bwd_op.planned(dout, q, k, v, bias, out, lse, causal, scale, bias_grad)


@temporal_attention_bwd.register_fake
def _(dout, q, k, v, bias, out, lse, causal, scale, bias_grad):
    heads, frames = q.shape[3], q.shape[1]
    dbias = q.new_empty(heads, frames, frames, dtype=bias.dtype) if bias_grad else q.new_empty(0, dtype=torch.float32)
    return [_like_q(q), _like_q(q), _like_q(q), dbias]


def _setup_context(ctx, inputs, output):
    q, k, v, bias, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, bias, out, lse)
    ctx.causal, ctx.scale = causal, scale
    ctx.bias_grad = bias is not None and ctx.needs_input_grad[3]


def _backward(ctx, dout, dlse):
    q, k, v, bias, out, lse = ctx.saved_tensors
    dq, dk, dv, dbias = _bwd_op(dout, q, k, v, bias, out, lse, ctx.causal, ctx.scale, ctx.bias_grad)
    return dq, dk, dv, (dbias if ctx.bias_grad else None), None, None


_fwd_op = TritonOp(temporal_attention_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(temporal_attention_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(q, k, v, bias, causal, scale):
    return _fwd_op(q, k, v, bias, causal, scale)[0]


def _prepare_triton(q, k, v, bias, causal, scale):
    """out alone: a call that needs no gradient neither allocates nor writes lse."""
    return _fwd_op.prepare(q, k, v, bias, causal, scale, output=0,
                           inference_plan=lambda *args: _FwdPlan(*args, lse=False))


def _triton_reason(q, k, v, bias, causal, scale):
    return _launch.triton_reason(q, k, v, bias)


def _features(q, k, v, bias, causal, scale):
    return {"dtype": q.dtype, "frames": q.shape[1], "head_dim": q.shape[-1]}


def _run_torch(q, k, v, bias, causal, scale):
    """SDPA over (B*N, h, F, d) views of the frame axis; bias and causal mask as one float attn_mask.
    On CPU a non-finite input runs the reference (see ``_nonfinite``)."""
    # The reference: for an empty input (SDPA gives it no gradient path to its mask, the bias) and on
    # CPU for a non-finite one.
    if q.numel() == 0 or has_nonfinite_on_cpu(q, k, v, bias):
        return _run_reference(q, k, v, bias, causal, scale)
    batch, frames, tokens, heads, head_dim = q.shape
    qt, kt, vt = (t.permute(0, 2, 3, 1, 4).reshape(batch * tokens, heads, frames, head_dim) for t in (q, k, v))
    mask = None if bias is None else bias.to(q.dtype)
    if causal and mask is not None:
        keep = torch.ones(frames, frames, dtype=torch.bool, device=q.device).tril()
        mask = mask.masked_fill(~keep, float("-inf"))
    out = Fn.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=causal and mask is None, scale=scale)
    return _launch.in_order_of(out.reshape(batch, tokens, heads, frames, head_dim).permute(0, 3, 1, 2, 4), q)


def _run_reference(q, k, v, bias, causal, scale):
    out = reference.temporal_attention(q, k, v, bias=None if bias is None else bias.to(q.dtype), causal=causal,
                                       scale=scale)
    return _launch.in_order_of(out, q)


def _validate(q, k, v, bias, causal, scale):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP, name, t, ndim=5, layout=LAYOUT, dtypes=dtypes)
    for name, t in (("k", k), ("v", v)):
        check_shape(OP, name, t, tuple(q.shape), LAYOUT + " equal to q")
    check_same_dtype(OP, q=q, k=k, v=v)
    check_head_dim(OP, "q", q.shape[-1])
    if bias is not None:
        check_tensor(OP, "bias", bias, ndim=3, layout="(heads, F, F)", dtypes=dtypes)
        check_shape(OP, "bias", bias, (q.shape[3], q.shape[1], q.shape[1]), "(heads, F, F)")
    check_same_device(OP, q=q, k=k, v=v, bias=bias)
    if not isinstance(causal, bool):
        fail(OP, "causal", f"is {causal!r}", "a bool")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        fail(OP, "scale", f"is {scale!r}", "a positive float or None (1/sqrt(head_dim))")


def _backend_arguments(q, k, v, bias=None, causal=False, scale=None):
    """The public function's arguments (its defaults, in the backends' order) validated and resolved."""
    _validate(q, k, v, bias, causal, scale)
    return q, k, v, bias, causal, (q.shape[-1] ** -0.5 if scale is None else float(scale))


TRITON_LIMITS = Limits(dtypes=FLOAT_DTYPES, maxima={
    "frames": (128, "the kernel keeps all frames of a position in registers"),
    "head_dim": (256, "a position's head_dim is one register tile"),
})

DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda q, *a: _launch.triton_auto_reason(q),
            limits=TRITON_LIMITS, prepare=_prepare_triton),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features)


def temporal_attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Optional[Tensor] = None, causal: bool = False,
                       scale: Optional[float] = None, backend: str = "auto") -> Tensor:
    """Attention over the frame axis at every token position (VDM, Make-A-Video, Video LDM, SVD).

    Args:
        q, k, v: (B, F, N, heads, head_dim), any strides (slices of a fused qkv projection
            are read in place). fp32, fp16 or bf16 (float64 on the torch/reference backends).
        bias: optional (heads, F, F), added to the scores before the softmax (relative-position
            bias); receives a gradient when it requires one.
        causal: frame i attends to frames <= i.
        scale: score scale, default 1/sqrt(head_dim).
        backend: "auto" (Triton on CUDA, else the torch path), "triton", "torch" or "reference".

    Returns:
        (B, F, N, heads, head_dim), dtype of q, laid out in q's memory order with no gaps (a
        contiguous q gives a contiguous output; q viewed from diffusers' ``(B*N, F, heads*d)``
        projections gives an output that views back as ``(B*N, F, heads*d)``).
    """
    return DISPATCH.call(backend, q, k, v, bias, causal, scale)
