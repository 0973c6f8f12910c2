"""Every op of fastvid, one row each: what implements it, what checks it, what benchmarks it.

Tests, the resource report and the benchmark suite walk :data:`OPS` instead of their own lists,
so an op that misses a piece (reference, torch.library registration, dispatcher, test file,
kernel file, example inputs) fails ``tests/test_registry.py``. Each row holds the op's example inputs
and benchmark shapes (``fastvid.examples``), which tests and benchmarks read. The sm_90 compile-spec
builders live in ``benchmarks/`` (not shipped), so a row names them instead of importing them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Tuple

from . import nn, reference
from .dispatch import Dispatcher
from .examples import EXAMPLES, Examples, Shapes
from .ops import frame_attention, group_norm_silu, temporal_attention, temporal_conv


@dataclass(frozen=True)
class OpSpec:
    name: str
    module: ModuleType  # fastvid.ops.<name>: launchers, torch.library ops, DISPATCH, public function
    reference: Callable  # the plain-torch definition in fastvid.reference
    twins: Tuple[type, ...]  # fastvid.nn modules built on the op, each a drop-in for a fastvid.reference module
    library_ops: Tuple[str, ...]  # torch.ops.fastvid.<name> registrations
    examples: Examples  # example inputs for tests, shapes for benchmarks
    compile_specs: str  # the launch builder in benchmarks/kernel_resources.py (sm_90 compile specs)

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


def _row(module: ModuleType, twins) -> OpSpec:
    name = module.OP
    return OpSpec(name=name, module=module, reference=getattr(reference, name), twins=twins,
                  library_ops=(f"{name}_fwd", f"{name}_bwd"), examples=EXAMPLES[name], compile_specs=f"_{name}")


OPS: Dict[str, OpSpec] = {row.name: row for row in (
    _row(temporal_attention, (nn.TemporalAttention,)),
    _row(frame_attention, (nn.FrameAttention, nn.SparseCausalAttention)),
    _row(temporal_conv, (nn.PseudoConv3d, nn.TemporalConvBlock)),
    _row(group_norm_silu, (nn.TemporalConvBlock,)),
)}
