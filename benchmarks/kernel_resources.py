"""Machine code of every fastvid Triton kernel, compiled for sm_90a without a GPU, and a first-order
model of its time at the benchmark shapes: the static sm_90a report (a model; nothing here ran on a GPU).

    python benchmarks/kernel_resources.py                # writes benchmarks/results/kernel_resources.md
    python benchmarks/kernel_resources.py --ops temporal_attention --shapes latte-16x16-h16,2x16x1024x8x40
    python benchmarks/kernel_resources.py --quick        # first shape of each op; print only
    python benchmarks/kernel_resources.py --json --ops frame_attention --shapes 1x8x1024x8x72

    from benchmarks import kernel_resources
    kernel_resources.analyse("temporal_attention", "latte-16x16-h16")   # per kernel + per direction dicts

Launches: each op's launcher runs for real on the benchmark shapes (fastvid.registry, bf16), on
meta tensors (no memory, no driver) that say they are CUDA tensors, with an H100's 132 SMs, and each
kernel launch is captured instead of run: the tile sizes, flags, warps and grid are those the launcher
chooses. Autotuned kernels (frame attention) contribute every config of their autotune list. Each
distinct launch is compiled for sm_90a with the JIT's own argument specialisation (ints equal to 1
are constants, ints divisible by 16 and pointers are marked 16-byte aligned) by the Triton in use, and
the real cubin is read (benchmarks/sass.py): registers, stack, shared memory (cuobjdump), spills
(local-memory instructions), loops, instruction mix, tensor-core instructions, global load/store
widths, cp.async and TMA (nvdisasm).

The model (MODEL), per op, shape and direction (fwd: the forward kernels; bwd: the backward ones):

    memory time  = bytes / 3.0 TB/s           bytes: the op's unavoidable traffic (WORK)
    tensor time  = FLOPs / 800 TFLOP/s        FLOPs: the op's useful math (WORK)
    issue floor  = sum over its kernels of  programs x warps x (hot-loop instructions x trips
                                                                + the kernel's other instructions)
                   / (132 SMs x 4 schedulers x 1 warp instruction per cycle x 1.755 GHz)
    predicted    = max(memory time, tensor time, issue floor)
    roofline fraction = max(memory time, tensor time) / predicted

The hot loop is the innermost loop with the most instructions; trips is its iterations per program
(TRIPS: an expression over the kernel's own arguments; a kernel missing there is counted once per
program, a lower bound). Each instruction of the rest of the kernel is counted once per program. Of an
autotuned kernel's configs the model takes the one with the lowest issue floor (what the autotuner
would pick if the model were right). Left out: latency (dependent loads, barriers, pipeline
depth), occupancy and waves, L2 traffic beyond the unavoidable bytes, divergence and predication
(a predicated-off instruction is still issued), load imbalance across programs. It is a first-order
model, a floor, not a prediction of measured time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from benchmarks import sass  # noqa: E402
from fastvid.ops import _launch  # noqa: E402
from fastvid.registry import OPS as REGISTRY  # noqa: E402

H100_SMS = 132
GROUPS = 32
REPORT = ROOT / "benchmarks" / "results" / "kernel_resources.md"
MODEL = dict(copy_bytes_per_s=3.0e12, tensor_flops_per_s=800e12, sms=H100_SMS, schedulers=4, ipc=1.0,
             clock_hz=1.755e9)
_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1"}
# Hot-loop iterations per program: an expression over the kernel's arguments and constexprs (cdiv available;
# table_width: frame attention's frames per query frame, for kernels that do not take it); the mean over the
# programs where they differ. tests/test_trip_counts.py holds every entry to the loops the kernels run.
TRIPS = {
    "temporal_attention_bwd_kernel": "cdiv(n_blocks, n_chunks)",  # the forward has no loop
    "temporal_attention_bwd_key_blocks_kernel": "cdiv(num_tokens, n_chunks) * cdiv(num_frames, BLOCK_J)",
    "temporal_attention_bias_grad_kernel": "batch * n_chunks",
    "frame_attention_fwd_kernel": "table_width * cdiv(num_k, BLOCK_M)",
    "frame_attention_bwd_dq_kernel": "table_width * cdiv(num_k, BLOCK_M)",
    # dK/dV: per key frame, the query frames listing it (table_width on average) x query tiles.
    "frame_attention_bwd_dkv_kernel": "table_width * cdiv(num_q, BLOCK_N)",
    "temporal_conv_fwd_kernel": "taps * cdiv(c_in, BLOCK_CI)",
    "temporal_conv_dw_kernel": "batch * frames_per_split * cdiv(pixels, BLOCK_P)",
    "temporal_conv_grad_sum_kernel": "n_split",
    "group_norm_stats_kernel": "cdiv(chunk_pixels, BLOCK_P)",
    "group_norm_silu_group_kernel": "2 * cdiv(pixels, BLOCK_P)",  # two passes over the group's pixels
    "group_norm_silu_apply_kernel": "cdiv(n_chunks * (1 if PER_FRAME else frames), BLOCK_R)",
    "group_norm_silu_bwd_reduce_kernel": "cdiv(chunk_pixels, BLOCK_P)",
    # n_stats programs sum a statistic's rows, the others (one per BLOCK_C channels) every row.
    "group_norm_silu_bwd_coef_kernel": "(n_stats * rows_per_stat + cdiv(channels, BLOCK_C) * total_rows)"
                                       " / (n_stats + cdiv(channels, BLOCK_C))",
    "geglu_linear_fwd_kernel": "cdiv(K, BLOCK_K)",
    "linear_fwd_kernel": "cdiv(K, BLOCK_K)",
    "add_layer_norm_bwd_kernel": "cdiv(rows_per_program, BLOCK_M)",
}


@dataclass
class Use:
    """One use of a compiled launch: which case and direction, its grid size and integer arguments;
    ``call`` numbers the launcher calls (an autotuned call's configs share one)."""
    case: str
    variant: object
    direction: str
    call: int
    programs: int
    ints: Dict[str, int]


@dataclass
class Launch:
    """One distinct compilation: kernel, its specialised signature and compile options."""
    kernel: object  # the JITFunction
    signature: Dict[str, str]
    constexprs: Dict[str, object]
    aligned: Tuple[str, ...]
    num_warps: int
    num_stages: int
    uses: List[Use] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.kernel.__name__

    @property
    def cases(self) -> List[str]:
        return list(dict.fromkeys(use.case for use in self.uses))

    def key(self):
        return (self.name, tuple(sorted(self.signature.items())), tuple(sorted(self.constexprs.items())),
                self.aligned, self.num_warps, self.num_stages)

    def config(self) -> str:
        """Tile sizes and flags (the upper-case constexprs), warps, stages."""
        flags = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()) if k.isupper())
        return f"{flags} w{self.num_warps} s{self.num_stages}"


def _specialise(jit_fn, args, kwargs, num_warps, num_stages) -> Tuple[Launch, Dict[str, int]]:
    """The JIT's specialisation of one call's arguments, as a compile signature; and the call's ints."""
    bound = dict(zip(jit_fn.arg_names, args))
    bound.update(kwargs)
    signature, constexprs, aligned, ints = {}, {}, [], {}
    for param in jit_fn.params:
        name = param.name
        value = bound[name] if name in bound else param.default
        if isinstance(value, int) and not isinstance(value, bool):
            ints[name] = value
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
    return Launch(jit_fn, signature, constexprs, tuple(aligned), num_warps, num_stages), ints


@dataclass
class _Captured:
    launch: Launch
    use: Use


_STATE = {"case": "", "variant": None, "direction": "fwd", "calls": 0}


class _Recorder:
    """Stands in for a kernel object: ``kernel[grid](*args, **kwargs)`` records the launch(es)."""

    def __init__(self, kernel, sink: List[_Captured]):
        self.kernel, self.sink = kernel, sink

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self._record(grid, args, kwargs)

    def run(self, *args, grid, warmup=False, **kwargs):  # what kernel[grid](...) calls; fastvid's Launch calls it
        self._record(grid, args, kwargs)

    def _add(self, jit_fn, grid, args, kwargs, warps, stages, call):
        launch, ints = _specialise(jit_fn, args, kwargs, warps, stages)
        size = grid({**ints, **kwargs}) if callable(grid) else grid
        use = Use(_STATE["case"], _STATE["variant"], _STATE["direction"], call, math.prod(size), ints)
        self.sink.append(_Captured(launch, use))

    def _record(self, grid, args, kwargs):
        _STATE["calls"] += 1
        kernel = self.kernel
        configs = getattr(kernel, "configs", None)
        if configs is None:
            kwargs = dict(kwargs)
            warps, stages = kwargs.pop("num_warps", 4), kwargs.pop("num_stages", 3)
            self._add(kernel, grid, args, kwargs, warps, stages, _STATE["calls"])
            return
        prune = getattr(kernel, "early_config_prune", None)
        if prune:  # the configs the autotuner's own pruning keeps, called as Autotuner.prune_configs does
            configs = prune(configs, dict(zip(kernel.arg_names, args)), **kwargs)
        for config in configs:  # an autotuner: every config it keeps may be picked on some GPU
            self._add(kernel.fn, grid, args, {**kwargs, **config.kwargs}, config.num_warps, config.num_stages,
                      _STATE["calls"])


@contextlib.contextmanager
def _direction(name):
    _STATE["direction"] = name
    yield


@contextlib.contextmanager
def _capturing(sink: List[_Captured]):
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


def _temporal_attention(shape, dtype, variant=None):
    ops = _op("temporal_attention")
    B, F, N, H, D = shape
    q, k, v = (torch.empty(B, F, N, H, D, dtype=dtype, device="meta") for _ in range(3))
    bias = torch.empty(H, F, F, dtype=dtype, device="meta")
    with _direction("fwd"):
        out, lse = ops.temporal_attention_fwd._init_fn(q, k, v, bias, False, D ** -0.5)
    with _direction("bwd"):
        ops.temporal_attention_bwd._init_fn(out, q, k, v, bias, out, lse, False, D ** -0.5, True)


def _table_width(frames, num_frames) -> int:
    """Frames per query frame in frame attention's table."""
    return num_frames if frames == "all" else 2 if frames == "sparse_causal" else 1


def _frame_attention(shape, dtype, variant="sparse_causal"):
    ops = _op("frame_attention")
    B, F, N, H, D = shape
    q, k, v = (torch.empty(B, F, N, H, D, dtype=dtype, device="meta") for _ in range(3))
    table = torch.zeros(F, _table_width(variant, F), dtype=torch.int32, device="meta")
    with _direction("fwd"):
        out, lse = ops.frame_attention_fwd._init_fn(q, k, v, table, D ** -0.5)
    with _direction("bwd"):
        ops.frame_attention_bwd._init_fn(out, q, k, v, table, out, lse, D ** -0.5)


def _temporal_conv(shape, dtype, variant=None):
    ops = _op("temporal_conv")
    B, C, F, H, W = shape
    x = torch.empty(B, C, F, H, W, dtype=dtype, device="meta")
    weight, bias = torch.empty(C, C, 3, dtype=dtype, device="meta"), torch.empty(C, dtype=dtype, device="meta")
    with _direction("fwd"):
        out = ops.temporal_conv_fwd._init_fn(x, weight, bias, x, 1)
    with _direction("bwd"):
        ops.temporal_conv_bwd._init_fn(out, x, weight, 1, True, True, True)


def _group_norm_silu(shape, dtype, variant=False):
    """``variant``: per_frame, or "frames": the shape's frames for a guided pair (2 * B * F) as a spatial ResNet
    passes them, (N, C, H, W) images (the one-launch forward), or "channels_last": statistics over all frames of
    x laid out channels innermost (channels_last_3d; not in the report's VARIANTS)."""
    ops = _op("group_norm_silu")
    B, C, F, H, W = shape
    x = torch.empty(B, C, F, H, W, dtype=dtype, device="meta")
    if variant == "frames":
        x, variant = torch.empty(2 * B * F, C, 1, H, W, dtype=dtype, device="meta"), True
    elif variant == "channels_last":
        x, variant = x.contiguous(memory_format=torch.channels_last_3d), False
    weight, bias = torch.empty(C, dtype=dtype, device="meta"), torch.empty(C, dtype=dtype, device="meta")
    with _direction("fwd"):
        y, stats = ops.group_norm_silu_fwd._init_fn(x, weight, bias, GROUPS, 1e-5, variant)
    with _direction("bwd"):
        ops.group_norm_silu_bwd._init_fn(y, x, weight, bias, stats, GROUPS, variant)


def _add_layer_norm(shape, dtype, variant=None):
    ops = _op("add_layer_norm")
    B, N, C = shape
    x = torch.empty(B, N, C, dtype=dtype, device="meta")
    weight, bias = torch.empty(C, dtype=dtype, device="meta"), torch.empty(C, dtype=dtype, device="meta")
    with _direction("fwd"):
        total, _, stats = ops.add_layer_norm_fwd._init_fn(x, x, weight, bias, 1e-5, None)
    with _direction("bwd"):
        ops.add_layer_norm_bwd._init_fn(total, total, total, weight, stats, True)


def _alpha_blend(shape, dtype, variant=None):
    ops = _op("alpha_blend")
    B, C, F, H, W = shape
    # SVD's frame-major views of the spatial and temporal outputs; alpha made in the kernel from the mix factor
    # and the (B, F) image-only indicator, as the patched AlphaBlender runs it ("learned_with_images")
    xs, xt = (torch.empty(B, F, C, H, W, dtype=dtype, device="meta").permute(0, 2, 1, 3, 4) for _ in range(2))
    mix, indicator = torch.empty(1, dtype=dtype, device="meta"), torch.empty(B, F, dtype=dtype, device="meta")
    args = (mix, indicator, "learned_with_images", False)
    with _direction("fwd"):
        out = ops.alpha_blend_fwd._init_fn(xs, xt, *args)
    with _direction("bwd"):
        ops.alpha_blend_bwd._init_fn(out, xs, xt, *args)


def _geglu(shape, dtype, variant="none"):
    ops = _op("geglu")
    rows, tokens, inner = shape
    proj_out = torch.empty(rows, tokens, 2 * inner, dtype=dtype, device="meta")
    with _direction("fwd"):
        out = ops.geglu_fwd._init_fn(proj_out, variant)
    with _direction("bwd"):
        ops.geglu_bwd._init_fn(out, proj_out, variant)


def _geglu_linear(shape, dtype, variant=None):
    """(B * F, N, C): x (B * F, N, C) through a (2 * 4C, C) weight with bias (diffusers' GEGLU). The
    backward is torch matmuls around GEGLU's backward kernel (counted here as this op's)."""
    ops = _op("geglu_linear")
    rows, tokens, channels = shape
    x = torch.empty(rows, tokens, channels, dtype=dtype, device="meta")
    weight = torch.empty(8 * channels, channels, dtype=dtype, device="meta")
    bias = torch.empty(8 * channels, dtype=dtype, device="meta")
    with _direction("fwd"):
        out = ops.geglu_linear_fwd._init_fn(x, weight, bias, "none")
    with _direction("bwd"):
        ops.geglu_linear_bwd._init_fn(out, x, weight, bias, "none")


def _linear(shape, dtype, variant="proj_out"):
    """(B * F, N, C) tokens in one of bench_linear's layouts (proj_in: x an NCHW view; proj_out: the residual
    one; ff_out: 4C -> C plus a contiguous residual). The backward is torch matmuls only (no Triton kernel)."""
    from benchmarks import bench_linear

    x, weight, bias, *residual = bench_linear.inputs(shape, dtype, "meta", variant)
    with _direction("fwd"):
        _op("linear").linear_fwd._init_fn(x, weight, bias, residual[0] if residual else None)


OPS = {name: (globals()[spec.compile_specs], spec.benchmark_shapes)
       for name, spec in REGISTRY.items()}
# The variants of an op the model reports apart (frame attention: frames mode; GroupNorm: per_frame, and the
# frames of a guided pair as images; GEGLU: the GELU approximation); others: (None,).
VARIANTS = {"frame_attention": ("first", "sparse_causal"), "group_norm_silu": (False, True, "frames"),
            "geglu": ("none", "tanh"),
            "linear": ("proj_in", "proj_out", "ff_out")}
# The field of a GPU row's shape that names the variant the model reports apart (the suite times every one).
VARIANT_FIELDS = {"frame_attention": "frames", "linear": "layout"}
# Temporal attention keeps [BLOCK_N, BLOCK_F, BLOCK_D] fp32 tiles in registers: its launcher's tile
# heuristic is checked over frame counts and head sizes beyond the benchmark shapes too.
SWEEP = {"temporal_attention": (_temporal_attention, {f"F{F}-d{D}": (2, F, 1024, 8, D) for F in (8, 16, 24, 32, 64)
                                                      for D in (40, 64, 72, 128)})}

TRITON_36 = """## Triton 3.6

The committed GPU runs used Triton 3.6 (ptxas 12.8), whose cubins differ from these (Triton 3.9, ptxas 13.4). Checked
by hand in a second venv (torch 2.13 CPU, triton 3.6.0: docs/benchmarks.md, "Kernel machine code without a GPU") with
tests/test_machine_code.py, tests/test_aot_compile_all.py and this script (`--out`), last on 2026-12-07: every launch of
this report, of the sweep below and of tests/test_machine_code.py's cases, and the flag variants the report does not
capture (GroupNorm with silu=False, with an add of (B, C, F) or (B, C, 1); the temporal attention forward without
log-sum-exp, causal or not), compiled under both and compared launch by launch (289 distinct compilations).

- Every kernel compiles under 3.6, the GroupNorm apply kernel's `tl.gather` included.
- Spills: none under either in any config a launcher can pick, except the temporal attention backward past 32
  frames with head_dim 129..256 (F 64 x head_dim 160: 256/256 bytes under 3.6, 520 under 3.9), past 64 frames not
  a multiple of 16 with head_dim 65..128 (8 bytes under 3.9, 44 under 3.6), under 3.9 at F 33..47 with head_dim
  65..128 (48 bytes, outside the key-block loop) and under 3.6 at F 128 with head_dim 65..128 (56 bytes), and
  odd head sizes without 16-byte vectors: strict xfails where tests/test_machine_code.py sweeps them. Past 16
  frames that backward loops over key-frame blocks of 16 (2026-12-08; before, holding whole F x head_dim tiles,
  it spilled 20 bytes at F 24 x head_dim 72 under 3.9, about 400 at F 33..64 x head_dim 72..128 and 900 to
  4,200 past 64 frames: the table in docs/benchmarks.md). The two
  3.6-only spills found on 2026-11-27 (temporal attention backward at F 9..16 x head_dim 65..128, frame attention
  dK/dV 32 x 32 on 4 warps above 96 columns) were fixed then in the launchers (tile choice, a pruned config).
- Same under both, launch by launch: tensor-core instructions in the hot loop (or, in a kernel without a loop, in the
  kernel) and their counts, except the temporal attention backward (e.g. Latte's, 4 positions on 8 warps: 238
  registers and 80 HMMA per warp and loop step under 3.6; 144 and 40 under 3.9); global load and store widths (no
  8/16-bit loads in loops; GEGLU 128-bit only); cp.async in the GEMMs' K loops (linear, geglu_linear).
- What differs in the new and changed kernels: registers, shared memory and instruction counts. linear: 118..200
  registers under 3.6, 124..204 under 3.9 (never more under 3.6). geglu_linear, geglu, alpha_blend forward: within 2
  registers; alpha_blend backward 92 (3.9: 64; alpha made in the kernel, SVD's learned_with_images blend).
  add_layer_norm at 512 channels: forward 40..43 registers and 1 KiB shared (3.9: 53, 2 KiB), backward hot loop 660
  instructions and 4 KiB (3.9: 597, 2 KiB). GroupNorm: the apply kernel has 32..61 registers under both, and with per-frame statistics up to 256 bytes of shared memory per program under
  3.6 (3.9: at most 8); the backward's reduce kernel 96..168 registers (3.9: 102..168), its hot loop 5 instructions
  shorter to 32 longer under 3.6. The fixed-order sum (temporal conv, add_layer_norm's backward) issues 20 128-bit
  loads in its loops under 3.6, 12 under 3.9, around the same 63-instruction hot loop. The temporal attention
  forward, with or without log-sum-exp: 86..128 registers under both (per config 30 fewer to 24 more under 3.6).
"""

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


def work(op, shape, variant, direction, element_size=2) -> Tuple[float, float]:
    """(bytes, FLOPs) the op cannot avoid in ``direction``: the formulas of benchmarks/bench_<op>.py."""
    if op == "temporal_attention":
        B, F, N, H, D = shape
        elems = B * F * N * H * D
        flops = 4 * B * N * H * F * F * D
        return (4 if direction == "fwd" else 8) * elems * element_size, flops * (1 if direction == "fwd" else 2.5)
    if op == "frame_attention":
        B, F, N, H, D = shape
        io = 4 * B * F * N * H * D * element_size
        flops = 4 * B * H * F * N * _table_width(variant, F) * N * D
        return io * (1 if direction == "fwd" else 2), flops * (1 if direction == "fwd" else 2.5)
    if op == "add_layer_norm":  # 4 tensors of (B, N, C) each way (bench_add_layer_norm.py)
        return 4 * math.prod(shape) * element_size, 0.0
    if op == "geglu":  # fwd reads (rows, 2I) and writes (rows, I); bwd reads dY and P, writes dP: 3 and 5 x rows * I
        rows, tokens, inner = shape
        return rows * tokens * inner * element_size * (3 if direction == "fwd" else 5), 0.0
    if op == "geglu_linear":  # fwd: x, W, b read, (M, 4C) written; bwd: only the GEGLU backward kernel is Triton
        rows, tokens, channels = shape
        m, inner = rows * tokens, 4 * channels
        if direction == "fwd":
            return (m * channels + 2 * inner * channels + m * inner) * element_size, 2.0 * m * channels * 2 * inner
        return m * inner * element_size * 5, 0.0
    if op == "linear":  # bench_linear.describe's formula
        from benchmarks import bench_linear

        _, flops, nbytes = bench_linear.describe(("", (*shape, variant)), direction, element_size)
        return nbytes, flops
    B, C, F, H, W = shape
    elems = B * C * F * H * W * (2 if (op, variant) == ("group_norm_silu", "frames") else 1)  # a guided pair
    if op == "alpha_blend":  # forward reads x_spatial, x_temporal, writes out; backward reads 3, writes 2
        return elems * element_size * (3 if direction == "fwd" else 5), 0.0
    flops = 2 * B * C * C * 3 * F * H * W if op == "temporal_conv" else 0.0
    return elems * element_size * (2 if direction == "fwd" else 3), flops * (1 if direction == "fwd" else 2)


def capture(ops=OPS, dtype=torch.bfloat16, quick=False, table=OPS, variants=None) -> List[Launch]:
    """The distinct launches of ``ops`` over their cases (the first case only if ``quick``) and variants
    (default VARIANTS)."""
    distinct: Dict[tuple, Launch] = {}
    for op in ops:
        launch_op, cases = table[op]
        for case, shape in list(cases.items())[:1 if quick else None]:
            for variant in (variants or VARIANTS).get(op, (None,)):
                sink: List[_Captured] = []
                _STATE.update(case=case, variant=variant)
                with _capturing(sink):
                    launch_op(shape, dtype, variant)
                for captured in sink:
                    distinct.setdefault(captured.launch.key(), captured.launch).uses.append(captured.use)
    return list(distinct.values())


@dataclass
class MachineCode:
    """What the cubin of one launch holds."""
    regs: int
    stack: int
    shared: int
    spill_stores: int
    spill_loads: int
    instructions: int
    loops: List[sass.LoopStats]  # every loop, innermost ones first
    innermost: List[sass.LoopStats]
    hot: Optional[sass.LoopStats]
    in_loops: sass.LoopStats  # all instructions inside any loop
    ptxas: str
    whole: Optional[sass.LoopStats] = None  # the whole kernel's mix (its hot path when it has no loop)

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


_CODE: Dict[tuple, MachineCode] = {}  # per process; Triton's own cache keeps the cubins across runs


def machine_code(launch: Launch) -> MachineCode:
    """Compiles ``launch`` for sm_90a (cached) and reads its cubin."""
    if launch.key() not in _CODE:
        from aot_compile import compile_signature
        from triton.backends.nvidia.compiler import get_ptxas

        kernel = compile_signature(launch.kernel, launch.signature, launch.constexprs, launch.aligned,
                                   launch.num_warps, launch.num_stages)
        cubin = kernel.asm["cubin"]
        usage = sass.resources(cubin)
        code = sass.disassemble(cubin)
        found = sass.loops(code)
        inner = [sass.LoopStats.of(code[lp.start:lp.end + 1]) for lp in found if lp.innermost]
        outer = [sass.LoopStats.of(code[lp.start:lp.end + 1]) for lp in found if not lp.innermost]
        covered = sorted({i for lp in found for i in range(lp.start, lp.end + 1)})
        stores, loads = sass.spill_bytes(code)
        whole = sass.LoopStats.of(code)
        _CODE[launch.key()] = MachineCode(
            regs=usage["regs"], stack=usage["stack"], shared=kernel.metadata.shared, spill_stores=stores,
            spill_loads=loads, instructions=whole.instructions, whole=whole, loops=inner + outer,
            innermost=inner, hot=max(inner, key=lambda lp: lp.instructions, default=None),
            in_loops=sass.LoopStats.of([code[i] for i in covered]), ptxas=get_ptxas(90).version)
    return _CODE[launch.key()]


def compile_all(launches: List[Launch]) -> List[Tuple[Launch, MachineCode]]:
    return [(launch, machine_code(launch)) for launch in launches]


def trip_count(kernel: str, names: Dict[str, object]) -> Optional[float]:
    """Hot-loop iterations per program of ``kernel`` (its TRIPS expression over ``names``: the launch's integer
    arguments and constexprs by name), or None for a kernel without an entry."""
    expression = TRIPS.get(kernel)
    if expression is None:
        return None
    names = {k: v for k, v in names.items() if isinstance(v, (int, float))}
    return eval(expression, {"cdiv": lambda a, b: -(-a // b), "__builtins__": {}}, names)  # noqa: S307


def _trips(launch: Launch, use: Use) -> Optional[float]:
    names = {"table_width": _table_width(use.variant, use.ints.get("num_frames", 1))}  # frame attention
    names.update(use.ints)
    names.update(launch.constexprs)
    return trip_count(launch.name, names)


def issue_seconds(launch: Launch, code: MachineCode, use: Use) -> Tuple[float, Optional[float]]:
    """(issue floor in seconds, hot-loop trips per program or None) of one launch: see MODEL."""
    trips = _trips(launch, use)
    hot = code.hot.instructions if code.hot else 0
    per_program = hot * (trips if trips is not None else 1) + (code.instructions - hot)
    warp_instructions = per_program * launch.num_warps * use.programs
    rate = MODEL["sms"] * MODEL["schedulers"] * MODEL["ipc"] * MODEL["clock_hz"]
    return warp_instructions / rate, trips


def _resolve_shape(op, shape) -> Tuple[str, tuple]:
    """A case name of the op's table, a tuple, or "2x16x1024x8x40"."""
    if isinstance(shape, str) and shape in OPS[op][1]:
        return shape, OPS[op][1][shape]
    if isinstance(shape, str):
        try:
            shape = tuple(int(x) for x in shape.split("x"))
        except ValueError:
            raise ValueError(f"{op}: unknown shape {shape!r}; a case of {', '.join(OPS[op][1])} "
                             "or sizes like 2x16x1024x8x40") from None
    return "x".join(map(str, shape)), tuple(shape)


def analyse(op: str, shape, dtype=torch.bfloat16, variants=None) -> Dict[str, object]:
    """The static model of ``op`` at ``shape`` (a benchmark case name of fastvid.registry, a tuple or
    "BxFxNxHxD" / "BxCxFxHxW"): per kernel launch its machine code and issue floor, per (variant,
    direction) bytes, FLOPs, the three floors, the predicted time and roofline fraction (see MODEL).
    Runs without TRITON_INTERPRET (kernels compiled for sm_90a)."""
    name, dims = _resolve_shape(op, shape)
    launches = capture([op], dtype, table={op: (OPS[op][0], {name: dims})},
                       variants={op: variants or VARIANTS.get(op, (None,))})
    kernels, directions = [], {}
    for launch, code in compile_all(launches):
        for use in launch.uses:
            seconds, trips = issue_seconds(launch, code, use)
            kernels.append(dict(
                kernel=launch.name, config=launch.config(), variant=use.variant, direction=use.direction,
                call=use.call, programs=use.programs, warps=launch.num_warps, regs=code.regs, stack=code.stack,
                shared=code.shared, spill_stores=code.spill_stores, spill_loads=code.spill_loads,
                instructions=code.instructions, whole=code.whole.as_dict() if code.whole else None,
                hot_loop=code.hot.as_dict() if code.hot else None,
                in_loops=code.in_loops.as_dict(), innermost_loops=[lp.as_dict() for lp in code.innermost],
                trips=trips, issue_s=seconds, ptxas=code.ptxas))
    for (variant, direction) in dict.fromkeys((k["variant"], k["direction"]) for k in kernels):
        picked = {}
        for k in kernels:
            if (k["variant"], k["direction"]) == (variant, direction):
                best = picked.get(k["call"])
                if best is None or (k["spill_stores"] > 0, k["issue_s"]) < (best["spill_stores"] > 0, best["issue_s"]):
                    picked[k["call"]] = k
        for k in picked.values():
            k["modelled"] = True
        nbytes, flops = work(op, dims, variant, direction, torch.empty((), dtype=dtype).element_size())
        memory_s, tensor_s = nbytes / MODEL["copy_bytes_per_s"], flops / MODEL["tensor_flops_per_s"]
        issue_s = sum(k["issue_s"] for k in picked.values())
        predicted = max(memory_s, tensor_s, issue_s)
        bound = max(("memory", memory_s), ("tensor", tensor_s), ("issue", issue_s), key=lambda t: t[1])[0]
        directions[f"{variant}/{direction}" if variant is not None else direction] = dict(
            variant=variant, direction=direction, bytes=nbytes, flops=flops, memory_s=memory_s, tensor_s=tensor_s,
            issue_s=issue_s, predicted_s=predicted, roofline_fraction=max(memory_s, tensor_s) / predicted,
            bound=bound, kernels=[f"{k['kernel']} {k['config']}" for k in picked.values()])
    return dict(op=op, shape=name, dims=dims, dtype=str(dtype).replace("torch.", ""), kernels=kernels,
                directions=directions)


def measured(results: Path = ROOT / "benchmarks" / "results") -> Dict[tuple, Dict[str, object]]:
    """fastvid's bf16 GPU rows of every results folder's *.jsonl, newest run per op: (op, case, variant (the
    row's VARIANT_FIELDS entry, else frames), mode)
    -> ms, provider, GPU, Triton, and the run's measured ceilings (``ceilings``). Of the two fastvid rows of
    frame attention, "fastvid-triton" (the Triton kernels alone) is the one the model describes."""
    from benchmarks import plot

    rows = [r for folder in sorted({path.parent for path in results.rglob("*.jsonl")})
            for r in plot.load(folder)]
    rows = [r for r in plot.newest_runs(rows) if r.get("device") == "cuda" and r.get("dtype") == "bfloat16"]
    ceilings = {}
    for r in rows:
        ceilings.setdefault((r["date"], r["commit"]), []).append(r)
    ceilings = {run: _ceilings(run_rows) for run, run_rows in ceilings.items()}
    preference = {"fastvid": 0, "fastvid-triton": 1}
    found: Dict[tuple, Dict[str, object]] = {}
    for r in rows:
        if r.get("status") != "ok" or r.get("provider") not in preference:
            continue
        key = (r["op"], r["shape"].get("model"), r["shape"].get(VARIANT_FIELDS.get(r["op"], "frames")), r["mode"])
        if key not in found or preference[r["provider"]] > preference[found[key]["provider"]]:
            found[key] = dict(ms=r["ms"], provider=r["provider"], gpu=r.get("device_name", "?"),
                              triton=r.get("triton", "?"), ceilings=ceilings[(r["date"], r["commit"])])
    return found


def _ceilings(rows) -> Dict[str, Optional[float]]:
    """The run's measured copy bandwidth (GB/s) and bf16 matmul rate (TFLOP/s), as the suite measured them
    (benchmarks/harness.py measure_ceilings): each row's roofline_fraction is max(gbps / copy, tflops / matmul),
    so gbps / roofline_fraction is at most the copy ceiling, equal to it on a memory-bound row (and likewise
    for tflops): the largest over the run's rows."""
    def largest(field):
        values = [r[field] / r["roofline_fraction"] for r in rows if r.get(field) and r.get("roofline_fraction")]
        return max(values, default=None)
    return dict(copy_gbps=largest("gbps"), matmul_tflops=largest("tflops"))


def _fmt_counts(counter: Dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in counter.items()) or "-"


def _fmt_spill(stores: int, loads: int) -> str:
    return f"**{stores}/{loads}**" if stores or loads else "0/0"


def _variant_label(op, variant) -> str:
    if variant is None:
        return ""
    if op == "group_norm_silu":
        return {"frames": "CFG frames as images", "channels_last": "per_frame=False, channels_last"}.get(
            variant, f"per_frame={variant}")
    return str(variant)


def _model_table(analyses) -> List[str]:
    lines = ["| op | case | variant | dir | MB | GFLOP | memory µs | tensor µs | issue µs | predicted µs | "
             "roofline | bound |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for a in analyses:
        for d in a["directions"].values():
            lines.append(
                f"| {a['op']} | {a['shape']} | {_variant_label(a['op'], d['variant'])} | {d['direction']} | "
                f"{d['bytes'] / 1e6:.1f} | {d['flops'] / 1e9:.1f} | {d['memory_s'] * 1e6:.1f} | "
                f"{d['tensor_s'] * 1e6:.1f} | {d['issue_s'] * 1e6:.1f} | {d['predicted_s'] * 1e6:.1f} | "
                f"{d['roofline_fraction']:.0%} | {d['bound']} |")
    return lines


def predicted_vs_measured(analyses, gpu_rows) -> List[Dict[str, object]]:
    """Per analysed (op, case, variant) and suite mode ("fwd"; "fwd+bwd" = the fwd and bwd directions summed)
    with a measured GPU row: the model's prediction (H100 constants), the floor at the run's measured ceilings
    max(bytes / copy, FLOPs / matmul) and the same with the issue floor, next to the measured time."""
    out = []
    for a in analyses:
        by_variant: Dict[object, Dict[str, Dict]] = {}
        for d in a["directions"].values():
            by_variant.setdefault(d["variant"], {})[d["direction"]] = d
        for variant, dirs in by_variant.items():
            if (a["op"], variant) in (("group_norm_silu", True), ("group_norm_silu", "frames"),
                                      ("group_norm_silu", "channels_last"), ("geglu", "tanh")):
                # the suite times the defaults
                continue
            timed = variant if a["op"] in VARIANT_FIELDS else None  # the variant the GPU rows name
            for mode, parts in (("fwd", ("fwd",)), ("fwd+bwd", ("fwd", "bwd"))):
                row = gpu_rows.get((a["op"], a["shape"], timed, mode))
                if row is None or not all(part in dirs for part in parts):
                    continue
                ds = [dirs[part] for part in parts]
                ceil = row["ceilings"]
                floor = sum(max(d["bytes"] / (ceil["copy_gbps"] * 1e9), d["flops"] / (ceil["matmul_tflops"] * 1e12))
                            for d in ds) if ceil["copy_gbps"] and ceil["matmul_tflops"] else None
                with_issue = (sum(max(d["bytes"] / (ceil["copy_gbps"] * 1e9),
                                      d["flops"] / (ceil["matmul_tflops"] * 1e12), d["issue_s"]) for d in ds)
                              if floor is not None else None)
                out.append(dict(op=a["op"], shape=a["shape"], variant=variant, mode=mode,
                                predicted_s=sum(d["predicted_s"] for d in ds), floor_s=floor, floor_issue_s=with_issue,
                                measured_s=row["ms"] / 1e3, provider=row["provider"], gpu=row["gpu"],
                                triton=row["triton"], ceilings=ceil))
    return out


def _measured_table(pairs) -> List[str]:
    if not pairs:
        return ["No GPU rows for these cases in benchmarks/results/ (nothing measured to compare)."]
    runs = sorted({(p["gpu"], p["triton"], round(p["ceilings"]["copy_gbps"] or 0),
                    round(p["ceilings"]["matmul_tflops"] or 0)) for p in pairs})
    lines = [
        "Measured: the newest committed GPU run of each op (fastvid's own rows, bf16; \"fastvid-triton\" where the "
        "suite has it, else \"fastvid\", which ran the Triton backend). " + "; ".join(
            f"{gpu}, Triton {triton}: measured ceilings copy {copy} GB/s, bf16 matmul {mm} TFLOP/s (derived from "
            "the rows' roofline_fraction: the suite's own measurement)" for gpu, triton, copy, mm in runs) + ". "
        "The model's constants are an H100's (3.0 TB/s, 800 TFLOP/s, 132 SMs at 1.755 GHz); an H200 has the "
        "same 132 SMs and clocks with faster HBM3e (~4.8 TB/s nominal), so `predicted` overstates memory-bound "
        "times there. `floor` = max(bytes / measured copy, FLOPs / measured matmul); `floor+issue` adds the "
        "model's issue floor (max of the three). fwd+bwd sums the fwd and bwd directions (the suite's fwd+bwd "
        "row times a forward and a backward). measured / floor+issue > 1 is time the model does not see "
        "(latency, occupancy, launch overhead, layout copies, the suite's autograd glue). The suite's ms is wall "
        "time per call, host included: at small shapes the host dominates (the profile of the same GPU, "
        "benchmarks/results/h200-profile-2026-11-27/profile*.md, has device time per kernel, e.g. "
        "temporal_attention_fwd_kernel 25 µs at modelscope-32x32-c320 against 145 µs wall).",
        "",
        "| op | case | variant | mode | predicted µs (H100 model) | floor µs (measured ceilings) | "
        "floor+issue µs | measured µs | measured / floor+issue |",
        "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for p in pairs:
        fmt = lambda t: "-" if t is None else f"{t * 1e6:.1f}"  # noqa: E731
        ratio = "-" if not p["floor_issue_s"] else f"{p['measured_s'] / p['floor_issue_s']:.1f}x"
        lines.append(f"| {p['op']} | {p['shape']} | {_variant_label(p['op'], p['variant'])} | {p['mode']} | "
                     f"{fmt(p['predicted_s'])} | {fmt(p['floor_s'])} | {fmt(p['floor_issue_s'])} | "
                     f"{fmt(p['measured_s'])} | {ratio} |")
    return lines


def _kernel_table(analyses) -> List[str]:
    """One line per (kernel, config, machine code): cases merged."""
    merged: Dict[tuple, Dict] = {}
    for a in analyses:
        for k in a["kernels"]:
            hot = k["hot_loop"] or {}
            loads = k["in_loops"]["global_loads"]
            key = (k["kernel"], k["config"], k["regs"], k["spill_stores"], k["spill_loads"], k["shared"],
                   hot.get("instructions", 0), json.dumps(loads))
            entry = merged.setdefault(key, dict(k=k, hot=hot, cases=set(), modelled=False))
            entry["cases"].add(a["shape"])
            entry["modelled"] |= k.get("modelled", False)
    lines = ["| kernel | config | regs | spill st/ld B | smem KiB | hot-loop instr | tensor core (hot) | "
             "LDG bits:count in loops | STG in loops | cp.async / TMA (hot) | hot-loop mix (top 5) | cases |",
             "|---|---|---:|---:|---:|---:|---|---|---|---|---|---|"]
    for entry in merged.values():
        k, hot = entry["k"], entry["hot"]
        spill = _fmt_spill(k["spill_stores"], k["spill_loads"])
        mix = ", ".join(f"{c} {n}" for c, n in list(hot.get("mix", {}).items())[:5]) or "no loop"
        mark = "" if entry["modelled"] else " (not modelled)"
        lines.append(
            f"| {k['kernel']} | {k['config']}{mark} | {k['regs']} | {spill} | {k['shared'] / 1024:.1f} | "
            f"{hot.get('instructions', '-')} | {_fmt_counts(hot.get('tensor_core', {}))} | "
            f"{_fmt_counts(k['in_loops']['global_loads'])} | {_fmt_counts(k['in_loops']['global_stores'])} | "
            f"{hot.get('cp_async', 0)} / {hot.get('tma', 0)} | {mix} | {', '.join(sorted(entry['cases']))} |")
    return lines


def _sweep_table(rows) -> List[str]:
    merged: Dict[tuple, set] = {}
    for launch, code in rows:
        merged.setdefault((launch.name, launch.config(), code.regs, code.spill_stores, code.spill_loads,
                           code.shared), set()).update(launch.cases)
    lines = ["| kernel | config | regs | spill st/ld (B) | smem (KiB) | cases |", "|---|---|---:|---:|---:|---|"]
    for (name, config, regs, stores, loads, shared), cases in merged.items():
        lines.append(f"| {name} | {config} | {regs} | {_fmt_spill(stores, loads)} | {shared / 1024:.1f} | "
                     f"{', '.join(sorted(cases))} |")
    return lines


def report(analyses, sweep_rows, gpu_rows) -> str:
    import triton

    ptxas = next((k["ptxas"] for a in analyses for k in a["kernels"]), "?")
    lines = [
        "# sm_90a machine code and a static time model (a model: no GPU was used)",
        "",
        f"Generated by `python benchmarks/kernel_resources.py` (Triton {triton.__version__}, ptxas {ptxas}) from the "
        "real cubins, compiled for sm_90a with the launch configs the launchers pick at the benchmark shapes of "
        "fastvid.registry in bf16 (an H100's 132 SMs assumed). The model and what it leaves out are in the "
        "docstring of benchmarks/kernel_resources.py: predicted = max(bytes / 3.0 TB/s, FLOPs / 800 TFLOP/s, issue "
        "floor), issue floor = programs x warps x (hot-loop instructions x trips + other instructions) / "
        "(132 SMs x 4 schedulers x 1 IPC x 1.755 GHz); roofline = max(memory, tensor) / predicted. "
        "These are predictions of a first-order model, not measurements; where a committed GPU run "
        "(benchmarks/results/**/*.jsonl) timed the same op, case and mode, the measured time is printed next to "
        "the prediction.",
        "",
        "## Model per op, case and direction",
        "",
        *_model_table(analyses),
        "",
        "## Predicted next to measured (GPU rows)",
        "",
        *_measured_table(predicted_vs_measured(analyses, gpu_rows)),
        "",
        "## Kernels (every config a launcher or autotuner can pick)",
        "",
        "Registers per thread (255 max), spills = local-memory instructions in the cubin (bytes stored/loaded), "
        "shared memory per program. Hot loop = the innermost loop with the most instructions (per warp, one "
        "iteration). Loads/stores: bits per thread of each LDG/STG in any loop (16 = a scalar bf16 load). "
        "`(not modelled)`: an autotune config the model did not take.",
        "",
        *_kernel_table(analyses),
    ]
    lines += ["", TRITON_36]
    if sweep_rows:
        lines += ["", "## Temporal attention sweep (B 2, N 1024, 8 heads; F x head_dim): registers and spills", "",
                  *_sweep_table(sweep_rows), "", HISTORY]
    return "\n".join(lines) + "\n"


def _parse_variants(text: Optional[str]) -> Optional[tuple]:
    """"False,frames" -> (False, "frames"); None stays None."""
    if text is None:
        return None
    return tuple({"False": False, "True": True, "None": None}.get(v, v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated ops")
    parser.add_argument("--shapes", default=None, help="comma-separated case names or sizes (2x16x1024x8x40); "
                        "default: every benchmark shape of each op")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--variants", default=None, help="comma-separated variants of the one op in --ops (False, "
                        "True, frames, channels_last, first, ...); default: the report's VARIANTS")
    parser.add_argument("--quick", action="store_true", help="first shape of each op, no sweep; print only")
    parser.add_argument("--json", action="store_true", help="print the analyses as JSON; write no file")
    parser.add_argument("--out", default=None, help=f"the report file (default {REPORT.relative_to(ROOT)}; "
                        "a partial run (--quick, --ops, --shapes) writes one only if given)")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    dtype = getattr(torch, args.dtype)
    analyses = []
    for op in args.ops.split(","):
        cases = list(OPS[op][1])[:1] if args.quick else list(OPS[op][1])
        for shape in (args.shapes.split(",") if args.shapes else cases):
            analyses.append(analyse(op, shape, dtype, variants=_parse_variants(args.variants)))
    if args.json:
        print(json.dumps(analyses))
        return
    partial = args.quick or args.shapes or args.ops != ",".join(OPS)
    sweep = [] if partial else compile_all(capture(list(SWEEP), dtype, table=SWEEP))
    text = report(analyses, sweep, measured())
    print(text)
    if args.out or not partial:
        out = Path(args.out or REPORT)
        out.write_text(text)
        print(f"# written to {out}")


if __name__ == "__main__":
    main()
