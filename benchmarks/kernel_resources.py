"""Registers, spills and shared memory of every fastvid Triton kernel, compiled for sm_90a without a GPU.

    python benchmarks/kernel_resources.py            # prints the table, writes benchmarks/results/kernel_resources.md
    python benchmarks/kernel_resources.py --quick    # one shape per op, no sweep, no file

Each op's launcher runs for real on the benchmark shapes (benchmarks/shapes.py, bf16), on meta
tensors (no memory, no driver) that say they are CUDA tensors, with an H100's 132 SMs, and each kernel launch is
captured instead of run: the tile sizes, flags and warps are those the launcher chooses. Autotuned
kernels (frame attention) contribute every config of their autotune list. Each distinct launch is
compiled for sm_90a with the JIT's own argument specialisation (ints equal to 1 are constants, ints
divisible by 16 and pointers are marked 16-byte aligned), then ``ptxas -v`` reports registers and
spills. Compiler output only: nothing here was run on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from benchmarks import shapes  # noqa: E402
from fastvid.ops import _launch  # noqa: E402
from fastvid.registry import OPS as REGISTRY  # noqa: E402

H100_SMS = 132
GROUPS = 32
_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1"}


@dataclass
class Launch:
    """One distinct compilation: kernel, its specialised signature and compile options."""
    kernel: object  # the JITFunction
    signature: Dict[str, str]
    constexprs: Dict[str, object]
    aligned: Tuple[str, ...]
    num_warps: int
    num_stages: int
    cases: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def key(self):
        return (self.name, tuple(sorted(self.signature.items())), tuple(sorted(self.constexprs.items())),
                self.aligned, self.num_warps, self.num_stages)

    def config(self) -> str:
        """Tile sizes and flags (the upper-case constexprs), warps, stages."""
        flags = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()) if k.isupper())
        return f"{flags} w{self.num_warps} s{self.num_stages}"


def _specialise(jit_fn, args, kwargs, num_warps, num_stages) -> Launch:
    """The JIT's specialisation of one call's arguments, as a compile signature."""
    bound = dict(zip(jit_fn.arg_names, args))
    bound.update(kwargs)
    signature, constexprs, aligned = {}, {}, []
    for param in jit_fn.params:
        name = param.name
        value = bound[name] if name in bound else param.default
        if param.is_constexpr or value is None or (isinstance(value, int) and not isinstance(value, bool)
                                                   and value == 1):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TYPES[value.dtype]
            aligned.append(name)
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                aligned.append(name)
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{jit_fn.__name__}: argument {name} of type {type(value).__name__}")
    return Launch(jit_fn, signature, constexprs, tuple(aligned), num_warps, num_stages)


class _Recorder:
    """Stands in for a kernel object: ``kernel[grid](*args, **kwargs)`` records the launch(es)."""

    def __init__(self, kernel, sink: List[Launch]):
        self.kernel, self.sink = kernel, sink

    def __getitem__(self, grid):
        return self._record

    def _record(self, *args, **kwargs):
        kernel = self.kernel
        configs = getattr(kernel, "configs", None)
        if configs is None:
            kwargs = dict(kwargs)
            warps, stages = kwargs.pop("num_warps", 4), kwargs.pop("num_stages", 3)
            self.sink.append(_specialise(kernel, args, kwargs, warps, stages))
            return
        for config in configs:  # an autotuner: every config may be picked on some GPU
            self.sink.append(_specialise(kernel.fn, args, {**kwargs, **config.kwargs}, config.num_warps,
                                         config.num_stages))


@contextlib.contextmanager
def _capturing(sink: List[Launch]):
    """Kernel objects replaced by recorders, the SM count fixed, meta tensors seen as CUDA ones."""
    kernels = [spec.kernels() for spec in REGISTRY.values()]
    saved = [(_launch, "sm_count", _launch.sm_count)]
    _launch.sm_count = lambda index: H100_SMS
    for module in kernels:
        for name, obj in list(vars(module).items()):
            if name.endswith("_kernel") and hasattr(obj, "__getitem__"):
                saved.append((module, name, obj))
                setattr(module, name, _Recorder(obj, sink))
    torch.Tensor.is_cuda = property(lambda self: True)  # meta tensors take the launchers' CUDA paths
    try:
        yield
    finally:
        del torch.Tensor.is_cuda
        for module, name, obj in saved:
            setattr(module, name, obj)


def _op(name):
    return REGISTRY[name].module


def _temporal_attention(shape, dtype):
    ops = _op("temporal_attention")
    B, F, N, H, D = shape
    q, k, v = (torch.empty(B, F, N, H, D, dtype=dtype, device="meta") for _ in range(3))
    bias = torch.empty(H, F, F, dtype=dtype, device="meta")
    out, lse = ops.temporal_attention_fwd._init_fn(q, k, v, bias, False, D ** -0.5)
    ops.temporal_attention_bwd._init_fn(out, q, k, v, bias, out, lse, False, D ** -0.5, True)


def _frame_attention(shape, dtype):
    ops = _op("frame_attention")
    B, F, N, H, D = shape
    q, k, v = (torch.empty(B, F, N, H, D, dtype=dtype, device="meta") for _ in range(3))
    table = torch.zeros(F, 2, dtype=torch.int32, device="meta")
    out, lse = ops.frame_attention_fwd._init_fn(q, k, v, table, D ** -0.5)
    ops.frame_attention_bwd._init_fn(out, q, k, v, table, out, lse, D ** -0.5)


def _temporal_conv(shape, dtype):
    ops = _op("temporal_conv")
    B, C, F, H, W = shape
    x = torch.empty(B, C, F, H, W, dtype=dtype, device="meta")
    weight, bias = torch.empty(C, C, 3, dtype=dtype, device="meta"), torch.empty(C, dtype=dtype, device="meta")
    out = ops.temporal_conv_fwd._init_fn(x, weight, bias, x, 1)
    ops.temporal_conv_bwd._init_fn(out, x, weight, 1, True, True, True)


def _group_norm_silu(shape, dtype):
    ops = _op("group_norm_silu")
    B, C, F, H, W = shape
    x = torch.empty(B, C, F, H, W, dtype=dtype, device="meta")
    weight, bias = torch.empty(C, dtype=dtype, device="meta"), torch.empty(C, dtype=dtype, device="meta")
    for per_frame in (False, True):
        y, stats = ops.group_norm_silu_fwd._init_fn(x, weight, bias, GROUPS, 1e-5, per_frame)
        ops.group_norm_silu_bwd._init_fn(y, x, weight, bias, stats, GROUPS, per_frame)


OPS = {name: (globals()[spec.compile_specs], getattr(shapes, spec.benchmark_shapes))
       for name, spec in REGISTRY.items()}
# Temporal attention keeps [BLOCK_N, BLOCK_F, BLOCK_D] fp32 tiles in registers: its launcher's tile
# heuristic is checked over frame counts and head sizes beyond the benchmark shapes too.
SWEEP = {"temporal_attention": (_temporal_attention, {f"F{F}-d{D}": (2, F, 1024, 8, D) for F in (8, 16, 24, 32, 64)
                                                      for D in (40, 64, 72, 128)})}

HISTORY = """## Tuning history

Before (commit 1547437), temporal attention ran 4 warps whatever the tile, and the budget ignored
unaligned head sizes. Spills (bytes stored/loaded) and registers then, from this script:

| case | fwd before | bwd before | fwd after | bwd after |
|---|---|---|---|---|
| F8-d40 | 255 regs, 28/28 | 250 regs | 145 regs | 142 regs |
| F16-d40 | 237 regs | 254 regs | 128 regs | 214 regs |
| F16-d72 (latte) | 236 regs | 253 regs | 128 regs | 232 regs (8 warps) |
| F24-d40 | 255 regs, 8/8 | 255 regs, 64/64 | 142 regs | 233 regs (8 warps) |
| F24-d72 | 247 regs | 255 regs, 112/112 | 150 regs (8 warps) | 255 regs, 60/60 (8 warps) |
| F32-d40 | 244 regs | 255 regs, 32/28 | 119 regs | 235 regs (8 warps) |
| F32-d72 | 220 regs | 255 regs, 88/92 | 127 regs (8 warps) | 255 regs, 52/52 (8 warps) |
| F64-d40 | 236 regs | 255 regs, 1316/1320 | 127 regs (8 warps) | 255 regs, 104/104 (8 warps) |
| F64-d72 | 255 regs, 540/484 | 255 regs, 1868/1592 | 224 regs (8 warps) | 255 regs, 1292/1292 (8 warps) |
| F64-d128 | 243 regs | 255 regs, 588/592 | 122 regs (8 warps) | 235 regs (8 warps) |

Change (fastvid/ops/temporal_attention.py `_tiles`): a tile larger than the budget even at BLOCK_N = 1
gets 8 warps instead of 4 (16 warps cap registers at 128 per thread and spilled more); a head size
that is not a multiple of 16 (unvectorised loads, one 64-bit pointer per element) halves the budget.
Aligned head sizes at the benchmark shapes (F 14/16, d 64) keep their tiles. What remains: the
backward at F 24..64 with d 72 or 40, outside the benchmark shapes.

Frame attention's backward autotune list had no config without spills at BLOCK_D = 128 (Latte's
head_dim 72): dQ spilled 240..444 bytes in all four, dK/dV in three. Added (BLOCK_N 32, BLOCK_M 32,
8 warps, 1 stage): 207 registers for dQ and 184 for dK/dV, no spills (at BLOCK_D = 64 its dQ
spills a little, where the other four do not). The forward's list keeps
spilling members at BLOCK_D = 128 (128x64 and 64x64 with 4 warps); the autotuner times them against
three that do not spill. Effect on speed: not measured (no GPU).
"""


def capture(ops=OPS, dtype=torch.bfloat16, quick=False, table=OPS) -> List[Launch]:
    """The distinct launches of ``ops`` over their benchmark shapes (the first shape only if ``quick``)."""
    distinct: Dict[tuple, Launch] = {}
    for op in ops:
        launch_op, cases = table[op]
        for case, shape in list(cases.items())[:1 if quick else None]:
            sink: List[Launch] = []
            with _capturing(sink):
                launch_op(shape, dtype)
            for launch in sink:
                distinct.setdefault(launch.key(), launch).cases.append(case)
    return list(distinct.values())


def compile_all(launches: List[Launch], usage=True):
    """Compiles each launch for sm_90a; returns rows (launch, shared bytes, ptxas usage or None)."""
    from aot_compile import compile_signature, ptxas_usage

    rows = []
    for launch in launches:
        kernel = compile_signature(launch.kernel, launch.signature, launch.constexprs, launch.aligned,
                                   launch.num_warps, launch.num_stages)
        rows.append((launch, kernel.metadata.shared, ptxas_usage(kernel) if usage else None))
    return rows


def _table(rows) -> List[str]:
    """One line per (kernel, config, result): specialisations with the same result are merged."""
    merged: Dict[tuple, set] = {}
    for launch, shared, (_, regs, stores, loads) in rows:
        merged.setdefault((launch.name, launch.config(), regs, stores, loads, shared), set()).update(launch.cases)
    lines = ["| kernel | config | regs | spill st/ld (B) | smem (KiB) | cases |", "|---|---|---:|---:|---:|---|"]
    for (name, config, regs, stores, loads, shared), cases in merged.items():
        spill = f"**{stores}/{loads}**" if stores or loads else "0/0"
        lines.append(f"| {name} | {config} | {regs} | {spill} | {shared / 1024:.1f} | {', '.join(sorted(cases))} |")
    return lines


def report(rows, sweep_rows, dtype_name: str) -> str:
    version = next((u[0] for _, _, u in rows if u), "?")
    lines = [
        "# Kernel resources (compiler output)",
        "",
        f"Compiled for sm_90a by ptxas {version} (Triton's bundled ptxas), not run: no GPU was used. "
        f"Generated by `python benchmarks/kernel_resources.py`. Launch configs are the ones the launchers choose "
        f"for the benchmark shapes of benchmarks/shapes.py in {dtype_name} (an H100's 132 SMs assumed); "
        "autotuned kernels list every config of their autotune list. Registers are per thread "
        "(65,536 per SM; 255 max); shared memory is Triton's dynamic allocation per program (228 KiB per SM on H100). "
        "A (kernel, config) can take several rows: shapes differ in which integer arguments are 1 or divisible "
        "by 16, and so in the code ptxas sees.",
        "",
        "## Benchmark shapes",
        "",
        *_table(rows),
    ]
    if sweep_rows:
        lines += ["", "## Temporal attention sweep (B 2, N 1024, 8 heads; F x head_dim)", "", *_table(sweep_rows),
                  "", HISTORY]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated ops")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--quick", action="store_true", help="first shape of each op; print only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kernel_resources.md"))
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    dtype = getattr(torch, args.dtype)
    rows = compile_all(capture(args.ops.split(","), dtype, args.quick))
    sweep = [] if args.quick else compile_all(capture(list(SWEEP), dtype, table=SWEEP))
    text = report(rows, sweep, args.dtype)
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
        print(f"# written to {args.out}")


if __name__ == "__main__":
    main()
