"""The kernel cases as pytest-benchmark tests, for its statistics, run-to-run comparison and JSON:

    pytest benchmarks --benchmark-only [--benchmark-json out.json] [--benchmark-compare]

On CUDA the real-model shapes of fastvid.registry; on CPU their tiny stand-ins (fastvid's
"auto" backend, i.e. the torch path: no speed claim).
"""
import pytest
import torch

import fastvid
from fastvid.frame_modes import FRAME_MODES
from fastvid.registry import OPS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
TA_SHAPES = OPS["temporal_attention"].examples.shapes(DEVICE)
FA_SHAPES = OPS["frame_attention"].examples.shapes(DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _ta_providers():
    return {
        "fastvid": lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b),
        "reference": lambda q, k, v, b: fastvid.reference.temporal_attention(q, k, v, bias=b),
    }


@pytest.mark.parametrize("provider", sorted(_ta_providers()))
@pytest.mark.parametrize("name", sorted(TA_SHAPES))
def test_temporal_attention_fwd(benchmark, name, provider):
    B, F, N, H, D = TA_SHAPES[name]
    q, k, v = (torch.randn(B, F, N, H, D, dtype=DTYPE, device=DEVICE) for _ in range(3))
    bias = torch.randn(H, F, F, dtype=DTYPE, device=DEVICE)
    fn = _ta_providers()[provider]
    benchmark.group = f"temporal_attention-{name}"

    def run():
        with torch.no_grad():
            out = fn(q, k, v, bias)
        _sync()
        return out

    out = benchmark(run)
    assert out.shape == q.shape


@pytest.mark.parametrize("provider", ["fastvid", "reference"])
@pytest.mark.parametrize("frames", [name for name in FRAME_MODES if name != "self"])  # the cross-frame modes
@pytest.mark.parametrize("name", sorted(FA_SHAPES))
def test_frame_attention_fwd(benchmark, name, frames, provider):
    B, F, N, H, D = FA_SHAPES[name]
    q, k, v = (torch.randn(B, F, N, H, D, dtype=DTYPE, device=DEVICE) for _ in range(3))
    fn = fastvid.frame_attention if provider == "fastvid" else fastvid.reference.frame_attention
    benchmark.group = f"frame_attention-{frames}-{name}"

    def run():
        with torch.no_grad():
            out = fn(q, k, v, frames=frames)
        _sync()
        return out

    out = benchmark(run)
    assert out.shape == q.shape


TC_SHAPES = OPS["temporal_conv"].examples.shapes(DEVICE)
GN_GROUPS = 32 if DEVICE == "cuda" else 4
CONV_PROVIDERS = {
    "temporal_conv": {
        "fastvid": lambda x, w, b: fastvid.temporal_conv(x, w, b),
        "reference": lambda x, w, b: fastvid.reference.temporal_conv(x, w, b),
    },
    "group_norm_silu": {
        "fastvid": lambda x, w, b: fastvid.group_norm_silu(x, GN_GROUPS, w, b),
        "reference": lambda x, w, b: fastvid.reference.group_norm_silu(x, GN_GROUPS, w, b),
    },
}


@pytest.mark.parametrize("op, provider", [(op, p) for op in sorted(CONV_PROVIDERS) for p in sorted(CONV_PROVIDERS[op])])
@pytest.mark.parametrize("name", sorted(TC_SHAPES))
def test_conv_family_fwd(benchmark, name, op, provider):
    B, C, F, H, W = TC_SHAPES[name]
    x = torch.randn(B, C, F, H, W, dtype=DTYPE, device=DEVICE)
    weight = torch.randn((C, C, 3) if op == "temporal_conv" else (C,), dtype=DTYPE, device=DEVICE)
    bias = torch.randn(C, dtype=DTYPE, device=DEVICE)
    fn = CONV_PROVIDERS[op][provider]
    benchmark.group = f"{op}-{name}"

    def run():
        with torch.no_grad():
            out = fn(x, weight, bias)
        _sync()
        return out

    assert benchmark(run).shape == x.shape
