"""GEGLU's projection and activation (x (B * F, N, C) through diffusers' GEGLU with inner = 4 C): fastvid's
GEMM with the activation in its epilogue vs eager diffusers, Linear + fastvid's fused activation, and eager
under torch.compile.

    python benchmarks/bench_geglu_linear.py             # GPU shapes on CUDA, tiny ones on CPU
    python benchmarks/bench_geglu_linear.py --shapes svdxt-72x128-c320 --modes fwd

Shapes: the feed-forwards of SVD-XT (25 frames of 72x128 latents) and AnimateDiff (16 frames of 64x64) at
each UNet level, CFG batch 2 (fastvid.examples). Exact (erf) GELU, with bias, as diffusers' GEGLU.
Providers: ``fastvid`` (``fastvid.geglu_linear``, backend "auto"), ``eager`` (F.linear, chunk, F.gelu,
multiply: diffusers' GEGLU), ``linear+geglu`` (F.linear then ``fastvid.geglu``), ``compiled`` (eager under
torch.compile, unless --no-compile). Rows are appended to benchmarks/results/geglu_linear.jsonl.

FLOPs: the projection, 2 x rows x C x 8C forward (twice that backward). Bytes: forward reads x and the
weight and writes (rows, 4C); backward (fastvid's recompute) counts the GEGLU backward's 5 x rows x 4C
elements and dY, x, dX; the matmuls' own traffic is not modelled.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_group_norm_silu import compile_peer  # noqa: E402
from benchmarks.bench_temporal_conv import run  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "geglu_linear"
LAYOUT = "contiguous"
MULT = 4  # diffusers' FeedForward: inner = 4 x channels


def _inputs(shape, dtype, device, layout, requires_grad):
    rows, tokens, channels = shape
    x = torch.randn(rows, tokens, channels, dtype=dtype, device=device)
    weight = torch.randn(2 * MULT * channels, channels, dtype=dtype, device=device) * channels ** -0.5
    bias = torch.randn(2 * MULT * channels, dtype=dtype, device=device) * 0.1
    return [t.requires_grad_(requires_grad) for t in (x, weight, bias)]


def eager(x, weight, bias):
    hidden, gate = Fn.linear(x, weight, bias).chunk(2, dim=-1)
    return hidden * Fn.gelu(gate)


def linear_then_geglu(x, weight, bias):
    return fastvid.geglu(Fn.linear(x, weight, bias))


def workloads(compile_peers):
    """(provider, run, layout of its inputs)."""
    yield harness.Workload("fastvid", lambda x, w, b: fastvid.geglu_linear(x, w, b)), LAYOUT
    yield harness.Workload("eager", eager), LAYOUT
    yield harness.Workload("linear+geglu", linear_then_geglu), LAYOUT
    if compile_peers:
        yield harness.Workload("compiled", compile_peer(eager)), LAYOUT


def describe(case, mode, size):
    name, (rows, tokens, channels) = case
    m, inner = rows * tokens, MULT * channels
    flops = 2 * m * channels * 2 * inner * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]
    fwd = m * channels + 2 * inner * channels + m * inner
    bwd = 5 * m * inner + 2 * m * channels + 2 * inner * channels
    bytes_moved = size * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]
    return dict(model=name, rows=m, channels=channels, inner=inner), flops, bytes_moved


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip the torch.compile peer"), argv)
    table = OPS[OP].examples.shapes(args.device)
    run(OP, args, list(harness.select(dict(table), args.shapes).items()), list(workloads(not args.no_compile)),
        _inputs, describe)


if __name__ == "__main__":
    main()
