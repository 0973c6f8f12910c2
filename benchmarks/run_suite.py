"""The whole kernel benchmark suite: correctness first, then timings, then plots, written as it goes.

    python benchmarks/run_suite.py --quick --out "$OUT"   # first GPU call: <= 4 min on an H100 (plan printed)
    python benchmarks/run_suite.py --rest --out "$OUT"    # second GPU call: every case --quick left out
    python benchmarks/run_suite.py --out "$OUT"           # everything (more than one 10-minute call)
    python benchmarks/run_suite.py --ops temporal_attention,temporal_conv --modes fwd --budget 300
    python benchmarks/run_suite.py --quick                # on CPU: tiny sizes, a pipeline check only

1. Correctness: every op against fastvid.reference with fastvid.testing.check_against_reference
   (outputs poisoned, forward and every input gradient vs the float64 gold, tolerances relative to
   torch's own error in the dtype), on odd sizes and non-contiguous inputs. On CUDA: the triton
   backend in bf16 (--quick), fp16 (--rest) or both. On CPU: the torch and auto backends in fp32
   (and fp16 unless --quick). An op that fails is not timed.
2. Timings: each op's bench script (benchmarks/bench_<op>.py, its main()) called once per case
   (one shape, and for frame attention and linear one variant: frames mode, layout), rows appended to
   <out>/<op>.jsonl as each case finishes. --quick: the headline models' shapes (QUICK), forward and
   forward+backward, against every installed peer; the torch.compile peers (a compile per shape and mode) at each op's first
   case only. --rest: every other case, all modes, every torch.compile peer.
3. After each op: correctness.md (after its check), SUMMARY.md and plots.tar (after its timings) are
   rewritten, so a run killed midway leaves everything measured so far.

The plan (a model of an H100's time per row, per Triton compile and per torch.compile graph, PLAN_*)
is printed at the start; --budget SECONDS (on CUDA 240 with --quick, 420 with --rest) skips a case
whose estimate (scaled by how the finished cases compared with their estimates) would pass the budget,
and says so in suite.log and SUMMARY.md.

Files written to --out (default benchmarks/results): <op>.jsonl, correctness.md, SUMMARY.md,
plots.tar, suite.log (everything printed). At most 8 files, no folders.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import sys
import tarfile
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness, plot  # noqa: E402
from benchmarks.bench_linear import LAYOUTS as LINEAR_LAYOUTS  # noqa: E402
from fastvid.registry import OPS as REGISTRY  # noqa: E402
from fastvid.testing import check_against_reference  # noqa: E402

OPS = tuple(REGISTRY)


def correctness_cases(device, dtype, backend):
    """(op, case name, fn, reference, inputs): the registry's checks, at odd sizes with one non-contiguous
    input per op."""
    for op, spec in REGISTRY.items():
        for case, named, kwargs in spec.examples.checks(device, dtype):
            names = list(named)

            def fn(*tensors, op=op, spec=spec, names=names, kwargs=kwargs):  # the public export, fastvid.<op>
                return spec.examples.output(getattr(fastvid, op)(**dict(zip(names, tensors)), **kwargs, backend=backend))

            def ref(*tensors, spec=spec, names=names, kwargs=kwargs):
                return spec.examples.output(spec.reference(**dict(zip(names, tensors)), **kwargs))

            yield op, case, fn, ref, list(named.values())


CORRECTNESS_HEADER = ["| op | case | backend (ran) | dtype | result |", "|---|---|---|---|---|"]


def check_correctness(ops, device, dtypes, backends):
    """Runs every case; returns (markdown table rows, set of ops that failed)."""
    lines = []
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


def _bench_main(op):
    return importlib.import_module(f"benchmarks.bench_{op}").main


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of an op's bench script: one shape (and variant, VARIANTS), its modes, with or without
    the torch.compile peers."""
    op: str
    shape: str
    variant: str = ""
    compile_peers: bool = True

    @property
    def label(self) -> str:
        return f"{self.op} {self.shape}" + (f" {self.variant}" if self.variant else "")


# --quick: the headline models per op (ModelScope T2V, SVD, Text2Video-Zero d=40, Latte d=72) in
# the registry's benchmark shapes; frame attention in "first" (Text2Video-Zero's; sparse_causal compiles its own
# kernels, in --rest).
QUICK = {
    "temporal_attention": [("modelscope-32x32-c320", ""), ("svd-72x128-c320", ""), ("latte-16x16-h16", "")],
    "frame_attention": [("t2vzero-64x64", "first"), ("modelscope-32x32-c320", "first"), ("latte-16x16", "first")],
    "temporal_conv": [("c320-32x32", ""), ("c640-64x64", "")],
    "group_norm_silu": [("c320-32x32", "")],
    "add_layer_norm": [("svd-spatial-72x128-c320", "")],
    "alpha_blend": [("svd-72x128-c320", "")],
    "geglu": [("svd-72x128-c320", "")],
    "geglu_linear": [("svdxt-72x128-c320", "")],
    "linear": [("svdxt-72x128-c320", "proj_out")],
}
# Their --quick cases leave the torch.compile peer to --rest (the quick budget).
QUICK_NO_COMPILE = ("geglu", "add_layer_norm", "alpha_blend", "geglu_linear", "linear")
QUICK_MODES = "fwd,fwd+bwd"
FRAMES = ("first", "sparse_causal", "self", "all")  # bench_frame_attention.FRAMES
# Ops whose bench script runs one variant per call: (the variants, the script's arguments that pick one).
VARIANTS = {"frame_attention": (FRAMES, lambda frames: ["--frames", frames, "--num-frames", "", "--heads", ""]),
            "linear": (tuple(LINEAR_LAYOUTS), lambda layout: ["--layouts", layout])}

# The plan: a model of an H100 run, not a measurement. Per timed row: do_bench's estimate, 25 ms warm-up
# and 100 ms of repeats, a peak-memory pass, two input sets (0.2-0.3 s); conv and GroupNorm rows also
# profile the kernels each provider launched. Per Triton compile (a launch config; autotuned kernels
# compile and time every config): 0.5-0.9 s. Per torch.compile graph (one per shape and mode): ~6 s.
PLAN_STARTUP_S = 20.0  # imports, CUDA context, the copy/matmul ceilings
PLAN_ROW_S = {"temporal_attention": 0.35, "frame_attention": 0.35, "temporal_conv": 0.6, "group_norm_silu": 0.6,
              "alpha_blend": 0.6, "geglu": 0.6, "add_layer_norm": 0.3, "geglu_linear": 0.6, "linear": 0.6}
PLAN_COMPILE_S = 0.9
PLAN_TORCH_COMPILE_S = 6.0
PLAN_CHECK_S = 1.0  # one correctness case: kernel, reference, float64 gold, gradients
# Providers per (shape, mode) on CUDA (benchmarks/bench_<op>.py), and how many of them are torch.compile peers
# (GroupNorm: its six per-sample providers and, on the case's guided-pair frames, fastvid and eager per frame).
PLAN_PROVIDERS = {"temporal_attention": 8, "frame_attention": 10, "temporal_conv": 5, "group_norm_silu": 8,
                  "alpha_blend": 3, "geglu": 3, "add_layer_norm": 3, "geglu_linear": 4, "linear": 3}
PLAN_COMPILED = {"temporal_attention": 1, "frame_attention": 1, "temporal_conv": 0, "group_norm_silu": 2,
                 "alpha_blend": 1, "geglu": 1, "add_layer_norm": 1, "geglu_linear": 1, "linear": 1}
DEFAULT_MODES = {"frame_attention": "fwd,fwd+bwd"}  # the others: harness.MODES
# Default --budget of each part: --quick and --rest each fit in a run of under 10 minutes.
QUICK_BUDGET_S, REST_BUDGET_S = 240.0, 420.0


def _case_shapes(op, device) -> Dict[str, tuple]:
    """The bench script's named shapes for ``device`` (the registry's benchmark shapes, or their CPU
    stand-ins; frame attention: its model shapes)."""
    return REGISTRY[op].examples.shapes(device)


def all_cases(op, device) -> List[Case]:
    variants = VARIANTS[op][0] if op in VARIANTS else ("",)
    return [Case(op, name, v) for name in _case_shapes(op, device) for v in variants]


def quick_cases(op, device) -> List[Case]:
    """QUICK on CUDA (the first case of each op with the torch.compile peers, unless QUICK_NO_COMPILE); else
    the first shape."""
    if device == "cuda" and op in QUICK:
        picked = QUICK[op]
    else:
        picked = [(next(iter(_case_shapes(op, device))), VARIANTS[op][0][0] if op in VARIANTS else "")]
    compiled = device != "cuda" or op not in QUICK_NO_COMPILE
    return [Case(op, name, variant, compile_peers=i == 0 and compiled) for i, (name, variant) in enumerate(picked)]


def rest_cases(op, device) -> List[Case]:
    done = {(c.shape, c.variant) for c in quick_cases(op, device)}
    return [c for c in all_cases(op, device) if (c.shape, c.variant) not in done]


class Plan:
    """Planned seconds per correctness op and per case (the PLAN_* model), and the budget: a case is
    skipped when the time used plus its estimate, scaled by actual / planned so far, passes the budget."""

    def __init__(self, budget: Optional[float], device: str):
        self.budget, self.device = budget, device
        self.start = time.perf_counter()
        self.planned_done = self.actual_done = 0.0
        self.skipped: List[str] = []
        self._compiled: set = set()

    def new_compiles(self, op, shape_name, variant="", seen: Optional[set] = None) -> int:
        """Triton launch configs first needed at this shape (and variant), not in ``seen`` (default: the
        cases planned so far). benchmarks/kernel_resources.py captures the launchers' choices on meta
        tensors; autotuned kernels count every config."""
        if self.device != "cuda":
            return 0
        from benchmarks import kernel_resources

        table = {op: (kernel_resources.OPS[op][0], {shape_name: _case_shapes(op, "cuda")[shape_name]})}
        try:
            launches = kernel_resources.capture([op], table=table, variants={op: (variant,)} if variant else None)
        except Exception as exc:  # a launcher being rewritten: assume a handful
            print(f"# plan: could not capture {op} launches ({type(exc).__name__}: {exc}); assuming 8 compiles")
            return 8
        seen = self._compiled if seen is None else seen
        keys = {launch.key() for launch in launches} - seen
        seen |= keys
        return len(keys)

    def case_seconds(self, case: Case, modes: str) -> tuple:
        """(seconds, rows, Triton compiles, torch.compile graphs) planned for one case."""
        n_modes = len((modes or DEFAULT_MODES.get(case.op, ",".join(harness.MODES))).split(","))
        compiled = PLAN_COMPILED[case.op] if case.compile_peers else 0
        rows = (PLAN_PROVIDERS[case.op] - PLAN_COMPILED[case.op] + compiled) * n_modes
        graphs = compiled * n_modes
        compiles = self.new_compiles(case.op, case.shape, case.variant)
        seconds = rows * PLAN_ROW_S[case.op] + compiles * PLAN_COMPILE_S + graphs * PLAN_TORCH_COMPILE_S
        return seconds, rows, compiles, graphs

    def check_seconds(self, op, n_cases: int, n_dtypes: int) -> float:
        first = quick_cases(op, self.device)[0].shape  # odd sizes: its kernels, other specialisations
        compiles = self.new_compiles(op, first, seen=set()) * n_dtypes
        return n_cases * PLAN_CHECK_S + compiles * PLAN_COMPILE_S

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, planned: float) -> bool:
        scale = max(1.0, self.actual_done / self.planned_done) if self.planned_done else 1.0
        estimate = planned * scale
        if self.budget is None or self.elapsed() + estimate <= self.budget:
            return True
        self.skipped.append(f"{what} (estimated {estimate:.0f} s; {self.elapsed():.0f} s of {self.budget:.0f} s used)")
        print(f"# budget: skipped {self.skipped[-1]}", flush=True)
        return False

    def record(self, planned: float, actual: float):
        self.planned_done += planned
        self.actual_done += actual


def print_plan(plan: Plan, checks: Dict[str, float], cases: List[Case], modes: str) -> tuple:
    """Prints the budget arithmetic; returns (each case's planned seconds, planned total)."""
    per_case, total_rows, total_compiles, total_graphs = {}, 0, 0, 0
    for case in cases:
        per_case[case], rows, compiles, graphs = plan.case_seconds(case, modes)
        total_rows, total_compiles, total_graphs = total_rows + rows, total_compiles + compiles, total_graphs + graphs
    bench = sum(per_case.values())
    total = PLAN_STARTUP_S + sum(checks.values()) + bench
    where = "" if plan.device == "cuda" else " (an H100 model: this CPU run's times differ)"
    print(f"# plan{where}: startup {PLAN_STARTUP_S:.0f} s + correctness {sum(checks.values()):.0f} s "
          f"({', '.join(f'{op} {s:.0f} s' for op, s in checks.items()) or 'skipped'}) + {len(cases)} cases: "
          f"{total_rows} rows x {min(PLAN_ROW_S.values())}-{max(PLAN_ROW_S.values())} s + {total_compiles} Triton "
          f"compiles x {PLAN_COMPILE_S} s + {total_graphs} torch.compile graphs x {PLAN_TORCH_COMPILE_S:.0f} s "
          f"= {bench:.0f} s; total {total:.0f} s; budget "
          + ("none" if plan.budget is None else f"{plan.budget:.0f} s"), flush=True)
    for case in cases:
        print(f"#   {case.label}{'' if case.compile_peers else ' (no torch.compile peers)'}: {per_case[case]:.1f} s")
    return per_case, total


def plan_run(ops, cases, device, dtypes, backends, budget, modes, skip_correctness) -> tuple:
    """(Plan, planned seconds per op's correctness, per case, total), printed."""
    plan = Plan(budget, device)
    n_checks = defaultdict(int)
    for op, *_ in correctness_cases("meta", torch.float32, "torch"):
        n_checks[op] += len(dtypes) * len(backends)
    checks = {} if skip_correctness else {op: plan.check_seconds(op, n_checks[op], len(dtypes)) for op in ops}
    per_case, total = print_plan(plan, checks, cases, modes)
    return plan, checks, per_case, total


def run_case(case: Case, args, out: Path, modes: str):
    """One call of the op's bench script; its rows are appended to ``out``/<op>.jsonl when it returns."""
    argv = ["--device", args.device, "--out", str(out), "--shapes", case.shape]
    if args.dtype:
        argv += ["--dtype", args.dtype]
    if modes:
        argv += ["--modes", modes]
    if (args.no_compile or not case.compile_peers) and case.op != "temporal_conv":
        argv.append("--no-compile")
    if case.op in VARIANTS:
        argv += VARIANTS[case.op][1](case.variant)
    print(f"\n## {case.label}: bench_{case.op}.main({' '.join(argv)})", flush=True)
    try:
        _bench_main(case.op)(argv)
    except Exception:  # one case's crash does not lose the others' results
        traceback.print_exc()


def run_sweep(args, out: Path):
    """Frame attention's F / heads sweep (GPU), one call."""
    argv = ["--device", args.device, "--out", str(out), "--sweep-only"] + (["--no-compile"] if args.no_compile else [])
    print(f"\n## frame_attention sweep: bench_frame_attention.main({' '.join(argv)})", flush=True)
    try:
        _bench_main("frame_attention")(argv)
    except Exception:
        traceback.print_exc()


def write_plots(results: Path, out: Path, ops, label: str, skipped: List[str]):
    """SUMMARY.md into ``out`` (``label`` under its title, the cases skipped so far at its end); the
    plots into ``out``/plots.tar."""
    rows = plot.newest_runs([r for r in plot.load(results) if r.get("op") in ops])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["device"], r["dtype"], r["mode"])].append(r)
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for (op, device, dtype, mode), group in groups.items():
            names.append(f"{op}_{device}_{dtype}_{mode.replace('+', '_')}.png")
            plot.plot_group(group, Path(tmp) / names[-1], f"{op} {mode} {dtype} on {group[0]['gpu']}")
        with tarfile.open(out / "plots.tar.tmp", "w") as tar:  # drawn first: the tar is written in milliseconds
            for name in names:
                tar.add(Path(tmp) / name, arcname=name)
    (out / "plots.tar.tmp").replace(out / "plots.tar")
    title, rest = plot.summary(rows, groups).split("\n", 1)
    tail = ["", "## Skipped (budget)", "", *(f"- {s}" for s in skipped), ""] if skipped else []
    _write(out / "SUMMARY.md", f"{title}{label}\n{rest}" + "\n".join(tail))
    print(f"# SUMMARY.md and plots.tar ({len(groups)} plots) written to {out}", flush=True)


def _write(path: Path, text: str):
    """Replaces ``path`` whole (written aside, then renamed): a kill never leaves half a file."""
    aside = path.with_name(path.name + ".tmp")
    aside.write_text(text)
    aside.replace(path)


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
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--quick", action="store_true", help="the first GPU call: bf16 correctness and the headline "
                      f"shapes, {QUICK_MODES}, budget {QUICK_BUDGET_S:.0f} s")
    part.add_argument("--rest", action="store_true", help="the second GPU call: fp16 correctness and every case "
                      f"--quick leaves out, all modes, budget {REST_BUDGET_S:.0f} s")
    parser.add_argument("--budget", type=float, default=None, help="seconds: start no case whose estimate passes it")
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="frame attention's F / heads sweep too (GPU)")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop (no GPU needed: "
                        "--device cuda --plan-only gives the H100 plan anywhere)")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}; choose from {','.join(OPS)}")
    if args.shapes is not None:
        parser.error("--shapes is for the bench scripts; run_suite picks cases with --quick / --rest / --ops")
    out = Path(args.out) if args.out else harness.RESULTS
    cuda = args.device == "cuda"
    modes = QUICK_MODES if args.quick and not args.modes else args.modes
    budget = args.budget
    if budget is None and cuda:
        budget = QUICK_BUDGET_S if args.quick else REST_BUDGET_S if args.rest else None
    pick = quick_cases if args.quick else rest_cases if args.rest else all_cases
    cases = [] if args.skip_bench else [c for op in ops for c in pick(op, args.device)]
    if args.no_compile:
        cases = [dataclasses.replace(c, compile_peers=False) for c in cases]
    if cuda:
        dtypes = (torch.bfloat16,) if args.quick else (torch.float16,) if args.rest else (torch.bfloat16, torch.float16)
    else:
        dtypes = (torch.float32,) if args.quick else (torch.float32, torch.float16)
    backends = ("triton",) if cuda else ("torch", "auto")
    label = "" if cuda else " (cpu — not a speed measurement: tiny sizes, a pipeline check)"
    if args.plan_only:
        plan_run(ops, cases, args.device, dtypes, backends, budget, modes, args.skip_correctness)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    with (out / "suite.log").open("a", buffering=1) as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, log)):
        env = harness.environment(args.device)
        print(f"# fastvid suite on {env['gpu']}{label}: torch {env['torch']}, triton {env['triton']}, "
              f"commit {env['commit']}, {env['date']}", flush=True)
        plan, checks, planned, _ = plan_run(ops, cases, args.device, dtypes, backends, budget, modes,
                                            args.skip_correctness)
        failed, lines = set(), []
        for op in checks:
            if not plan.allows(f"{op} correctness", checks[op]):
                failed.add(op)
                continue
            start = time.perf_counter()
            op_lines, op_failed = check_correctness([op], args.device, dtypes, backends)
            plan.record(checks[op], time.perf_counter() - start)
            lines += op_lines
            failed |= op_failed
            _write(out / "correctness.md", "\n".join([
                f"# Correctness on {env['gpu']}{label}", "",
                f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, {env['date']}; "
                "fastvid.testing.check_against_reference: forward and all input gradients vs float64.", "",
                *CORRECTNESS_HEADER, *lines, ""]))
            print("\n".join(op_lines))
            print(f"# {op} correctness: {time.perf_counter() - start:.0f} s; "
                  f"{'FAILED' if op_failed else 'pass'}", flush=True)
        if failed:
            print(f"# not timed (failed or skipped correctness): {sorted(failed)}")
        timed = []
        for op in ops:
            op_cases = [c for c in cases if c.op == op and op not in failed]
            for case in op_cases:
                if plan.allows(case.label, planned[case]):
                    start = time.perf_counter()
                    run_case(case, args, out, modes)
                    plan.record(planned[case], time.perf_counter() - start)
                    print(f"## {case.label}: {time.perf_counter() - start:.0f} s (planned {planned[case]:.0f} s); "
                          f"{plan.elapsed():.0f} s elapsed", flush=True)
            if op_cases:
                timed.append(op)
                write_plots(out, out, timed, label, plan.skipped)
        if args.sweep and "frame_attention" in timed:
            run_sweep(args, out)
            write_plots(out, out, timed, label, plan.skipped)
        print(f"# suite done in {plan.elapsed():.0f} s; skipped: {'; '.join(plan.skipped) or 'nothing'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
