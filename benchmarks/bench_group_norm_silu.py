"""GroupNorm + SiLU on (B, C, F, H, W): fastvid's fused kernels vs eager GroupNorm then SiLU.

    python benchmarks/bench_group_norm_silu.py          # GPU shapes on CUDA, tiny ones on CPU

Statistics per sample over (C/G, F, H, W), as diffusers' TemporalConvLayer and SVD's
TemporalResnetBlock normalise; 32 groups. Peers: eager Fn.group_norm + Fn.silu on contiguous and
channels_last_3d inputs, and the same two ops under torch.compile (unless --no-compile). Then, per
frame, each case's frames for a guided pair ("<case>-cfg-frames": B doubled) as the (B*F, C, H, W)
images a spatial ResNet passes (where fastvid takes its one-launch forward), against eager. The
kernels each provider launched are recorded in the row's note. Rows are appended to
benchmarks/results/group_norm_silu.jsonl.

Bytes (the roofline is the device-copy bandwidth measured in the same run): forward reads x and
writes y (2 x the tensor); backward reads x and dY and writes dX (3x); fwd+bwd 5x. fastvid reads
x twice in each direction (a statistics pass, then the apply pass), which L2 absorbs only partly.
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
from benchmarks.bench_temporal_conv import LAYOUTS, cases, run  # noqa: E402

OP = "group_norm_silu"
GROUPS = 32
CPU_GROUPS = 4


FRAMES = "frames"  # the input layout of the per-frame rows: (B, C, F, H, W) viewing frame-major memory


def _inputs(shape, dtype, device, layout, requires_grad):
    B, C, F, H, W = shape
    if layout == FRAMES:
        x = torch.randn(B, F, C, H, W, dtype=dtype, device=device).transpose(1, 2)
    else:
        x = torch.randn(shape, dtype=dtype, device=device).to(memory_format=LAYOUTS[layout])
    weight = 1 + 0.1 * torch.randn(C, dtype=dtype, device=device)
    bias = 0.1 * torch.randn(C, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (x, weight, bias)]


def compile_peer(fn):
    """``fn`` under torch.compile, one specialisation per (shape, layout, grad mode): dynamo's recompile
    limits raised above their default of 8."""
    for limit in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                  "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, max(256, getattr(torch._dynamo.config, limit)))
    return torch.compile(fn, dynamic=False)


def workloads(groups, compile_peers):
    """(provider, run, layout of its inputs)."""
    def eager(x, w, b):
        return Fn.silu(Fn.group_norm(x, groups, w, b, 1e-5))

    compiled = compile_peer(eager) if compile_peers else None
    for layout in LAYOUTS:
        suffix = "" if layout == "contiguous" else "-cl3d"
        yield harness.Workload(f"fastvid{suffix}", lambda x, w, b: fastvid.group_norm_silu(x, groups, w, b)), layout
        yield harness.Workload(f"eager{suffix}", eager), layout
        if compiled is not None:
            yield harness.Workload(f"compiled{suffix}", compiled), layout


def _images(x):
    """The (B*F, C, H, W) frames of a frame-major (B, C, F, H, W) view: a view, as a video U-Net holds them."""
    return x.transpose(1, 2).flatten(0, 1)


def frame_workloads(groups):
    """A spatial ResNet's call: GroupNorm + SiLU per frame on (B*F, C, H, W) images, fastvid and eager (the
    torch.compile peer is timed on the per-sample rows)."""
    def eager(x, w, b):
        return Fn.silu(Fn.group_norm(_images(x), groups, w, b, 1e-5))

    yield harness.Workload("fastvid-frames", lambda x, w, b: fastvid.group_norm_silu(_images(x), groups, w, b)), FRAMES
    yield harness.Workload("eager-frames", eager), FRAMES


def frame_cases(selected):
    """The selected cases' frames for a guided pair (B doubled), per frame."""
    return [(f"{name}-cfg-frames", (2 * B, C, F, H, W)) for name, (B, C, F, H, W) in selected]


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip the torch.compile peer"), argv)
    groups = GROUPS if args.device == "cuda" else CPU_GROUPS

    def describe(case, mode, size):
        name, (B, C, F, H, W) = case
        bytes_moved = B * C * F * H * W * size * {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[mode]
        return dict(model=name, B=B, C=C, F=F, H=H, W=W, groups=groups), None, bytes_moved

    selected = list(harness.select(dict(cases(args.device)), args.shapes).items())
    run(OP, args, selected, list(workloads(groups, not args.no_compile)), _inputs, describe)
    run(OP, args, frame_cases(selected), list(frame_workloads(groups)), _inputs, describe)


if __name__ == "__main__":
    main()
