"""Each Triton op is a torch.library custom op (what torch.compile, torch.export and opcheck see)
with a short eager path around it.

torch.library's dispatch layers (autograd wrapper, redispatch, dynamo guard) cost the host about
100 us a call, as much as the kernels themselves at video-layer sizes: on an H200 a temporal
attention forward at ModelScope's 32x32 layer ran 25 us on the device and 170 us on the host
(benchmarks/profile_ops.py). :class:`TritonOp` calls the registered op while torch.compile / export
trace and otherwise the same implementation directly, through an autograd.Function built from the
op's own ``setup_context`` and ``backward`` when an input needs a gradient.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _eager(args) -> bool:
    """Plain tensors in plain eager mode: no tracing, no dispatch mode, no tensor subclass (fake,
    functional, DTensor ...), which must go through the registered op."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    return all(type(a) in _PLAIN for a in args if isinstance(a, torch.Tensor))


class TritonOp:
    """``op`` (a ``torch.library.custom_op``) called through the eager path when it can be."""

    def __init__(self, op):
        self.op = op
        self.impl: Callable = op._init_fn
        self._function: Optional[type] = None

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        """Registers the formula on the custom op and builds the eager autograd.Function from it."""
        self.op.register_autograd(backward, setup_context=setup_context)
        impl = self.impl

        def forward(ctx, *args):  # ctx-style forward: apply() then skips binding the signature per call
            output = impl(*args)
            setup_context(ctx, args, output)
            return output

        self._function = type(f"{self.op._name}_eager", (torch.autograd.Function,), {
            "forward": staticmethod(forward), "backward": staticmethod(backward)})

    def __call__(self, *args):
        if not _eager(args):
            return self.op(*args)
        if self._function is not None and torch.is_grad_enabled() and any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return self._function.apply(*args)
        return self.impl(*args)
