"""Residual add + LayerNorm on (B, N, C) tokens: fastvid's one-pass kernel vs eager add then LayerNorm.

    python benchmarks/bench_add_layer_norm.py          # GPU shapes on CUDA, tiny ones on CPU

A transformer block's ``h = out + h; norm(h)``. Peers: eager ``x + residual`` then ``Fn.layer_norm``
(two kernels), and the same two ops under torch.compile (unless --no-compile). Every provider returns
both the sum and the normed tokens, and the backward gives both a gradient (the residual stream carries
one on, as in a block). Rows are appended to benchmarks/results/add_layer_norm.jsonl.

Bytes (the roofline is the device-copy bandwidth measured in the same run), in units of one (B, N, C)
tensor: forward reads x and residual and writes the sum and the normed tokens (4); backward reads the
two gradients and the sum and writes one gradient, shared by x and residual (4); fwd+bwd 8. Eager moves
5 forward (the sum is written, then read back by the LayerNorm).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_temporal_conv import run  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "add_layer_norm"


def _inputs(shape, dtype, device, layout, requires_grad):
    C = shape[-1]
    x, residual = (torch.randn(shape, dtype=dtype, device=device) for _ in range(2))
    weight = 1 + 0.1 * torch.randn(C, dtype=dtype, device=device)
    bias = 0.1 * torch.randn(C, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (x, residual, weight, bias)]


def _eager(x, residual, weight, bias):
    s = x + residual
    return s, Fn.layer_norm(s, (s.shape[-1],), weight, bias, 1e-5)


def workloads(compile_peers):
    """(provider, run, layout of its inputs)."""
    yield harness.Workload("fastvid", lambda x, r, w, b: fastvid.add_layer_norm(x, r, w, b)), "contiguous"
    yield harness.Workload("eager", _eager), "contiguous"
    if compile_peers:
        # One specialisation per (shape, grad mode): more than dynamo's default of 8.
        for limit in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, limit):
                setattr(torch._dynamo.config, limit, max(256, getattr(torch._dynamo.config, limit)))
        yield harness.Workload("compiled", torch.compile(_eager, dynamic=False)), "contiguous"


def describe(case, mode, size):
    name, (B, N, C) = case
    bytes_moved = B * N * C * size * {"fwd": 4, "bwd": 4, "fwd+bwd": 8}[mode]
    return dict(model=name, B=B, N=N, C=C), None, bytes_moved


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip the torch.compile peer"), argv)
    shapes = OPS[OP].examples.shapes(args.device)
    run(OP, args, list(harness.select(shapes, args.shapes).items()), list(workloads(not args.no_compile)), _inputs,
        describe)


if __name__ == "__main__":
    main()
