"""The diffusers-pipeline benchmark on an offline GPU machine (no package index; docs/pipelines.md).

    python benchmarks/gpu_kit.py download              # here: the wheels that machine lacks -> benchmarks/wheels/
    python benchmarks/gpu_kit.py run --call eager --out "$OUT"     # there: install them offline, run one call
    python benchmarks/gpu_kit.py plot --out DIR        # here: the Markdown table and plot again from DIR/pipelines.jsonl

The kit expects torch, Triton, transformers, accelerate, huggingface_hub, safetensors, pillow, regex,
requests, numpy and matplotlib there, and brings diffusers and importlib_metadata (which diffusers imports): WHEELS,
at the versions installed here (the tested ones), both pure Python. ``run`` installs them with
``pip install --no-index --no-deps --target`` into a temporary folder put on PYTHONPATH, then runs
``python -m fastvid bench --diffusers`` with the options of one of CALLS (each fits one 10-minute call on an
H100: its --budget keeps it inside), writing pipelines.jsonl, pipelines.md, pipelines.png and pipelines.log
(everything printed) to --out.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS_DIR = ROOT / "benchmarks" / "wheels"  # ignored by git: copy it to the offline machine with the tree
WHEELS = ("diffusers", "importlib_metadata")
ALL = "svd,animatediff,modelscope,i2vgenxl,t2v_zero"
COMPILED = ["--variants", "compile,fastvid+compile", "--budget", "540"]
CALLS = {  # one 10-minute device call each: the eager variants of every pipeline, then the compiled ones
    "eager": ["--diffusers", ALL, "--variants", "diffusers,fastvid,captured", "--budget", "330"],
    "compile-1": ["--diffusers", "svd,animatediff", *COMPILED],
    "compile-2": ["--diffusers", "modelscope,i2vgenxl", *COMPILED],
    "compile-3": ["--diffusers", "t2v_zero", *COMPILED],
}


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


def run(call: str, out: Path, extra) -> int:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if importlib.util.find_spec("diffusers") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [install(), str(ROOT), env.get("PYTHONPATH")]))
    plot = [] if importlib.util.find_spec("matplotlib") else ["--no-plot"]
    cmd = [sys.executable, "-m", "fastvid", "bench", *CALLS[call], "--out", str(out), *plot, *extra]
    with (out / "pipelines.log").open("a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


def plot(out: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from fastvid import bench_pipelines

    rows = bench_pipelines.load_rows(out / f"{bench_pipelines.STEM}.jsonl")
    print(", ".join(str(p) for p in bench_pipelines.write_report(rows, out).values()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("download", help="here: pip download the wheels the offline machine lacks into benchmarks/wheels")
    r = sub.add_parser("run", help="there: install the wheels offline and run one call of the benchmark")
    r.add_argument("--call", choices=sorted(CALLS), default="eager")
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("plot", help="write pipelines.md and pipelines.png from a folder's pipelines.jsonl")
    p.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args(argv)
    if args.command == "download":
        return download()
    if args.command == "run":
        return run(args.call, args.out, extra)
    return plot(args.out)


if __name__ == "__main__":
    sys.exit(main())
