"""nn.Linear on a transformer block's tokens (x (B * F, N, C)), with the layouts and residual adds diffusers has
around it: fastvid's GEMM reading and writing those layouts in place vs eager diffusers (permute copies,
F.linear, the residual add) and eager under torch.compile.

    python benchmarks/bench_linear.py             # GPU shapes on CUDA, tiny ones on CPU
    python benchmarks/bench_linear.py --shapes svdxt-72x128-c320 --layouts proj_out --modes fwd

Shapes: the registry's (B * F, N, C) tokens of SVD-XT (25 frames of 72x128 latents) and AnimateDiff (16 frames
of 64x64) at each UNet level, CFG batch 2 (fastvid.examples), each in the three layouts of LAYOUTS:

- ``proj_in``: Transformer2DModel's proj_in (C -> C) on its NCHW input; diffusers permutes it to (B, H*W, C)
  (a copy) first, fastvid reads the transposed view.
- ``proj_out``: its proj_out (C -> C) plus the NCHW residual; diffusers permutes the output back (a copy) and
  adds, fastvid writes ``x @ W^T + b + residual`` straight into the NCHW order.
- ``ff_out``: the feed-forward's last Linear (4C -> C) plus the residual (``ff(x) + h``): one add pass saved.

Providers: ``fastvid`` (``fastvid.linear``, backend "auto"), ``eager`` (diffusers' code), ``compiled`` (eager
under torch.compile, unless --no-compile). Rows are appended to benchmarks/results/linear.jsonl.

FLOPs: 2 x rows x K x N forward (twice that backward). Bytes: forward reads x, the weight and the residual and
writes the output once; backward reads dY and x, writes dX (fastvid's backward is torch matmuls: their own
traffic is not modelled).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_group_norm_silu import compile_peer  # noqa: E402
from benchmarks.bench_temporal_conv import run  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "linear"
MULT = 4  # diffusers' FeedForward: inner = 4 x channels
# layout -> (K per channel, residual: None, "nchw" or "tokens"; x an NCHW view?)
LAYOUTS = {"proj_in": (1, None, True), "proj_out": (1, "nchw", False), "ff_out": (MULT, "tokens", False)}


def _nchw_view(rows, tokens, channels, **r):
    """The (B, H*W, C) view of a (B, C, H*W) tensor, as a Transformer2DModel's input and residual are laid out."""
    return torch.randn(rows, channels, tokens, **r).transpose(1, 2)


def inputs(shape, dtype, device, layout, requires_grad=False):
    """[x, weight, bias] (+ residual) of one case: shape (B * F, N, C) in ``layout`` (LAYOUTS)."""
    rows, tokens, channels = shape
    mult, residual, x_nchw = LAYOUTS[layout]
    r = dict(dtype=dtype, device=device)
    k = mult * channels
    x = _nchw_view(rows, tokens, k, **r) if x_nchw else torch.randn(rows, tokens, k, **r)
    out = [x, torch.randn(channels, k, **r) * k ** -0.5, torch.randn(channels, **r) * 0.1]
    if residual == "nchw":
        out.append(_nchw_view(rows, tokens, channels, **r))
    elif residual == "tokens":
        out.append(torch.randn(rows, tokens, channels, **r))
    return [t.requires_grad_(requires_grad) for t in out]


def eager(x, weight, bias, residual=None):
    """diffusers: tokens made contiguous (proj_in's permute), F.linear, the output permuted into the residual's
    layout (proj_out's), then the add."""
    y = Fn.linear(x.contiguous(), weight, bias)
    if residual is None:
        return y
    if y.stride() != residual.stride():
        y = torch.empty_like(residual).copy_(y)
    return y + residual


def fastvid_linear(x, weight, bias, residual=None):
    return fastvid.linear(x, weight, bias, residual=residual)


def workloads(compile_peers):
    """(provider, run, layout of its inputs: each case names its own)."""
    yield harness.Workload("fastvid", fastvid_linear), "per case"
    yield harness.Workload("eager", eager), "per case"
    if compile_peers:
        yield harness.Workload("compiled", compile_peer(eager)), "per case"


def _inputs(case_shape, dtype, device, layout, requires_grad):
    *shape, case_layout = case_shape
    return inputs(tuple(shape), dtype, device, case_layout, requires_grad)


def describe(case, mode, size):
    name, (rows, tokens, channels, layout) = case
    m, k, n = rows * tokens, LAYOUTS[layout][0] * channels, channels
    residual = LAYOUTS[layout][1] is not None
    flops = 2 * m * k * n * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]
    fwd = m * k + n * k + m * n * (2 if residual else 1)
    bwd = 2 * m * n + 2 * m * k + n * k  # dY read twice (dX, dW), x read, dX and dW written
    bytes_moved = size * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]
    return dict(model=name.rsplit("/", 1)[0], layout=layout, rows=m, K=k, N=n), flops, bytes_moved


def main(argv=None):
    parser = harness.parser(__doc__, no_compile="skip the torch.compile peer")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated subset of LAYOUTS")
    args = harness.parse(parser, argv)
    table = harness.select(dict(OPS[OP].examples.shapes(args.device)), args.shapes)
    layouts = harness.select(LAYOUTS, args.layouts)
    cases = [(f"{name}/{layout}", (*shape, layout)) for name, shape in table.items() for layout in layouts]
    run(OP, args, cases, list(workloads(not args.no_compile)), _inputs, describe)


if __name__ == "__main__":
    main()
