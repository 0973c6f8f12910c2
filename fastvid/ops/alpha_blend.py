"""AlphaBlender's mix (SVD's SpatioTemporalResBlock and TransformerSpatioTemporalModel, Video LDM):
launchers, torch.library ops with autograd, dispatch, public functions.

Eager torch runs ``alpha * x_spatial + (1 - alpha) * x_temporal`` as three elementwise kernels (two
products, one sum) plus ``1 - alpha``: it reads 4 and writes 3 activation-sized tensors. The Triton
forward reads x_spatial and x_temporal once and writes the output once; the backward reads dout and both
inputs once, writes both input gradients, and reduces alpha's gradient from per-tile partials.

diffusers' AlphaBlender first makes alpha from its ``mix_factor`` and the (B, F) image-only indicator
(``get_alpha``: a cast, ``ones``, ``sigmoid``, ``where``, a cast, and ``1 - alpha`` when switched, each a
tiny kernel): :func:`learned_alpha_blend` computes alpha inside the same kernel (its ``merge_strategy``),
and the backward gives the mix factor's gradient.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher
from ..validation import FLOAT_DTYPES, check_same_device, check_same_dtype, check_tensor, fail
from . import _launch
from ._library import TritonOp, custom_op

OUTPUT_LAYOUT = "x_spatial"  # the memory order of x_spatial, dense, whichever backend runs
OP = "alpha_blend"
MAX_DIMS = 4  # the kernels' (D0, D1, D2, D3) view
TILE = 4096  # elements per [BLOCK_R, BLOCK_K] tile
MAX_BLOCK_K = 1024
STRATEGIES = ("learned_with_images", "learned", "fixed")  # diffusers' AlphaBlender merge strategies
# The kernels' MIX per merge strategy ("alpha": alpha given, alpha_blend's; "fixed" reads the mix factor as alpha)
MIX = {"alpha": 0, "fixed": 0, "learned": 1, "learned_with_images": 2}
INDICATOR_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                    *FLOAT_DTYPES, torch.float64)


class _View:
    """The tensors' common (D0, D1, D2, D3) view: their dims in the output's memory order, size-1 dims
    dropped, adjacent dims merged where every operand's strides allow; ``None`` dims when more than four
    remain. ``alpha_dims`` says which of D0..D2 alpha varies along (it never varies along D3)."""

    def __init__(self, out: Tensor, *operands: Tensor, alpha: Tensor):
        expanded = alpha.expand(out.shape)
        tensors = (out, *operands, expanded)
        dims = [d for d in _launch.dim_order(out) if out.shape[d] > 1]
        sizes: List[int] = []
        strides: List[List[int]] = []
        for d in dims:
            here = [t.stride(d) for t in tensors]
            if sizes and all(s == h * out.shape[d] for s, h in zip(strides[-1], here)):
                sizes[-1] *= out.shape[d]
                strides[-1] = here
            else:
                sizes.append(out.shape[d])
                strides.append(here)
        self.ok = len(sizes) <= MAX_DIMS and (not sizes or strides[-1][-1] == 0)
        pad = MAX_DIMS - len(sizes)
        self.sizes = [1] * pad + sizes
        self.strides = [[0] * len(tensors)] * pad + strides
        self.n_rows = self.sizes[0] * self.sizes[1] * self.sizes[2]
        self.block_k = min(_launch.next_pow2(self.sizes[3]), MAX_BLOCK_K)
        self.block_r = min(_launch.next_pow2(self.n_rows), max(1, TILE // self.block_k))
        self.n_k_blocks = _launch.cdiv(self.sizes[3], self.block_k)
        self.grid = (_launch.cdiv(self.n_rows, self.block_r) * self.n_k_blocks,)

    def operand_strides(self, i: int) -> Tuple[int, ...]:
        """(D0, D1, D2, D3) strides of operand i (0: out, then the operands, last: alpha)."""
        return tuple(s[i] for s in self.strides)

    def reason(self) -> Optional[str]:
        if self.ok:
            return None
        return ("alpha varies along the innermost dim of x, or x's layout needs more than four strided dims "
                "(the kernel reads a (D0, D1, D2, D3) view with alpha constant along D3)")


def _out_like(x: Tensor) -> Tensor:
    return _launch.empty_in_order(x.shape, _launch.dim_order(x), dtype=x.dtype, device=x.device)


def _layout(x: Tensor) -> Tuple[tuple, tuple]:
    """(shape, strides) of the outputs: x_spatial's memory order, dense (as :func:`_out_like` lays them out)."""
    shape = tuple(x.shape)
    return shape, _launch.video_strides(shape, _launch.dim_order(x))


def _meta(shape, strides, dtype) -> Tensor:
    return torch.empty_strided(shape, strides, dtype=dtype, device="meta")


def _per_row(ndim: int, alpha: Tensor, indicator: Optional[Tensor], merge_strategy: str) -> Optional[Tensor]:
    """The tensor the kernels read per (sample, frame) row, broadcastable to x: alpha (or the mix factor), or
    for "learned_with_images" the (B, F) indicator laid out as diffusers lays out alpha ((B, 1, F, 1, 1), or
    (B*F, 1, 1) at rank 3) as a meta tensor of its strides; None where its (B, F) dims do not merge."""
    if merge_strategy != "learned_with_images":
        return alpha
    meta = _meta(tuple(indicator.shape), indicator.stride(), indicator.dtype)
    if ndim == 5:
        return meta[:, None, :, None, None]
    try:
        return meta.view(-1)[:, None, None]
    except RuntimeError:
        return None


def _launch_of(kernel, view: _View, merge_strategy: str, switch: bool) -> _launch.Launch:
    """The launch over ``view`` (operands: the output, the kernel's inputs in its order, the per-row tensor):
    the inputs' strides, then the output's, then the per-row tensor's, then the view's sizes."""
    _, d1, d2, d3 = view.sizes
    last = len(view.strides[0]) - 1
    return _launch.Launch(
        kernel, view.grid,
        (*(s for i in range(1, last) for s in view.operand_strides(i)), *view.operand_strides(0),
         *view.operand_strides(last)[:3], view.n_rows, d1, d2, d3, view.n_k_blocks),
        BLOCK_R=view.block_r, BLOCK_K=view.block_k, MIX=MIX[merge_strategy], SWITCH=switch, num_warps=4,
    )


class _FwdPlan:
    """The forward launch of one call signature over the (D0, D1, D2, D3) view of the operands."""

    def __init__(self, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
        from ..kernels.alpha_blend import alpha_blend_fwd_kernel

        shape, strides = _layout(x_spatial)
        self.out = _launch.allocator(shape, strides, x_spatial.dtype, x_spatial.device)
        self.rows_from_indicator = merge_strategy == "learned_with_images"
        self.launch = None
        if x_spatial.numel() == 0:
            return
        rows = _per_row(x_spatial.dim(), alpha, image_only_indicator, merge_strategy)
        view = _View(_meta(shape, strides, x_spatial.dtype), x_spatial, x_temporal, alpha=rows)
        self.launch = _launch_of(alpha_blend_fwd_kernel, view, merge_strategy, switch)


def _fwd_run(plan: _FwdPlan, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    out = plan.out()
    if plan.launch is not None:
        plan.launch(x_spatial, x_temporal, image_only_indicator if plan.rows_from_indicator else alpha, alpha, out)
    return out


@custom_op("fastvid::alpha_blend_fwd")
def alpha_blend_fwd(x_spatial: Tensor, x_temporal: Tensor, alpha: Tensor, image_only_indicator: Optional[Tensor],
                    merge_strategy: str, switch: bool) -> Tensor:
    """Triton forward: alpha * x_spatial + (1 - alpha) * x_temporal, in x_spatial's memory order; alpha given
    (merge_strategy "alpha") or made from the mix factor in ``alpha`` as diffusers' AlphaBlender makes it."""
    return _fwd_op.planned(x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch)


@alpha_blend_fwd.register_fake
def _(x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    return _out_like(x_spatial)


class _BwdPlan:
    """The backward launch of one call signature (dout in a layout of its own read from a copy in the
    inputs' order) and how alpha's gradient is summed from the per-tile partials."""

    def __init__(self, dout, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
        from ..kernels.alpha_blend import alpha_blend_bwd_kernel

        shape, strides = _layout(x_spatial)
        self.grad = _launch.allocator(shape, strides, x_spatial.dtype, x_spatial.device)
        self.rows_from_indicator = merge_strategy == "learned_with_images"
        self.launch, self.copy_dout = None, False
        if x_spatial.numel() == 0:
            return
        dxs = _meta(shape, strides, x_spatial.dtype)
        rows = _per_row(x_spatial.dim(), alpha, image_only_indicator, merge_strategy)
        view = _View(dxs, dout, x_spatial, x_temporal, alpha=rows)
        if not view.ok:  # dout in a layout of its own: read it in the inputs' order
            self.copy_dout = True
            view = _View(dxs, dxs, x_spatial, x_temporal, alpha=rows)
        # the indicator's rows all feed the one mix factor
        self.alpha_grad = _AlphaGrad(view, alpha, per_row=not self.rows_from_indicator)
        self.part = _launch.allocator((view.n_rows, view.n_k_blocks), (view.n_k_blocks, 1), torch.float32,
                                      dout.device, poison=False)
        self.launch = _launch_of(alpha_blend_bwd_kernel, view, merge_strategy, switch)


def _bwd_run(plan: _BwdPlan, dout, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    dxs, dxt = plan.grad(), plan.grad()
    if plan.launch is None:
        return [dxs, dxt, torch.zeros_like(alpha)]
    if plan.copy_dout:
        dout = plan.grad().copy_(dout)
    part = plan.part()
    plan.launch(dout, x_spatial, x_temporal, image_only_indicator if plan.rows_from_indicator else alpha, alpha,
                dxs, dxt, part)
    return [dxs, dxt, plan.alpha_grad(part, alpha)]


@custom_op("fastvid::alpha_blend_bwd")
def alpha_blend_bwd(dout: Tensor, x_spatial: Tensor, x_temporal: Tensor, alpha: Tensor,
                    image_only_indicator: Optional[Tensor], merge_strategy: str, switch: bool) -> List[Tensor]:
    """Triton backward: [dx_spatial, dx_temporal] (in x_spatial's memory order) and the gradient of ``alpha``
    (alpha's shape: alpha's, or the mix factor's)."""
    return _bwd_op.planned(dout, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch)


class _AlphaGrad:
    """How alpha's gradient is summed from the (rows, column blocks) partials: one sum over the columns and
    the dims alpha is broadcast along, then, where the sums already lie in alpha's memory order, a view of
    alpha's shape; else each sum placed at the alpha element it belongs to. Not ``per_row``: one sum of all
    partials (alpha's one element)."""

    def __init__(self, view: _View, alpha: Tensor, per_row: bool = True):
        alpha_strides = view.operand_strides(len(view.strides[0]) - 1)[:3]
        self.kept = [d for d in range(3) if per_row and alpha_strides[d] != 0]
        self.part_shape = (*view.sizes[:3], view.n_k_blocks)
        self.sum_dims = tuple(d for d in range(3) if d not in self.kept) + (3,)
        self.kept_sizes = [view.sizes[d] for d in self.kept]
        self.kept_strides = [alpha_strides[d] for d in self.kept]
        self.in_order = (tuple(self.kept_strides) == _launch.contiguous_strides(self.kept_sizes)
                         and math.prod(self.kept_sizes) == alpha.numel())

    def __call__(self, part: Tensor, alpha: Tensor) -> Tensor:
        summed = part.view(self.part_shape).sum(self.sum_dims)
        if self.in_order:
            return summed.view(alpha.shape).to(alpha.dtype)
        grad = torch.zeros(alpha.numel(), dtype=torch.float32, device=alpha.device)
        grad.as_strided(self.kept_sizes, self.kept_strides).copy_(summed)
        return grad.view(alpha.shape).to(alpha.dtype)


@alpha_blend_bwd.register_fake
def _(dout, x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    return [_out_like(x_spatial), _out_like(x_spatial), alpha.new_empty(alpha.shape)]


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    ctx.merge_strategy, ctx.switch = inputs[4:]


def _backward(ctx, dout):
    x_spatial, x_temporal, alpha, indicator = ctx.saved_tensors
    grads = _bwd_op(dout, x_spatial, x_temporal, alpha, indicator, ctx.merge_strategy, ctx.switch)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None, None)


_fwd_op = TritonOp(alpha_blend_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(alpha_blend_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends (alpha contiguous, the indicator None unless read, see _backend_arguments) ------------

def _run_triton(*args):
    return _fwd_op(*args)


def _triton_reason(x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    why = (_launch.triton_reason(x_spatial, x_temporal, alpha, image_only_indicator)
           or _launch.dtype_reason(x_spatial))
    if why:
        return why
    rows = _per_row(x_spatial.dim(), alpha, image_only_indicator, merge_strategy)
    if rows is None:
        return "the strides of image_only_indicator's (B, F) dims do not make one (B*F) dim, the rows of x"
    return _View(x_spatial, x_spatial, x_temporal, alpha=rows).reason()


def _in_order_of(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in x's memory order, dense (a copy only when it is not already), as the kernel writes it."""
    laid = _out_like(x)
    return out if laid.stride() == out.stride() else laid.copy_(out)


def _alpha(x_spatial, alpha, image_only_indicator, merge_strategy, switch):
    """alpha as diffusers' AlphaBlender makes it (the torch and reference backends)."""
    if merge_strategy != "alpha":
        alpha = reference.blender_alpha(alpha, image_only_indicator, x_spatial.dim(), merge_strategy, x_spatial.dtype)
    return 1.0 - alpha if switch else alpha


def _run_torch(x_spatial, x_temporal, *alpha_args):
    alpha = _alpha(x_spatial, *alpha_args)
    return _in_order_of(alpha * x_spatial + (1.0 - alpha) * x_temporal, x_spatial)


def _run_reference(x_spatial, x_temporal, *alpha_args):
    return _in_order_of(reference.alpha_blend(x_spatial, x_temporal, _alpha(x_spatial, *alpha_args)), x_spatial)


def _check_broadcasts(name: str, t: Tensor, x: Tensor, what: str) -> None:
    try:
        fits = torch.broadcast_shapes(t.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        fail(OP, name, f"has shape {tuple(t.shape)}", f"a shape that broadcasts to x's {tuple(x.shape)} ({what})")


def _indicator_shape_ok(indicator: Tensor, x: Tensor) -> bool:
    """(B, F) = dims 0 and 2 of x (B, C, F, H, W), or B * F = dim 0 of x (B*F, N, C)."""
    if x.dim() == 5:
        return tuple(indicator.shape) == (x.shape[0], x.shape[2])
    return x.dim() == 3 and indicator.numel() == x.shape[0]


def indicator_matches(indicator, x: Tensor) -> bool:
    """``indicator`` is an image-only indicator :func:`learned_alpha_blend` reads for ``x``: a (B, F) tensor of
    an indicator dtype on x's device, of x's (B, C, F, H, W) or (B*F, N, C) (diffusers also broadcasts others)."""
    return (isinstance(indicator, Tensor) and indicator.dim() == 2 and indicator.dtype in INDICATOR_DTYPES
            and indicator.device == x.device and _indicator_shape_ok(indicator, x))


def _check_indicator(indicator, x: Tensor) -> None:
    """The (B, F) image-only indicator of "learned_with_images" against x's (B, C, F, H, W) or (B*F, N, C)."""
    name, layout = "image_only_indicator", "(B, F)"
    if x.dim() not in (3, 5):
        fail(OP, "x_spatial", f"has rank {x.dim()} (shape {tuple(x.shape)})",
             "rank 5 (B, C, F, H, W) or 3 (B*F, N, C) for merge_strategy 'learned_with_images'")
    if indicator is None:
        fail(OP, name, "is None", f"a {layout} tensor for merge_strategy 'learned_with_images'")
    check_tensor(OP, name, indicator, ndim=2, layout=layout, dtypes=INDICATOR_DTYPES)
    if not _indicator_shape_ok(indicator, x):
        expected = (f"(B, F) = {(x.shape[0], x.shape[2])}, dims 0 and 2 of x (B, C, F, H, W)" if x.dim() == 5
                    else f"(B, F) with B * F = {x.shape[0]}, dim 0 of x (B*F, N, C)")
        fail(OP, name, f"has shape {tuple(indicator.shape)}", expected)


def _validate(x_spatial, x_temporal, alpha, indicator, merge_strategy, switch):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    if not isinstance(merge_strategy, str) or merge_strategy not in MIX:
        fail(OP, "merge_strategy", f"is {merge_strategy!r}", "one of " + ", ".join(map(repr, STRATEGIES)))
    if not isinstance(switch, bool):
        fail(OP, "switch", f"is a {type(switch).__name__}", "a bool")
    name = "alpha" if merge_strategy == "alpha" else "mix_factor"
    check_tensor(OP, "x_spatial", x_spatial, dtypes=dtypes)
    check_tensor(OP, "x_temporal", x_temporal, dtypes=dtypes)
    check_tensor(OP, name, alpha, dtypes=dtypes)
    if x_temporal.dim() != x_spatial.dim():
        fail(OP, "x_temporal", f"has rank {x_temporal.dim()}", f"rank {x_spatial.dim()}, that of 'x_spatial'")
    if x_temporal.shape != x_spatial.shape:
        fail(OP, "x_spatial", f"has shape {tuple(x_spatial.shape)}",
             f"the shape of 'x_temporal' {tuple(x_temporal.shape)}")
    if merge_strategy == "alpha":
        _check_broadcasts(name, alpha, x_spatial, "one value, or one per sample/frame")
        check_same_dtype(OP, x_temporal=x_temporal, x_spatial=x_spatial, alpha=alpha)
    else:
        if alpha.numel() != 1:
            fail(OP, name, f"has shape {tuple(alpha.shape)}", "one element (AlphaBlender's (1,) mix_factor)")
        if merge_strategy == "learned_with_images":
            _check_indicator(indicator, x_spatial)
        else:
            _check_broadcasts(name, alpha, x_spatial, "one value")
        check_same_dtype(OP, x_temporal=x_temporal, x_spatial=x_spatial)
    check_same_device(OP, x_temporal=x_temporal, x_spatial=x_spatial, **{name: alpha},
                      image_only_indicator=indicator)


def _backend_arguments(x_spatial, x_temporal, alpha, image_only_indicator=None, merge_strategy="alpha", switch=False):
    """The public functions' arguments validated; alpha made contiguous (it is tiny; its gradient is
    placed through its strides); the indicator dropped where the merge strategy does not read it."""
    indicator = image_only_indicator if merge_strategy == "learned_with_images" else None
    _validate(x_spatial, x_temporal, alpha, indicator, merge_strategy, switch)
    return x_spatial, x_temporal, alpha.contiguous(), indicator, merge_strategy, switch


DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=lambda x, *a: _launch.triton_auto_reason(x),
            prepare=lambda *a: _fwd_op.prepare(*a)),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments)


def alpha_blend(x_spatial: Tensor, x_temporal: Tensor, alpha: Tensor, *, backend: str = "auto") -> Tensor:
    """``alpha * x_spatial + (1 - alpha) * x_temporal`` in one pass (diffusers' AlphaBlender, after its
    ``get_alpha``): SVD mixes every spatial layer's output with its temporal layer's this way.

    Args:
        x_spatial, x_temporal: the same shape, any rank and strides (e.g. (B, C, F, H, W) frame-major
            views, (B*F, N, C) tokens). fp32, fp16 or bf16 (float64 on the torch/reference backends).
        alpha: broadcastable to x's shape, dtype of x: one value ((1,), ``sigmoid(mix_factor)``) or one
            per sample and frame ((B, 1, F, 1, 1) or (B*F, 1, 1), "learned_with_images").
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        x's shape, in x_spatial's memory order, dtype of x. Differentiable in x_spatial, x_temporal and
        alpha (so in mix_factor through the torch ops that made alpha). :func:`learned_alpha_blend` makes
        alpha from diffusers' mix factor inside the kernel.
    """
    return DISPATCH.call(backend, x_spatial, x_temporal, alpha, None, "alpha", False)


def learned_alpha_blend(x_spatial: Tensor, x_temporal: Tensor, mix_factor: Tensor,
                        image_only_indicator: Optional[Tensor] = None, *, merge_strategy: str = "learned_with_images",
                        switch: bool = False, backend: str = "auto") -> Tensor:
    """diffusers' ``AlphaBlender.forward`` in one pass: alpha made from ``mix_factor`` (and the image-only
    indicator) inside the blend's kernel, as ``get_alpha`` makes it, then
    ``alpha * x_spatial + (1 - alpha) * x_temporal``.

    Args:
        x_spatial, x_temporal: the same shape, any strides; (B, C, F, H, W) (SpatioTemporalResBlock's
            frame-major views) or (B*F, N, C) tokens (TransformerSpatioTemporalModel); any rank for
            "learned" and "fixed". fp32, fp16 or bf16 (float64 on the torch/reference backends).
        mix_factor: (1,), any float dtype (the module's parameter or buffer), on x's device.
        image_only_indicator: (B, F), any dtype (nonzero: an image, alpha 1; diffusers reads ``.bool()``),
            B * F = x's dim 0 for (B*F, N, C) tokens. Read for "learned_with_images" only.
        merge_strategy: "learned_with_images" (alpha = 1 on image frames, else ``sigmoid(mix_factor)``),
            "learned" (``sigmoid(mix_factor)``) or "fixed" (``mix_factor`` itself). The sigmoid is rounded to
            mix_factor's dtype and alpha to x's, as diffusers rounds them.
        switch: ``switch_spatial_to_temporal_mix``: 1 - alpha (rounded to x's dtype) in alpha's place.
        backend: "auto" (Triton on CUDA, else eager torch), "triton", "torch" or "reference".

    Returns:
        x's shape, in x_spatial's memory order, dtype of x. Differentiable in x_spatial, x_temporal and
        mix_factor (the sum over the frames that are no images of dalpha * sigmoid'(mix_factor), negated
        when switched); not in the indicator.
    """
    if merge_strategy not in STRATEGIES:  # the op's "alpha" mode is alpha_blend's
        fail(OP, "merge_strategy", f"is {merge_strategy!r}", "one of " + ", ".join(map(repr, STRATEGIES)))
    return DISPATCH.call(backend, x_spatial, x_temporal, mix_factor, image_only_indicator, merge_strategy, switch)
