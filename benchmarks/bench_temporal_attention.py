"""Temporal attention: fastvid vs the reference path vs SDPA backends vs xformers vs FlexAttention.

    python benchmarks/bench_temporal_attention.py            # GPU shapes on CUDA, tiny ones on CPU

Rows are appended to benchmarks/results/temporal_attention.jsonl (one per provider, mode, shape).
Bytes: q, k, v, o read/written once each in the forward (4 tensors), 8 in the backward
(q, k, v, o, dO read; dq, dk, dv written): temporal attention is memory bound, so the roofline
is the device-copy bandwidth. FLOPs: 4*B*N*h*F^2*d forward, 2.5x that backward.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as Fn
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.peers import import_reason, sdpa_backend_context  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "temporal_attention"


def _inputs(shape, dtype, device, requires_grad):
    B, F, N, H, D = shape
    q, k, v = (torch.randn(B, F, N, H, D, dtype=dtype, device=device, requires_grad=requires_grad) for _ in range(3))
    bias = torch.randn(H, F, F, dtype=dtype, device=device, requires_grad=requires_grad)
    return q, k, v, bias


def _arranged(shape, dtype, device, requires_grad):
    """Inputs already in (B*N, h, F, d) form, contiguous: what SDPA-style peers want."""
    B, F, N, H, D = shape
    q, k, v = (torch.randn(B * N, H, F, D, dtype=dtype, device=device, requires_grad=requires_grad) for _ in range(3))
    bias = torch.randn(H, F, F, dtype=dtype, device=device, requires_grad=requires_grad)
    return q, k, v, bias


def _diffusers_style(q, k, v, bias):
    """What diffusers' temporal transformer does: rearrange copies around SDPA."""
    B, F, N, H, D = q.shape
    qs, ks, vs = (rearrange(t, "b f n h d -> (b n) h f d").contiguous() for t in (q, k, v))
    out = Fn.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias)
    return rearrange(out, "(b n) h f d -> b f n h d", b=B).contiguous()


def _sdpa(name):
    def run(q, k, v, bias):
        with sdpa_backend_context(name):
            return Fn.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[0], -1, -1, -1))
    return run


def _xformers(q, k, v, bias):
    import xformers.ops as xops

    # xformers wants (batch, seq, heads, d) and a bias of (batch, heads, seq, seq).
    qx, kx, vx = (t.transpose(1, 2) for t in (q, k, v))
    return xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias.expand(q.shape[0], -1, -1, -1))


def _flex(compiled):
    def run(q, k, v, bias):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]
        return compiled(q, k, v, score_mod=score_mod)
    return run


def workloads(device, compile_peers):
    """(name, Workload or reason, arranged-inputs?)"""
    yield harness.Workload("fastvid", lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b)), False
    yield harness.Workload("reference", lambda q, k, v, b: fastvid.reference.temporal_attention(q, k, v, bias=b)), False
    yield harness.Workload("rearrange+sdpa", _diffusers_style), False
    sdpa_names = ("efficient", "cudnn", "math") if device == "cuda" else ("math",)
    for name in sdpa_names:
        yield harness.Workload(f"sdpa-{name}", _sdpa(name), note="pre-arranged contiguous inputs"), True
    why = import_reason("xformers.ops") if device == "cuda" else "needs CUDA"
    yield (harness.Workload("xformers", _xformers, note="pre-arranged") if why is None else f"xformers: {why}"), True
    if compile_peers:
        from torch.nn.attention.flex_attention import flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        yield harness.Workload("flex_attention", _flex(compiled), note="bias as score_mod"), True
    else:
        yield "flex_attention: skipped (--no-compile)", True


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, no_compile="skip torch.compile peers (FlexAttention)"), argv)
    device, dtype = args.device, args.dtype
    cases = harness.select(OPS[OP].examples.shapes(device), args.shapes)
    env = harness.environment(device)
    ceilings = harness.measure_ceilings(device)
    harness.announce(OP, env, ceilings)
    rows = []
    size = torch.empty((), dtype=dtype).element_size()
    for name, shape in cases.items():
        B, F, N, H, D = shape
        shape_d = dict(model=name, B=B, F=F, N=N, heads=H, head_dim=D)
        elems = B * F * N * H * D
        for mode in args.modes.split(","):
            grad = mode != "fwd"
            factor = {"fwd": 4, "bwd": 8, "fwd+bwd": 12}[mode]
            flops = 4 * B * N * H * F * F * D * {"fwd": 1, "bwd": 2.5, "fwd+bwd": 3.5}[mode]
            for item, arranged in workloads(device, not args.no_compile):
                if isinstance(item, str):
                    rows.append(harness.missing(op=OP, shape=shape_d, dtype=dtype, mode=mode,
                                                provider=item.split(":")[0], reason=item, env=env))
                    continue
                make = _arranged if arranged else _inputs
                sets = [make(shape, dtype, device, grad) for _ in range(2)]
                row = harness.bench(op=OP, shape=shape_d, dtype=dtype, mode=mode, workload=item, input_sets=sets,
                                    device=device, env=env, ceilings=ceilings, flops=flops,
                                    bytes_moved=factor * elems * size)
                if item.provider == "fastvid":
                    row["note"] = f"backend={fastvid.last_backend(OP)}"
                rows.append(row)
    harness.finish(OP, rows, args.out)


if __name__ == "__main__":
    main()
