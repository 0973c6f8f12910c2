"""Full samplers: every reference video model sampled with its reference modules and patched with
fastvid, timed end to end, samples compared, and the time of one model evaluation split into
attention, convolution and other with the PyTorch profiler.

    python benchmarks/bench_samplers.py                  # realistic "gpu" sizes on CUDA, "tiny" on CPU
    python benchmarks/bench_samplers.py --models vdm,dit --steps 10 --dtype bfloat16

Rows are appended to benchmarks/results/samplers.jsonl; the report (table, JSON, Markdown, PNG) of the
run goes to benchmarks/results/samplers_<device>.*. CPU rows are labelled "cpu" and are no speed claim.

The breakdown labels each outermost attention module (the reference attention modules, their fastvid
twins and the text cross-attention) and each outermost convolution module (Conv1d/2d/3d, PseudoConv3d,
TemporalConvBlock, TemporalResBlock) with a profiler range; "other" is the rest of the evaluation (norms,
linear layers outside attention, activations, resampling). Times are device (CUDA kernel) time on a GPU,
CPU time on a CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness  # noqa: E402
from fastvid import bench as fb  # noqa: E402
from fastvid import models, reference  # noqa: E402
from fastvid.models.layers import CrossAttention  # noqa: E402
from fastvid.reference.modules import _TokenAttention  # noqa: E402
from fastvid.report import format_table, write_report  # noqa: E402

ATTENTION = (_TokenAttention, CrossAttention)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, reference.PseudoConv3d, reference.TemporalConvBlock,
        reference.TemporalResBlock)
LABELS = {"attention": "fastvid.bench.attention", "convolution": "fastvid.bench.convolution"}


def _label_modules(model: nn.Module):
    """Wraps each outermost attention / convolution module's forward in a profiler range."""
    handles, labelled = [], []
    for name, module in model.named_modules():
        kind = "attention" if isinstance(module, ATTENTION) else "convolution" if isinstance(module, CONV) else None
        if kind is None or any(name.startswith(p + ".") for p in labelled):
            continue
        labelled.append(name)
        ranges = []

        def enter(mod, args, _kind=kind, _ranges=ranges):
            r = torch.autograd.profiler.record_function(LABELS[_kind])
            r.__enter__()
            _ranges.append(r)

        def leave(mod, args, out, _ranges=ranges):
            _ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _event_ms(event, device: torch.device) -> float:
    if device.type == "cuda":
        return getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
    return event.cpu_time_total


@torch.no_grad()
def breakdown(name: str, model: nn.Module, size: models.ModelSize, *, device: torch.device,
              dtype: torch.dtype) -> Dict[str, float]:
    """Milliseconds of one classifier-free-guided model evaluation: attention, convolution, other, total."""
    evaluate = models.evaluation(model, size, device=device, dtype=dtype)
    evaluate()  # warm-up: compilation and autotuning stay out of the profile
    handles = _label_modules(model)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:
        with torch.profiler.profile(activities=activities) as prof:
            with torch.autograd.profiler.record_function("fastvid.bench.step"):
                evaluate()
                fb._sync(device)
    finally:
        for h in handles:
            h.remove()
    sums = {k: 0.0 for k in ("attention", "convolution", "step")}
    for event in prof.events():
        for key, label in list(LABELS.items()) + [("step", "fastvid.bench.step")]:
            if event.name == label:
                sums[key] += _event_ms(event, device) / 1e3
    if device.type == "cuda":  # the step range's own device time: every kernel the evaluation launched
        sums["step"] = sum(e.self_device_time_total for e in prof.events()
                           if getattr(e, "self_device_time_total", 0)) / 1e3
    other = max(sums["step"] - sums["attention"] - sums["convolution"], 0.0)
    return {"attention_ms": sums["attention"], "convolution_ms": sums["convolution"], "other_ms": other,
            "total_ms": sums["step"]}


def main(argv=None) -> int:
    parser = harness.parser(__doc__, modes=None, no_compile=None)
    parser.add_argument("--models", default="all")
    parser.add_argument("--size", default=None, help="gpu on CUDA, tiny on CPU")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--backend", default="auto")
    args = harness.parse(parser, argv, cuda_dtype="float16")

    device = fb.resolve_device(args.device)
    size_name = args.size or ("gpu" if device.type == "cuda" else "tiny")
    dtype = args.dtype
    names = list(models.MODELS) if args.models == "all" else args.models.split(",")
    overrides = {k: v for k, v in (("steps", args.steps), ("frames", args.frames)) if v is not None}
    sizes = fb.plan(names, size_name, **overrides)
    out_dir = args.out
    env = harness.environment(device.type)

    rows, jsonl = [], []
    for name, size in sizes.items():
        print(f"{name}: latents {size.latent_shape}, {size.steps} steps", file=sys.stderr, flush=True)
        split = {}

        def profile(variant, model, _name=name, _size=size):
            split[variant] = breakdown(_name, model, _size, device=device, dtype=dtype)

        row = fb.bench_model(name, size, size_name, device=device, dtype=dtype, backend=args.backend, after=profile)
        rows.append(row)
        jsonl.append({**env, "bench": "samplers", "size": size_name, "dtype": str(dtype).replace("torch.", ""),
                      **row.to_dict(), "breakdown": split})
    result = fb.BenchResult(rows=rows, env=fb.environment(device),
                            settings={"size": size_name, "dtype": str(dtype).replace("torch.", ""), "seed": 0,
                                      "backend": args.backend, "tolerance": fb.TOLERANCE[dtype],
                                      "overrides": overrides})
    print(format_table(result))
    print("\nOne guided model evaluation, ms (" + ("CUDA kernel time" if device.type == "cuda" else "CPU time") + "):")
    print(f"{'model':<18}{'variant':<11}{'attention':>11}{'convolution':>13}{'other':>9}{'total':>9}")
    for r in jsonl:
        for variant, b in r["breakdown"].items():
            print(f"{r['model']:<18}{variant:<11}{b['attention_ms']:>11.2f}{b['convolution_ms']:>13.2f}"
                  f"{b['other_ms']:>9.2f}{b['total_ms']:>9.2f}")
    path = harness.write_rows("samplers", jsonl, out_dir)
    paths = write_report(result, out_dir, stem=f"samplers_{device.type}")
    print(f"appended {len(jsonl)} rows to {path}; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if result.all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
