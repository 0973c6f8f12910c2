"""GroupNorm + SiLU on (B, C, F, H, W): fastvid's fused kernels vs eager GroupNorm then SiLU.

    python benchmarks/bench_group_norm_silu.py          # GPU shapes on CUDA, tiny ones on CPU

Statistics per sample over (C/G, F, H, W), as diffusers' TemporalConvLayer and SVD's
TemporalResnetBlock normalise; 32 groups. Peers: eager Fn.group_norm + Fn.silu on contiguous and
channels_last_3d inputs, and the same two ops under torch.compile (unless --no-compile). The
kernels each provider launched are recorded in the row's note. Rows are appended to
benchmarks/results/group_norm_silu.jsonl.

Bytes (the roofline is the device-copy bandwidth measured in the same run): forward reads x and
writes y (2 x the tensor); backward reads x and dY and writes dX (3x); fwd+bwd 5x. fastvid reads
x twice in each direction (a statistics pass, then the apply pass), which L2 absorbs only partly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_temporal_conv import CPU_SHAPES, GPU_SHAPES, LAYOUTS, note  # noqa: E402

OP = "group_norm_silu"
GROUPS = 32
CPU_GROUPS = 4


def _inputs(shape, dtype, device, layout, requires_grad):
    C = shape[1]
    x = torch.randn(shape, dtype=dtype, device=device).to(memory_format=LAYOUTS[layout])
    weight = 1 + 0.1 * torch.randn(C, dtype=dtype, device=device)
    bias = 0.1 * torch.randn(C, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (x, weight, bias)]


def workloads(groups, compile_peers):
    """(provider, run, layout of its inputs)."""
    def eager(x, w, b):
        return Fn.silu(Fn.group_norm(x, groups, w, b, 1e-5))

    compiled = None
    if compile_peers:
        # One specialisation per (shape, layout, grad mode): more than dynamo's default of 8.
        for limit in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                      "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, limit):
                setattr(torch._dynamo.config, limit, max(256, getattr(torch._dynamo.config, limit)))
        compiled = torch.compile(eager, dynamic=False)
    for layout in LAYOUTS:
        suffix = "" if layout == "contiguous" else "-cl3d"
        yield harness.Workload(f"fastvid{suffix}", lambda x, w, b: fastvid.group_norm_silu(x, groups, w, b)), layout
        yield harness.Workload(f"eager{suffix}", eager), layout
        if compiled is not None:
            yield harness.Workload(f"compiled{suffix}", compiled), layout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=harness.default_device())
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--modes", default="fwd,bwd,fwd+bwd")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    device = args.device
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    shapes, groups = (GPU_SHAPES, GROUPS) if device == "cuda" else (CPU_SHAPES, CPU_GROUPS)
    env = harness.environment(device)
    ceilings = harness.measure_ceilings(device)
    print(f"# {OP} on {env['gpu']} (torch {env['torch']}, triton {env['triton']}, commit {env['commit']})"
          + ("" if device == "cuda" else " -- CPU run: harness check only, not a speed measurement"))
    if ceilings["copy_gbps"]:
        print(f"# measured ceilings: copy {ceilings['copy_gbps']:.0f} GB/s, bf16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s")
    providers = list(workloads(groups, not args.no_compile))
    rows = []
    size = torch.empty((), dtype=dtype).element_size()
    for shape in shapes:
        B, C, F, H, W = shape
        shape_d = dict(B=B, C=C, F=F, H=H, W=W, groups=groups)
        for mode in args.modes.split(","):
            grad = mode != "fwd"
            bytes_moved = B * C * F * H * W * size * {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[mode]
            for item, layout in providers:
                sets = [_inputs(shape, dtype, device, layout, grad) for _ in range(2)]
                row = harness.bench(op=OP, shape=shape_d, dtype=dtype, mode=mode, workload=item, input_sets=sets,
                                    device=device, env=env, ceilings=ceilings, bytes_moved=bytes_moved)
                if row.get("status") == "ok":
                    row["note"] = note(item, sets[0], mode, layout, device, op=OP)
                rows.append(row)
    harness.print_rows(rows)
    path = harness.write_rows(OP, rows, Path(args.out) if args.out else harness.RESULTS)
    print(f"# {len(rows)} rows appended to {path}")


if __name__ == "__main__":
    main()
