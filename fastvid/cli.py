"""``fastvid`` command line (also ``python -m fastvid``).

    fastvid bench                         every model, sized for this machine (CPU: tiny, about a minute;
                                          GPU: realistic, 16 frames of 40x64 latents)
    fastvid bench --models vdm,dit --steps 10 --dtype float16 --device cuda --out results/
    fastvid bench --list                  the models and their sizes
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from .validation import FastvidInputError


def _parser() -> argparse.ArgumentParser:
    from .bench import DTYPES
    from .dispatch import BACKEND_NAMES
    from .models import MODELS, SIZE_NAMES

    parser = argparse.ArgumentParser(prog="fastvid", description="fastvid: Triton kernels for video diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="sample every reference video model with and without fastvid.patch, compare, report",
                       description="Samples each model with its reference modules and patched with fastvid, checks "
                                   "that the samples agree and writes a table, JSON, Markdown and a PNG plot.")
    b.add_argument("--models", default="all",
                   help=f"comma-separated model names, or 'all' (default): {', '.join(MODELS)}")
    b.add_argument("--size", choices=SIZE_NAMES, default=None,
                   help="size preset (default: 'gpu' on CUDA, 'cpu' otherwise; 'tiny' is the tests' size)")
    b.add_argument("--frames", type=int, help="override the number of frames")
    b.add_argument("--height", type=int, help="override the latent height")
    b.add_argument("--width", type=int, help="override the latent width")
    b.add_argument("--steps", type=int, help="override the number of sampling steps")
    b.add_argument("--batch", type=int, help="override the batch size")
    b.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="model and latent dtype (default: float16 on CUDA, float32 on CPU)")
    b.add_argument("--device", default="auto", help="'auto' (default: CUDA when available), 'cpu' or 'cuda[:N]'")
    b.add_argument("--backend", choices=BACKEND_NAMES, default="auto", help="fastvid backend for the patched modules")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="fastvid_report", help="output folder for bench.json, bench.md, bench.png")
    b.add_argument("--no-plot", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    b.add_argument("--progress", action="store_true", help="show a progress bar for each sampling run")
    b.add_argument("--list", action="store_true", help="list the models and their sizes, then exit")
    _add_nproc_option(b)
    return parser


def _add_nproc_option(b: argparse.ArgumentParser) -> None:
    b.add_argument("--nproc", type=int, default=None,
                   help="spawn N gloo processes and count the bytes each sequence-parallel strategy sends per "
                        "denoising step (fastvid.distributed; bytes, not speed; --size defaults to tiny, --frames to 8)")


def _bench_nproc(args: argparse.Namespace) -> int:
    from .distributed.accounting import format_rows, measure
    from .models import MODELS

    names = list(MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    print(format_rows(measure(names, args.nproc, size_name=args.size or "tiny", frames=args.frames or 8)))
    return 0


def _list_models() -> str:
    from .models import MODELS

    lines = []
    for name, e in MODELS.items():
        lines.append(f"{name:16s} {e.description}")
        for size_name, s in e.sizes.items():
            lines.append(f"{'':16s}   {size_name:5s} latents {'x'.join(map(str, s.latent_shape))}, {s.steps} steps")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> int:
    from . import bench as fb
    from .models import MODELS
    from .report import format_table, write_report

    device = fb.resolve_device(args.device)
    size_name = args.size or ("gpu" if device.type == "cuda" else "cpu")
    dtype = fb.DTYPES[args.dtype or ("float16" if device.type == "cuda" else "float32")]
    names = list(MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    overrides = {k: getattr(args, k) for k in ("frames", "height", "width", "steps", "batch")
                 if getattr(args, k) is not None}
    fb.plan(names, size_name, **overrides)
    result = fb.run_bench(names, size_name, device=device, dtype=dtype, seed=args.seed, backend=args.backend,
                          overrides=overrides, progress=True if args.progress else None,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result))
    paths = write_report(result, args.out, plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if result.all_agree else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and args.list:
        print(_list_models())
        return 0
    try:
        return _bench_nproc(args) if args.nproc is not None else bench(args)
    except FastvidInputError as e:
        parser.exit(2, f"fastvid: error: {e}\n")
    except torch.cuda.OutOfMemoryError as e:
        parser.exit(3, f"fastvid: error: out of GPU memory ({e}); try a smaller --size, --frames or --height/--width\n")


if __name__ == "__main__":
    sys.exit(main())
