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


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("residual", [True, False])
def test_frame_table_added_after_the_norm(dtype, residual):
    """AnimateDiff's positional embedding on frame-major tokens: 2 videos x 3 frames of 5 tokens, 77 channels
    (masked tails), x non-contiguous, with and without the residual add; grads of x, residual, weight, bias and
    the table."""
    x = _tokens((6, 5, 77), dtype, "transposed")
    r = _tokens((6, 5, 77), dtype) * 3 + 1 if residual else None
    w, b = 1 + 0.1 * torch.randn(77, dtype=dtype, device=DEVICE), 0.1 * torch.randn(77, dtype=dtype, device=DEVICE)
    table = torch.randn(3, 77, dtype=dtype, device=DEVICE)
    if residual:
        fn = lambda x, r, w, b, t: torch.stack(fastvid.add_layer_norm(x, r, w, b, frame_add=t, backend="triton"))  # noqa: E731
        ref = lambda x, r, w, b, t: torch.stack(reference.add_layer_norm(x, r, w, b, frame_add=t))  # noqa: E731
        inputs = [x, r, w, b, table]
    else:
        fn = lambda x, w, b, t: fastvid.add_layer_norm(x, None, w, b, frame_add=t, backend="triton")[1]  # noqa: E731
        ref = lambda x, w, b, t: reference.add_layer_norm(x, None, w, b, frame_add=t)[1]  # noqa: E731
        inputs = [x, w, b, table]
    check_against_reference(f"frame table residual={residual}", fn, ref, inputs, dtype)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_without_residual_the_sum_is_x_itself(backend):
    x = _tokens((2, 7, 33), torch.float16, "strided")
    with poisoned_outputs():
        s, y = fastvid.add_layer_norm(x, None, backend=backend)
    assert s is x and y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (33,)), atol=2e-3, rtol=2e-3)


def test_frame_table_matches_diffusers_positional_embedding():
    """norm then diffusers' SinusoidalPositionalEmbedding on (B*N, F, C) tokens equals the fused table add on the
    same tokens held frame-major (B*F, N, C)."""
    pytest.importorskip("diffusers")
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    batch, frames, tokens, channels = 2, 4, 3, 16
    pos = SinusoidalPositionalEmbedding(channels, max_seq_length=8).to(DEVICE)
    x = torch.randn(batch * tokens, frames, channels, device=DEVICE)
    expected = pos(torch.nn.functional.layer_norm(x, (channels,)))
    frame_major = lambda t: t.unflatten(0, (batch, tokens)).transpose(1, 2).flatten(0, 1)  # noqa: E731
    _, got = fastvid.add_layer_norm(frame_major(x), None, frame_add=pos.pe[0, :frames], backend="triton")
    torch.testing.assert_close(got, frame_major(expected), atol=1e-5, rtol=1e-5)


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
    ("frame table rank", r"argument 'frame_add' has rank 1"),
    ("frame count", r"argument 'frame_add' has 3 frames, which do not divide x's 2 rows"),
    ("frame table width", r"argument 'frame_add' has shape \(1, 7\)"),
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
        "frame table rank": (x, None, w, None, 1e-5, w),
        "frame count": (torch.cat([x, x]), None, w, None, 1e-5, torch.ones(3, 8, device=DEVICE)),
        "frame table width": (x, x, w, None, 1e-5, torch.ones(1, 7, device=DEVICE)),
    }[case]
    frame_add = args[5] if len(args) > 5 else None
    for backend in ("triton", "torch", "reference"):
        with pytest.raises(fastvid.FastvidInputError, match=match):
            fastvid.add_layer_norm(*args[:5], frame_add=frame_add, backend=backend)


def test_custom_op_passes_opcheck():
    """Schema, fake tensor, autograd registration and AOT dispatch (torch.compile); x non-contiguous; with the
    residual, and without it but with a frame table."""
    from fastvid.ops.add_layer_norm import add_layer_norm_fwd

    x = _tokens((2, 3, 5), torch.float32, "transposed").requires_grad_()
    r, w, b = (t.requires_grad_() for t in (_tokens((2, 3, 5), torch.float32), torch.randn(5, device=DEVICE),
                                             torch.randn(5, device=DEVICE)))
    torch.library.opcheck(add_layer_norm_fwd, (x, r, w, b, 1e-5, None))
    table = torch.randn(1, 5, device=DEVICE, requires_grad=True)
    torch.library.opcheck(add_layer_norm_fwd, (x, None, w, b, 1e-5, table))


@pytest.mark.skipif(DEVICE == "cuda", reason="the kernels run for real on this machine")
def test_forward_kernel_flags_compile_for_hopper():
    """Without a GPU: the forward kernel compiles for sm_90 in bf16 with and without the residual and the frame
    table (the benchmark shapes' launches, with a residual and no table, compile in tests/test_aot_compile_all.py)."""
    from aot_compile import run_in_subprocess

    specs = [dict(kernel="add_layer_norm_fwd_kernel", num_warps=4, floats=["eps"],
                  pointers=dict(X="bf16", R="bf16", Wt="bf16", Bias="bf16", FrameAdd="bf16", S="bf16", Y="bf16",
                                Stats="fp32"),
                  constexprs=dict(stride_xc=1, stride_rc=1, stride_fc=1, HAS_RES=residual, HAS_WEIGHT=True,
                                  HAS_BIAS=True, HAS_FRAME_ADD=frame_add, BLOCK_M=4, BLOCK_C=512))
             for residual in (False, True) for frame_add in (False, True)]
    assert len(run_in_subprocess("fastvid.kernels.add_layer_norm", specs)) == len(specs)
