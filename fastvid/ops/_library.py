"""Each Triton op is a torch.library custom op (what torch.compile, torch.export and opcheck see)
with a short eager path around it.

torch.library's dispatch layers (autograd wrapper, redispatch, dynamo guard) cost the host about
100 us a call, as much as the kernels themselves at video-layer sizes: on an H200 a temporal
attention forward at ModelScope's 32x32 layer ran 25 us on the device and 170 us on the host
(benchmarks/profile_ops.py). :class:`TritonOp` calls the registered op while torch.compile / export
trace and otherwise the same implementation directly, through an autograd.Function built from the
op's own ``setup_context`` and ``backward`` when an input needs a gradient.

An op is split in two: ``plan(*args)`` works out everything that depends only on the call's
signature (tiles, grid, strides, constexprs: the :class:`~fastvid.ops._launch.Launch` objects) and
``run(plan, *args)`` allocates the outputs and launches. Plans are cached per signature
(:func:`~fastvid.ops._launch.call_key`); :meth:`TritonOp.prepare` binds one plan for a dispatcher
that caches whole calls.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, Optional

import torch

from ._launch import PlanCache, call_key

_PLAIN = (torch.Tensor, torch.nn.Parameter)
TRITON_OPS: Dict[str, "TritonOp"] = {}  # qualified name ("fastvid::temporal_attention_fwd") -> its TritonOp


def _eager(args) -> bool:
    """Plain tensors in plain eager mode: no tracing, no dispatch mode, no tensor subclass (fake,
    functional, DTensor ...), which must go through the registered op."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    return all(type(a) in _PLAIN for a in args if isinstance(a, torch.Tensor))


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _no_plan(*args) -> bool:
    """The placeholder plan (a cache stores no None) of an op that plans inside its implementation."""
    return True


class TritonOp:
    """``op`` (a ``torch.library.custom_op`` whose implementation calls :meth:`planned`) called through
    the eager path when it can be. ``plan(*args)`` and ``run(plan, *args)`` are the op's two halves; an
    op built without them runs its custom op's implementation as it is."""

    def __init__(self, op, plan: Optional[Callable] = None, run: Optional[Callable] = None):
        if plan is None:  # an op whose implementation plans and launches in one (no plan cache)
            impl = op._init_fn
            plan, run = _no_plan, lambda _, *args: impl(*args)
        self.op, self.plan, self.run = op, plan, run
        self.plans = PlanCache()
        TRITON_OPS[op._qualname] = self
        self._function: Optional[type] = None

    def planned(self, *args):
        """The op's implementation: the cached plan of this signature, run."""
        return self.run(self.plans.lookup(call_key(*args), self.plan, *args), *args)

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        """Registers the formula on the custom op and builds the eager autograd.Function from it; the
        Function takes the plan as its last argument (``ctx.needs_input_grad`` keeps the op's indices)."""
        self.op.register_autograd(backward, setup_context=setup_context)
        run = self.run

        def forward(ctx, *args):  # ctx-style forward: apply() then skips binding the signature per call
            output = run(args[-1], *args[:-1])
            setup_context(ctx, args[:-1], output)
            return output

        def backward_with_plan(ctx, *grads):
            return (*backward(ctx, *grads), None)

        self._function = type(f"{self.op._name}_eager", (torch.autograd.Function,), {
            "forward": staticmethod(forward), "backward": staticmethod(backward_with_plan)})

    def __call__(self, *args):
        if not _eager(args):
            return self.op(*args)
        plan = self.plans.lookup(call_key(*args), self.plan, *args)
        if self._function is not None and _needs_grad(args):
            return self._function.apply(*args, plan)
        return self.run(plan, *args)

    def prepare(self, *args, output: Optional[int] = None) -> Callable:
        """A callable running calls of this signature (plain eager tensors, as :meth:`Dispatcher.call`
        caches them) with the plan bound; ``output`` picks one of the op's outputs."""
        plan, run = self.plan(*args), self.run
        if self._function is not None and _needs_grad(args):
            apply = self._function.apply
            if output is None:
                return lambda *a: apply(*a, plan)
            return lambda *a: apply(*a, plan)[output]
        if output is None:
            return functools.partial(run, plan)
        return lambda *a: run(plan, *a)[output]
