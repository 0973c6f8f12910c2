"""One benchmark harness for every op.

- ``environment()``, ``time_ms()``, ``peak_memory_bytes()``: ``fastvid.timing``'s, which ``fastvid bench``
  uses too: what the numbers were measured on (device, versions, commit, date), median time, peak memory.
- ``measure_ceilings()``: the card's device-copy bandwidth and bf16 matmul rate, measured in
  the same run, so each result can be given as a fraction of the roofline.
- ``bench()``: median time over rotating input sets (no cache-resident timing), forward,
  backward or forward+backward, peak memory, TFLOP/s and GB/s from explicit formulas, and the
  fraction of the roofline: max(FLOPs / matmul rate, bytes / copy bandwidth) / measured time.
- ``write_rows()``: appends rows to ``benchmarks/results/<name>.jsonl``; ``plot.py`` draws them.

On CPU every row says device "cpu": those timings are for checking the harness, not speed claims.
"""
from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from fastvid import timing
from fastvid.timing import peak_memory_bytes, time_ms  # noqa: F401 (the benchmarks' names)

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("fwd", "bwd", "fwd+bwd")

# One stamp per process: run_suite calls the bench scripts once per case, and they make one run.
environment = functools.lru_cache(maxsize=None)(timing.environment)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parser(doc: str, *, modes: Optional[str] = "fwd,bwd,fwd+bwd",
           no_compile: Optional[str] = "skip the torch.compile peers") -> argparse.ArgumentParser:
    """The options every benchmark takes: --device, --dtype, --out, and unless None --modes (its
    default) and --no-compile (its help). Add a script's own options to the returned parser."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=default_device())
    p.add_argument("--dtype", default=None, help="bfloat16 on CUDA (unless the script says), float32 on CPU")
    if modes is not None:
        p.add_argument("--modes", default=modes, help=f"comma-separated subset of {','.join(MODES)}")
    if no_compile is not None:
        p.add_argument("--no-compile", action="store_true", help=no_compile)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--shapes", default=None, help="comma-separated case names to run (default: all)")
    return p


def select(cases: Dict[str, object], names: Optional[str]) -> Dict[str, object]:
    """The cases named in ``names`` (comma-separated; None: all), in their table's order."""
    if names is None:
        return cases
    wanted = [n for n in names.split(",") if n]
    unknown = set(wanted) - set(cases)
    if unknown:
        raise ValueError(f"--shapes: unknown case(s) {sorted(unknown)}; choose from {','.join(cases)}")
    return {name: shape for name, shape in cases.items() if name in wanted}


def parse(p: argparse.ArgumentParser, argv=None, cuda_dtype: str = "bfloat16") -> argparse.Namespace:
    """``p.parse_args(argv)`` with --dtype made a torch.dtype and --out a Path."""
    args = p.parse_args(argv)
    args.dtype = getattr(torch, args.dtype or (cuda_dtype if args.device == "cuda" else "float32"))
    args.out = Path(args.out) if args.out else RESULTS
    return args


def announce(op: str, env: Dict[str, str], ceilings: Dict[str, Optional[float]], what: str = "") -> None:
    """The header a benchmark prints: where it runs, and on CPU that it is no speed measurement."""
    print(f"# {op} on {env['gpu']} (torch {env['torch']}, triton {env['triton']}, commit {env['commit']})"
          + ("" if env["device"] == "cuda" else f" -- CPU run{what}: harness check only, not a speed measurement"))
    if ceilings.get("copy_gbps"):
        print(f"# measured ceilings: copy {ceilings['copy_gbps']:.0f} GB/s, "
              f"bf16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s")


def finish(op: str, rows: List[Dict[str, object]], out_dir: Path) -> Path:
    """Prints the rows and appends them to ``out_dir/<op>.jsonl``."""
    print_rows(rows)
    path = write_rows(op, rows, out_dir)
    print(f"# {len(rows)} rows appended to {path}")
    return path


@functools.lru_cache(maxsize=None)  # once per process: run_suite calls the bench scripts once per case
def measure_ceilings(device: str) -> Dict[str, Optional[float]]:
    """Device-copy GB/s and bf16 matmul TFLOP/s measured now (None on CPU)."""
    if device != "cuda":
        return {"copy_gbps": None, "matmul_tflops": None}
    src = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    copy_gbps = 2 * src.numel() / ms / 1e6
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    ms = time_ms(lambda: a @ b, device)
    return {"copy_gbps": copy_gbps, "matmul_tflops": 2 * 8192**3 / ms / 1e9}


@dataclass
class Workload:
    """A provider's callable over one input set. ``run(inputs)`` returns the output tensor, or a tuple of
    them (for backward modes differentiable w.r.t. the inputs that require grad; every output gets a
    gradient of ones)."""
    provider: str
    run: Callable[..., torch.Tensor]
    note: str = ""


def _step(mode: str, workload: Workload, input_sets: Sequence[Sequence[torch.Tensor]]) -> Callable[[], object]:
    """The timed callable for ``mode``; each call takes the next input set (rotation)."""
    counter = {"i": 0}

    def next_index():
        counter["i"] += 1
        return counter["i"] % len(input_sets)

    if mode == "fwd":
        def step():
            with torch.no_grad():
                return workload.run(*input_sets[next_index()])
        return step
    if mode == "fwd+bwd":
        def step():
            outs = outputs(workload.run(*input_sets[next_index()]))
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return step
    # Backward alone: the graphs are built once, outside the timed region.
    results = [outputs(workload.run(*inputs)) for inputs in input_sets]
    grads = [[torch.ones_like(o) for o in outs] for outs in results]

    def step():
        i = next_index()
        torch.autograd.backward(results[i], grads[i], retain_graph=True)
    return step


def outputs(out) -> tuple:
    """A workload's output(s) as a tuple."""
    return out if isinstance(out, tuple) else (out,)


def bench(*, op: str, shape: Dict[str, int], dtype: torch.dtype, mode: str, workload: Workload,
          input_sets: Sequence[Sequence[torch.Tensor]], device: str, env: Dict[str, str],
          ceilings: Dict[str, Optional[float]], flops: Optional[float] = None,
          bytes_moved: Optional[float] = None) -> Dict[str, object]:
    """Times ``workload`` in ``mode``, rotating over ``input_sets``; returns one result row.

    ``flops`` / ``bytes_moved`` are for the timed mode (the caller's explicit formula)."""
    assert mode in MODES, mode
    row: Dict[str, object] = dict(env)
    row.update(op=op, shape=shape, dtype=str(dtype).replace("torch.", ""), mode=mode, provider=workload.provider,
               note=workload.note)
    try:
        step = _step(mode, workload, input_sets)
        ms = time_ms(step, device)
        peak = peak_memory_bytes(step, device)
    except Exception as exc:  # a peer that cannot run this case is reported, not dropped
        row.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return row
    row.update(status="ok", ms=ms, peak_mem_mb=None if peak is None else peak / 2**20)
    floors = []  # the roofline: the larger of compute time at the matmul rate and traffic time at copy speed
    if flops is not None:
        row["tflops"] = flops / ms / 1e9
        if ceilings.get("matmul_tflops"):
            floors.append(flops / ceilings["matmul_tflops"] / 1e9)
    if bytes_moved is not None:
        row["gbps"] = bytes_moved / ms / 1e6
        if ceilings.get("copy_gbps"):
            floors.append(bytes_moved / ceilings["copy_gbps"] / 1e6)
    if floors:
        row["roofline_fraction"] = max(floors) / ms
    return row


def missing(*, op: str, shape: Dict[str, int], dtype: torch.dtype, mode: str, provider: str, reason: str,
            env: Dict[str, str]) -> Dict[str, object]:
    """A row for a peer that is not installed or cannot take the case."""
    row: Dict[str, object] = dict(env)
    row.update(op=op, shape=shape, dtype=str(dtype).replace("torch.", ""), mode=mode, provider=provider,
               status="missing", error=reason)
    return row


def write_rows(name: str, rows: List[Dict[str, object]], out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.jsonl"
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def print_rows(rows: List[Dict[str, object]]) -> None:
    header = f"{'provider':<24}{'mode':<9}{'shape':<44}{'ms':>10}{'TFLOP/s':>9}{'GB/s':>9}{'roof':>7}{'MiB':>9}"
    print(header)
    for r in rows:
        shape = ",".join(f"{k}={v}" for k, v in r["shape"].items())
        if r.get("status") != "ok":
            print(f"{r['provider']:<24}{r['mode']:<9}{shape:<44}  {r.get('status')}: {r.get('error', '')}")
            continue
        fmt = lambda key, spec: format(r[key], spec) if r.get(key) is not None else "-"  # noqa: E731
        print(f"{r['provider']:<24}{r['mode']:<9}{shape:<44}{fmt('ms', '10.3f')}{fmt('tflops', '9.1f'):>9}"
              f"{fmt('gbps', '9.0f'):>9}{fmt('roofline_fraction', '7.2f'):>7}{fmt('peak_mem_mb', '9.1f'):>9}")
