"""fastvid.geglu_linear (GEGLU's projection with the activation in the GEMM epilogue) against
fastvid.reference.geglu_linear, its dispatch, its module twin and the GEGLU swap in diffusers."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import assert_close_to_gold, assert_twins_agree, check_against_reference
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

APPROXIMATIONS = ["none", "tanh"]


def _inputs(layout, dtype, rows=37, k=24, inner=40, bias=True):
    """x (..., K) with M = rows tokens: a slice of a wider last dim (read in place), or (rows / 2, 2, K)
    with its leading dims swapped in memory (they do not merge: the launcher copies); weight (2 * inner, K)
    scaled like nn.Linear's initialisation; bias (2 * inner,) or None."""
    r = dict(dtype=dtype, device=DEVICE)
    if layout == "sliced":
        x = torch.randn(rows, 1, k + 7, **r)[..., 3:3 + k]
    else:
        x = torch.randn(2, rows // 2, k, **r).transpose(0, 1)
    weight = torch.randn(2 * inner, k, **r) * k ** -0.5
    return [x, weight, torch.randn(2 * inner, **r) if bias else None]


def _fastvid(approximate, backend="triton"):
    return lambda x, w, b: fastvid.geglu_linear(x, w, b, approximate=approximate, backend=backend)


def _reference(approximate):
    return lambda x, w, b: reference.geglu_linear(x, w, b, approximate=approximate)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("layout, bias", [("sliced", True), ("leading_dims_swapped", False)])
def test_triton_matches_reference(dtype, approximate, layout, bias):
    """M 37 (or 36), K 24 and inner 40: ragged in every dim of the interpreter's 16-wide tiles; x
    non-contiguous; outputs poisoned; gradients of x, weight and bias against the float64 reference."""
    inputs = _inputs(layout, dtype, bias=bias)
    check_against_reference(f"geglu_linear {approximate} {layout}", _fastvid(approximate), _reference(approximate),
                            inputs, dtype)


def test_long_k_runs_many_k_steps():
    """K 70: five K tiles, the last one 6 wide; inner 17 (one ragged column tile)."""
    inputs = _inputs("sliced", torch.float16, rows=9, k=70, inner=17)
    check_against_reference("geglu_linear K 70", _fastvid("none"), _reference("none"), inputs, torch.float16)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_torch_backends_match_reference(backend):
    inputs = _inputs("sliced", torch.float32)
    check_against_reference(backend, _fastvid("tanh", backend), _reference("tanh"), inputs, torch.float32)


def test_a_repeated_call_reuses_its_plan_and_new_strides_make_a_new_one():
    """The call cache (validation, backend, launch plan) is keyed on the signature: fresh tensors of the
    same layout reuse the plan; x with other strides (the leading dims swapped: copied to rows) gets its own."""
    dispatcher = fastvid.dispatch.dispatchers()["geglu_linear"]
    dispatcher.calls.clear()
    for _ in range(2):
        fastvid.geglu_linear(*_inputs("sliced", torch.float32, 6, 8, 3), backend="triton")
    assert len(dispatcher.calls) == 1
    inputs = _inputs("leading_dims_swapped", torch.float32, 6, 8, 3)
    torch.testing.assert_close(fastvid.geglu_linear(*inputs, backend="triton"), reference.geglu_linear(*inputs))
    assert len(dispatcher.calls) == 2


@pytest.mark.parametrize("case, match", [
    ("k", r"argument 'weight' has shape \(6, 7\); expected K = 8 columns"),
    ("odd", r"argument 'weight' has shape \(5, 8\); expected an even number of rows"),
    ("dtype", r"argument 'weight' has dtype torch.float16; expected the dtype of 'x'"),
    ("bias", r"argument 'bias' has shape \(5,\); expected \(6,\)"),
    ("approximate", r"argument 'approximate' is 'fast'"),
])
def test_bad_input_names_the_argument(case, match):
    (x, w, b), kwargs = _inputs("sliced", torch.float32, 4, 8, 3), {}
    if case == "k":
        w = w[:, :7]
    elif case == "odd":
        w, b = w[:5], b[:5]
    elif case == "dtype":
        w = w.half()
    elif case == "bias":
        b = b[:5]
    else:
        kwargs["approximate"] = "fast"
    with pytest.raises(FastvidInputError, match=match):
        fastvid.geglu_linear(x, w, b, **kwargs)


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_module_twin_runs_the_fused_gemm_and_matches_the_reference_module(approximate):
    ref = reference.GEGLU(12, 7, approximate=approximate).to(DEVICE)
    fast = fastvid.nn.GEGLU(12, 7, approximate=approximate).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    fast.backend = "triton"
    assert fast.unfused_reason() is None
    assert_twins_agree(ref, fast, torch.randn(2, 5, 12, device=DEVICE))
    assert fastvid.last_backend("geglu_linear") == "triton"


def test_module_twin_under_autocast_computes_in_the_autocast_dtype():
    """x, weight and bias cast as F.linear's autocast rule casts them; judged against the float64 module."""
    ref = reference.GEGLU(12, 7).to(DEVICE)
    fast = fastvid.nn.GEGLU(12, 7).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 12, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got, in_dtype = fast(x), ref(x)
    assert got.dtype == in_dtype.dtype == torch.bfloat16
    assert_close_to_gold("GEGLU under autocast", got, in_dtype, ref.double()(x.double()), torch.bfloat16)


def test_module_twin_with_a_hooked_projection_calls_it_and_says_why():
    fast = fastvid.nn.GEGLU(12, 7).to(DEVICE)
    calls = []
    fast.proj.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(3, 12, device=DEVICE)
    torch.testing.assert_close(fast(x), reference.geglu_linear(x, fast.proj.weight, fast.proj.bias))
    assert calls == [1] and fast.unfused_reason() == "proj has forward hooks"


def test_patched_diffusers_geglu_runs_the_fused_gemm_with_matching_gradients():
    """diffusers' GEGLU swapped by fastvid.patch (a temporal transformer, every other swap off): outputs and
    gradients of the unpatched model (judged against its float64 run); the projection ran fused."""
    td = pytest.importorskip("test_diffusers")
    tg = pytest.importorskip("test_geglu")
    model, inputs = tg._temporal_transformer(td)
    keys = list(model.state_dict())
    td.check_patched_gradients(model, inputs, backend="triton", **tg.FEED_FORWARD_ONLY)
    assert type(model.transformer_blocks[0].ff.net[0]) is td.fd.FastvidGEGLU
    assert fastvid.last_backend("geglu_linear") == "triton" and list(model.state_dict()) == keys
