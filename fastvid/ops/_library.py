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
(:func:`~fastvid.ops._launch.signature`); :meth:`TritonOp.prepare` binds one plan for a dispatcher
that caches whole calls, and for the op's own eager calls (the backward's entry among them).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from ._launch import PlanCache, signature

TRITON_OPS: Dict[str, "TritonOp"] = {}  # qualified name ("fastvid::temporal_attention_fwd") -> its TritonOp

# Tracing (torch.compile, export) or a TorchDispatchMode (fake tensors, functionalisation, a counter):
# the registered op, not the eager path, must see the call.
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack


def custom_op(name: str):
    """``torch.library.custom_op`` as every fastvid op is registered: no argument mutated, and the
    ``flexible_layout`` tag, so torch Inductor hands the op its inputs in whatever layout it chose for
    them (a convolution made channels-last by its layout optimisation, say) rather than copying them
    back to the strides seen while tracing (the default, ``needs_exact_strides``). Every op reads its
    inputs through their strides, and its fake implementation derives each output's layout from the
    inputs' by the same rule as the real one, so the compiled graph's layouts stay exact."""
    return torch.library.custom_op(name, mutates_args=(), tags=(torch.Tag.flexible_layout,))


class Const:
    """A value a :func:`bound` call passes in place of an argument."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def bound(fn: Callable, n_args: int, picks=None, *, prefix: tuple = (), suffix: tuple = (), output=None) -> Callable:
    """A function of ``n_args`` positional arguments returning ``fn(*prefix, *picked, *suffix)[output]``
    (``[output]`` only when given): ``picks`` lists, per argument of ``fn`` after the prefix, the index of
    the argument passed or a :class:`Const` (default: the arguments in order). Generated as plain Python
    with every value bound, so a call costs one frame and no argument packing; binding a function that
    :func:`bound` made merges the two into one (what a cached call runs: the public arguments mapped to
    the backend's, the plan bound, an output picked)."""
    picks = list(range(n_args)) if picks is None else list(picks)
    spec = getattr(fn, "bound_spec", None)
    if spec is not None and output is None:  # merge: fn's own picks read through these
        fn, inner, prefix_in, suffix_in, output = spec
        picks = [p if isinstance(p, Const) else picks[p] for p in inner]
        prefix, suffix = prefix_in + prefix, suffix_in + suffix
    env = {"fn": fn, "output": output}
    values = [f"prefix{i}" for i in range(len(prefix))]
    for i, p in enumerate(picks):
        if isinstance(p, Const):
            env[f"const{i}"] = p.value
            values.append(f"const{i}")
        else:
            values.append(f"a{p}")
    values += [f"suffix{i}" for i in range(len(suffix))]
    env.update({f"prefix{i}": v for i, v in enumerate(prefix)})
    env.update({f"suffix{i}": v for i, v in enumerate(suffix)})
    params = ", ".join(f"a{i}" for i in range(n_args))
    tail = "" if output is None else "[output]"
    exec(f"def call({params}):\n    return fn({', '.join(values)}){tail}\n", env)
    call = env["call"]
    call.bound_spec = (fn, picks, prefix, suffix, output)
    return call


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _no_plan(*args) -> bool:
    """The placeholder plan (a cache stores no None) of an op that plans inside its implementation."""
    return True


class TritonOp:
    """``op`` (a ``torch.library.custom_op`` whose implementation calls :meth:`planned`) called through
    the eager path when it can be. ``plan(*args)`` and ``run(plan, *args)`` are the op's two halves; an
    op built without them runs its custom op's implementation as it is.

    Two caches keyed on :func:`~fastvid.ops._launch.signature`: ``plans`` (the plan of a signature, for
    :meth:`planned`) and ``runners`` (for :meth:`__call__`: the plan bound to ``run``, or to the
    autograd.Function where the signature needs a gradient), so a repeated eager call is the key, one
    lookup, the outputs' allocation and the launches."""

    def __init__(self, op, plan: Optional[Callable] = None, run: Optional[Callable] = None):
        if plan is None:  # an op whose implementation plans and launches in one (no plan cache)
            impl = op._init_fn
            plan, run = _no_plan, lambda _, *args: impl(*args)
        self.op, self.plan, self.run = op, plan, run
        self.plans = PlanCache()
        self.runners = PlanCache()
        TRITON_OPS[op._qualname] = self
        self._function: Optional[type] = None

    def planned(self, *args):
        """The op's implementation: the cached plan of this signature, run."""
        return self.run(self.plans.lookup(signature(args), self.plan, *args), *args)

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
        self.runners.clear()

    def __call__(self, *args):
        if _is_compiling() or _dispatch_modes():
            return self.op(*args)
        key = signature(args)
        try:
            runner = self.runners.plans.get(key)
        except TypeError:  # an unhashable argument: prepared on every call
            runner = None
        if runner is None:
            if key is None:  # a tensor subclass (fake, functional, DTensor ...): the registered op
                return self.op(*args)
            runner = self.runners.lookup(key, self.prepare, *args)
        return runner(*args)

    def prepare(self, *args, output: Optional[int] = None, inference_plan: Optional[Callable] = None) -> Callable:
        """A callable running calls of this signature (plain eager tensors, as :meth:`Dispatcher.call`
        caches them) with the plan bound; ``output`` picks one of the op's outputs. ``inference_plan``
        makes the plan of a call that needs no gradient instead of ``plan`` (one that may skip outputs
        kept only for a backward, which ``output`` then drops)."""
        if self._function is not None and _needs_grad(args):
            plan = self.plans.lookup(signature(args), self.plan, *args)
            return bound(self._function.apply, len(args), suffix=(plan,), output=output)
        if inference_plan is not None:
            return bound(self.run, len(args), prefix=(inference_plan(*args),), output=output)
        plan = self.plans.lookup(signature(args), self.plan, *args)
        return bound(self.run, len(args), prefix=(plan,), output=output)
