"""``fastvid`` command line (also ``python -m fastvid``).

    fastvid bench                         every model, sized for this machine (CPU: the "cpu" preset, well under a minute
                                          on an idle 2-core machine; GPU: realistic, 16 frames of 40x64 latents)
    fastvid bench --models vdm,dit --steps 10 --dtype float16 --device cuda --out results/
    fastvid bench --list                  the models and their sizes
    fastvid bench --diffusers all         real diffusers video pipelines, diffusers vs fastvid vs torch.compile
                                          (fastvid/bench_pipelines.py, docs/pipelines.md)
    fastvid roofline --diffusers svd,animatediff --json roofline.json
                                          the step model: one denoiser call counted on the meta device, predicted
                                          at the H100 roofline, unpatched vs fastvid-patched (docs/step-model.md)

Every argument is checked before any work starts (one ``check_<argument>`` function each); bad input
prints one line naming the argument and exits 2. Exit 0: every patched sample agrees with the unpatched
one; 1: one does not; 3: out of GPU memory.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import torch

from .validation import FastvidInputError

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3


class _Parser(argparse.ArgumentParser):
    """Flags are matched whole (``--model`` is not taken for ``--models``); errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """One line, no usage block: ``fastvid bench: error: argument --x: ...``, exit 2."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class BadArgument(Exception):
    """A check of one command-line argument failed; ``argument`` is its flag, e.g. "--out"."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"argument {argument}: {message}")


# ---- one check per argument: run after parsing, before any work ---------------------------------

def check_models(value: str) -> List[str]:
    from .models import MODELS

    names = list(MODELS) if value == "all" else [m.strip() for m in value.split(",") if m.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise BadArgument("--models", f"{', '.join(map(repr, unknown)) or repr(value)} is not a model; expected "
                                      f"'all' or a comma-separated list of: {', '.join(MODELS)}")
    return names


def check_positive(flag: str, value: Optional[int]) -> Optional[int]:
    """--frames, --height, --width, --steps, --batch, --repeats: None (the preset's) or >= 1."""
    if value is not None and value < 1:
        raise BadArgument(flag, f"is {value}; expected a positive integer")
    return value


def check_device(value: str) -> torch.device:
    from .bench import resolve_device

    try:
        return resolve_device(value)
    except FastvidInputError as e:
        raise BadArgument("--device", e.detail) from None


def check_dtype(value: Optional[str], device: torch.device) -> torch.dtype:
    from .bench import DTYPES

    return DTYPES[value or ("float16" if device.type == "cuda" else "float32")]


def check_backend(value: str, device: torch.device) -> str:
    from ._interpreter import interpreting

    if value == "triton" and device.type != "cuda" and not interpreting():
        raise BadArgument("--backend", f"'triton' runs on CUDA, and this run is on {device.type}; expected 'auto', "
                                       "'torch' or 'reference' here (or TRITON_INTERPRET=1 to run the kernels "
                                       "through the slow Triton interpreter)")
    return value


def check_out(value: str) -> Path:
    """A folder that exists or can be created, and that this process can write into."""
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise BadArgument("--out", f"{value!r} is an existing file; expected a folder (existing or new)")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise BadArgument("--out", f"{value!r} is inside {str(existing)!r}, a file; expected a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise BadArgument("--out", f"{str(existing)!r} is not writable ({e.strerror}); expected a writable folder")
    return out


def check_plot(no_plot: bool) -> bool:
    """Whether to plot; the PNG needs matplotlib, checked now rather than after the run."""
    if not no_plot and importlib.util.find_spec("matplotlib") is None:
        raise BadArgument("--no-plot", "is not given but matplotlib is not installed; expected "
                                       "pip install 'fastvid[plot]', or --no-plot")
    return not no_plot


def check_sizes(names: List[str], size_name: str, overrides: dict) -> dict:
    """Every model's size with the overrides (e.g. latents divisible by the model's down-sampling)."""
    from .bench import plan

    try:
        return plan(names, size_name, **overrides)
    except FastvidInputError as e:
        flag = "/".join("--" + part for part in e.argument.split("/"))
        raise BadArgument(flag, f"{e.detail} (model {e.op})") from None


# ---- parser and commands -------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from .bench import DTYPES
    from .dispatch import BACKEND_NAMES
    from .models import MODELS, SIZE_NAMES

    from . import __version__
    from .timing import commit

    parser = _Parser(prog="fastvid", description="fastvid: Triton kernels for video diffusion models.")
    parser.add_argument("--version", action="version", version=f"fastvid {__version__} (commit {commit()})")
    sub = parser.add_subparsers(dest="command", metavar="command")
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
    b.add_argument("--repeats", type=int, default=None,
                   help="timed runs per variant after a warm-up (default: 3 on CUDA; 1 on CPU, where no speed-up "
                        "is reported; 3 or more gives a 'CPU, not GPU speed' speed-up with its range)")
    b.add_argument("--out", default="fastvid_report", help="output folder for bench.json, bench.md, bench.png")
    b.add_argument("--no-plot", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    b.add_argument("--progress", action="store_true", help="show a progress bar for each sampling run")
    b.add_argument("--list", action="store_true", help="list the models and their sizes, then exit")
    _add_nproc_option(b)
    _add_diffusers_options(b)
    _add_roofline(sub)
    return parser


def _add_diffusers_options(b: argparse.ArgumentParser) -> None:
    from .bench_pipelines import add_options

    add_options(b)


def _add_nproc_option(b: argparse.ArgumentParser) -> None:
    b.add_argument("--nproc", type=int, default=None,
                   help="spawn N gloo processes and count the bytes each sequence-parallel strategy sends per "
                        "denoising step (fastvid.distributed; bytes, not speed; --size defaults to tiny, --frames to 8)")


def _bench_nproc(args: argparse.Namespace) -> int:
    from .distributed.accounting import format_rows, measure

    names = check_models(args.models)
    nproc = check_positive("--nproc", args.nproc)
    frames = check_positive("--frames", args.frames) or 8
    print(format_rows(measure(names, nproc, size_name=args.size or "tiny", frames=frames)))
    return 0


def _list_models() -> str:
    from .models import MODELS

    lines = []
    for name, e in MODELS.items():
        lines.append(f"{name:16s} {e.description}")
        for size_name, s in e.sizes.items():
            lines.append(f"{'':16s}   {size_name:5s} latents {'x'.join(map(str, s.latent_shape))}, {s.steps} steps")
    return "\n".join(lines)


def checked_bench_arguments(args: argparse.Namespace) -> dict:
    """Every ``fastvid bench`` argument checked and resolved (raises :class:`BadArgument`)."""
    names = check_models(args.models)
    overrides = {k: check_positive("--" + k, getattr(args, k)) for k in ("frames", "height", "width", "steps", "batch")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    repeats = check_positive("--repeats", args.repeats)
    device = check_device(args.device)
    size_name = args.size or ("gpu" if device.type == "cuda" else "cpu")
    return dict(names=names, size_name=size_name, overrides=overrides, sizes=check_sizes(names, size_name, overrides),
                device=device, dtype=check_dtype(args.dtype, device), backend=check_backend(args.backend, device),
                repeats=repeats, out=check_out(args.out), plot=check_plot(args.no_plot))


def bench(args: argparse.Namespace) -> int:
    from . import bench as fb
    from .report import format_table, write_report

    a = checked_bench_arguments(args)
    result = fb.run_bench(a["names"], a["size_name"], device=a["device"], dtype=a["dtype"], seed=args.seed,
                          backend=a["backend"], overrides=a["overrides"], repeats=a["repeats"],
                          progress=True if args.progress else None,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result))
    paths = write_report(result, a["out"], plot=a["plot"])
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if result.all_agree else 1


# ---- fastvid roofline ----------------------------------------------------------------------------

def _add_roofline(sub) -> None:
    from .roofline import LABEL

    r = sub.add_parser("roofline", help="the step model: one denoiser call's FLOPs and bytes by part at the H100 roofline, "
                                         "unpatched vs fastvid-patched; predicted, no GPU used",
                       description="Counts every op of one denoiser call on the meta device and times it at the "
                                   f"H100 roofline. {LABEL}.")
    r.add_argument("--diffusers", help="comma-separated released diffusers pipelines, or 'all'")
    r.add_argument("--models", help="comma-separated fastvid.models names, or 'all'")
    r.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="'full' (default): released configs and sizes, the models' 'gpu' preset; 'tiny': test sizes")
    r.add_argument("--ops", type=int, default=20, help="rows of the by-op tables (default 20; all of them in --json)")
    r.add_argument("--json", help="write the predictions as JSON rows to this file")
    r.add_argument("--fuse-qkv", action="store_true",
                   help="call diffusers' fuse_qkv_projections() on the --diffusers denoisers first (both columns)")


def check_diffusers(value: str) -> List[str]:
    from .integrations.released import RELEASED

    names = list(RELEASED) if value == "all" else [m.strip() for m in value.split(",") if m.strip()]
    unknown = [n for n in names if n not in RELEASED]
    if unknown or not names:
        raise BadArgument("--diffusers", f"{', '.join(map(repr, unknown)) or repr(value)} is not a released pipeline; "
                                         f"expected 'all' or a comma-separated list of: {', '.join(RELEASED)}")
    return names


def check_json(value: Optional[str]) -> Optional[Path]:
    """None, or a file path whose folder exists or can be created and is writable."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise BadArgument("--json", f"{value!r} is a folder; expected a file name")
    try:
        check_out(str(path.parent))
    except BadArgument as e:
        raise BadArgument("--json", str(e).split(": ", 1)[1]) from None
    return path


def roofline(args: argparse.Namespace) -> int:
    from . import roofline as rl

    if args.diffusers is None and args.models is None:
        raise BadArgument("--diffusers/--models", "neither is given; expected at least one")
    diffusers = check_diffusers(args.diffusers) if args.diffusers is not None else []
    names = check_models(args.models) if args.models is not None else []
    ops = check_positive("--ops", args.ops)
    path = check_json(args.json)
    size = "released" if args.size == "full" else "tiny"
    predictions = [rl.predict_diffusers(n, size, fuse_qkv=args.fuse_qkv) for n in diffusers]
    predictions += [rl.predict_model(n, "gpu" if args.size == "full" else "tiny") for n in names]
    for p in predictions:
        print(rl.format_prediction(p, op_rows=ops) + "\n")
    print(rl.format_summary(predictions))
    if path is not None:
        print(f"wrote {rl.write_json(predictions, path)}")
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parses ``argv``; no command lists the commands, and an unknown flag is reported by the command's
    own parser (``fastvid bench: error: ...``), each on one line with exit 2."""
    args, extras = parser.parse_known_args(argv)
    commands = _subcommands(parser)
    if args.command is None:
        listing = "; ".join(f"{c.dest} ({c.help})" for c in commands._choices_actions)
        parser.error(f"expected a command: {listing}. 'fastvid COMMAND --help' describes one")
    if extras:
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = _parse(parser, argv)
    if args.command == "bench" and args.list:
        print(_list_models())
        return 0
    try:
        if args.command == "roofline":
            return roofline(args)
        if args.diffusers is not None:
            from .bench_pipelines import main as bench_pipelines

            return bench_pipelines(args)
        return _bench_nproc(args) if args.nproc is not None else bench(args)
    except BadArgument as e:
        parser.exit(EXIT_BAD_INPUT, f"fastvid {args.command}: error: {e}\n")
    except torch.cuda.OutOfMemoryError as e:
        parser.exit(EXIT_OUT_OF_MEMORY, f"fastvid {args.command}: error: out of GPU memory ({e}); "
                                        "try a smaller --size, --frames or --height/--width\n")


if __name__ == "__main__":
    sys.exit(main())
