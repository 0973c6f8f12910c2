"""Robustness audit, parametrized from one table of every public op and one of every public module:
empty inputs, NaN/Inf propagation, bad input naming the argument, bit-identical repeats; opcheck on every
registered custom op; torch.compile over all ops together; CUDA-graph capture of a sampler step; launch
arithmetic at SVD scale and int64 offsets for the convolution and the normalisation."""
import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
from torch import nn

import fastvid
from fastvid import reference, registry
from fastvid.frame_modes import MODES
from fastvid.testing import check_against_reference, dense_in_order, poisoned_outputs

from conftest import DEVICE

BACKENDS = ["triton", "torch", "reference"]


@dataclass
class OpCase:
    """``make(batch, n)`` returns the named tensor inputs (n: tokens, or the height of a video);
    ``call(inputs, backend)`` runs the public op, ``ref(inputs)`` the plain-torch reference.
    ``main`` is the first tensor argument, ``other`` a second one (for device and shape mismatches;
    None for an op of one tensor, whose shape check is then on ``main``'s ``other_dim``). Built from the
    registry's example inputs of the op."""
    make: Callable[[int, int], Dict[str, torch.Tensor]]
    call: Callable
    ref: Callable
    main: str
    other: Optional[str]
    other_dim: int = -1  # a dim of ``other`` whose size is checked first
    lower_rank: Callable = lambda t: t[0]  # ``main`` at a rank the op does not take
    ranked: Optional[str] = None  # the argument of fixed rank (None: main)


def _case(spec: registry.OpSpec) -> OpCase:
    ex = spec.examples
    return OpCase(make=lambda b, n: ex.make(b, n, device=DEVICE),
                  call=lambda inputs, backend: ex.call(spec.function, inputs, backend=backend),
                  ref=lambda inputs: ex.call(spec.reference, inputs),
                  main=ex.main, other=ex.other, other_dim=ex.other_dim, lower_rank=ex.lower_rank,
                  ranked=ex.ranked)


OPS: Dict[str, OpCase] = {name: _case(spec) for name, spec in registry.OPS.items()}


def _randn(*shape):
    return torch.randn(*shape, device=DEVICE)


def _leaves(inputs):
    return {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}


@pytest.mark.parametrize("empty", ["batch", "tokens"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_empty_input_gives_empty_result_and_zero_gradients(op, backend, empty):
    case = OPS[op]
    inputs = _leaves(case.make(0, 3) if empty == "batch" else case.make(2, 0))
    with poisoned_outputs():
        out = case.call(inputs, backend)
    expected = case.ref({k: v.detach() for k, v in inputs.items()})
    assert out.shape == expected.shape and out.numel() == 0 and out.dtype == expected.dtype
    out.sum().backward()
    for name, t in inputs.items():
        # A sum over no element is 0 (e.g. the weight gradient), whatever the backend.
        assert t.grad is not None and t.grad.shape == t.shape, name
        assert torch.count_nonzero(t.grad) == 0 and not torch.isnan(t.grad).any(), name


def _relaid(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout: "contiguous", "channels_last" (dim 1
    innermost), "swapped" (dims 1 and 2 swapped in memory: diffusers' frame-major view of a video) or
    "strided" (every other element of a tensor twice as wide in the last dim)."""
    if t.dim() != 5 or layout == "contiguous":
        return t
    if layout == "channels_last":
        return t.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    if layout == "swapped":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    wide = torch.full(t.shape[:-1] + (2 * t.shape[-1],), float("nan"), dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "swapped", "strided", "main swapped"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_output_has_the_documented_layout_on_every_backend(op, backend, layout):
    """Each op module's OUTPUT_LAYOUT: "contiguous", "input" (the main input's memory order, made dense:
    temporal attention's q, the conv's and GroupNorm's x) or an input's name (that input's memory order,
    made dense: alpha_blend's x_spatial), whichever backend runs and however the
    inputs are laid out ("main swapped": only the main input swapped, so "input" must follow it, not the
    other inputs)."""
    case = OPS[op]
    def layout_of(name):
        if layout == "main swapped":
            return "swapped" if name == case.main else "contiguous"
        return layout

    inputs = {name: _relaid(t, layout_of(name)) for name, t in case.make(2, 3).items()}
    with poisoned_outputs():
        out = case.call(inputs, backend)
    main = inputs[case.main]
    documented = registry.OPS[op].module.OUTPUT_LAYOUT
    # "input": the main input's order; an input's name: that input's (an op whose layout follows another input)
    assert documented in ("contiguous", "input") or documented in inputs, documented
    like = main if documented == "input" else inputs.get(documented)
    order = range(out.dim()) if documented == "contiguous" else sorted(range(like.dim()), key=lambda d: -like.stride(d))
    assert dense_in_order(out, order), (documented, out.stride())
    torch.testing.assert_close(out, case.ref(inputs), atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the Triton interpreter, on NaN/Inf
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_nan_and_inf_propagate_like_torch(op, backend, value):
    case = OPS[op]
    inputs = case.make(1, 3)
    inputs[case.main].view(-1)[5] = value
    with poisoned_outputs():
        out = case.call(inputs, backend)
    _assert_same_nonfinite(out, case.ref(inputs))


def _assert_same_nonfinite(out, expected):
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    assert torch.equal(torch.isinf(out), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(out[finite], expected[finite], atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the Triton interpreter, on NaN/Inf
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("poisoned", ["q", "k", "v"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frames", list(MODES) + ["table"])
def test_frame_attention_nan_and_inf_like_the_reference_in_every_mode(frames, backend, poisoned, value):
    """NaN/Inf propagate as in the reference whichever fused SDPA kernel this CPU and mask pick."""
    inputs = OPS["frame_attention"].make(1, 3)
    inputs[poisoned][0, 0, 2, 1, 3] = value  # frame 0, which other frames read in every mode but "self"
    if frames == "table":
        frames = torch.tensor([[0, -1], [1, 0], [1, 1]], device=DEVICE)
    with poisoned_outputs():
        out = fastvid.frame_attention(inputs["q"], inputs["k"], inputs["v"], frames=frames, backend=backend)
    _assert_same_nonfinite(out, reference.frame_attention(inputs["q"], inputs["k"], inputs["v"], frames=frames))


def _bad_inputs(case: OpCase):
    """(name, inputs transform, message) for each kind of bad input, built from the table: an op of
    one tensor has no device mismatch, and a rank it accepts whatever it is."""
    main, other, ranked = case.main, case.other, case.ranked or case.main

    def swap(name, fn):
        return lambda a: {**a, name: fn(a[name])}

    if other is None:
        return [("dtype", swap(main, lambda t: t.long()), rf"argument '{main}' has dtype int64"),
                ("shape", swap(main, lambda t: t.narrow(case.other_dim, 0, 1)), rf"argument '{main}' has shape")]
    return [
        ("rank", swap(ranked, case.lower_rank), rf"argument '{ranked}' has rank {{}}"),
        ("dtype", swap(main, lambda t: t.long()), rf"argument '{main}' has dtype int64"),
        ("device", swap(other, lambda t: t.to("meta")), rf"argument '{other}' is on meta"),
        ("shape", swap(other, lambda t: t.narrow(case.other_dim, 0, 1)), rf"argument '{other}' has shape"),
    ]


@pytest.mark.parametrize("op", ["temporal_attention", "frame_attention"])
def test_attention_head_dim_limit_names_the_argument(op):
    """head_dim >= 1 is every backend's need (validation); head_dim <= 256 is Triton's own limit."""
    q = torch.empty(1, 2, 3, 1, 0, device="meta")  # validation runs before any compute
    with pytest.raises(fastvid.FastvidInputError, match=r"argument 'q' has head_dim 0; expected head_dim >= 1"):
        getattr(fastvid, op)(q, q, q)
    wide = torch.empty(1, 2, 3, 1, 257, device="meta")
    with pytest.raises(fastvid.BackendUnsupportedError, match=r"head_dim = 257 > 256"):
        getattr(fastvid, op)(wide, wide, wide, backend="triton")


@pytest.mark.parametrize("op, kind", [(op, c[0]) for op in sorted(OPS) for c in _bad_inputs(OPS[op])])
def test_bad_input_names_the_argument(op, kind):
    case = OPS[op]
    inputs = case.make(1, 3)
    _, transform, message = next(c for c in _bad_inputs(case) if c[0] == kind)
    bad = transform(inputs)
    message = message.format(bad[case.ranked or case.main].dim())
    for backend in ("auto", "triton", "torch", "reference"):
        with pytest.raises(fastvid.FastvidInputError, match=message):
            case.call(bad, backend)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_repeated_runs_are_bit_identical(op, backend):
    """Forward and backward: no atomics anywhere, every reduction in a fixed order."""
    case = OPS[op]
    inputs = case.make(2, 5)
    runs = []
    for _ in range(2):
        leaves = _leaves(inputs)
        out = case.call(leaves, backend)
        out.backward(torch.ones_like(out))
        runs.append([out.detach()] + [leaves[k].grad for k in leaves])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ---- modules ----------------------------------------------------------------------------------

@dataclass
class ModuleCase:
    """``build()`` returns (reference module, fastvid module) with the same weights; ``make(batch)`` the
    input; ``kwargs`` extra forward arguments; ``name`` the input's argument name, ``channel_dim`` its channels."""
    build: Callable[[], Tuple[nn.Module, nn.Module]]
    make: Callable[[int], torch.Tensor]
    name: str = "x"
    channel_dim: int = 1
    kwargs: dict = field(default_factory=dict)


def _twins(ref_cls, fast_cls, *args, **kwargs):
    ref_mod = ref_cls(*args, **kwargs).to(DEVICE)
    fast_mod = fast_cls(*args, **kwargs).to(DEVICE)
    fast_mod.load_state_dict(ref_mod.state_dict())
    fast_mod.backend = "triton"
    return ref_mod, fast_mod


def _inflated():
    """inflate_conv2d's Conv3d against its deflate_conv3d round trip applied per frame."""
    inflated = fastvid.inflate_conv2d(nn.Conv2d(4, 4, 3, padding=1).to(DEVICE))
    return _PerFrame(fastvid.deflate_conv3d(inflated)), inflated


def _patched():
    """fastvid.patch over a small model of reference modules (every twinned kind)."""
    model = nn.Sequential(reference.TemporalAttention(8, heads=2, dim_head=4),
                          reference.FrameAttention(8, heads=2, dim_head=4, frames="first"),
                          reference.PseudoConv3d(8)).to(DEVICE)
    fast = copy.deepcopy(model)
    report = fastvid.patch(fast, backend="triton")
    assert report.total == 3
    return model, fast


class _PerFrame(nn.Module):
    """The deflated Conv2d applied per frame: the reference of an inflated Conv3d."""

    def __init__(self, conv2d):
        super().__init__()
        self.conv = conv2d

    def forward(self, x):
        return self.conv(x.transpose(1, 2).flatten(0, 1)).unflatten(0, x.shape[:3:2]).transpose(1, 2)


class _Stacked(nn.Module):
    """An AddLayerNorm with x flipped over channels as the residual, (sum, normed) stacked: one input, one output."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return torch.stack(self.norm(x, x.flip(-1)))


def _stacking(pair):
    return tuple(_Stacked(m) for m in pair)


class _Mixed(nn.Module):
    """An AlphaBlender mixing x with sin(x) (same shape, dtype and device)."""

    def __init__(self, mixer):
        super().__init__()
        self.mixer = mixer

    def forward(self, x):
        return self.mixer(x, x.sin())


def _alpha_blenders():
    ref_mod, fast_mod = _twins(reference.AlphaBlender, fastvid.nn.AlphaBlender, 0.3)
    return _Mixed(ref_mod), _Mixed(fast_mod)


MODULES: Dict[str, ModuleCase] = {
    "TemporalAttention": ModuleCase(lambda: _twins(reference.TemporalAttention, fastvid.nn.TemporalAttention, 8,
                                                   heads=2, dim_head=4, causal=True),
                                    lambda b: _randn(b, 4, 3, 8), channel_dim=-1),
    "FrameAttention": ModuleCase(lambda: _twins(reference.FrameAttention, fastvid.nn.FrameAttention, 8, heads=2,
                                                dim_head=4, frames="first"),
                                 lambda b: _randn(b, 8, 3, 2, 2)),
    "SparseCausalAttention": ModuleCase(lambda: _twins(reference.SparseCausalAttention,
                                                       fastvid.nn.SparseCausalAttention, 8, heads=2, dim_head=4),
                                        lambda b: _randn(b, 3, 4, 8), channel_dim=-1),
    "PseudoConv3d": ModuleCase(lambda: _twins(reference.PseudoConv3d, fastvid.nn.PseudoConv3d, 4, 6),
                               lambda b: _randn(b, 4, 3, 2, 3)),
    "TemporalConvBlock": ModuleCase(lambda: _twins(reference.TemporalConvBlock, fastvid.nn.TemporalConvBlock, 4,
                                                   norm_num_groups=2),
                                    lambda b: _randn(3 * b, 4, 2, 3), name="hidden_states",
                                    kwargs=dict(num_frames=3)),
    "TemporalResBlock": ModuleCase(lambda: _twins(reference.TemporalResBlock, fastvid.nn.TemporalResBlock, 4, None,
                                                  norm_num_groups=2),
                                   lambda b: _randn(b, 4, 3, 2, 3)),
    "AddLayerNorm": ModuleCase(lambda: _stacking(_twins(reference.AddLayerNorm, fastvid.nn.AddLayerNorm, 6)),
                               lambda b: _randn(b, 3, 6), channel_dim=-1),
    "AlphaBlender": ModuleCase(_alpha_blenders, lambda b: _randn(b, 4, 3, 2, 3)),
    "GEGLU": ModuleCase(lambda: _twins(reference.GEGLU, fastvid.nn.GEGLU, 8, 5), lambda b: _randn(b, 3, 8),
                        name="hidden_states", channel_dim=-1),
    "Linear": ModuleCase(lambda: _twins(reference.Linear, fastvid.nn.Linear, 8, 5), lambda b: _randn(b, 3, 8),
                         channel_dim=-1),
    "inflate_conv2d": ModuleCase(_inflated, lambda b: _randn(b, 4, 3, 2, 3)),
    "patch": ModuleCase(_patched, lambda b: _randn(b, 8, 3, 2, 2)),
}


def test_module_table_covers_every_public_module():
    exported = {name for name in fastvid.nn.__all__ if isinstance(getattr(fastvid.nn, name), type)}
    assert exported <= set(MODULES)
    assert {"inflate_conv2d", "patch"} <= set(MODULES)  # deflate_conv3d builds the inflate reference


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_empty_batch(name):
    case = MODULES[name]
    ref_mod, fast_mod = case.build()
    x = case.make(0).requires_grad_()
    out = fast_mod(x, **case.kwargs)
    assert out.shape == ref_mod(x.detach(), **case.kwargs).shape and out.numel() == 0
    out.sum().backward()
    assert x.grad.shape == x.shape
    for p in fast_mod.parameters():
        assert p.grad is None or (torch.count_nonzero(p.grad) == 0 and not torch.isnan(p.grad).any())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_nan_propagates_like_the_reference(name):
    case = MODULES[name]
    ref_mod, fast_mod = case.build()
    x = case.make(1)
    x.view(-1)[3] = float("nan")
    out, expected = fast_mod(x, **case.kwargs), ref_mod(x, **case.kwargs)
    assert torch.equal(torch.isnan(out), torch.isnan(expected))


@pytest.mark.parametrize("kind", ["rank", "dtype", "device", "channels"])
# inflate_conv2d: a torch Conv3d, torch checks it. AlphaBlender: any rank, broadcasting like the reference
# (fastvid.alpha_blend's own checks are in OPS).
@pytest.mark.parametrize("name", sorted(set(MODULES) - {"inflate_conv2d", "AlphaBlender"}))
def test_module_bad_input_names_the_argument(name, kind):
    case = MODULES[name]
    _, fast_mod = case.build()
    x = case.make(1)
    bad, message = {
        "rank": (x[0, 0], rf"argument '{case.name}' has rank {x.dim() - 2}"),
        "dtype": (x.long(), rf"argument '{case.name}' has dtype int64"),
        "device": (x.to("meta"), rf"argument '{case.name}' is on meta"),
        "channels": (x.narrow(case.channel_dim, 0, 1), rf"argument '{case.name}' has shape"),
    }[kind]
    with pytest.raises(fastvid.FastvidInputError, match=message):
        fast_mod(bad, **case.kwargs)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_repeated_runs_are_bit_identical(name):
    case = MODULES[name]
    _, fast_mod = case.build()
    x = case.make(2)
    runs = []
    for _ in range(2):
        fast_mod.zero_grad()
        leaf = x.clone().requires_grad_()
        out = fast_mod(leaf, **case.kwargs)
        out.square().sum().backward()
        runs.append([out.detach(), leaf.grad] + [p.grad.clone() for p in fast_mod.parameters() if p.grad is not None])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ---- torch.library registration -----------------------------------------------------------------

OPCHECK_FULL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_BWD = ("test_schema", "test_autograd_registration", "test_faketensor")


def _opcheck_cases():
    """Registered op name -> (args, test_utils). Backward ops take the forward's saved outputs."""
    ops = torch.ops.fastvid
    ta = OPS["temporal_attention"].make(1, 3)
    q, k, v, bias = (ta[n].requires_grad_() for n in ("q", "k", "v", "bias"))
    fa = OPS["frame_attention"].make(1, 3)
    table = torch.tensor([[0, -1], [0, 0], [2, 1]], dtype=torch.int32, device=DEVICE)
    tc = OPS["temporal_conv"].make(1, 2)
    gn = OPS["group_norm_silu"].make(1, 2)
    aln = OPS["add_layer_norm"].make(2, 3)
    gg = OPS["geglu"].make(1, 3)["proj_out"]
    gl = OPS["geglu_linear"].make(1, 3)
    lin = OPS["linear"].make(1, 3)
    with torch.no_grad():
        ta_out, ta_lse = ops.temporal_attention_fwd(q, k, v, bias, True, 0.35)
        fa_out, fa_lse = ops.frame_attention_fwd(fa["q"], fa["k"], fa["v"], table, 0.35)
        gn_out, gn_stats = ops.group_norm_silu_fwd(gn["x"], gn["weight"], gn["bias"], 2, 1e-5, True)
        aln_sum, _, aln_stats = ops.add_layer_norm_fwd(aln["x"], aln["residual"], aln["weight"], aln["bias"], 1e-5,
                                                       None)
        ab = OPS["alpha_blend"].make(1, 2)
        ab_out = ops.alpha_blend_fwd(ab["x_spatial"], ab["x_temporal"], ab["alpha"], None, "alpha", False)
        gg_out = ops.geglu_fwd(gg, "tanh")
        gl_out = ops.geglu_linear_fwd(gl["x"], gl["weight"], gl["bias"], "none")
        lin_out = ops.linear_fwd(lin["x"], lin["weight"], lin["bias"], lin["residual"])
    grad = lambda t: torch.randn_like(t)  # noqa: E731
    return {
        "temporal_attention_fwd": ((q, k, v, bias, True, 0.35), OPCHECK_FULL),
        "temporal_attention_bwd": ((grad(ta_out), *(t.detach() for t in (q, k, v, bias)), ta_out, ta_lse, True, 0.35,
                                    True), OPCHECK_BWD),
        "frame_attention_fwd": ((*(fa[n].requires_grad_() for n in ("q", "k", "v")), table, 0.35), OPCHECK_FULL),
        "frame_attention_bwd": ((grad(fa_out), fa["q"].detach(), fa["k"].detach(), fa["v"].detach(), table, fa_out,
                                 fa_lse, 0.35), OPCHECK_BWD),
        "temporal_conv_fwd": ((*(tc[n].requires_grad_() for n in ("x", "weight", "bias", "residual")), 1),
                              OPCHECK_FULL),
        "temporal_conv_bwd": ((grad(tc["residual"]), tc["x"].detach(), tc["weight"].detach(), 1, True, True, True),
                              OPCHECK_BWD),
        "group_norm_silu_fwd": ((*(gn[n].requires_grad_() for n in ("x", "weight", "bias")), 2, 1e-5, True),
                                OPCHECK_FULL),
        "group_norm_silu_bwd": ((grad(gn_out), gn["x"].detach(), gn["weight"].detach(), gn["bias"].detach(),
                                 gn_stats, 2, True), OPCHECK_BWD),
        "add_layer_norm_fwd": ((*(aln[n].requires_grad_() for n in ("x", "residual", "weight", "bias")), 1e-5,
                                None), OPCHECK_FULL),
        "add_layer_norm_bwd": ((grad(aln_sum), grad(aln_sum), aln_sum, aln["weight"].detach(), aln_stats, True),
                               OPCHECK_BWD),
        "alpha_blend_fwd": ((*(ab[n].requires_grad_() for n in ("x_spatial", "x_temporal", "alpha")), None, "alpha",
                             False), OPCHECK_FULL),
        "alpha_blend_bwd": ((grad(ab_out), *(ab[n].detach() for n in ("x_spatial", "x_temporal", "alpha")), None,
                             "alpha", False), OPCHECK_BWD),
        "geglu_fwd": ((gg.clone().requires_grad_(), "tanh"), OPCHECK_FULL),
        "geglu_bwd": ((grad(gg_out), gg, "none"), OPCHECK_BWD),
        "geglu_linear_fwd": ((*(gl[n].requires_grad_() for n in ("x", "weight", "bias")), "tanh"), OPCHECK_FULL),
        "geglu_linear_bwd": ((grad(gl_out), gl["x"].detach(), gl["weight"].detach(), None, "none"), OPCHECK_BWD),
        # residual a channel-first view: the output, and so dy, in its memory order
        "linear_fwd": (tuple(lin[n].requires_grad_() for n in ("x", "weight", "bias", "residual")), OPCHECK_FULL),
        "linear_bwd": ((grad(lin_out), lin["x"].detach(), lin["weight"].detach(), True, True, True), OPCHECK_BWD),
    }


def _registered_ops():
    return sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fastvid::"))


def test_every_registered_op_passes_opcheck():
    cases = _opcheck_cases()
    registered = _registered_ops()
    assert registered and set(registered) == set(cases), f"ops without an opcheck case: {set(registered) - set(cases)}"
    assert set(registered) == {name for spec in registry.OPS.values() for name in spec.library_ops}
    for name in registered:
        args, utils = cases[name]
        torch.library.opcheck(getattr(torch.ops.fastvid, name).default, args, test_utils=utils)


def _another_layout(t):
    """t's values in another memory layout: dim 1 innermost for 4 or more dims (what torch Inductor's layout
    optimisation makes of a convolution's (N, C, ...) output), the last two dims swapped in memory for 3;
    dense row-major where t already had that layout."""
    if not isinstance(t, torch.Tensor) or t.dim() < 3:
        return t
    src, dst = (1, -1) if t.dim() >= 4 else (-1, -2)
    out = t.detach().movedim(src, dst).contiguous().movedim(dst, src)
    if out.stride() == t.stride():
        out = t.detach().contiguous()
    return out.requires_grad_(t.requires_grad) if t.is_leaf else out


def test_fake_layouts_follow_the_inputs_as_inductor_may_pass_them():
    """Every op is registered ``flexible_layout`` (Inductor passes its inputs in the layout it chose, no copy back
    to the traced strides), so each fake implementation must give the real outputs' strides for any input
    layout: every tensor of 3 or more dims re-laid out, or the first alone (inputs in different layouts)."""
    for name, (args, _) in _opcheck_cases().items():
        assert torch.Tag.flexible_layout in getattr(torch.ops.fastvid, name).default.tags, name
        every = tuple(_another_layout(a) for a in args)
        first = (_another_layout(args[0]),) + tuple(args[1:])
        for relaid in (every, first):
            assert any(isinstance(a, torch.Tensor) and a.stride() != b.stride() for a, b in zip(args, relaid)), name
            torch.library.opcheck(getattr(torch.ops.fastvid, name).default, relaid, test_utils=("test_faketensor",))


class _EveryOp(nn.Module):
    """GroupNorm+SiLU, temporal conv (residual), temporal attention (bias), frame attention, GEGLU's projection
    with its activation, GEGLU's activation, and a Linear back to head_dim adding the tokens (a permuted view of
    the video: the output in its memory order) on one video."""

    def __init__(self, channels=16, frames=3, heads=2):
        super().__init__()
        self.heads = heads
        self.norm_weight, self.norm_bias = nn.Parameter(torch.randn(channels)), nn.Parameter(torch.randn(channels))
        self.conv = nn.Parameter(torch.randn(channels, channels, 3) / (3 * channels) ** 0.5)
        self.bias = nn.Parameter(torch.randn(heads, frames, frames))
        head_dim = channels // heads
        self.ff_weight = nn.Parameter(torch.randn(2 * 6, head_dim) / head_dim ** 0.5)
        self.ff_bias = nn.Parameter(torch.randn(2 * 6))
        self.out_weight = nn.Parameter(torch.randn(head_dim, 3) / 3 ** 0.5)
        self.out_bias = nn.Parameter(torch.randn(head_dim))
        self.backend = "triton"

    def forward(self, x):
        h = fastvid.group_norm_silu(x, 2, self.norm_weight, self.norm_bias, backend=self.backend)
        h = fastvid.temporal_conv(h, self.conv, residual=x, backend=self.backend)
        tokens = h.flatten(3).permute(0, 2, 3, 1).unflatten(-1, (self.heads, -1))  # (B, F, H*W, heads, d)
        t = fastvid.temporal_attention(tokens, tokens, tokens, bias=self.bias, backend=self.backend)
        out = fastvid.frame_attention(t, tokens, tokens, frames="sparse_causal", backend=self.backend)
        ff = fastvid.geglu_linear(out, self.ff_weight, self.ff_bias, backend=self.backend)  # (..., 6)
        g = fastvid.geglu(ff, approximate="tanh", backend=self.backend)
        return fastvid.linear(g, self.out_weight, self.out_bias, residual=tokens, backend=self.backend)


def test_compile_fullgraph_over_every_op_with_gradients():
    torch._dynamo.reset()
    mod = _EveryOp().to(DEVICE)
    x = torch.randn(1, 16, 3, 2, 3, device=DEVICE)
    outs, grads = [], []
    for fn in (mod, torch.compile(mod, fullgraph=True, backend="aot_eager")):
        mod.zero_grad()
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([leaf.grad] + [p.grad for p in mod.parameters()])
    torch.testing.assert_close(outs[1], outs[0])
    for compiled, eager in zip(grads[1], grads[0]):
        torch.testing.assert_close(compiled, eager)


def test_compile_fullgraph_over_the_torch_attention_backends():
    """The CPU non-finite check steps aside while tracing (no graph break)."""
    torch._dynamo.reset()
    q = torch.randn(1, 3, 4, 2, 8, device=DEVICE)

    def both(t):
        return (fastvid.frame_attention(t, t, t, frames="self", backend="torch")
                + fastvid.temporal_attention(t, t, t, backend="torch"))

    torch.testing.assert_close(torch.compile(both, fullgraph=True, backend="aot_eager")(q), both(q))


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA-graph capture needs a GPU")
def test_cuda_graph_replays_a_patched_ddim_step():
    from fastvid import models
    from fastvid.models.common import make_inputs
    from fastvid.samplers import NoiseSchedule
    from fastvid.samplers.ddim import ddim_step, predict_x0

    size = models.size("make_a_video", "tiny")
    model = models.build("make_a_video", size).to(DEVICE)
    fastvid.patch(model, backend="triton")
    inp = make_inputs(size, seed=0, device=DEVICE, dtype=torch.float32)
    schedule = NoiseSchedule()
    timesteps = schedule.timesteps(size.steps)
    a, a_prev = schedule.alpha_bar(timesteps[0]), schedule.alpha_bar(schedule.previous(timesteps, 0))
    tt = torch.tensor([timesteps[0]], device=DEVICE)
    context = torch.cat([inp.uncond_context, inp.context])

    @torch.no_grad()
    def step(x):  # one guided DDIM step, as ddim_sample runs it
        eps_uncond, eps_cond = model(torch.cat([x, x]), tt, context).chunk(2)
        eps = eps_uncond + size.guidance_scale * (eps_cond - eps_uncond)
        return ddim_step(x, eps, predict_x0(x, eps, a), a, a_prev, 0.0, None)

    static_x = inp.noise.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: Triton compilation and autotuning happen outside the capture
        for _ in range(2):
            step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step(static_x)
    fresh = torch.randn_like(static_x)
    static_x.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, step(fresh))


# ---- large sizes ---------------------------------------------------------------------------------

def _far_frames(shape, strides):
    """A view whose frame 2 starts past 2**31 elements into its buffer; untouched memory is never paged in."""
    size = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    view = torch.empty(size, dtype=torch.float16, device=DEVICE).as_strided(shape, strides)
    return view.copy_(torch.randn(shape, dtype=torch.float16))


FAR = 2**30 + 16  # frame stride: frame 2 at 2**31 + 32


def test_temporal_conv_offsets_beyond_int32_use_int64():
    """The forward, the input gradient and the weight-gradient kernel all read frame 2."""
    x = _far_frames((1, 2, 3, 1, 16), (0, 16, FAR, 16, 1))
    weight = torch.randn(2, 2, 3, dtype=torch.float16, device=DEVICE)
    check_against_reference("int64 offsets", lambda x, w: fastvid.temporal_conv(x, w, backend="triton"),
                            lambda x, w: reference.temporal_conv(x, w), [x, weight], torch.float16)


def test_group_norm_silu_offsets_beyond_int32_use_int64():
    x = _far_frames((1, 2, 3, 1, 16), (0, 16, FAR, 16, 1))
    weight, bias = (torch.randn(2, dtype=torch.float16, device=DEVICE) for _ in range(2))
    check_against_reference("int64 offsets", lambda x, w, b: fastvid.group_norm_silu(x, 1, w, b, backend="triton"),
                            lambda x, w, b: reference.group_norm_silu(x, 1, w, b), [x, weight, bias], torch.float16)


def test_geglu_offsets_beyond_int32_use_int64():
    """Row 2 of the projection output (and its gate half) lies past 2**31 elements: forward and backward read it."""
    proj_out = _far_frames((3, 16), (FAR, 1))
    check_against_reference("int64 offsets", lambda p: fastvid.geglu(p, backend="triton"), reference.geglu, [proj_out],
                            torch.float16)


def test_linear_offsets_beyond_int32_use_int64():
    """Batch 2 of x and of the residual (B, M, K) lies past 2**31 elements, rows stride 1 (a transposed
    view): the (batch, row) addressing of the loads, the epilogue and the gradients reads it."""
    x, residual = _far_frames((3, 2, 8), (FAR, 1, 2)), _far_frames((3, 2, 4), (FAR, 1, 2))
    weight, bias = (torch.randn(shape, dtype=torch.float16, device=DEVICE) for shape in ((4, 8), (4,)))
    check_against_reference("int64 offsets", lambda x, w, b, r: fastvid.linear(x, w, b, residual=r, backend="triton"),
                            lambda x, w, b, r: reference.linear(x, w, b, residual=r), [x, weight, bias, residual],
                            torch.float16)


class _LaunchRecorder:
    """Stands in for a Triton kernel: records each launch's grid, resolving a grid function with every
    autotune config it could pick."""

    def __init__(self, kernel):
        self.configs = [c.kwargs for c in getattr(kernel, "configs", [])] or [{}]
        self.grids: List[tuple] = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            for config in self.configs:
                self.grids.append(tuple(grid({**kwargs, **config}) if callable(grid) else grid))
        return launch

    def run(self, *args, grid, warmup=False, **kwargs):  # kernel[grid](...) is kernel.run(..., grid=grid)
        self[grid](*args, **kwargs)


@pytest.mark.parametrize("batch", [4, 8])
def test_svd_scale_launch_arithmetic(batch, monkeypatch):
    """SVD-XT's 25-frame 72x128 latents at 1280 channels (batch 8: past 2**31 elements per tensor; the GEGLU
    projection output at 320 channels too), on the meta
    device: every launcher's grids stay within CUDA's limits (axis 0 < 2**31, axes 1 and 2 < 65536)."""
    from fastvid.ops import add_layer_norm as aln, alpha_blend as ab, frame_attention as fa, geglu as gg
    from fastvid.ops import geglu_linear as gl, group_norm_silu as gn, linear as lin, temporal_attention as ta
    from fastvid.ops import temporal_conv as tc

    recorders = {}
    for spec in registry.OPS.values():
        module = spec.kernels()
        for name in dir(module):
            if name.endswith("_kernel"):
                recorders[name] = _LaunchRecorder(getattr(module, name))
                monkeypatch.setattr(module, name, recorders[name])

    meta = dict(device="meta", dtype=torch.float16)
    frames, channels, heads = 25, 1280, 20
    video = torch.empty(batch, channels, frames, 72, 128, **meta)
    tokens = torch.empty(batch, frames, 72 * 128, heads, channels // heads, **meta)
    assert (video.numel() > 2**31) == (batch == 8)

    # SVD-XT's 25 frames (the backward's key blocks) and SVD's 14 (its batched positions)
    for attention_frames in (frames, 14):
        tokens_f = tokens[:, :attention_frames]
        out, lse = ta.temporal_attention_fwd._init_fn(tokens_f, tokens_f, tokens_f, None, False, 0.125)
        bias = torch.empty(heads, attention_frames, attention_frames, **meta)  # the bias-gradient reduce launches too
        ta.temporal_attention_bwd._init_fn(out, tokens_f, tokens_f, tokens_f, bias, out, lse, False, 0.125, True)
    table = fa.frame_table("sparse_causal", frames, "cpu").to("meta")
    out, lse = fa.frame_attention_fwd._init_fn(tokens, tokens, tokens, table, 0.125)
    fa.frame_attention_bwd._init_fn(out, tokens, tokens, tokens, table, out, lse, 0.125)
    weight = torch.empty(channels, channels, 3, **meta)
    y = tc.temporal_conv_fwd._init_fn(video, weight, None, video, 1)
    tc.temporal_conv_bwd._init_fn(y, video, weight, 1, True, True, False)
    affine = torch.empty(channels, **meta)
    y, stats = gn.group_norm_silu_fwd._init_fn(video, affine, affine, 32, 1e-5, True)
    gn.group_norm_silu_bwd._init_fn(y, video, affine, affine, stats, 32, True)
    # per frame at the lowest level's 9x16 latents: whole groups per program, one launch
    gn.group_norm_silu_fwd._init_fn(torch.empty(batch, channels, frames, 9, 16, **meta), affine, affine, 32, 1e-5, True)
    rows = video.view(batch * frames, 72 * 128, channels)  # a spatial block's (B*F, H*W, C) tokens
    total, _, stats = aln.add_layer_norm_fwd._init_fn(rows, rows, affine, affine, 1e-5, None)
    aln.add_layer_norm_bwd._init_fn(total, total, total, affine, stats, True)
    alpha = torch.empty(1, **meta)  # one alpha for the whole tensor: a single row of every element
    images = torch.empty(batch, frames, **meta)  # alpha per (sample, frame) from the mix factor and the indicator
    for alpha_args in ((alpha, None, "alpha", False), (alpha, images, "learned_with_images", True)):
        y = ab.alpha_blend_fwd._init_fn(video, video, *alpha_args)
        ab.alpha_blend_bwd._init_fn(y, video, video, *alpha_args)
    proj_out = torch.empty(batch * frames, 72 * 128, 2 * 4 * 320, **meta)  # the feed-forward at 320 channels
    y = gg.geglu_fwd._init_fn(proj_out, "none")
    gg.geglu_bwd._init_fn(y, proj_out, "none")
    x = torch.empty(batch * frames, 72 * 128, 320, **meta)  # its input, through the fused projection
    ff_weight, ff_bias = torch.empty(2 * 4 * 320, 320, **meta), torch.empty(2 * 4 * 320, **meta)
    y = gl.geglu_linear_fwd._init_fn(x, ff_weight, ff_bias, "none")
    gl.geglu_linear_bwd._init_fn(y, x, ff_weight, ff_bias, "none")
    nchw = video.view(batch * frames, channels, 72 * 128).transpose(1, 2)  # (B*F, H*W, C) views of NCHW frames
    lin.linear_fwd._init_fn(nchw, torch.empty(channels, channels, **meta), affine, nchw)  # proj_out into NCHW

    for name, recorder in recorders.items():
        assert recorder.grids, f"{name} was never launched"
        for grid in recorder.grids:
            assert 1 <= len(grid) <= 3 and all(g >= 1 for g in grid), (name, grid)
            assert grid[0] < 2**31 and all(g < 65536 for g in grid[1:]), (name, grid)


@pytest.mark.parametrize("op", ["temporal_attention", "frame_attention"])
def test_attention_head_dim_outermost_beyond_int32(op):
    """head_dim outermost in memory ("any strides"): element d = 2 of every row lies past 2**31."""
    shape, strides = (1, 3, 2, 1, 3), (0, 2, 1, 0, FAR)
    q, k, v = (_far_frames(shape, strides) for _ in range(3))
    fast = getattr(fastvid, op)
    ref = getattr(reference, op)
    check_against_reference("int64 offsets", lambda q, k, v: fast(q, k, v, backend="triton"),
                            lambda q, k, v: ref(q, k, v), [q, k, v], torch.float16)
