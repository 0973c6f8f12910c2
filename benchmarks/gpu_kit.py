"""The diffusers-pipeline benchmark on an offline GPU machine (no package index; docs/pipelines.md).

    python benchmarks/gpu_kit.py download              # here: the wheels that machine lacks -> benchmarks/wheels/
    python benchmarks/gpu_kit.py run --call eager --out "$OUT"     # there: install them offline, run one call
    python benchmarks/gpu_kit.py checks --out "$OUT"   # there: the GPU's own checks (tests, host cost per call)
    python benchmarks/gpu_kit.py plot --out DIR        # here: the Markdown table and plot again from DIR/pipelines.jsonl

The kit expects torch, Triton, transformers, accelerate, huggingface_hub, safetensors, pillow, regex,
requests, numpy and matplotlib there, and brings diffusers and importlib_metadata (which diffusers imports): WHEELS,
at the versions installed here (the tested ones), both pure Python. ``run`` installs them with
``pip install --no-index --no-deps --target`` into a temporary folder put on PYTHONPATH, then runs
``python -m fastvid bench --diffusers`` with the options of one of CALLS (each fits one 10-minute call on an
H100: its --budget keeps it inside), writing pipelines.jsonl, pipelines.md, pipelines.png and pipelines.log
(everything printed) to --out; where a failure loses the CUDA context, a new process runs the pipelines left.
``checks`` runs, inside one such call, what only a GPU can check: the kernel
tests (bf16 included, against their references), launch counts, the fixed-argument launch and the captured
step (CHECK_TESTS), then ``benchmarks/host_overhead.py`` (host us per call next to device us, fastvid and its
peers), writing checks.log (pytest's verbose report, each test's outcome as it finishes) and host_overhead.md.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # fastvid from this checkout (imported where a command needs it)
WHEELS_DIR = ROOT / "benchmarks" / "wheels"  # ignored by git: copy it to the offline machine with the tree
WHEELS = ("diffusers", "importlib_metadata")
ALL = "svd,animatediff,modelscope,i2vgenxl,t2v_zero"
COMPILED = ["--variants", "compile,fastvid+compile", "--budget", "540"]
CALLS = {  # one 10-minute device call each: the eager variants of every pipeline, then the compiled ones
    "eager": ["--diffusers", ALL, "--variants", "diffusers,fastvid,fastvid+captured", "--budget", "330"],
    "compile-1": ["--diffusers", "svd,animatediff", *COMPILED],
    "compile-2": ["--diffusers", "modelscope,i2vgenxl", *COMPILED],
    "compile-3": ["--diffusers", "t2v_zero", *COMPILED],
    # the fused projections where diffusers fuses them (SVD's attentions do not), beside plain fastvid
    "fused": ["--diffusers", "animatediff,modelscope,i2vgenxl", "--variants", "fastvid,fastvid+fused_qkv",
              "--budget", "330"],
}
RESTART_MIN_S = 60  # a new bench process after a lost CUDA context only with this much of the budget left


# What only a GPU checks: every op's tests (tests mirror ops: tests/test_<op>.py, read from the registry), then
# these. Each fastvid op compiles a few dozen kernel variants there, so the tests run on CHECK_WORKERS processes.
CHECK_TESTS = ("tests/test_host_overhead.py", "tests/test_library_registration.py", "tests/test_patch.py",
               "tests/test_diffusers.py", "tests/test_models.py")
CHECK_WORKERS = 8
CHECK_BUDGET_S = 360  # the tests' share of one 10-minute call; host_overhead.py gets HOST_OVERHEAD_S
HOST_OVERHEAD_S = 150
CHECK_TEST_TIMEOUT_S = 120  # per test, where pytest-timeout is installed


def download(dest: Path = WHEELS_DIR) -> int:
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *pins]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def install(wheels: Path = WHEELS_DIR) -> str:
    """Installs the carried wheels offline into a temporary folder; returns that folder."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        sys.exit(f"gpu_kit: no wheels in {wheels}: run 'python benchmarks/gpu_kit.py download' first and copy "
                 f"{wheels.relative_to(ROOT)}")
    site = tempfile.mkdtemp(prefix="fastvid-site-")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--target", site, *map(str, found)])
    return site


def _environment() -> dict:
    """The children's environment: unbuffered, and the carried wheels on PYTHONPATH where diffusers is missing."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if importlib.util.find_spec("diffusers") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [install(), str(ROOT), env.get("PYTHONPATH")]))
    return env


def _with_option(args: list, name: str, value: str) -> list:
    """``args`` with the value after ``name`` replaced."""
    i = args.index(name)
    return args[:i + 1] + [value] + args[i + 2:]


def _pipelines_with_rows(jsonl: Path, skip_lines: int) -> set:
    if not jsonl.is_file():
        return set()
    lines = jsonl.read_text().splitlines()[skip_lines:]
    return {json.loads(line)["pipeline"] for line in lines if line.strip()}


def run(call: str, out: Path, extra) -> int:
    """One planned call of ``fastvid bench --diffusers``. Where a failure leaves the CUDA context unusable (the
    bench exits with EXIT_DEVICE_LOST), a new process runs the pipelines that have no rows yet, within what is
    left of the call's budget; the table and plot are then redrawn from every row."""
    from fastvid.bench_pipelines import EXIT_DEVICE_LOST

    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    plot_option = [] if importlib.util.find_spec("matplotlib") else ["--no-plot"]
    args = list(CALLS[call])
    pending, budget = args[args.index("--diffusers") + 1].split(","), float(args[args.index("--budget") + 1])
    jsonl = out / "pipelines.jsonl"
    rows_before = len(jsonl.read_text().splitlines()) if jsonl.is_file() else 0
    began, restarted = time.monotonic(), False
    with (out / "pipelines.log").open("a") as log:
        while True:
            left = budget - (time.monotonic() - began)
            call_args = _with_option(_with_option(args, "--diffusers", ",".join(pending)), "--budget", f"{left:.0f}")
            cmd = [sys.executable, "-m", "fastvid", "bench", *call_args, "--out", str(out), *plot_option, *extra]
            code = _streamed("fastvid bench", cmd, env, log, None, lambda line: True)
            if code != EXIT_DEVICE_LOST:
                break
            done = _pipelines_with_rows(jsonl, rows_before)
            pending = [name for name in pending if name not in done]
            if not pending or budget - (time.monotonic() - began) < RESTART_MIN_S:
                break
            message = f"gpu_kit: the CUDA context was lost; a new process runs {', '.join(pending)}\n"
            log.write(message)
            sys.stdout.write(message)
            restarted = True
    if restarted:
        plot(out, draw=not plot_option)
    return code


def check_tests() -> list:
    """The test files ``checks`` runs: one per op of the registry, then CHECK_TESTS."""
    from fastvid.registry import OPS

    return [f"tests/test_{name}.py" for name in OPS] + list(CHECK_TESTS)


def _streamed(name: str, cmd, env, log, timeout_s: Optional[float], echo) -> int:
    """Runs ``cmd`` (called ``name`` in messages) in the repository root, every line into ``log`` and those
    ``echo`` picks onto stdout; killed past ``timeout_s`` (None: never), then 124 (what finished stays in the log)."""
    log.write(" ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = []
    timer = threading.Timer(timeout_s, lambda: (killed.append(True), proc.kill())) if timeout_s else None
    if timer is not None:
        timer.start()
    try:
        for line in proc.stdout:
            log.write(line)
            if echo(line):
                sys.stdout.write(line)
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if killed:
        message = f"gpu_kit: {name} stopped after {timeout_s:.0f} s; what finished before is in the log\n"
        log.write(message)
        sys.stdout.write(message)
        return 124
    return code


def checks(out: Path, budget_s: float = CHECK_BUDGET_S) -> int:
    """The GPU's own checks (tests, then host_overhead.py) into ``out``; the worst exit status of the two."""
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    tests = [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider", *check_tests()]
    if importlib.util.find_spec("xdist") is not None:
        tests += ["-n", str(CHECK_WORKERS), "--dist", "loadgroup"]
    if importlib.util.find_spec("pytest_timeout") is not None:  # one hanging test fails alone
        tests += ["--timeout", str(CHECK_TEST_TIMEOUT_S)]
    overhead = [sys.executable, "benchmarks/host_overhead.py", "--out", str(out)]

    def failures_and_summary(line: str) -> bool:  # -v prints "[gw0] [ 4%] PASSED tests/..." per test
        return " FAILED " in line or " ERROR " in line or line.startswith(("=", "FAILED", "ERROR"))

    with (out / "checks.log").open("a") as log:
        codes = [_streamed("the tests", tests, env, log, budget_s, failures_and_summary),
                 _streamed("host_overhead.py", overhead, env, log, HOST_OVERHEAD_S, lambda line: True)]
    return max(codes, key=abs)


def plot(out: Path, draw: bool = True) -> int:
    """pipelines.md (and, with ``draw``, pipelines.png) written again from every row of out/pipelines.jsonl."""
    from fastvid import bench_pipelines

    rows = bench_pipelines.load_rows(out / f"{bench_pipelines.STEM}.jsonl")
    print(", ".join(str(p) for p in bench_pipelines.write_report(rows, out, plot=draw).values()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("download", help="here: pip download the wheels the offline machine lacks into benchmarks/wheels")
    r = sub.add_parser("run", help="there: install the wheels offline and run one call of the benchmark")
    r.add_argument("--call", choices=sorted(CALLS), default="eager")
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("checks", help="there: the kernel tests and host_overhead.py on the GPU, in one call")
    c.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("plot", help="write pipelines.md and pipelines.png from a folder's pipelines.jsonl")
    p.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args(argv)
    if args.command == "download":
        return download()
    if args.command == "run":
        return run(args.call, args.out, extra)
    if args.command == "checks":
        return checks(args.out)
    return plot(args.out)


if __name__ == "__main__":
    sys.exit(main())
