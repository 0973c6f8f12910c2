"""GEGLU's activation on a projection output (B * F, N, 2 * inner): fastvid's fused kernel vs eager
diffusers (chunk, F.gelu, multiply) and the same under torch.compile.

    python benchmarks/bench_geglu.py                    # GPU shapes on CUDA, tiny ones on CPU

Exact (erf) GELU, as diffusers' GEGLU. Peers: eager ``hidden * F.gelu(gate)`` on the chunks of the
projection output, and the same function under torch.compile (unless --no-compile). The kernels each
provider launched are recorded in the row's note. Rows are appended to benchmarks/results/geglu.jsonl.

Bytes (the roofline is the device-copy bandwidth measured in the same run), rows = B * F * N, I = inner:
forward reads the (rows, 2I) projection output and writes (rows, I): 3 x rows * I elements; backward
reads dY and the projection output and writes its gradient (rows, 2I): 5x; fwd+bwd 8x. Eager moves
5x forward (gelu reads the gate and writes gelu(gate), the multiply reads both and writes y).
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

OP = "geglu"
LAYOUT = "contiguous"


def _inputs(shape, dtype, device, layout, requires_grad):
    rows, tokens, inner = shape
    return [torch.randn(rows, tokens, 2 * inner, dtype=dtype, device=device).requires_grad_(requires_grad)]


def eager(proj_out):
    hidden, gate = proj_out.chunk(2, dim=-1)
    return hidden * Fn.gelu(gate)


def workloads(compile_peers):
    """(provider, run, layout of its inputs)."""
    yield harness.Workload("fastvid", lambda p: fastvid.geglu(p)), LAYOUT
    yield harness.Workload("eager", eager), LAYOUT
    if compile_peers:
        yield harness.Workload("compiled", compile_peer(eager)), LAYOUT


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip the torch.compile peer"), argv)
    table = OPS[OP].examples.shapes(args.device)

    def describe(case, mode, size):
        name, (rows, tokens, inner) = case
        bytes_moved = rows * tokens * inner * size * {"fwd": 3, "bwd": 5, "fwd+bwd": 8}[mode]
        return dict(model=name, rows=rows * tokens, inner=inner), None, bytes_moved

    run(OP, args, list(harness.select(dict(table), args.shapes).items()), list(workloads(not args.no_compile)),
        _inputs, describe)


if __name__ == "__main__":
    main()
