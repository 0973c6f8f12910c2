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
