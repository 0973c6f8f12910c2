"""The whole kernel benchmark suite in one command: correctness first, then timings, then plots.

    python benchmarks/run_suite.py --out "$OUT"                    # on a GPU machine (fits a 10-minute call)
    python benchmarks/run_suite.py --ops temporal_attention,temporal_conv --modes fwd
    python benchmarks/run_suite.py                                 # on CPU: tiny sizes, a pipeline check only

1. Correctness: every op against fastvid.reference with fastvid.testing.check_against_reference
   (outputs poisoned, forward and every input gradient vs the float64 gold, tolerances relative to
   torch's own error in the dtype), on odd sizes and non-contiguous inputs. On CUDA: the triton
   backend in bf16 and fp16 (what the interpreter cannot check). On CPU: the torch and auto
   backends in fp32 and fp16. An op that fails is not timed.
2. Timings: each op's bench script (benchmarks/bench_<op>.py, its main()), rows appended to
   <results>/<op>.jsonl.
3. Plots: SUMMARY.md, and the plots packed into plots.tar (a GPU machine returns few files).

Files written to --out (default benchmarks/results): <op>.jsonl, correctness.md, SUMMARY.md,
plots.tar, suite.log (everything printed). At most 8 files.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tarfile
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness, plot  # noqa: E402
from fastvid import reference  # noqa: E402
from fastvid.registry import OPS as REGISTRY  # noqa: E402
from fastvid.testing import check_against_reference  # noqa: E402

OPS = tuple(REGISTRY)


def _randn(*shape, device, dtype, transpose=None):
    """Random values; ``transpose=(a, b)`` gives a non-contiguous view with ``shape``."""
    if transpose is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    a, b = transpose
    stored = list(shape)
    stored[a], stored[b] = stored[b], stored[a]
    return torch.randn(*stored, device=device, dtype=dtype).transpose(a, b)


def correctness_cases(device, dtype, backend):
    """(op, case name, fn, reference, inputs): odd sizes, one non-contiguous input per op."""
    r = dict(device=device, dtype=dtype)
    B, F, N, H, D = 2, 13, 37, 3, 72
    q = _randn(B, F, N, H, D, transpose=(1, 2), **r)  # frames strided by N*H*D: a (B, N, F, ...) buffer
    k, v = _randn(B, F, N, H, D, **r), _randn(B, F, N, H, D, **r)
    bias = _randn(H, F, F, **r)
    yield ("temporal_attention", "bias, q non-contiguous",
           lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b, backend=backend),
           lambda q, k, v, b: reference.temporal_attention(q, k, v, bias=b), [q, k, v, bias])
    yield ("temporal_attention", "causal",
           lambda q, k, v: fastvid.temporal_attention(q, k, v, causal=True, backend=backend),
           lambda q, k, v: reference.temporal_attention(q, k, v, causal=True), [q, k, v])
    B, F, N, H, D = 1, 5, 37, 3, 40
    q, k, v = _randn(B, F, N, H, D, transpose=(2, 3), **r), _randn(B, F, N, H, D, **r), _randn(B, F, N, H, D, **r)
    for frames in ("first", "sparse_causal", "all"):
        yield ("frame_attention", frames,
               lambda q, k, v, f=frames: fastvid.frame_attention(q, k, v, frames=f, backend=backend),
               lambda q, k, v, f=frames: reference.frame_attention(q, k, v, frames=f), [q, k, v])
    x = _randn(2, 20, 7, 5, 9, **r).to(memory_format=torch.channels_last_3d)
    weight, cbias, res = _randn(36, 20, 3, **r), _randn(36, **r), _randn(2, 36, 7, 5, 9, **r)
    yield ("temporal_conv", "channels_last_3d, bias, residual",
           lambda x, w, b, s: fastvid.temporal_conv(x, w, b, residual=s, backend=backend),
           lambda x, w, b, s: reference.temporal_conv(x, w, b, residual=s), [x, weight, cbias, res])
    x = _randn(2, 32, 5, 6, 7, transpose=(3, 4), **r)
    gamma, beta = 1 + 0.1 * _randn(32, **r), 0.1 * _randn(32, **r)
    for per_frame in (False, True):
        yield ("group_norm_silu", f"8 groups, per_frame={per_frame}, x non-contiguous",
               lambda x, w, b, p=per_frame: fastvid.group_norm_silu(x, 8, w, b, per_frame=p, backend=backend),
               lambda x, w, b, p=per_frame: reference.group_norm_silu(x, 8, w, b, per_frame=p), [x, gamma, beta])


def check_correctness(ops, device, dtypes, backends):
    """Runs every case; returns (markdown lines, set of ops that failed)."""
    lines = ["| op | case | backend (ran) | dtype | result |", "|---|---|---|---|---|"]
    failed = set()
    for dtype in dtypes:
        for backend in backends:
            torch.manual_seed(0)
            for op, case, fn, ref, inputs in correctness_cases(device, dtype, backend):
                if op not in ops:
                    continue
                try:
                    check_against_reference(f"{op} {case}", fn, ref, inputs, dtype)
                    ran = fastvid.last_backend(op)
                    if device == "cuda" and backend == "triton" and ran != "triton":
                        raise AssertionError(f"asked for triton, {ran} ran")
                    result = "pass"
                except Exception as exc:  # every failure is reported, and the op is not timed
                    ran = fastvid.last_backend(op)
                    failed.add(op)
                    result = f"**FAIL** {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                    traceback.print_exc()
                lines.append(f"| {op} | {case} | {backend} ({ran}) | {str(dtype).replace('torch.', '')} | {result} |")
    return lines, failed


def _bench_mains():
    from benchmarks import bench_frame_attention, bench_group_norm_silu, bench_temporal_attention, bench_temporal_conv

    return {"temporal_attention": bench_temporal_attention.main, "frame_attention": bench_frame_attention.main,
            "temporal_conv": bench_temporal_conv.main, "group_norm_silu": bench_group_norm_silu.main}


def run_benchmarks(ops, args, out: Path):
    mains = _bench_mains()
    for op in ops:
        argv = ["--device", args.device, "--out", str(out)]
        if args.dtype:
            argv += ["--dtype", args.dtype]
        if args.modes:
            argv += ["--modes", args.modes]
        if args.no_compile and op != "temporal_conv":
            argv.append("--no-compile")
        if op == "frame_attention" and args.device == "cuda" and not args.sweep:
            argv += ["--num-frames", "", "--heads", ""]
        start = time.perf_counter()
        print(f"\n## {op}: bench_{op}.main({' '.join(argv)})", flush=True)
        try:
            mains[op](argv)
        except Exception:  # one op's crash does not lose the others' results
            traceback.print_exc()
        print(f"## {op}: {time.perf_counter() - start:.0f} s", flush=True)


def write_plots(results: Path, out: Path, ops, label: str):
    """SUMMARY.md into ``out`` (``label`` under its title); the plots into ``out``/plots.tar."""
    rows = plot.newest_runs([r for r in plot.load(results) if r.get("op") in ops])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["device"], r["dtype"], r["mode"])].append(r)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(out / "plots.tar", "w") as tar:
            for (op, device, dtype, mode), group in groups.items():
                name = f"{op}_{device}_{dtype}_{mode.replace('+', '_')}.png"
                plot.plot_group(group, Path(tmp) / name, f"{op} {mode} {dtype} on {group[0]['gpu']}")
                tar.add(Path(tmp) / name, arcname=name)
    title, rest = plot.summary(rows, groups).split("\n", 1)
    (out / "SUMMARY.md").write_text(f"{title}{label}\n{rest}")
    print(f"# SUMMARY.md and plots.tar ({len(groups)} plots) written to {out}")


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self):
        for stream in self.streams:
            stream.flush()


def main(argv=None) -> int:
    parser = harness.parser(__doc__, modes="", no_compile="skip the torch.compile peers (faster)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="frame attention's F / heads sweep too (GPU)")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}; choose from {','.join(OPS)}")
    out = Path(args.out) if args.out else harness.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    label = "" if cuda else " (cpu — not a speed measurement: tiny sizes, a pipeline check)"
    with (out / "suite.log").open("a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, log)):
        env = harness.environment(args.device)
        print(f"# fastvid suite on {env['gpu']}{label}: torch {env['torch']}, triton {env['triton']}, "
              f"commit {env['commit']}, {env['date']}", flush=True)
        failed = set()
        if not args.skip_correctness:
            start = time.perf_counter()
            dtypes = (torch.bfloat16, torch.float16) if cuda else (torch.float32, torch.float16)
            backends = ("triton",) if cuda else ("torch", "auto")
            lines, failed = check_correctness(ops, args.device, dtypes, backends)
            text = "\n".join([f"# Correctness on {env['gpu']}{label}", "",
                              f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, {env['date']}; "
                              "fastvid.testing.check_against_reference: forward and all input gradients vs float64.",
                              "", *lines, ""])
            (out / "correctness.md").write_text(text)
            print(text)
            print(f"# correctness: {time.perf_counter() - start:.0f} s; failed: {sorted(failed) or 'none'}", flush=True)
        timed = [op for op in ops if op not in failed]
        if failed:
            print(f"# not timed (failed correctness): {sorted(failed)}")
        if not args.skip_bench and timed:
            run_benchmarks(timed, args, out)
            write_plots(out, out, timed, label)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
