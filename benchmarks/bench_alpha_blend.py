"""AlphaBlender's mix: fastvid's one-pass kernel vs eager ``alpha * xs + (1 - alpha) * xt`` and torch.compile.

    python benchmarks/bench_alpha_blend.py              # GPU shapes on CUDA, tiny ones on CPU

The inputs are what SVD's SpatioTemporalResBlock passes: frame-major (B, C, F, H, W) views of the
(B*F, C, H, W) activations, and alpha (B, 1, F, 1, 1) from ``get_alpha`` ("learned_with_images").
Rows are appended to benchmarks/results/alpha_blend.jsonl.

Bytes (the roofline is the device-copy bandwidth measured in the same run): forward reads x_spatial
and x_temporal and writes the output (3 x the tensor); backward reads dout, x_spatial and x_temporal
and writes both input gradients (5x); fwd+bwd 8x. Eager torch moves 7x forward (two products and a
sum, each a full read/write pass).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_temporal_conv import run  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "alpha_blend"


def _inputs(shape, dtype, device, layout, requires_grad):
    B, C, F, H, W = shape
    xs, xt = (torch.randn(B, F, C, H, W, dtype=dtype, device=device).permute(0, 2, 1, 3, 4) for _ in range(2))
    alpha = torch.rand(B, 1, F, 1, 1, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (xs, xt, alpha)]


def _eager(xs, xt, alpha):
    return alpha * xs + (1.0 - alpha) * xt


def workloads(compile_peers):
    """(provider, run, layout of its inputs)."""
    yield harness.Workload("fastvid", lambda xs, xt, a: fastvid.alpha_blend(xs, xt, a)), "frame_major"
    yield harness.Workload("eager", _eager), "frame_major"
    if compile_peers:
        yield harness.Workload("compiled", torch.compile(_eager, dynamic=False)), "frame_major"


def describe(case, mode, size):
    name, (B, C, F, H, W) = case
    bytes_moved = B * C * F * H * W * size * {"fwd": 3, "bwd": 5, "fwd+bwd": 8}[mode]
    return dict(model=name, B=B, C=C, F=F, H=H, W=W), None, bytes_moved


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip the torch.compile peer"), argv)
    cases = OPS[OP].examples.shapes(args.device)
    run(OP, args, list(harness.select(dict(cases), args.shapes).items()), list(workloads(not args.no_compile)),
        _inputs, describe)


if __name__ == "__main__":
    main()
