"""Frame attention: fastvid vs the reference vs repeat/concat + SDPA vs FlexAttention vs SDPA backends.

    python benchmarks/bench_frame_attention.py            # GPU sweep on CUDA, tiny shapes on CPU
    python benchmarks/bench_frame_attention.py --frames first,sparse_causal --num-frames 8,16 --heads 8

The sweep grows F (8, 16, 24, 32) at N = M = 64*64 tokens per frame, head_dim 64, heads 8 and 20,
for every frames mode, plus the model shapes of the registry (fastvid.examples). Rows are appended to
benchmarks/results/frame_attention.jsonl; each carries ``io_mb`` (q, k, v and out themselves) next
to ``peak_mem_mb`` (peak above the inputs while the step runs), so K/V copies show as the gap.

Providers:
- fastvid-triton: the Triton kernel (K/V read in place); fastvid: "auto" (the note names its choice).
- reference: fastvid.reference.frame_attention (concatenated K/V, matmul + softmax).
- concat+sdpa: what the papers' code does: gather/concatenate each frame's K/V, then SDPA.
- sdpa-<backend>: fastvid's torch path (SDPA on views; "first" and the dense modes copy nothing)
  under one forced SDPA backend.
- flex_attention: one FlexAttention call over F*N queries and F*M keys with a block mask built
  from the frame table (multiplicity dropped: equal for these modes).

FLOPs: 4*B*heads*F*N*(K*M)*head_dim forward, with K the keys' frames per query frame as
concatenated (sparse_causal: 2, all: F); backward 2.5x. Bytes: q, k, v and out once forward
(K/V read in place); backward twice that (inputs, out, dO read; dq, dk, dv written).
CPU rows only check the script.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.peers import sdpa_backend_context  # noqa: E402
from fastvid.ops import frame_attention as ops  # noqa: E402
from fastvid.registry import OPS  # noqa: E402

OP = "frame_attention"
FRAMES = ("first", "sparse_causal", "self", "all")
SWEEP_FRAMES, SWEEP_TOKENS, SWEEP_HEADS, SWEEP_HEAD_DIM = (8, 16, 24, 32), 64 * 64, (8, 20), 64
FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}
BYTE_FACTOR = {"fwd": 1, "bwd": 2, "fwd+bwd": 3}


def _inputs(shape, dtype, device, requires_grad):
    B, F, N, M, H, D = shape
    q = torch.randn(B, F, N, H, D, dtype=dtype, device=device, requires_grad=requires_grad)
    k, v = (torch.randn(B, F, M, H, D, dtype=dtype, device=device, requires_grad=requires_grad) for _ in range(2))
    return q, k, v


def _concat_sdpa(frames):
    """Tune-A-Video / Text2Video-Zero / ControlVideo style: K/V of the listed frames concatenated."""
    def run(q, k, v):
        table = fastvid.reference.frame_table(frames, q.shape[1], q.device)
        ks, vs = (t[:, table].flatten(2, 3).flatten(0, 1).transpose(1, 2) for t in (k, v))  # (B*F, h, K*M, d)
        out = Fn.scaled_dot_product_attention(q.flatten(0, 1).transpose(1, 2), ks, vs)
        return out.transpose(1, 2).reshape(q.shape)
    return run


def _sdpa(frames, name):
    def run(q, k, v):
        with sdpa_backend_context(name):
            return fastvid.frame_attention(q, k, v, frames=frames, backend="torch")
    return run


def _flex(compiled, frames, shape, device):
    from torch.nn.attention.flex_attention import create_block_mask

    B, F, N, M, H, D = shape
    table = fastvid.reference.frame_table(frames, F, device)
    allowed = ops.frame_counts(table.to(device), F) > 0

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed[q_idx // N, kv_idx // M]

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=F * N, KV_LEN=F * M, device=device)

    def run(q, k, v):
        qs, ks, vs = (t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))  # (B, h, F*L, d) views
        return compiled(qs, ks, vs, block_mask=block_mask).transpose(1, 2).reshape(q.shape)
    return run


def _estimated_bytes(provider, frames, shape, size):
    """Rough extra memory of the providers that materialise (to skip cases that cannot fit)."""
    B, F, N, M, H, D = shape
    width = {"first": 1, "self": 1, "sparse_causal": 2, "all": F}[frames]
    if provider == "reference":  # scores and probabilities of one query frame, plus concatenated K/V
        return 3 * B * H * N * width * M * size + 2 * B * width * M * H * D * size
    if provider == "concat+sdpa":
        return 4 * B * F * width * M * H * D * size  # K/V copies and their gradients
    return 0


def workloads(frames, shape, dtype, device, flex_compiled):
    """Yields Workloads, or strings "provider: reason" for peers that cannot run here."""
    probe = _inputs((1, 1, 1, 1, 1, shape[-1]), dtype, device, False)
    triton = next(b for b in ops.DISPATCH.backends if b.name == "triton")
    why = ops.DISPATCH.why_not(triton, *probe, frames, 1.0)
    if why is None:
        yield harness.Workload("fastvid-triton",
                               lambda q, k, v: fastvid.frame_attention(q, k, v, frames=frames, backend="triton"))
    else:
        yield f"fastvid-triton: {why}"
    yield harness.Workload("fastvid", lambda q, k, v: fastvid.frame_attention(q, k, v, frames=frames))
    yield harness.Workload("reference", lambda q, k, v: fastvid.reference.frame_attention(q, k, v, frames=frames))
    yield harness.Workload("concat+sdpa", _concat_sdpa(frames), note="K/V gathered per frame")
    for name in (("flash", "efficient", "cudnn", "math") if device == "cuda" else ("math",)):
        yield harness.Workload(f"sdpa-{name}", _sdpa(frames, name), note="fastvid torch path")
    if flex_compiled is None:
        yield "flex_attention: skipped (--no-compile)"
    else:
        try:
            yield harness.Workload("flex_attention", _flex(flex_compiled, frames, shape, device), note="block mask")
        except Exception as exc:  # reported, not dropped
            yield f"flex_attention: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def cases(device, args):
    if device != "cuda":
        tiny = {f"tiny-F{f}": (1, f, 64, 64, 2, 32) for f in (2, 4)}
        tiny.update({name: (B, F, N, N, H, D) for name, (B, F, N, H, D) in OPS[OP].examples.cpu_shapes.items()})
        return tiny
    out = {f"sweep-F{f}-h{h}": (1, f, SWEEP_TOKENS, SWEEP_TOKENS, h, SWEEP_HEAD_DIM)
           for h in args.heads for f in args.num_frames}
    if not args.sweep_only:
        out.update({name: (B, F, N, N, H, D) for name, (B, F, N, H, D) in OPS[OP].benchmark_shapes.items()})
    return out


def main(argv=None):
    parser = harness.parser(__doc__, modes="fwd,fwd+bwd", no_compile="skip torch.compile peers (FlexAttention)")
    parser.add_argument("--frames", default=",".join(FRAMES), help="frames modes to run")
    parser.add_argument("--num-frames", default=",".join(map(str, SWEEP_FRAMES)), help="F values of the GPU sweep")
    parser.add_argument("--heads", default=",".join(map(str, SWEEP_HEADS)), help="heads of the GPU sweep")
    parser.add_argument("--sweep-only", action="store_true", help="skip the model shapes")
    parser.add_argument("--providers", default=None, help="comma-separated subset of providers")
    parser.add_argument("--memory-budget", type=float, default=0.4,
                        help="skip materialising providers estimated above this fraction of GPU memory")
    args = harness.parse(parser, argv)
    args.num_frames = [int(x) for x in args.num_frames.split(",") if x]
    args.heads = [int(x) for x in args.heads.split(",") if x]
    device, dtype = args.device, args.dtype
    size = torch.empty((), dtype=dtype).element_size()
    budget = args.memory_budget * torch.cuda.get_device_properties(0).total_memory if device == "cuda" else 2**31
    env = harness.environment(device)
    ceilings = harness.measure_ceilings(device)
    harness.announce(OP, env, ceilings)
    flex_compiled = None
    if not args.no_compile:
        from torch.nn.attention.flex_attention import flex_attention

        flex_compiled = torch.compile(flex_attention, dynamic=False)
    wanted = None if args.providers is None else set(args.providers.split(","))
    rows = []
    for name, shape in harness.select(cases(device, args), args.shapes).items():
        B, F, N, M, H, D = shape
        io_mb = (2 * B * F * N + 2 * B * F * M) * H * D * size / 2**20
        for frames in args.frames.split(","):
            width = {"first": 1, "self": 1, "sparse_causal": 2, "all": F}[frames]
            shape_d = dict(model=name, frames=frames, B=B, F=F, N=N, M=M, heads=H, head_dim=D)
            for mode in args.modes.split(","):
                flops = 4 * B * H * F * N * width * M * D * FLOP_FACTOR[mode]
                for item in workloads(frames, shape, dtype, device, flex_compiled):
                    provider = item.split(":")[0] if isinstance(item, str) else item.provider
                    if wanted is not None and provider not in wanted:
                        continue
                    extra = 0 if isinstance(item, str) else _estimated_bytes(provider, frames, shape, size)
                    if extra > budget:
                        item = f"{provider}: would allocate ~{extra / 2**30:.0f} GiB (budget {budget / 2**30:.0f} GiB)"
                    if isinstance(item, str):
                        rows.append(harness.missing(op=OP, shape=shape_d, dtype=dtype, mode=mode, provider=provider,
                                                    reason=item, env=env))
                        continue
                    sets = [_inputs(shape, dtype, device, mode != "fwd") for _ in range(2)]
                    row = harness.bench(op=OP, shape=shape_d, dtype=dtype, mode=mode, workload=item, input_sets=sets,
                                        device=device, env=env, ceilings=ceilings, flops=flops,
                                        bytes_moved=io_mb * 2**20 * BYTE_FACTOR[mode])
                    row["io_mb"] = io_mb
                    if provider == "fastvid":
                        row["note"] = f"backend={fastvid.last_backend(OP)}"
                    rows.append(row)
                    del sets
                    if device == "cuda":
                        torch.cuda.empty_cache()
    harness.finish(OP, rows, args.out)


if __name__ == "__main__":
    main()
