"""The static time model's hot-loop trip counts (``TRIPS`` of benchmarks/kernel_resources.py) against the loops
the kernels really run: every op at odd sizes (``_cases``), forward and backward, runs on the Triton interpreter
under a line tracer that counts, per program, the iterations of every innermost loop of the kernel files (a
``for`` whose body holds no other loop; ``tl.static_range`` unrolls and is no loop).

A kernel whose programs loop must have a TRIPS entry (without one the model counts its hot loop once), and
the entry must lie between the mean and the largest count over the programs of each launch: the model charges
every program the entry's trips. A stale entry (a loop that was rewritten away or reshaped) fails here, not
in the report's numbers.
"""
import ast
import collections
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

import fastvid
from benchmarks.kernel_resources import TRIPS, trip_count
from fastvid.registry import OPS
from fastvid.testing import kernel_objects

def _is_static_range(loop: ast.For) -> bool:
    call = loop.iter
    return isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) == "static_range"


def _loops(node: ast.AST) -> List[ast.For]:
    return [n for n in ast.walk(node) if isinstance(n, ast.For) and not _is_static_range(n)]


def innermost_loop_bodies() -> Dict[Tuple[str, int], Tuple[int, int]]:
    """(file, first line of the body) -> the body's line span, for every innermost loop of the registered ops'
    kernel files (named as the interpreter names their code: the modules' own paths)."""
    bodies = {}
    for path in sorted({Path(spec.kernels().__file__) for spec in OPS.values()}):
        for loop in _loops(ast.parse(path.read_text())):
            if not any(inner is not loop for inner in _loops(loop)):
                bodies[(str(path), loop.body[0].lineno)] = (loop.body[0].lineno, loop.body[-1].end_lineno)
    return bodies


def _value(v):
    """A kernel argument as the interpreter passes it (a scalar is a one-element tensor) as a Python number."""
    handle = getattr(v, "handle", None)
    data = getattr(handle, "data", None)
    if isinstance(data, np.ndarray) and data.size == 1:
        return data.item()
    return getattr(v, "value", v)


class _LoopCounter:
    """Per kernel name, one ((the launch's scalar arguments, its TRIPS value or None), innermost-loop iterations)
    per program run, counted by sys.settrace."""

    def __init__(self):
        self.bodies = innermost_loop_bodies()
        self.files = {f for f, _ in self.bodies}
        self.kernels = set(kernel_objects())
        self.programs: Dict[str, List[Tuple[object, int]]] = collections.defaultdict(list)
        self.current = None  # [kernel name, (launch, expected), count]

    def _frame_tracer(self):
        """Counts an iteration where a frame's line reaches a loop body's first line from outside the body (a
        statement over several lines reports its first line again as it runs)."""
        last = [0]

        def local(frame, event, arg):
            if event == "line":
                span = self.bodies.get((frame.f_code.co_filename, frame.f_lineno))
                if span is not None and self.current is not None and not span[0] <= last[0] <= span[1]:
                    self.current[2] += 1
                last[0] = frame.f_lineno
            return local
        return local

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if code.co_filename not in self.files:
            return None
        if code.co_name in self.kernels:
            self._close()
            args = {name: _value(v) for name, v in frame.f_locals.items()}
            launch = tuple(sorted((k, v) for k, v in args.items() if isinstance(v, (int, float))))
            self.current = [code.co_name, (launch, trip_count(code.co_name, args)), 0]
        return self._frame_tracer()

    def _close(self):
        if self.current is not None:
            name, expected, count = self.current
            self.programs[name].append((expected, count))
            self.current = None

    def __enter__(self):
        sys.settrace(self)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)
        self._close()


def _forward_backward(function, inputs, kwargs):
    leaves = {name: t.detach().clone().requires_grad_(t.is_floating_point()) for name, t in inputs.items()}
    out = function(**leaves, **kwargs, backend="triton")
    outs = [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]
    torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])


def _cases():
    """(function, inputs, keyword arguments): every op's example at an odd size (several position blocks and
    chunks), frame attention with each table shape, temporal attention past 16 frames, the correctness cases of
    the ops whose cases are small on the interpreter (the attention ones run head_dim 72 and 40 there: tens of
    seconds), and a spatial ResNet's norm (images with a time embedding: the one-launch GroupNorm forward)."""
    for op, spec in sorted(OPS.items()):
        yield spec.function, spec.examples.make(2, 37), spec.examples.kwargs
        if op not in ("temporal_attention", "frame_attention"):
            for _, inputs, kwargs in spec.examples.checks("cpu", torch.float32):
                yield spec.function, inputs, kwargs
    attention = OPS["frame_attention"]
    for frames in ("first", "all"):
        yield attention.function, attention.examples.make(1, 37), dict(frames=frames)
    q, k, v = (torch.randn(1, 19, 5, 2, 16) for _ in range(3))  # past 16 frames: the backward's key blocks
    yield fastvid.temporal_attention, dict(q=q, k=k, v=v, bias=torch.randn(2, 19, 19)), dict(causal=True)
    images = dict(x=torch.randn(6, 40, 5, 7), weight=torch.randn(40), bias=torch.randn(40), add=torch.randn(6, 40))
    yield fastvid.group_norm_silu, images, dict(num_groups=4)


@pytest.fixture(scope="module")
def counted() -> Dict[str, List[Tuple[object, int]]]:
    torch.manual_seed(0)
    with _LoopCounter() as counter:
        for function, inputs, kwargs in _cases():
            _forward_backward(function, inputs, kwargs)
    return dict(counter.programs)


def test_every_trips_kernel_ran(counted):
    # The TRIPS entries are kernels of the registered ops that these cases launch: none is left untested.
    assert not set(TRIPS) - set(counted), f"TRIPS kernels the cases never launched: {sorted(set(TRIPS) - set(counted))}"


def test_every_looping_kernel_has_a_trips_entry(counted):
    looping = {name for name, programs in counted.items() if any(count > 1 for _, count in programs)}
    assert looping <= set(TRIPS), f"kernels that loop but have no TRIPS entry: {sorted(looping - set(TRIPS))}"


@pytest.mark.parametrize("kernel", sorted(TRIPS))
def test_trips_lie_between_the_mean_and_the_largest_program(counted, kernel):
    programs = counted.get(kernel)
    if programs is None:
        pytest.skip("not launched (test_every_trips_kernel_ran names it)")
    by_launch = collections.defaultdict(list)
    for launch, count in programs:
        by_launch[launch].append(count)
    for (_, expected), counts in by_launch.items():
        mean = sum(counts) / len(counts)
        assert mean - 1e-9 <= expected <= max(counts), (
            f"{kernel}: TRIPS = {TRIPS[kernel]!r} gives {expected} per program; the interpreter counted a mean of "
            f"{mean:.2f} and a largest {max(counts)} innermost-loop iterations over {len(counts)} programs")
