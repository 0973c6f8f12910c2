"""Temporal convolution: fastvid vs permute + Conv1d vs cuDNN's (3, 1, 1) Conv3d.

    python benchmarks/bench_temporal_conv.py            # GPU shapes on CUDA, tiny ones on CPU

Each peer runs on the layout it is given: "contiguous" (B, C, F, H, W) or "channels_last_3d";
torch.backends.cudnn.benchmark is on, so cuDNN picks its algorithm per shape. The kernels each
provider launched (cuDNN's algorithm, layout transposes, copies) are recorded in the row's note.
Rows are appended to benchmarks/results/temporal_conv.jsonl.

FLOPs: 2 * B * C_out * C_in * k * F * H * W forward; the backward computes dX and dW, each as
many FLOPs as the forward (2x; dbias is negligible); fwd+bwd 3x. The roofline is the bf16
matmul rate measured in the same run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.peers import kernel_path  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "temporal_conv"
TAPS = 3
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def _inputs(shape, dtype, device, layout, requires_grad):
    B, C, F, H, W = shape
    x = torch.randn(shape, dtype=dtype, device=device).to(memory_format=LAYOUTS[layout])
    weight = torch.randn(C, C, TAPS, dtype=dtype, device=device) / (C * TAPS) ** 0.5
    bias = torch.randn(C, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (x, weight, bias)]


def _conv3d(x, weight, bias):
    return Fn.conv3d(x, weight[:, :, :, None, None], bias, padding=(TAPS // 2, 0, 0))


def workloads():
    """(provider, run, layout of its inputs)."""
    for layout in LAYOUTS:
        suffix = "" if layout == "contiguous" else "-cl3d"
        yield harness.Workload(f"fastvid{suffix}", lambda x, w, b: fastvid.temporal_conv(x, w, b)), layout
    yield harness.Workload("permute+conv1d", lambda x, w, b: fastvid.reference.temporal_conv(x, w, b)), "contiguous"
    for layout in LAYOUTS:
        suffix = "" if layout == "contiguous" else "-cl3d"
        yield harness.Workload(f"conv3d(3,1,1){suffix}", _conv3d), layout


def note(item, inputs, mode, layout, device, op=OP):
    """The layout, fastvid's backend and the kernels one call launched (the path each peer took)."""
    if mode == "fwd":
        path = kernel_path(lambda: item.run(*inputs), device)
    elif mode == "bwd":
        outs = harness.outputs(item.run(*inputs))
        grads = [torch.ones_like(o) for o in outs]
        path = kernel_path(lambda: torch.autograd.backward(outs, grads), device)
    else:
        path = "see the fwd and bwd rows"
    backend = f"backend={fastvid.last_backend(op)}; " if item.provider.startswith("fastvid") else ""
    return f"{backend}layout={layout}; {mode} kernels: {path}"


def run(op, args, named_shapes, providers, make_inputs, describe):
    """Times every provider on every (name, shape) and mode; ``describe((name, shape), mode,
    element_size)`` gives (shape dict, flops or None, bytes moved). Prints the rows and appends
    them to the results."""
    device, dtype = args.device, args.dtype
    torch.backends.cudnn.benchmark = True
    env = harness.environment(device)
    ceilings = harness.measure_ceilings(device)
    harness.announce(op, env, ceilings)
    rows = []
    size = torch.empty((), dtype=dtype).element_size()
    for case in named_shapes:
        shape = case[1]
        for mode in args.modes.split(","):
            shape_d, flops, bytes_moved = describe(case, mode, size)
            for item, layout in providers:
                sets = [make_inputs(shape, dtype, device, layout, mode != "fwd") for _ in range(2)]
                row = harness.bench(op=op, shape=shape_d, dtype=dtype, mode=mode, workload=item, input_sets=sets,
                                    device=device, env=env, ceilings=ceilings, flops=flops, bytes_moved=bytes_moved)
                if row.get("status") == "ok":
                    row["note"] = note(item, sets[0], mode, layout, device, op)
                rows.append(row)
    harness.finish(op, rows, args.out)


def cases(device):
    """(model name, (B, C, F, H, W)): SD-based video UNet widths, 16 frames, 32x32 and 64x64 latents."""
    return list(OPS["temporal_conv"].examples.shapes(device).items())


def describe(case, mode, size):
    name, (B, C, F, H, W) = case
    flops = 2 * B * C * C * TAPS * F * H * W * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]
    # x read and y written forward; dY, x read and dX written backward (weights are small).
    bytes_moved = B * C * F * H * W * size * {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[mode]
    return dict(model=name, B=B, C=C, F=F, H=H, W=W, k=TAPS), flops, bytes_moved


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile=None), argv)
    run(OP, args, list(harness.select(dict(cases(args.device)), args.shapes).items()), list(workloads()), _inputs, describe)


if __name__ == "__main__":
    main()
