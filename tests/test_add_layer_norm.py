"""fastvid.add_layer_norm against fastvid.reference.add_layer_norm (residual add, then LayerNorm)."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import check_against_reference, poisoned_outputs

from conftest import DEVICE, KERNEL_DTYPES


def _stacked(fn, **kwargs):
    """(sum, normed) as one tensor: the checking rule compares one output and its gradients."""
    return lambda *tensors: torch.stack(fn(*tensors, **kwargs))


def _tokens(shape, dtype, layout="contiguous"):
    if layout == "transposed":  # (N, B, C) storage: diffusers' temporal blocks read tokens this way
        return torch.randn(shape[1], shape[0], shape[2], dtype=dtype, device=DEVICE).transpose(0, 1)
    if layout == "strided":  # every other channel of a wider buffer
        return torch.randn(*shape[:2], 2 * shape[2], dtype=dtype, device=DEVICE)[..., ::2]
    return torch.randn(shape, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_triton_matches_reference(dtype, layout):
    """13 rows of 77 channels (masked tails in both), x non-contiguous; grads of x, residual, weight, bias."""
    x, r = _tokens((1, 13, 77), dtype, layout), _tokens((1, 13, 77), dtype) * 3 + 1
    w, b = 1 + 0.1 * torch.randn(77, dtype=dtype, device=DEVICE), 0.1 * torch.randn(77, dtype=dtype, device=DEVICE)
    check_against_reference(f"add_layer_norm {layout}", _stacked(fastvid.add_layer_norm, backend="triton"),
                            _stacked(reference.add_layer_norm), [x, r, w, b], dtype)


@pytest.mark.parametrize("affine", ["none", "weight only"])
def test_without_affine(affine):
    x, r = _tokens((2, 5, 24), torch.float32), _tokens((2, 5, 24), torch.float32)
    w = torch.randn(24, device=DEVICE) if affine == "weight only" else None
    fn = lambda x, r, w=None: torch.stack(fastvid.add_layer_norm(x, r, w, backend="triton"))  # noqa: E731
    ref = lambda x, r, w=None: torch.stack(reference.add_layer_norm(x, r, w))  # noqa: E731
    check_against_reference(affine, fn, ref, [x, r] if w is None else [x, r, w], torch.float32)


def test_many_rows_split_over_programs():
    """More row blocks than backward programs: each program walks several, its weight partials summed after."""
    x, r = _tokens((3, 40, 9), torch.float32, "transposed"), _tokens((3, 40, 9), torch.float32)
    w, b = torch.randn(9, device=DEVICE), torch.randn(9, device=DEVICE)
    check_against_reference("many rows", _stacked(fastvid.add_layer_norm, backend="triton"),
                            _stacked(reference.add_layer_norm), [x, r, w, b], torch.float32)


def test_gradient_of_one_output_only():
    """Only the normed output used (the sum's gradient is absent), then only the sum."""
    x, r = (_tokens((1, 4, 10), torch.float32).requires_grad_() for _ in range(2))
    w = torch.randn(10, device=DEVICE, requires_grad=True)
    for pick in (1, 0):
        grads = []
        for fn in (lambda *a: fastvid.add_layer_norm(*a, backend="triton"), reference.add_layer_norm):
            with poisoned_outputs():
                out = fn(x, r, w)[pick]
            grads.append(torch.autograd.grad(out.square().sum(), (x, r, w), allow_unused=True))
        for got, expected in zip(*grads):
            if expected is None:
                assert got is None or torch.count_nonzero(got) == 0
            else:
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_outputs_are_contiguous_and_sum_is_exactly_the_add():
    x, r = _tokens((2, 7, 33), torch.float16, "strided"), _tokens((2, 7, 33), torch.float16, "transposed")
    with poisoned_outputs():
        s, y = fastvid.add_layer_norm(x, r, backend="triton")
    assert s.is_contiguous() and y.is_contiguous()
    assert torch.equal(s, x + r)  # the residual stream is the dtype's add, bit for bit


def test_torch_backends_match_reference():
    x, r = _tokens((2, 6, 20), torch.float32, "transposed"), _tokens((2, 6, 20), torch.float32)
    w, b = torch.randn(20, device=DEVICE), torch.randn(20, device=DEVICE)
    for backend in ("torch", "reference"):
        check_against_reference(backend, _stacked(fastvid.add_layer_norm, backend=backend),
                                _stacked(reference.add_layer_norm), [x, r, w, b], torch.float32)


def test_module_matches_layer_norm_and_keeps_its_state_dict():
    ref_mod = reference.AddLayerNorm(12).to(DEVICE)
    torch.nn.init.normal_(ref_mod.weight)
    fast = fastvid.nn.AddLayerNorm(12).to(DEVICE)
    fast.load_state_dict(torch.nn.LayerNorm(12).state_dict())
    fast.load_state_dict(ref_mod.state_dict())
    fast.backend = "triton"
    x, r = _tokens((2, 3, 12), torch.float32), _tokens((2, 3, 12), torch.float32)
    s, y = fast(x, r)
    torch.testing.assert_close(s, x + r)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x + r, (12,), ref_mod.weight, ref_mod.bias))


def test_auto_uses_torch_on_cpu_and_reports_it():
    x = _tokens((1, 2, 8), torch.float32)
    fastvid.add_layer_norm(x, x)
    assert fastvid.last_backend("add_layer_norm") == ("triton" if DEVICE == "cuda" else "torch")


def test_triton_refusals_give_reasons():
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        x = _tokens((1, 2, 8), torch.float64)
        fastvid.add_layer_norm(x, x, backend="triton")
    with pytest.raises(fastvid.BackendUnsupportedError, match="8192"):
        x = torch.empty(1, 1, 8193, device=DEVICE)
        fastvid.add_layer_norm(x, x, backend="triton")


@pytest.mark.parametrize("case, match", [
    ("rank", r"argument 'x' has rank 2"),
    ("residual shape", r"argument 'residual' has shape \(1, 2, 7\)"),
    ("weight shape", r"argument 'weight' has shape \(7,\)"),
    ("bias dtype", r"argument 'bias' has dtype torch.float16"),
    ("eps", r"argument 'eps' is -1.0"),
])
def test_bad_input_names_the_argument(case, match):
    x = _tokens((1, 2, 8), torch.float32)
    w = torch.ones(8, device=DEVICE)
    args = {
        "rank": (x[0], x[0], w, None, 1e-5),
        "residual shape": (x, x[..., :7], w, None, 1e-5),
        "weight shape": (x, x, w[:7], None, 1e-5),
        "bias dtype": (x, x, w, w.half(), 1e-5),
        "eps": (x, x, w, None, -1.0),
    }[case]
    for backend in ("triton", "torch", "reference"):
        with pytest.raises(fastvid.FastvidInputError, match=match):
            fastvid.add_layer_norm(*args, backend=backend)


def test_custom_op_passes_opcheck():
    """Schema, fake tensor, autograd registration and AOT dispatch (torch.compile); x non-contiguous."""
    from fastvid.ops.add_layer_norm import add_layer_norm_fwd

    x = _tokens((2, 3, 5), torch.float32, "transposed").requires_grad_()
    r, w, b = (t.requires_grad_() for t in (_tokens((2, 3, 5), torch.float32), torch.randn(5, device=DEVICE),
                                             torch.randn(5, device=DEVICE)))
    torch.library.opcheck(add_layer_norm_fwd, (x, r, w, b, 1e-5))
