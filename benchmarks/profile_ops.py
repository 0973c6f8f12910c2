"""Where one call's time goes: host (Python + launch) time next to device time, and the kernels.

    python benchmarks/profile_ops.py --out "$OUT"            # on CUDA: the quick-suite shapes, bf16
    python benchmarks/profile_ops.py --ops temporal_conv      # one op
    python benchmarks/profile_ops.py                          # on CPU: tiny shapes, a pipeline check only

For each op, shape, provider (fastvid and its fastest usual peer) and mode (fwd, fwd+bwd):
- host us: CPU wall time per call while calls are queued without synchronising (what the Python
  layers and the launches cost the host);
- wall us: per call including the wait for the device, over the same calls;
- device us: the sum of the device kernels' self time per call (torch.profiler), and the top kernels.
A call whose host us is close to its wall us is bound by the host, not the GPU: a kernel speed-up
cannot show there. Writes profile.md (and prints it) to --out (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import bench_frame_attention as bfa  # noqa: E402
from benchmarks import bench_geglu as bgg  # noqa: E402
from benchmarks import bench_group_norm_silu as bgn  # noqa: E402
from benchmarks import bench_temporal_attention as bta  # noqa: E402
from benchmarks import bench_temporal_conv as btc  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.peers import sdpa_backend_context  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

CALLS = 50  # calls queued per host-time measurement
PROFILED = 5  # calls under torch.profiler


def _sdpa_efficient_temporal(q, k, v, bias):
    with sdpa_backend_context("efficient"):
        return fastvid.temporal_attention(q, k, v, bias=bias, backend="torch")


def _gn_eager(x, w, b):
    return Fn.silu(Fn.group_norm(x, bgn.GROUPS, w, b, 1e-5))


def cases(device: str, dtype: torch.dtype):
    """(op, shape name, inputs factory(requires_grad), {provider: callable})."""
    cuda = device == "cuda"
    ta_shapes = OPS["temporal_attention"].examples.shapes(device)
    ta = {k: ta_shapes[k] for k in ("modelscope-32x32-c320", "latte-16x16-h16")} if cuda else ta_shapes
    for name, shape in ta.items():
        providers = {"fastvid": lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b)}
        if cuda:
            providers["sdpa-efficient"] = _sdpa_efficient_temporal
        yield "temporal_attention", name, lambda g, s=shape: bta._inputs(s, dtype, device, g), providers
    fa_shapes = OPS["frame_attention"].examples.shapes(device)
    fa = {"latte-16x16": fa_shapes["latte-16x16"]} if cuda else fa_shapes
    for name, (B, F, N, H, D) in fa.items():
        providers = {"fastvid first": lambda q, k, v: fastvid.frame_attention(q, k, v, frames="first"),
                     "concat+sdpa first": bfa._concat_sdpa("first")}
        yield "frame_attention", name, lambda g, s=(B, F, N, N, H, D): bfa._inputs(s, dtype, device, g), providers
    video = {"c320-32x32": OPS["temporal_conv"].benchmark_shapes["c320-32x32"]} if cuda else {"tiny": (1, 32, 8, 8, 8)}
    per_op = {
        "temporal_conv": (btc._inputs, {"fastvid": lambda x, w, b: fastvid.temporal_conv(x, w, b),
                                        "conv3d(3,1,1)": btc._conv3d}),
        "group_norm_silu": (bgn._inputs, {"fastvid": lambda x, w, b: fastvid.group_norm_silu(x, bgn.GROUPS, w, b),
                                          "eager": _gn_eager}),
    }
    for op, (inputs, providers) in per_op.items():
        for name, shape in video.items():
            for layout in btc.LAYOUTS:
                yield (op, f"{name} {layout}", lambda g, s=shape, lay=layout, f=inputs: f(s, dtype, device, lay, g),
                       providers)
    geglu_shapes = OPS["geglu"].examples.shapes(device)
    geglu = {"svd-36x64-c640": geglu_shapes["svd-36x64-c640"]} if cuda else geglu_shapes
    for name, shape in geglu.items():
        yield ("geglu", name, lambda g, s=shape: bgg._inputs(s, dtype, device, bgg.LAYOUT, g),
               {"fastvid": lambda p: fastvid.geglu(p), "eager": bgg.eager})


def _step(fn: Callable, inputs, mode: str) -> Callable[[], None]:
    if mode == "fwd":
        def step():
            with torch.no_grad():
                fn(*inputs)
        return step

    def step():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return step


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def host_and_wall_us(step: Callable[[], None], device: str) -> Tuple[float, float]:
    for _ in range(5):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(CALLS):
        step()
    queued = time.perf_counter()
    _sync(device)
    done = time.perf_counter()
    return (queued - start) / CALLS * 1e6, (done - start) / CALLS * 1e6


def device_kernels(step: Callable[[], None], device: str) -> Tuple[float, List[Tuple[str, int, float]]]:
    """(device us per call, [(kernel, launches per call, us per call)] largest first)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(PROFILED):
            step()
        _sync(device)
    kernels = []
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)
        if us > 0 and event.device_type != torch.autograd.DeviceType.CPU:
            kernels.append((event.key, round(event.count / PROFILED), us / PROFILED))
    kernels.sort(key=lambda k: -k[2])
    return sum(k[2] for k in kernels), kernels


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=harness.default_device())
    p.add_argument("--ops", default=None, help="comma-separated ops (default: all)")
    p.add_argument("--top", type=int, default=6, help="kernels listed per call")
    p.add_argument("--out", type=Path, default=harness.RESULTS)
    args = p.parse_args(argv)
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    wanted = set(args.ops.split(",")) if args.ops else None
    env = harness.environment(device)
    lines = [f"# Host and device time per call on {env.get('gpu') or device}", "",
             f"torch {env.get('torch')}, triton {env.get('triton')}, commit {env.get('commit')}, {env.get('date')}; "
             f"{str(dtype).replace('torch.', '')}; `python benchmarks/profile_ops.py`. host us: CPU time to queue "
             "one call; wall us: per call with the device wait; device us: kernel time per call (torch.profiler)."]
    if device != "cuda":
        lines.append("CPU run: a pipeline check, not GPU speed.")
    lines += ["", "| op | shape | provider | mode | host us | wall us | device us | kernels (launches, us per call) |",
              "|---|---|---|---|---|---|---|---|"]
    for op, shape, make_inputs, providers in cases(device, dtype):
        if wanted and op not in wanted:
            continue
        for mode in ("fwd", "fwd+bwd"):
            for provider, fn in providers.items():
                step = _step(fn, make_inputs(mode != "fwd"), mode)
                host, wall = host_and_wall_us(step, device)
                dev, kernels = device_kernels(step, device)
                top = "; ".join(f"{name[:60]} ({n}, {us:.0f})" for name, n, us in kernels[:args.top])
                lines.append(f"| {op} | {shape} | {provider} | {mode} | {host:.0f} | {wall:.0f} | {dev:.0f} | {top} |")
                print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.md").write_text("\n".join(lines) + "\n")
    print(f"# written to {args.out / 'profile.md'}")


if __name__ == "__main__":
    main()
