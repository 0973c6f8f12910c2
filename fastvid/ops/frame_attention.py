"""Frame attention: launchers, torch.library ops with autograd, dispatch, public function."""
from __future__ import annotations

import functools
import weakref
from typing import List, Tuple, Union

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import reference
from ..dispatch import Backend, Dispatcher, Limits
from ..frame_modes import FRAME_MODES
from ..validation import (
    FLOAT_DTYPES,
    check_choice,
    check_head_dim,
    check_index_table,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
    fail,
)
from . import _launch
from ._library import Const, TritonOp, bound, custom_op
from ._nonfinite import has_nonfinite_on_cpu

OUTPUT_LAYOUT = "contiguous"  # whichever backend runs
OP = "frame_attention"
Q_LAYOUT = "(B, F, N, heads, head_dim)"
KV_LAYOUT = "(B, F, M, heads, head_dim)"
TABLE_LAYOUT = "(F, K) frame indices, -1 padding"

Frames = Union[str, Tensor]


_MODE_COUNTS: dict = {}  # id(a mode's table) -> (weakref to the table, its frame_counts)


@functools.lru_cache(maxsize=64)
def _mode_table(mode: str, num_frames: int, device: torch.device) -> Tensor:
    table = reference.frame_table(mode, num_frames, device).to(torch.int32).contiguous()
    _MODE_COUNTS[id(table)] = (weakref.ref(table), frame_counts(table, num_frames))
    return table


def frame_table(frames: Frames, num_frames: int, device) -> Tensor:
    """The int32 (F, K) table the kernels read: row i lists the frames frame i attends to, -1 pads."""
    if isinstance(frames, str):
        if torch.compiler.is_compiling():  # traced: built inside the graph, not cached
            return reference.frame_table(frames, num_frames, device).to(torch.int32)
        return _mode_table(frames, num_frames, torch.device(device))
    return frames.to(device=device, dtype=torch.int32).contiguous()


def _table_counts(table: Tensor, num_frames: int) -> Tensor:
    """:func:`frame_counts` of ``table``: computed once for a mode's cached table, on every call for a
    caller's table (its values may change in place)."""
    hit = _MODE_COUNTS.get(id(table))
    if hit is not None and hit[0]() is table:
        return hit[1]
    return frame_counts(table, num_frames)


def frame_counts(table: Tensor, num_frames: int) -> Tensor:
    """(F, F) int32: counts[i, j] = how many times row i of ``table`` lists frame j."""
    counts = torch.zeros(num_frames, num_frames, dtype=torch.int32, device=table.device)
    return counts.scatter_add_(1, table.clamp(min=0).long(), (table >= 0).int())


def _head_tiles(head_dim: int) -> Tuple[int, int]:
    """(D_LO, D_HI): the kernels hold d columns as a power-of-two tile D_LO and, where d > D_LO, a second
    tile of D_HI (a power of two) columns; d 40 -> 32 + 16, d 72 -> 64 + 16 (tl.dot needs every dim >= 16).
    One tile of the next power of two where a split would not be narrower."""
    whole = max(16, _launch.next_pow2(head_dim))
    low = max(16, whole // 2)
    high = max(16, _launch.next_pow2(head_dim - low)) if head_dim > low else whole
    return (low, high) if low + high < whole else (whole, 16)


def _alignment(head_dim: int, *tensors: Tensor) -> int:
    """Elements per 16 bytes if every tensor has a unit-stride head dim and a 16-byte aligned base and
    non-unit strides (size-1 dims aside), and head_dim is a multiple too: the kernels then load
    with 128-bit copies. 1 (no alignment facts) otherwise."""
    elems = 16 // tensors[0].element_size()
    if head_dim % elems:
        return 1
    for t in tensors:
        if t.stride(-1) != 1 or t.data_ptr() % 16:
            return 1
        if any(stride % elems for stride, size in zip(t.stride()[:-1], t.shape[:-1]) if size > 1):
            return 1
    return elems


def _even_keys(k: Tensor) -> bool:
    """Whether every key tile is full (M a multiple of every BLOCK_M the autotuner may pick): the kernels
    then skip the per-score key mask."""
    from ..kernels.frame_attention import LARGEST_BLOCK_M

    return k.shape[2] % LARGEST_BLOCK_M == 0


def _head_constants(head_dim: int, *tensors: Tensor) -> dict:
    low, high = _head_tiles(head_dim)
    return dict(HEAD_DIM=head_dim, D_LO=low, D_HI=high, ALIGN=_alignment(head_dim, *tensors),
                DOT_PRECISION=_launch.dot_precision(tensors[0].dtype))


def _table_launch(kernel, programs: int, length: int, block: str, scalars: tuple, **constexprs) -> "_launch.Launch":
    """A launch of an autotuned frame-attention kernel over ``length`` rows in tiles of the tuned ``block``."""
    return _launch.Launch(kernel, lambda meta: (_launch.cdiv(length, meta[block]) * programs,), scalars, **constexprs)


class _FwdPlan:
    """Everything a forward launch of one call signature needs but the tensors."""

    def __init__(self, q, k, v, table, scale):
        from ..kernels.frame_attention import frame_attention_fwd_kernel

        batch, frames, tokens, heads, head_dim = self.shape = tuple(q.shape)
        self.dtype, self.device = q.dtype, q.device
        self.lse_shape = (batch, frames, heads, tokens)
        self.strides = _launch.contiguous_strides(self.shape)
        self.lse_strides = _launch.contiguous_strides(self.lse_shape)
        self.out = _launch.allocator(self.shape, self.strides, q.dtype, q.device)
        self.lse = _launch.allocator(self.lse_shape, self.lse_strides, torch.float32, q.device)
        self.launch = None
        if q.numel() == 0:
            return
        out_strides = _launch.contiguous_strides(self.shape)
        self.launch = _table_launch(
            frame_attention_fwd_kernel, batch * frames * heads, tokens, "BLOCK_N",
            (*q.stride(), *k.stride(), *v.stride(), *out_strides, *table.stride(),
             *_launch.contiguous_strides(self.lse_shape),
             heads, frames, tokens, k.shape[2], table.shape[1], scale * _launch.LOG2E),
            EVEN_M=_even_keys(k), **_head_constants(head_dim, q, k, v),
        )


def _fwd_run(plan: _FwdPlan, q, k, v, table, scale):
    out, lse = plan.out(), plan.lse()
    if plan.launch is not None:
        plan.launch(q, k, v, table, out, lse)
    return out, lse


@custom_op("fastvid::frame_attention_fwd")
def frame_attention_fwd(q: Tensor, k: Tensor, v: Tensor, table: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """Triton forward. Returns out (B, F, N, h, d) contiguous and lse (B, F, h, N) fp32 (log2 units)."""
    return _fwd_op.planned(q, k, v, table, scale)


@frame_attention_fwd.register_fake
def _(q, k, v, table, scale):
    batch, frames, tokens, heads, _ = q.shape
    return q.new_empty(q.shape), q.new_empty(batch, frames, heads, tokens, dtype=torch.float32)


class _BwdPlan:
    """Everything the two backward launches of one call signature need but the tensors."""

    def __init__(self, dout, q, k, v, table, out, lse, scale):
        from ..kernels.frame_attention import frame_attention_bwd_dkv_kernel, frame_attention_bwd_dq_kernel

        batch, frames, tokens, heads, head_dim = self.shape = tuple(q.shape)
        keys = k.shape[2]
        self.dtype, self.device, self.kv_shape, self.frames = q.dtype, q.device, tuple(k.shape), frames
        self.strides = _launch.contiguous_strides(self.shape)
        self.kv_strides = _launch.contiguous_strides(self.kv_shape)
        # delta is allocated like lse, both contiguous (a strided lse is copied): the kernels read both with these
        self.delta_shape = tuple(lse.shape)
        self.lse_strides = _launch.contiguous_strides(self.delta_shape)
        self.dq_out = _launch.allocator(self.shape, self.strides, q.dtype, q.device)
        self.dkv_out = _launch.allocator(self.kv_shape, self.kv_strides, q.dtype, q.device)
        self.delta = _launch.allocator(self.delta_shape, self.lse_strides, torch.float32, q.device)
        self.dq = self.dkv = None
        if q.numel() == 0:
            return
        programs = batch * frames * heads
        common = _head_constants(head_dim, q, k, v, out, dout)
        self.dq = _table_launch(
            frame_attention_bwd_dq_kernel, programs, tokens, "BLOCK_N",
            (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *dout.stride(), *self.strides, *table.stride(),
             *self.lse_strides, heads, frames, tokens, keys, table.shape[1], scale * _launch.LOG2E, scale),
            EVEN_M=_even_keys(k), **common,
        )
        self.dkv = _table_launch(
            frame_attention_bwd_dkv_kernel, programs, keys, "BLOCK_M",
            (*q.stride(), *k.stride(), *v.stride(), *dout.stride(), *self.kv_strides,
             *_launch.contiguous_strides((frames, frames)), *self.lse_strides,
             heads, frames, tokens, keys, table.shape[1], scale * _launch.LOG2E, scale),
            **common,
        )


def _bwd_run(plan: _BwdPlan, dout, q, k, v, table, out, lse, scale):
    dq = plan.dq_out()
    if plan.dq is None:  # no query reads a key: dK = dV = 0
        return [dq, torch.zeros(plan.kv_shape, dtype=plan.dtype, device=plan.device),
                torch.zeros(plan.kv_shape, dtype=plan.dtype, device=plan.device)]
    dk, dv, delta = plan.dkv_out(), plan.dkv_out(), plan.delta()
    lse = lse if lse.stride() == plan.lse_strides else lse.contiguous()
    plan.dq(q, k, v, table, out, dout, lse, delta, dq)
    plan.dkv(q, k, v, _table_counts(table, plan.frames), dout, lse, delta, dk, dv)
    return [dq, dk, dv]


@custom_op("fastvid::frame_attention_bwd")
def frame_attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, table: Tensor, out: Tensor, lse: Tensor,
                        scale: float) -> List[Tensor]:
    """Triton backward: dQ kernel (also writes delta = rowsum(dO * O)), then the dK/dV kernel. Returns [dq, dk, dv]."""
    return _bwd_op.planned(dout, q, k, v, table, out, lse, scale)


@frame_attention_bwd.register_fake
def _(dout, q, k, v, table, out, lse, scale):
    return [q.new_empty(q.shape), k.new_empty(k.shape), k.new_empty(k.shape)]


def _setup_context(ctx, inputs, output):
    q, k, v, table, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, table, out, lse)
    ctx.scale = scale


def _backward(ctx, dout, dlse):
    q, k, v, table, out, lse = ctx.saved_tensors
    dq, dk, dv = _bwd_op(dout, q, k, v, table, out, lse, ctx.scale)
    return dq, dk, dv, None, None


_fwd_op = TritonOp(frame_attention_fwd, _FwdPlan, _fwd_run)
_bwd_op = TritonOp(frame_attention_bwd, _BwdPlan, _bwd_run)
_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- backends ---------------------------------------------------------------------------------

def _run_triton(q, k, v, frames, scale):
    return _fwd_op(q, k, v, frame_table(frames, q.shape[1], q.device), scale)[0]


def _prepare_triton(q, k, v, frames, scale):
    """A mode's table is fixed by the signature (F, device); a tensor's values are read on every call."""
    table = frame_table(frames, q.shape[1], q.device)
    call = _fwd_op.prepare(q, k, v, table, scale, output=0)
    if isinstance(frames, str):
        return bound(call, 5, (0, 1, 2, Const(table), 4))
    return lambda q, k, v, frames, scale: call(q, k, v, frame_table(frames, q.shape[1], q.device), scale)


def _triton_reason(q, k, v, frames, scale):
    return _launch.triton_reason(q, k, v)


def _features(q, k, v, frames, scale):
    return {"dtype": q.dtype, "head_dim": q.shape[-1]}


def _value_checks(q, k, v, frames, scale):
    """A table's values are checked on every call (a cached signature says nothing about them), except while a
    CUDA graph captures: reading them would synchronise, which capture forbids (fastvid.capture_step's eager
    warm-up calls checked them)."""
    if isinstance(frames, Tensor) and not _launch.capturing(frames):
        check_index_table(OP, "frames", frames, q.shape[1], q.shape[1], TABLE_LAYOUT)


def _triton_auto_reason(q, k, v, frames, scale):
    why = _launch.triton_auto_reason(q)
    if why:
        return why
    head_dim, mode = q.shape[-1], frames if isinstance(frames, str) else None
    if mode is not None and FRAME_MODES[mode].dense and head_dim % 8 == 0:
        return (f"frames={mode!r} is dense attention, which SDPA's fused kernels (FlashAttention-2, cuDNN, "
                "memory-efficient) run on views without copies; auto takes the torch backend")
    if mode == "first" and head_dim % 16 and head_dim % 8 == 0:
        return (f"frames='first' reads frame 0's keys through a view, and at head_dim {head_dim} (not a multiple "
                "of 16) SDPA's fused kernels ran faster than the Triton kernel in the benchmarks (docs/benchmarks.md); "
                "auto takes the torch backend")
    return None


def _heads_first(t: Tensor, merge_frames: bool) -> Tensor:
    """(B, F, L, h, d) -> (B, h, F*L, d) or (B*F, h, L, d), a view where the layout allows, for SDPA."""
    b, f, length, h, d = t.shape
    return t.reshape((b, f * length, h, d) if merge_frames else (b * f, length, h, d)).transpose(1, 2)


def _run_torch(q, k, v, frames, scale):
    """SDPA on views of the inputs: "self" over (B*F) groups, "all" over F*M keys, "first" with
    frame 0's keys for all F*N queries (no repeat); other tables gather K/V (copies) with a pad mask.
    On CPU a non-finite input runs the reference (see ``_nonfinite``)."""
    if has_nonfinite_on_cpu(q, k, v):
        return _run_reference(q, k, v, frames, scale)
    path = FRAME_MODES[frames].sdpa if isinstance(frames, str) else "gather"
    mask = None
    if path == "per_frame":
        qs, ks, vs = (_heads_first(t, False) for t in (q, k, v))
    elif path in ("all_frames", "first_frame"):
        qs = _heads_first(q, True)
        ks, vs = (_heads_first(t if path == "all_frames" else t[:, :1], True) for t in (k, v))
    else:
        table = reference.frame_table(frames, q.shape[1], q.device).long()
        qs = _heads_first(q, False)
        ks, vs = (_heads_first(t[:, table.clamp(min=0)].flatten(2, 3), False) for t in (k, v))
        if _launch.capturing(table) or bool((table < 0).any()):  # under capture: a mask, padded or not
            keep = (table >= 0).repeat_interleave(k.shape[2], dim=1)  # (F, K*M)
            mask = keep[None, :, None, None, :].expand(q.shape[0], -1, 1, 1, -1).flatten(0, 1)
    out = Fn.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(q.shape).contiguous()


def _run_reference(q, k, v, frames, scale):
    return reference.frame_attention(q, k, v, frames=frames, scale=scale).contiguous()


def _validate(q, k, v, frames, scale):
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(OP, "q", q, ndim=5, layout=Q_LAYOUT, dtypes=dtypes)
    for name, t in (("k", k), ("v", v)):
        check_tensor(OP, name, t, ndim=5, layout=KV_LAYOUT, dtypes=dtypes)
    batch, num_frames, _, heads, head_dim = q.shape
    check_shape(OP, "k", k, (batch, num_frames, None, heads, head_dim), KV_LAYOUT + " with q's B, F, heads, head_dim")
    check_shape(OP, "v", v, tuple(k.shape), KV_LAYOUT + " equal to k")
    check_same_dtype(OP, q=q, k=k, v=v)
    check_same_device(OP, q=q, k=k, v=v)
    check_head_dim(OP, "q", head_dim)
    if k.shape[2] == 0 and q.numel():
        fail(OP, "k", f"has shape {tuple(k.shape)} (M = 0 keys per frame)", "M >= 1")
    if isinstance(frames, str):
        check_choice(OP, "frames", frames, tuple(FRAME_MODES))
    elif isinstance(frames, Tensor):
        check_index_table(OP, "frames", frames, num_frames, num_frames, TABLE_LAYOUT)
        if frames.device not in (q.device, torch.device("cpu")):
            fail(OP, "frames", f"is on {frames.device}", f"the device of 'q' ({q.device}) or cpu")
    else:
        fail(OP, "frames", f"is a {type(frames).__name__}", "one of " + ", ".join(map(repr, FRAME_MODES))
             + " or an integer tensor " + TABLE_LAYOUT)
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        fail(OP, "scale", f"is {scale!r}", "a positive float or None (1/sqrt(head_dim))")


def _backend_arguments(q, k, v, frames="self", scale=None):
    """The public function's arguments (its defaults, in the backends' order) validated and resolved."""
    _validate(q, k, v, frames, scale)
    if isinstance(frames, Tensor):
        frames = frames.to(q.device)
    return q, k, v, frames, (q.shape[-1] ** -0.5 if scale is None else float(scale))


TRITON_LIMITS = Limits(dtypes=FLOAT_DTYPES,
                       maxima={"head_dim": (256, "the kernels hold a row's head_dim in registers")})

DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_reason, auto_reason=_triton_auto_reason, limits=TRITON_LIMITS,
            prepare=_prepare_triton),
    Backend("torch", _run_torch),
    Backend("reference", _run_reference),
], arguments=_backend_arguments, features=_features, value_checks=_value_checks)


def frame_attention(q: Tensor, k: Tensor, v: Tensor, *, frames: Frames = "self", scale: float | None = None,
                    backend: str = "auto") -> Tensor:
    """Cross-frame attention: the queries of frame i attend to the keys/values of a set of frames.

    Args:
        q: (B, F, N, heads, head_dim) queries; any strides.
        k, v: (B, F, M, heads, head_dim) keys and values (M may differ from N); any strides.
            fp32, fp16 or bf16 (float64 on the torch/reference backends); head_dim <= 256 on Triton.
        frames: which frames frame i attends to, its keys concatenated: a mode of
            ``fastvid.frame_modes.FRAME_MODES`` ("self": frame i, spatial attention; "first": frame 0,
            Text2Video-Zero; "sparse_causal": frames [0, i-1], Tune-A-Video; "all": every frame,
            ControlVideo, and with k, v from the same tokens the full spatio-temporal attention of
            Sora-style DiTs), or an integer tensor (F, K): row i lists frame i's key frames, -1 pads a
            shorter row; a frame listed twice is attended twice (as with concatenated K/V).
        scale: score scale, default 1/sqrt(head_dim).
        backend: "auto", "triton", "torch" (SDPA) or "reference". "auto" takes Triton on CUDA,
            except the dense modes ("self", "all") with head_dim % 8 == 0, which go to SDPA's fused
            kernels; on CPU it takes "torch".
            ``fastvid.last_backend("frame_attention")`` names the one that ran.

    Returns:
        (B, F, N, heads, head_dim), contiguous, dtype of q.
    """
    return DISPATCH.call(backend, q, k, v, frames, scale)
