"""Every op of fastvid, one row each: what implements it, what checks it, what benchmarks it.

Tests, the resource report and the benchmark suite walk :data:`OPS` instead of their own lists,
so an op that misses a piece (reference, torch.library registration, dispatcher, test file,
kernel file) fails ``tests/test_registry.py``. The benchmark shapes and the sm_90 compile-spec
builders live in ``benchmarks/`` (not shipped), so a row names them instead of importing them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Tuple

from . import nn, reference
from .dispatch import Dispatcher
from .ops import alpha_blend, frame_attention, group_norm_silu, temporal_attention, temporal_conv


@dataclass(frozen=True)
class OpSpec:
    name: str
    module: ModuleType  # fastvid.ops.<name>: launchers, torch.library ops, DISPATCH, public function
    reference: Callable  # the plain-torch definition in fastvid.reference
    twins: Tuple[type, ...]  # fastvid.nn modules built on the op, each a drop-in for a fastvid.reference module
    library_ops: Tuple[str, ...]  # torch.ops.fastvid.<name> registrations
    benchmark_shapes: str  # a dict in benchmarks/shapes.py
    compile_specs: str  # the launch builder in benchmarks/kernel_resources.py (sm_90 compile specs)

    @property
    def function(self) -> Callable:
        """The public function, exported as ``fastvid.<name>``."""
        return getattr(self.module, self.name)

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


def _row(module: ModuleType, twins, benchmark_shapes: str) -> OpSpec:
    name = module.OP
    return OpSpec(name=name, module=module, reference=getattr(reference, name), twins=twins,
                  library_ops=(f"{name}_fwd", f"{name}_bwd"), benchmark_shapes=benchmark_shapes,
                  compile_specs=f"_{name}")


OPS: Dict[str, OpSpec] = {row.name: row for row in (
    _row(temporal_attention, (nn.TemporalAttention,), "TEMPORAL_ATTENTION"),
    _row(frame_attention, (nn.FrameAttention, nn.SparseCausalAttention), "FRAME_ATTENTION"),
    _row(temporal_conv, (nn.PseudoConv3d, nn.TemporalConvBlock), "TEMPORAL_CONV"),
    _row(group_norm_silu, (nn.TemporalConvBlock,), "TEMPORAL_CONV"),
    _row(alpha_blend, (nn.AlphaBlender,), "ALPHA_BLEND"),
)}
