"""torch.library registration: opcheck (schema, fake tensor, autograd) and torch.compile tracing."""
import pytest
import torch

import fastvid
from fastvid.registry import OPS

from conftest import DEVICE


def _example(op, requires_grad):
    """The registry's example inputs of ``op`` (6 tokens per frame), as leaves."""
    return {name: t.requires_grad_(requires_grad) for name, t in OPS[op].examples.make(1, 6, device=DEVICE).items()}


def _ta_inputs(requires_grad=True):
    a = _example("temporal_attention", requires_grad)
    return a["q"], a["k"], a["v"], a["bias"]


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("causal", [False, True])
def test_opcheck_temporal_attention_fwd(causal):
    q, k, v, bias = _ta_inputs()
    torch.library.opcheck(torch.ops.fastvid.temporal_attention_fwd.default, (q, k, v, bias, causal, 8 ** -0.5), test_utils=OPCHECK_TESTS)
    torch.library.opcheck(torch.ops.fastvid.temporal_attention_fwd.default, (q, k, v, None, causal, 0.3), test_utils=OPCHECK_TESTS)


def test_opcheck_temporal_attention_bwd():
    q, k, v, bias = (t.detach() for t in _ta_inputs(False))
    out, lse = torch.ops.fastvid.temporal_attention_fwd.default(q, k, v, bias, False, 0.35)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.fastvid.temporal_attention_bwd.default, (dout, q, k, v, bias, out, lse, False, 0.35, True),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("module", [fastvid.nn.TemporalAttention, fastvid.nn.SparseCausalAttention])
def test_compile_fullgraph_module(module):
    """The module traces into one graph with the custom op inside (aot_eager: no C++ codegen needed)."""
    mod = module(dim=16, heads=2, dim_head=8).to(DEVICE)
    mod.backend = "triton"
    x = torch.randn(1, 4, 6, 16, device=DEVICE, requires_grad=True)
    compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
    expected = mod(x)
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _fa_inputs(requires_grad=True):
    a = _example("frame_attention", requires_grad)
    table = torch.tensor([[0, -1], [0, 0], [2, 1]], dtype=torch.int32, device=DEVICE)  # one row per frame
    return a["q"], a["k"], a["v"], table


def test_opcheck_frame_attention():
    q, k, v, table = _fa_inputs()
    ops = torch.ops.fastvid
    torch.library.opcheck(ops.frame_attention_fwd.default, (q, k, v, table, 0.3), test_utils=OPCHECK_TESTS)
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse = ops.frame_attention_fwd.default(q, k, v, table, 0.3)
    torch.library.opcheck(ops.frame_attention_bwd.default, (torch.randn_like(out), q, k, v, table, out, lse, 0.3),
                          test_utils=("test_schema", "test_faketensor"))


class _ConvNormConv(torch.nn.Module):
    """A frame-wise Conv2d (what torch Inductor's layout optimisation makes channels-last), then GroupNorm+SiLU over
    each video and a temporal conv, both fastvid ops, on the conv's output viewed as (B, C, F, H, W)."""

    def __init__(self, frames=3):
        super().__init__()
        self.frames = frames
        self.conv = torch.nn.Conv2d(4, 16, 3, padding=1)
        self.norm = torch.nn.GroupNorm(4, 16)
        self.temporal = torch.nn.Conv1d(16, 16, 3)

    def forward(self, x):
        video = self.conv(x).unflatten(0, (-1, self.frames)).transpose(1, 2)
        h = fastvid.group_norm_silu(video, 4, self.norm.weight, self.norm.bias, backend="triton")
        return fastvid.temporal_conv(h, self.temporal.weight, self.temporal.bias, backend="triton")


def test_inductor_hands_fastvid_ops_the_layout_it_chose(monkeypatch):
    """Under torch Inductor with layout optimisation (channels-last convolutions, on GPUs too for U-Nets), an
    inference graph's fastvid ops read the convolution's output in its channels-last layout, with no copy back to
    the traced strides in between (the ops are registered ``flexible_layout``; a training graph saves that output
    for the backward in the traced layout, whatever the op's tags); compiled forward and backward give the eager
    results."""
    from torch._inductor import config as inductor_config

    from fastvid.ops import group_norm_silu as gn_module

    model = _ConvNormConv().to(DEVICE)
    x = torch.randn(2 * model.frames, 4, 5, 6, device=DEVICE, requires_grad=True)
    seen = []
    planned = gn_module._fwd_op.planned

    def recording(*args):
        seen.append(args[0].stride())
        return planned(*args)

    def run(fn):
        x.grad = None
        model.zero_grad()
        out = fn(x)
        out.square().sum().backward()
        return [out.detach(), x.grad] + [p.grad for p in model.parameters()]

    monkeypatch.setattr(gn_module._fwd_op, "planned", recording)
    # fp32 convolutions in both layouts (cuDNN picks other algorithms for channels-last; TF32 would differ by more)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch._dynamo.reset()
    with inductor_config.patch(force_layout_optimization=True):
        expected = run(model)
        seen.clear()
        with torch.no_grad():
            inference = torch.compile(model, fullgraph=True)(x)
        assert len(seen) == 1 and seen[0][1] == 1, seen  # channels innermost: the convolution's layout
        got = run(torch.compile(model, fullgraph=True))
    torch._dynamo.reset()
    torch.testing.assert_close(inference, expected[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
