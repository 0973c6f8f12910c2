"""Checking helpers shared by tests and benchmarks.

The rule (docs/architecture.md): a fastvid result is judged against a float64 "gold" computation of the
reference, and its error may be at most ``FACTOR`` times the error that PyTorch itself makes
running the same reference in the same dtype, plus a small per-dtype floor.
"""
from __future__ import annotations

import collections
import contextlib
from typing import Callable, Dict, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .ops import _launch

# aten ops that allocate without running a device kernel.
ALLOCATIONS = ("aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
               "aten::new_empty_strided")

FACTOR = 2.0
# Absolute floor, relative to the largest gold magnitude, for outputs where torch's own error is ~0.
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@contextlib.contextmanager
def poisoned_outputs():
    """Every fastvid output allocated inside is filled with NaN before its kernel runs."""
    previous = _launch.set_poison(True)
    try:
        yield
    finally:
        _launch.set_poison(previous)


def dense_in_order(out: torch.Tensor, order) -> bool:
    """out has no gaps and its dims lie in memory in ``order`` (outermost first; size-1 dims' strides are free):
    the check of an op's documented output layout."""
    expected = 1
    for d in reversed(list(order)):
        if out.shape[d] != 1 and out.stride(d) != expected:
            return False
        expected *= out.shape[d]
    return True


def max_error(actual: torch.Tensor, gold: torch.Tensor) -> float:
    diff = (actual.double() - gold.double()).abs()
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item() if diff.numel() else 0.0


def assert_close_to_gold(name: str, actual: torch.Tensor, torch_in_dtype: torch.Tensor, gold: torch.Tensor,
                         dtype: torch.dtype, factor: float = FACTOR) -> None:
    """err(actual) <= factor * err(torch in dtype) + floor, both against the float64 gold."""
    assert actual.shape == gold.shape, f"{name}: shape {tuple(actual.shape)} != reference {tuple(gold.shape)}"
    scale = max(gold.abs().max().item() if gold.numel() else 0.0, 1.0)
    err = max_error(actual, gold)
    err_torch = max_error(torch_in_dtype, gold)
    bound = factor * err_torch + FLOOR[dtype] * scale
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (torch's own {dtype} error {err_torch:.3e})"


def clone_inputs(tensors: Sequence[torch.Tensor], dtype=None, requires_grad=True, keep_strides=False):
    """Fresh leaf copies, optionally cast; ``keep_strides`` keeps each input's memory layout."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        if keep_strides:
            c = torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype, device=t.device)
            c.copy_(t)
        else:
            c = t.detach().to(dtype or t.dtype, copy=True).contiguous()
        out.append(c.requires_grad_(requires_grad))
    return out


def check_against_reference(name: str, fn: Callable, reference: Callable, inputs: Sequence[torch.Tensor],
                            dtype: torch.dtype, grad: bool = True, seed: int = 0) -> None:
    """Runs ``fn`` on ``inputs`` (already in ``dtype``) under poisoned outputs and compares the
    output and the gradients of every input that requires grad with ``reference`` in float64
    (gold) and in ``dtype`` (torch's own error)."""
    run = clone_inputs(inputs, requires_grad=grad, keep_strides=True)
    in_dtype = clone_inputs(inputs, requires_grad=grad)
    gold_in = clone_inputs(inputs, dtype=torch.float64, requires_grad=grad)
    with poisoned_outputs():
        out = fn(*run)
    ref_dtype = reference(*in_dtype)
    gold = reference(*gold_in)
    assert out.dtype == dtype, f"{name}: output dtype {out.dtype}, expected {dtype}"
    assert_close_to_gold(f"{name} output", out, ref_dtype, gold, dtype)
    if not grad:
        return
    g = torch.Generator(device="cpu").manual_seed(seed)
    dout = torch.randn(gold.shape, generator=g, dtype=torch.float64).to(gold.device)
    with poisoned_outputs():
        out.backward(dout.to(dtype))
    ref_dtype.backward(dout.to(dtype))
    gold.backward(dout)
    for i, (a, b, c) in enumerate(zip(run, in_dtype, gold_in)):
        if a is None:
            continue
        assert a.grad is not None, f"{name}: no gradient for input {i}"
        assert_close_to_gold(f"{name} grad[{i}]", a.grad, b.grad, c.grad, dtype)


def assert_twins_agree(ref_module: torch.nn.Module, fast_module: torch.nn.Module, x: torch.Tensor,
                       atol: float = 2e-5, rtol: float = 1e-4) -> None:
    """A fastvid module and its reference twin (same weights): same output, input gradient and
    parameter gradients (None where the reference has none, e.g. frozen projections)."""
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_fast = ref_module(x_ref), fast_module(x_fast)
    torch.testing.assert_close(y_fast, y_ref, atol=atol, rtol=rtol)
    y_ref.square().sum().backward()
    y_fast.square().sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, atol=atol, rtol=rtol)
    for (name, p_ref), p_fast in zip(ref_module.named_parameters(), fast_module.parameters()):
        assert (p_ref.grad is None) == (p_fast.grad is None), name
        if p_ref.grad is not None:
            torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=atol, rtol=rtol, msg=name)


def kernel_objects() -> Dict[str, object]:
    """Every Triton kernel object (jit or autotuned) of every registered op's kernel module, by name."""
    from .registry import OPS

    found = {}
    for spec in OPS.values():
        for name, obj in vars(spec.kernels()).items():
            if name.endswith("_kernel") and hasattr(obj, "run"):
                found[name] = obj
    return found


@contextlib.contextmanager
def wrapped_launches(wrap: Callable[[str, Callable], Callable]):
    """Each kernel object's launch (``kernel[grid](...)`` and :class:`~fastvid.ops._launch.Launch` call
    ``kernel.run``) replaced by ``wrap(name, original_run)`` inside."""
    kernels = kernel_objects()
    for name, obj in kernels.items():
        obj.run = wrap(name, obj.run)
    try:
        yield
    finally:
        for obj in kernels.values():
            del obj.run


def stubbed_launches():
    """Every Triton launch is a no-op inside (what the host costs without the kernels)."""
    return wrapped_launches(lambda name, run: lambda *args, **kwargs: None)


class _LaunchCounter(TorchDispatchMode):
    def __init__(self, launch: bool):
        super().__init__()
        self.launch = launch
        self.triton: Dict[str, int] = collections.Counter()
        self.torch: Dict[str, int] = collections.Counter()

    def wrap(self, name, run):
        def counted(*args, **kwargs):
            self.triton[name] += 1
            return run(*args, **kwargs) if self.launch else None
        return counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if not func.is_view and name not in ALLOCATIONS and not name.startswith("fastvid::"):
            self.torch[name] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting_launches(launch: bool = True):
    """Yields a counter of what runs inside: ``triton`` (kernel name -> launches) and ``torch`` (aten op ->
    calls of ops that would run a device kernel; views and bare allocations are not kernels). The aten ops
    inside a fastvid custom op are not seen by a dispatch mode: count an op's implementation
    (``TritonOp.planned``) to see them. With ``launch=False`` the Triton launches are counted but not run
    (their outputs are then garbage)."""
    counter = _LaunchCounter(launch)
    with wrapped_launches(counter.wrap), counter:
        yield counter
