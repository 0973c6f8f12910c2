"""The step model: every op of ONE denoiser call counted on the meta device (shapes only, no weights
allocated, no GPU), timed at the H100 roofline, attributed to the part of the network that ran it, for
the model as it is and patched by ``fastvid.patch``. A MODEL: predicted at the roofline, not measured.

    from fastvid import roofline
    p = roofline.predict_diffusers("svd")            # released config and size, random weights, meta device
    print(roofline.format_prediction(p))
    p = roofline.predict_model("vdm", "gpu")         # a fastvid.models reference model

How it counts (docs/step-model.md says more):

- a ``TorchDispatchMode`` sees every aten op of the call. FLOPs of matmuls and convolutions come from
  ``torch.utils.flop_counter``'s formulas; bytes are the op's input and output tensors (``fastvid.cost``:
  each read or written once, broadcast dims once); views, aliases and allocations cost nothing.
- ``F.scaled_dot_product_attention`` is one fused kernel, as FlashAttention-2 or memory-efficient
  attention run it on the GPU (on the meta device torch would decompose it into the unfused math path):
  a ``TorchFunctionMode`` counts it with the attention FLOP formula and the bytes of q, k, v, mask and out.
- fastvid's ops reach their torch.library ops (``torch.ops.fastvid.*``) under
  ``fastvid.ops._launch.meta_as_cuda``, which routes meta tensors as a GPU run routes CUDA tensors, and
  each is counted by the ``cost`` of its row in ``fastvid.registry.OPS``.
- global forward pre/post hooks keep the stack of running modules: each op goes to a ``kind`` (which
  block of the network: temporal / spatial transformer, temporal / spatial ResNet, AlphaBlender mixing,
  up/down-sampling, the rest; attention kernels by role) and a ``part`` (what it does: attention kernel,
  attention projections, feed-forward, norms, convs, copies, elementwise ...).
- an op's time is ``max(FLOPs / 800 TFLOP/s, bytes / 3.0 TB/s)``; a call's time is the sum over its ops
  (no overlap between ops, no launch or host cost, every FLOP at the bf16 dense rate).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from . import cost

PEAK_FLOPS = 800e12  # the modelled H100: bf16 dense matmul, FLOP/s (docs/step-model.md)
PEAK_BYTES = 3.0e12  # the modelled H100: device memory, bytes/s
DTYPE = torch.bfloat16
LABEL = (f"MODEL: predicted at the H100 roofline ({PEAK_FLOPS / 1e12:.0f} TFLOP/s bf16 dense, "
         f"{PEAK_BYTES / 1e12:.1f} TB/s; per op the max of the two), not measured")

# ---- what an op is -------------------------------------------------------------------------------

ATTENTION_OP = "scaled_dot_product_attention (fused)"
# aten ops that move no data: allocations and metadata (views are found from their schema).
_FREE = {"aten._unsafe_view", "aten.empty", "aten.empty_strided", "aten.new_empty", "aten.new_empty_strided",
         "aten.empty_like", "aten.lift_fresh", "aten._local_scalar_dense", "aten.resize_", "aten.set_"}
# ops whose first argument is only written (its old contents are not read).
_WRITE_ONLY_FIRST = {"aten.copy_", "aten.fill_", "aten.zero_"}
# inside an attention module: the ops of unfused attention (batched score matmuls, softmax, mask), and
# the projections' matmuls with a weight (fused projections call them without a Linear module)
_SCORE_OPS = {"aten.bmm", "aten.baddbmm", "aten._softmax", "aten._safe_softmax", "aten.masked_fill"}
_PROJECTION_OPS = {"aten.mm", "aten.addmm"}

_OP_PART = {
    "aten.convolution": "convs", "aten._convolution": "convs", "fastvid.temporal_conv_fwd": "convs",
    "aten.native_group_norm": "norms", "aten.native_layer_norm": "norms", "fastvid.group_norm_silu_fwd": "norms",
    "aten.mm": "other linears", "aten.addmm": "other linears", "aten.bmm": "other linears",
    "aten.baddbmm": "other linears", "fastvid.linear_fwd": "other linears",
    "aten.clone": "rearrange copies & cats", "aten.copy_": "rearrange copies & cats",
    "aten.cat": "rearrange copies & cats", "aten.repeat": "rearrange copies & cats",
    "aten.index": "rearrange copies & cats", "aten.index_select": "rearrange copies & cats",
    "aten.constant_pad_nd": "rearrange copies & cats",
    "aten._to_copy": "casts",
}
_ATTENTION_KERNELS = {ATTENTION_OP, "fastvid.temporal_attention_fwd", "fastvid.frame_attention_fwd"}

# Module classes (matched by name anywhere in the class's MRO, so fastvid's twins and the Fastvid...
# swaps count as their originals; diffusers need not be importable).
_FEED_FORWARD = {"FeedForward", "GEGLU", "GELU", "ApproximateGELU", "SwiGLU"}  # and diffusers' activation layers
# A transformer block's own linear op is its feed-forward's last Linear with the residual in its epilogue (the
# patched block calls the feed-forward's layers itself, outside the FeedForward module).
_BLOCK_FEED_FORWARD = ({"BasicTransformerBlock", "TemporalBasicTransformerBlock"}, {"fastvid.linear_fwd"})
_NORMS = {"GroupNorm", "LayerNorm", "RMSNorm", "AdaGroupNorm"}
_LINEAR = {"Linear"}
# block -> kind; "transformer" is resolved from the roles of the attentions inside the block
_BLOCKS = {
    "AlphaBlender": "AlphaBlender mixing", "SpatioTemporalResBlock": "AlphaBlender mixing",
    "TemporalResnetBlock": "temporal ResNet", "TemporalConvLayer": "temporal ResNet",
    "TemporalResBlock": "temporal ResNet", "TemporalConvBlock": "temporal ResNet",
    "ResnetBlock2D": "spatial ResNet", "ResBlock": "spatial ResNet",
    "Downsample2D": "up/down-sampling", "Upsample2D": "up/down-sampling",
    "Downsample": "up/down-sampling", "Upsample": "up/down-sampling",
    **{name: "transformer" for name in (
        "BasicTransformerBlock", "TemporalBasicTransformerBlock", "Transformer2DModel", "TransformerTemporalModel",
        "TransformerSpatioTemporalModel", "AnimateDiffTransformer3D", "I2VGenXLTransformerTemporalEncoder",
        "VideoTransformer", "TokenBlock", "DiTBlock")},
}
OTHER_KIND = "embeddings, in/out convs, skips"


def _names(module: nn.Module) -> frozenset:
    return frozenset(c.__name__ for c in type(module).__mro__)


def attention_roles(model: nn.Module) -> Dict[int, str]:
    """id(attention module) -> "temporal", "spatial", "cross" (to text/image embeddings) or "cross-frame",
    for diffusers' Attention modules (the roles ``fastvid.patch`` uses) and fastvid's reference models."""
    from . import reference
    from .models.layers import CrossAttention

    roles = {}
    for module in model.modules():
        if isinstance(module, reference.TemporalAttention):
            roles[id(module)] = "temporal"
        elif isinstance(module, reference.FrameAttention):
            roles[id(module)] = "spatial" if module.frames == "self" else "cross-frame"
        elif isinstance(module, CrossAttention):
            roles[id(module)] = "cross"
    if type(model).__module__.startswith("diffusers"):
        from .integrations.diffusers import _roles

        modules = dict(model.named_modules())
        for name, role in _roles(model).items():  # a cross-attention keeps its role under a cross-frame processor
            roles[id(modules[name])] = "cross" if modules[name].is_cross_attention else role.replace("_", "-")
    return roles


class _Classifier:
    """(kind, part) of an op from the stack of running modules, cached per stack."""

    def __init__(self, roles: Dict[int, str]):
        self.roles = roles
        self._blocks: Dict[int, Optional[str]] = {}
        self._cache: Dict[tuple, Tuple[str, str]] = {}

    def block(self, module: nn.Module) -> Optional[str]:
        key = id(module)
        if key not in self._blocks:
            kind = next((_BLOCKS[c.__name__] for c in type(module).__mro__ if c.__name__ in _BLOCKS), None)
            if kind == "transformer":
                found = {self.roles[id(m)] for m in module.modules() if id(m) in self.roles}
                if "cross-frame" in found:
                    kind = "cross-frame transformer"
                elif "temporal" in found and "spatial" not in found:
                    kind = "temporal transformer"
                else:
                    kind = "spatial transformer"
            self._blocks[key] = kind
        return self._blocks[key]

    def __call__(self, stack: List[nn.Module], op: str) -> Tuple[str, str]:
        key = (tuple(map(id, stack)), op)
        if key not in self._cache:
            self._cache[key] = self._classify(stack, op)
        return self._cache[key]

    def _classify(self, stack: List[nn.Module], op: str) -> Tuple[str, str]:
        attn = next((i for i in reversed(range(len(stack))) if id(stack[i]) in self.roles), None)
        inner = [_names(m) for m in stack[attn + 1:]] if attn is not None else []
        role = self.roles[id(stack[attn])] if attn is not None else "other"
        in_linear = any(_LINEAR & n for n in inner)
        if op in _ATTENTION_KERNELS or (attn is not None and op in _SCORE_OPS and not in_linear):
            return f"attention kernel: {role}", "attention kernels"
        names = [_names(m) for m in stack]
        if attn is not None and (in_linear or op in _PROJECTION_OPS):
            part = "attention projections"
        elif any(_FEED_FORWARD & n for n in names) or (op in _BLOCK_FEED_FORWARD[1] and names
                                                         and _BLOCK_FEED_FORWARD[0] & names[-1]):
            part = "feed-forwards"
        elif any(_NORMS & n for n in names):
            part = "norms"
        else:
            part = _OP_PART.get(op, "residual adds & elementwise")
        kind = next((k for k in map(self.block, reversed(stack)) if k is not None), None)
        if kind is None:
            kind = {"temporal": "temporal transformer", "cross-frame": "cross-frame transformer"}.get(
                role, "spatial transformer") if attn is not None else OTHER_KIND
        return kind + " excl. attn kernel" if "transformer" in kind else kind, part


# ---- counting ---------------------------------------------------------------------------------------

@dataclass
class Tally:
    flops: float = 0.0
    bytes: float = 0.0
    seconds: float = 0.0
    calls: int = 0

    def add(self, flops: float, nbytes: float, seconds: float, calls: int = 1) -> None:
        self.flops += flops
        self.bytes += nbytes
        self.seconds += seconds
        self.calls += calls


def roofline_seconds(flops: float, nbytes: float) -> float:
    """One op at the roofline: bound by its FLOPs or by its bytes, whichever takes longer."""
    return max(flops / PEAK_FLOPS, nbytes / PEAK_BYTES)


def _library_costs() -> Dict[str, Callable]:
    from .registry import OPS

    return {f"fastvid.{row.library_ops[0]}": row.cost for row in OPS.values()}


def _is_free(func, name: str) -> bool:
    returns = func._schema.returns
    view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
    return view or name in _FREE


class StepCounter(TorchDispatchMode):
    """Counts every op run inside it into ``rows[(kind, part, op)]``; module attribution through global
    forward hooks, fused SDPA through a function mode. Use through :func:`count_call`."""

    def __init__(self, roles: Dict[int, str]):
        super().__init__()
        self.classify = _Classifier(roles)
        self.rows: Dict[Tuple[str, str, str], Tally] = defaultdict(Tally)
        self.stack: List[nn.Module] = []
        self.costs = _library_costs()

    def record(self, op: str, flops: float, nbytes: float) -> None:
        kind, part = self.classify(self.stack, op)
        self.rows[(kind, part, op)].add(flops, nbytes, roofline_seconds(flops, nbytes))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        if func.namespace == "fastvid":
            if name not in self.costs:
                raise RuntimeError(f"{name} has no cost formula: its row in fastvid.registry.OPS names its forward "
                                   "library op first and gives its cost")
            flops, nbytes = self.costs[name](*args, **kwargs)
        elif _is_free(func, name):
            return out
        else:
            reads = tree_leaves((args[1:], kwargs) if name in _WRITE_ONLY_FIRST else (args, kwargs))
            nbytes = cost.io_bytes(*(t for t in reads + tree_leaves(out) if isinstance(t, torch.Tensor)))
            formula = flop_registry.get(func.overloadpacket)
            flops = formula(*args, **kwargs, out_val=out) if formula is not None else 0
        self.record(name, flops, nbytes)
        return out

    def attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                  enable_gqa=False):
        """F.scaled_dot_product_attention as one fused kernel; its output in the (B, L, heads, E) memory
        order FlashAttention and memory-efficient attention give it (so a following transpose is a view)."""
        out_shape = (*query.shape[:-1], value.shape[-1])
        groups = math.prod(query.shape[:-2])
        flops = cost.attention_flops(groups, query.shape[-2], key.shape[-2], query.shape[-1], value.shape[-1])
        nbytes = cost.io_bytes(query, key, value, attn_mask) + cost.new_bytes(out_shape, query.dtype)
        self.record(ATTENTION_OP, flops, nbytes)
        if query.dim() == 4:
            b, h, length, e = out_shape
            return query.new_empty(b, length, h, e).transpose(1, 2)
        return query.new_empty(out_shape)


class _FusedAttention(TorchFunctionMode):
    def __init__(self, counter: StepCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is Fn.scaled_dot_product_attention:
            return self.counter.attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def count_call(call: Callable[[], object], roles: Dict[int, str]) -> Dict[Tuple[str, str, str], Tally]:
    """Runs ``call`` (one denoiser call on meta tensors) and returns its ops, by (kind, part, op)."""
    from .ops._launch import meta_as_cuda

    counter = StepCounter(roles)

    def push(module, args):
        counter.stack.append(module)

    def pop(module, args, output):
        counter.stack.pop()

    handles = [nn.modules.module.register_module_forward_pre_hook(push),
               nn.modules.module.register_module_forward_hook(pop, always_call=True)]
    try:
        with torch.no_grad(), meta_as_cuda(), _FusedAttention(counter), counter:
            call()
    finally:
        for handle in handles:
            handle.remove()
    return dict(counter.rows)


def steady_call(call: Callable[[], object], roles: Dict[int, str]) -> Dict[Tuple[str, str, str], Tally]:
    """:func:`count_call` of a repeated call: one call first, uncounted, so that what a model builds once
    and keeps (frame attention's index tables, cached per mode and frame count) is not charged to a step."""
    count_call(call, roles)
    return count_call(call, roles)


# ---- predictions ------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """One model's denoiser call, unpatched and fastvid-patched: rows by (kind, part, op)."""

    model: str
    source: str  # "diffusers" or "fastvid.models"
    shape: str  # what one call computes, in words
    unpatched: Dict[Tuple[str, str, str], Tally]
    patched: Dict[Tuple[str, str, str], Tally]
    patch_summary: str = ""
    label: str = field(default=LABEL)

    @staticmethod
    def total(rows) -> Tally:
        t = Tally()
        for r in rows.values():
            t.add(r.flops, r.bytes, r.seconds, r.calls)
        return t

    @property
    def predicted_speedup(self) -> float:
        return self.total(self.unpatched).seconds / self.total(self.patched).seconds

    def by(self, axis: int, variant: str) -> Dict[str, Tally]:
        """Rows summed by kind (axis 0), part (1) or op (2)."""
        out: Dict[str, Tally] = defaultdict(Tally)
        for key, r in getattr(self, variant).items():
            out[key[axis]].add(r.flops, r.bytes, r.seconds, r.calls)
        return dict(out)

    def as_json(self) -> dict:
        u, p = self.total(self.unpatched), self.total(self.patched)

        def table(axis):
            return [dict(name=name, unpatched=_figures(a, u), patched=_figures(b, p))
                    for name, a, b in _joined(self.by(axis, "unpatched"), self.by(axis, "patched"))]

        return dict(model=self.model, source=self.source, shape=self.shape, label=self.label, predicted=True,
                    unpatched_gb=u.bytes / 1e9, unpatched_tflop=u.flops / 1e12, unpatched_ms=u.seconds * 1e3,
                    patched_gb=p.bytes / 1e9, patched_tflop=p.flops / 1e12, patched_ms=p.seconds * 1e3,
                    unpatched_ops=u.calls, patched_ops=p.calls,
                    predicted_speedup=self.predicted_speedup, patch=self.patch_summary,
                    kinds=table(0), parts=table(1), ops=table(2),
                    rows=[dict(kind=k[0], part=k[1], op=k[2], unpatched=_figures(a, u), patched=_figures(b, p))
                          for k, a, b in _joined(self.unpatched, self.patched)])


def _figures(t: Tally, total: Tally) -> dict:
    return dict(gb=t.bytes / 1e9, tflop=t.flops / 1e12, ms=t.seconds * 1e3, share=t.seconds / total.seconds,
                calls=t.calls)


def _joined(a: dict, b: dict):
    """(key, a[key], b[key]) over both, missing rows as zeros, by the larger time first (then by key)."""
    keys = sorted(set(a) | set(b), key=lambda k: (-max(a.get(k, Tally()).seconds, b.get(k, Tally()).seconds), k))
    return [(k, a.get(k, Tally()), b.get(k, Tally())) for k in keys]


def _predict(name: str, source: str, shape: str, model: nn.Module, call: Callable[[], object]) -> Prediction:
    from .patching import patch

    roles = attention_roles(model)
    unpatched = steady_call(call, roles)
    report = patch(model)
    patched = steady_call(call, roles)
    summary = ", ".join(f"{kind} {n}" for kind, n in report.counts().items()) or "nothing swapped"
    return Prediction(name, source, shape, unpatched, patched, patch_summary=summary)


def predict_diffusers(name: str, size: str = "released", fuse_qkv: bool = False) -> Prediction:
    """A released diffusers video denoiser (``fastvid.integrations.released``), random weights on the meta
    device, one CFG call at the released (or tiny) size, unpatched and ``fastvid.patch``-ed; with ``fuse_qkv``
    after diffusers' ``fuse_qkv_projections()`` (both)."""
    from .integrations import released

    model = released.build_denoiser(name, size=size, device="meta", dtype=DTYPE)
    cross_frame = released.row(name).cross_frame_processor
    if fuse_qkv:
        model.fuse_qkv_projections()
        if cross_frame:  # its pipeline installs them again on every call: the fused projections go unused
            model.set_attn_processor(released.cross_frame_processor())
    kwargs = released.denoiser_inputs(name, model, size=size, device="meta", dtype=DTYPE)
    s = released.row(name).size(size)
    batch = kwargs["sample"].shape[0]
    if name == "t2v_zero":
        batch //= s.frames
    fused = ", QKV projections fused" + (" but unused (cross-frame processors)" if cross_frame else "")
    shape = (f"{batch} (CFG) x {s.frames} frames x {s.latent_height}x{s.latent_width} latents, {size} config"
             + (fused if fuse_qkv else ""))
    return _predict(name, "diffusers", shape, model, lambda: model(**kwargs))


def predict_model(name: str, size: str = "gpu") -> Prediction:
    """A ``fastvid.models`` reference model at its ``size`` preset, built on the meta device, one
    classifier-free-guided evaluation (``fastvid.models.evaluation``), unpatched and patched."""
    from . import models

    s = models.size(name, size)
    with torch.device("meta"):
        model = models.entry(name).build(s.model)
    model = model.to(DTYPE).eval()
    call = models.evaluation(model, s, device="meta", dtype=DTYPE)
    shape = f"2 (CFG) x {s.batch} x {s.frames} frames x {s.height}x{s.width} latents, {size} preset"
    return _predict(name, "fastvid.models", shape, model, call)


# ---- report -----------------------------------------------------------------------------------------

def _table(title: str, a: Dict[str, Tally], b: Dict[str, Tally], ta: Tally, tb: Tally, limit: Optional[int]) -> str:
    rows = _joined(a, b)
    width = max(len(title), *(len(name) for name, _, _ in rows[:limit]))
    head = (f"{title:<{width}s} | {'unpatched GB':>12s} {'TFLOP':>7s} {'ms':>9s} {'share':>6s} | "
            f"{'patched GB':>10s} {'TFLOP':>7s} {'ms':>9s} {'share':>6s}")

    def line(name, x, y):
        return (f"{name:<{width}s} | {x.bytes / 1e9:12.2f} {x.flops / 1e12:7.2f} {x.seconds * 1e3:9.3f} "
                f"{x.seconds / ta.seconds:6.1%} | {y.bytes / 1e9:10.2f} {y.flops / 1e12:7.2f} "
                f"{y.seconds * 1e3:9.3f} {y.seconds / tb.seconds:6.1%}")

    lines = [head, "-" * len(head)] + [line(name, x, y) for name, x, y in rows[:limit]]
    if limit is not None and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows (all of them in --json)")
    return "\n".join(lines + [line("total", ta, tb)])


def format_prediction(p: Prediction, op_rows: Optional[int] = 20) -> str:
    """Tables by kind, by part, by op and by kind / part / op (the first ``op_rows`` of the last two),
    unpatched next to patched."""
    ta, tb = p.total(p.unpatched), p.total(p.patched)

    def detail(variant):
        return {" / ".join(k): v for k, v in getattr(p, variant).items()}

    return "\n\n".join([
        f"{p.model} ({p.source}): one denoiser call, {p.shape}, bf16\n{p.label}\n"
        f"fastvid.patch swapped: {p.patch_summary}\n"
        f"predicted call: {ta.seconds * 1e3:.1f} ms unpatched, {tb.seconds * 1e3:.1f} ms patched, "
        f"predicted_speedup {p.predicted_speedup:.3f}x; device ops per call (each one kernel launch or more): "
        f"{ta.calls} unpatched, {tb.calls} patched",
        _table("by kind (predicted)", p.by(0, "unpatched"), p.by(0, "patched"), ta, tb, None),
        _table("by part (predicted)", p.by(1, "unpatched"), p.by(1, "patched"), ta, tb, None),
        _table("by op (predicted)", p.by(2, "unpatched"), p.by(2, "patched"), ta, tb, op_rows),
        _table("by kind / part / op (predicted)", detail("unpatched"), detail("patched"), ta, tb, op_rows),
    ])


def format_summary(predictions: List[Prediction]) -> str:
    """One line per model: totals unpatched and patched, and the predicted speed-up."""
    head = (f"{'model':<16s} {'unpatched GB':>12s} {'TFLOP':>7s} {'ms':>9s} {'ops':>6s} | {'patched GB':>10s} "
            f"{'TFLOP':>7s} {'ms':>9s} {'ops':>6s} | predicted_speedup")
    lines = [f"summary, one denoiser call per model. {LABEL}; ops: device ops per call (aten ops that are no "
             "view or allocation, fastvid's library ops, fused attention), each one kernel launch or more", head,
             "-" * len(head)]
    for p in predictions:
        u, q = p.total(p.unpatched), p.total(p.patched)
        lines.append(f"{p.model:<16s} {u.bytes / 1e9:12.2f} {u.flops / 1e12:7.2f} {u.seconds * 1e3:9.3f} "
                     f"{u.calls:6d} | {q.bytes / 1e9:10.2f} {q.flops / 1e12:7.2f} {q.seconds * 1e3:9.3f} "
                     f"{q.calls:6d} | {p.predicted_speedup:.3f}x")
    return "\n".join(lines)


def write_json(predictions: List[Prediction], path) -> Path:
    """The predictions as a JSON list, one row per model (see :meth:`Prediction.as_json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([p.as_json() for p in predictions], indent=1) + "\n")
    return path
