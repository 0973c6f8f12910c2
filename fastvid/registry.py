"""Every op of fastvid, one row each: what implements it, what checks it, what benchmarks it.

Tests, the resource report and the benchmark suite walk :data:`OPS` instead of their own lists,
so an op that misses a piece (reference, torch.library registration, dispatcher, test file,
kernel file, example inputs) fails ``tests/test_registry.py``. Each row holds the op's example inputs
and benchmark shapes (``fastvid.examples``), which tests and benchmarks read. The sm_90 compile-spec
builders live in ``benchmarks/`` (not shipped), so a row names them instead of importing them.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Tuple

import torch

from . import cost, nn, reference
from .dispatch import Dispatcher
from .examples import EXAMPLES, Examples, Shapes
from .ops import (add_layer_norm, alpha_blend, frame_attention, geglu, geglu_linear, group_norm_silu, linear,
                  temporal_attention, temporal_conv)


@dataclass(frozen=True)
class OpSpec:
    name: str
    module: ModuleType  # fastvid.ops.<name>: launchers, torch.library ops, DISPATCH, public function
    reference: Callable  # the plain-torch definition in fastvid.reference
    twins: Tuple[type, ...]  # fastvid.nn modules built on the op, each a drop-in for a fastvid.reference module
    library_ops: Tuple[str, ...]  # torch.ops.fastvid.<name> registrations
    examples: Examples  # example inputs for tests, shapes for benchmarks
    compile_specs: str  # the launch builder in benchmarks/kernel_resources.py (sm_90 compile specs)
    # (FLOPs, bytes) of one call of the forward library op (library_ops[0]) from that op's arguments, shapes
    # only (meta tensors work), by fastvid.cost's conventions; fastvid.roofline counts the op with it.
    cost: Callable[..., Tuple[int, int]]

    @property
    def function(self) -> Callable:
        """The public function, exported as ``fastvid.<name>``."""
        return getattr(self.module, self.name)

    @property
    def benchmark_shapes(self) -> Shapes:
        """The real models' shapes the benchmarks run on CUDA (name -> dims)."""
        return self.examples.benchmark_shapes

    @property
    def dispatcher(self) -> Dispatcher:
        return self.module.DISPATCH

    @property
    def kernel_module(self) -> str:
        """Import name of the op's Triton kernels (the repository's ``kernels/<name>.py``)."""
        return f"fastvid.kernels.{self.name}"

    def kernels(self) -> ModuleType:
        """The kernel module, imported on demand (it imports triton and reads TRITON_INTERPRET)."""
        return importlib.import_module(self.kernel_module)


def _row(module: ModuleType, twins, cost: Callable[..., Tuple[int, int]]) -> OpSpec:
    name = module.OP
    return OpSpec(name=name, module=module, reference=getattr(reference, name), twins=twins,
                  library_ops=(f"{name}_fwd", f"{name}_bwd"), examples=EXAMPLES[name], compile_specs=f"_{name}",
                  cost=cost)


# ---- cost formulas: (FLOPs, bytes) of one forward call, from the library op's arguments ----------

def _temporal_attention_cost(q, k, v, bias, causal, scale):
    """Out like q, lse (B, h, F, N) fp32; every (b, n, head) attends over F frames."""
    batch, frames, tokens, heads, head_dim = q.shape
    flops = cost.attention_flops(batch * tokens * heads, frames, frames, head_dim)
    outputs = cost.new_bytes(q.shape, q.dtype) + cost.new_bytes((batch, heads, frames, tokens), torch.float32)
    return flops, cost.io_bytes(q, k, v, bias) + outputs


def _frame_attention_cost(q, k, v, table, scale):
    """Out like q, lse (B, F, h, N) fp32; every query frame attends to the M tokens of each of the
    table's K frames (all K counted: the table's values, and so its padding, are not known from shapes)."""
    batch, frames, tokens, heads, head_dim = q.shape
    flops = cost.attention_flops(batch * frames * heads, tokens, table.shape[1] * k.shape[2], head_dim)
    outputs = cost.new_bytes(q.shape, q.dtype) + cost.new_bytes((batch, frames, heads, tokens), torch.float32)
    return flops, cost.io_bytes(q, k, v, table) + outputs


def _temporal_conv_cost(x, weight, bias, residual, pad):
    """(B, C_in, F, H, W) x (C_out, C_in, taps) -> (B, C_out, F_out, H, W), plus the residual read."""
    batch, c_in, frames, height, width = x.shape
    c_out, _, taps = weight.shape
    shape = (batch, c_out, frames + 2 * pad - taps + 1, height, width)
    flops = 2 * math.prod(shape) * c_in * taps
    return flops, cost.io_bytes(x, weight, bias, residual) + cost.new_bytes(shape, x.dtype)


def _group_norm_silu_cost(x, weight, bias, num_groups, eps, per_frame, add=None, silu=True):
    """y like x and stats (2, B, G, F or 1) fp32, with or without SiLU; elementwise and reductions: no counted
    FLOPs."""
    stats = (2, x.shape[0], num_groups, x.shape[2] if per_frame else 1)
    return 0, (cost.io_bytes(x, weight, bias, add) + cost.new_bytes(x.shape, x.dtype)
               + cost.new_bytes(stats, torch.float32))


def _alpha_blend_cost(x_spatial, x_temporal, alpha, image_only_indicator, merge_strategy, switch):
    """out like x_spatial, alpha (or the mix factor) and the indicator read; elementwise: no counted FLOPs."""
    return 0, (cost.io_bytes(x_spatial, x_temporal, alpha, image_only_indicator)
               + cost.new_bytes(x_spatial.shape, x_spatial.dtype))


def _add_layer_norm_cost(x, residual, weight, bias, eps, frame_add):
    """sum (without a residual: none, the sum is x) and normed like x, stats (2, B * N) fp32; x, residual and the
    frame table read once (the sum is not read back)."""
    sums = (residual is not None) + 1
    outputs = sums * cost.new_bytes(x.shape, x.dtype) + cost.new_bytes((2, x.shape[0] * x.shape[1]), torch.float32)
    return 0, cost.io_bytes(x, residual, weight, bias, frame_add) + outputs


def _geglu_cost(proj_out, approximate):
    """(..., 2I) -> (..., I) like proj_out; elementwise: no counted FLOPs."""
    return 0, cost.io_bytes(proj_out) + cost.new_bytes((*proj_out.shape[:-1], proj_out.shape[-1] // 2), proj_out.dtype)


def _geglu_linear_cost(x, weight, bias, approximate):
    """(..., K) x (2 * inner, K) -> (..., inner): one GEMM of 2 * inner columns; reads x, weight, bias once,
    writes only the activated half (the projection output stays on chip)."""
    rows = math.prod(x.shape[:-1])
    flops = 2 * rows * weight.shape[0] * weight.shape[1]
    return flops, cost.io_bytes(x, weight, bias) + cost.new_bytes((rows, weight.shape[0] // 2), x.dtype)


def _linear_cost(x, weight, bias, residual):
    """(..., K) x (N, K) -> (..., N): one GEMM; reads x, weight, bias and the residual once, writes the output once
    (the residual added in the epilogue, in place of an add pass)."""
    rows = math.prod(x.shape[:-1])
    flops = 2 * rows * weight.shape[0] * weight.shape[1]
    return flops, cost.io_bytes(x, weight, bias, residual) + cost.new_bytes((rows, weight.shape[0]), x.dtype)


OPS: Dict[str, OpSpec] = {row.name: row for row in (
    _row(temporal_attention, (nn.TemporalAttention,), _temporal_attention_cost),
    _row(frame_attention, (nn.FrameAttention, nn.SparseCausalAttention), _frame_attention_cost),
    _row(temporal_conv, (nn.PseudoConv3d, nn.TemporalConvBlock), _temporal_conv_cost),
    _row(group_norm_silu, (nn.TemporalConvBlock,), _group_norm_silu_cost),
    _row(add_layer_norm, (nn.AddLayerNorm,), _add_layer_norm_cost),
    _row(alpha_blend, (nn.AlphaBlender,), _alpha_blend_cost),
    _row(geglu, (nn.GEGLU,), _geglu_cost),
    _row(geglu_linear, (nn.GEGLU,), _geglu_linear_cost),
    _row(linear, (nn.Linear,), _linear_cost),
)}
