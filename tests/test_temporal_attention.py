"""fastvid.temporal_attention against fastvid.reference.temporal_attention."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import assert_twins_agree, check_against_reference, dense_in_order, poisoned_outputs
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

SHAPES = [  # (B, F, N, heads, head_dim)
    (2, 13, 37, 3, 24),  # odd everything
    (1, 8, 16, 2, 64),
    (1, 5, 9, 2, 40),  # head_dim not a power of two
    (1, 16, 5, 1, 72),  # backward: 4 positions on 8 warps
    (1, 19, 6, 2, 72),  # backward: one position per step, two key blocks (the last partial), 1-2 per program
    (1, 40, 7, 1, 24),  # backward: three key blocks, the last partial
    (2, 8, 3, 1, 128),  # backward: unaligned frames of a wide head, one position per step
]


def _inputs(shape, dtype, bias=True):
    q, k, v = (torch.randn(shape, dtype=dtype, device=DEVICE) for _ in range(3))
    b = torch.randn(shape[3], shape[1], shape[1], dtype=dtype, device=DEVICE) if bias else None
    return q, k, v, b


def _fastvid(backend, causal):
    return lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b, causal=causal, backend=backend)


def _reference(causal):
    return lambda q, k, v, b: reference.temporal_attention(q, k, v, bias=b, causal=causal)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_triton_matches_reference(shape, dtype, causal):
    q, k, v, b = _inputs(shape, dtype)
    check_against_reference("triton", _fastvid("triton", causal), _reference(causal), [q, k, v, b], dtype)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_triton_without_bias(dtype):
    q, k, v, _ = _inputs((1, 7, 11, 2, 32), dtype)
    check_against_reference("no bias", lambda q, k, v: fastvid.temporal_attention(q, k, v, backend="triton"),
                            reference.temporal_attention, [q, k, v], dtype)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("causal", [False, True])
def test_torch_backends_match_reference(backend, causal):
    q, k, v, b = _inputs((2, 6, 5, 2, 16), torch.float32)
    check_against_reference(backend, _fastvid(backend, causal), _reference(causal), [q, k, v, b], torch.float32)


@pytest.mark.parametrize("F", [9, 21])  # 21: the backward's key blocks
def test_fused_qkv_slices_are_read_in_place(F):
    # A slice of a fused projection: (B, F, N, 3, h, d) unbound on the "3" axis.
    B, N, H, D = 1, 13, 2, 24
    qkv = torch.randn(B, F, N, 3, H, D, device=DEVICE)
    q, k, v = qkv.unbind(dim=3)
    assert not q.is_contiguous()
    b = torch.randn(H, F, F, device=DEVICE)
    check_against_reference("fused qkv", _fastvid("triton", False), _reference(False), [q, k, v, b], torch.float32)


@pytest.mark.parametrize("F", [6, 20])  # 20: the backward's key blocks
def test_permuted_inputs(F):
    # Frames last in memory: a (B, N, h, d, F) buffer seen as (B, F, N, h, d).
    B, N, H, D = 1, 10, 2, 16
    q, k, v = (torch.randn(B, N, H, D, F, device=DEVICE).permute(0, 4, 1, 2, 3) for _ in range(3))
    b = torch.randn(F, F, H, device=DEVICE).permute(2, 0, 1)
    check_against_reference("permuted", _fastvid("triton", True), _reference(True), [q, k, v, b], torch.float32)


class _GradientInLayout(torch.autograd.Function):
    """Identity whose backward hands the gradient on laid out (B, N, F, h, d) in memory, as diffusers'
    output projection gives it back through a view."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.transpose(1, 2).contiguous().transpose(1, 2)


def _dense_in_order_of(out, like):
    """out has no gaps and lies in memory in like's dim order."""
    return dense_in_order(out, sorted(range(like.dim()), key=lambda d: -like.stride(d)))


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_output_and_gradients_follow_q_memory_order(backend):
    # q viewed from diffusers' (B*N, F, h*d) tokens, k and v contiguous: the output lies in q's order (it views
    # back as (B*N, F, h*d)), whichever backend runs; the backward takes dO in another layout.
    B, F, N, H, D = 1, 7, 5, 2, 16
    q = torch.randn(B, N, F, H, D, device=DEVICE).transpose(1, 2)
    k, v = (torch.randn(B, F, N, H, D, device=DEVICE) for _ in range(2))
    with poisoned_outputs():
        out = fastvid.temporal_attention(q, k, v, backend=backend)
    assert _dense_in_order_of(out, q) and not out.is_contiguous(), out.stride()
    out.transpose(1, 2).view(B * N, F, H * D)  # no copy needed
    kv_first = fastvid.temporal_attention(k, q, v, backend=backend)
    assert kv_first.is_contiguous(), kv_first.stride()
    fn = lambda q, k, v: _GradientInLayout.apply(fastvid.temporal_attention(q, k, v, causal=True, backend=backend))
    check_against_reference("q order", fn, lambda q, k, v: reference.temporal_attention(q, k, v, causal=True),
                            [q, k, v], torch.float32)
    if backend == "triton":
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        with poisoned_outputs():
            grads = torch.autograd.grad(fastvid.temporal_attention(*leaves, backend=backend).sum(), leaves)
        assert all(_dense_in_order_of(g, q) for g in grads), [g.stride() for g in grads]


@pytest.mark.parametrize("F", [8, 24])  # 24: the backward's key blocks
def test_bias_gradient_is_deterministic(F):
    q, k, v, b = _inputs((2, F, 33, 2, 16), torch.float32)
    grads = []
    for _ in range(2):
        bias = b.clone().requires_grad_()
        fastvid.temporal_attention(q, k, v, bias=bias, backend="triton").sum().backward()
        grads.append(bias.grad)
    assert torch.equal(grads[0], grads[1])


def test_forward_is_deterministic():
    q, k, v, b = _inputs((1, 8, 21, 2, 16), torch.float32)
    out1 = fastvid.temporal_attention(q, k, v, bias=b, backend="triton")
    out2 = fastvid.temporal_attention(q, k, v, bias=b, backend="triton")
    assert torch.equal(out1, out2)


def test_empty_batch_returns_empty():
    q, k, v, b = _inputs((0, 4, 5, 2, 8), torch.float32)
    for backend in ("triton", "torch"):
        out = fastvid.temporal_attention(q, k, v, bias=b, backend=backend)
        assert out.shape == q.shape


def test_nan_propagates_like_torch():
    q, k, v, b = _inputs((1, 4, 6, 1, 8), torch.float32)
    q[0, 1, 2, 0, 3] = float("nan")
    with poisoned_outputs():
        out = fastvid.temporal_attention(q, k, v, bias=b, backend="triton")
    expected = reference.temporal_attention(q, k, v, bias=b)
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    assert torch.isnan(out).sum() > 0


def test_auto_uses_torch_on_cpu_and_reports_it():
    q, k, v, b = _inputs((1, 4, 6, 2, 8), torch.float32)
    fastvid.temporal_attention(q, k, v, bias=b)
    expected = "triton" if DEVICE == "cuda" else "torch"
    assert fastvid.last_backend("temporal_attention") == expected


def test_forced_triton_without_interpreter_names_the_reason(monkeypatch):
    if DEVICE == "cuda":
        pytest.skip("CUDA tensors always take Triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, _ = _inputs((1, 4, 6, 2, 8), torch.float32)
    with pytest.raises(fastvid.BackendUnsupportedError, match="Triton needs CUDA"):
        fastvid.temporal_attention(q, k, v, backend="triton")


def test_float64_refused_by_triton_with_reason():
    q, k, v, _ = _inputs((1, 4, 6, 2, 8), torch.float64)
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        fastvid.temporal_attention(q, k, v, backend="triton")
    assert fastvid.temporal_attention(q, k, v, backend="torch").dtype == torch.float64


@pytest.mark.parametrize("case, match", [
    ("rank", r"argument 'q' has rank 4"),
    ("k_shape", r"argument 'k' has shape"),
    ("bias_shape", r"argument 'bias' has shape"),
    ("dtype", r"argument 'q' has dtype int64"),
    ("mixed_dtype", r"argument 'k' has dtype"),
    ("device", r"argument 'k' is on meta"),
    ("backend", r"argument 'backend' is 'cudnn'"),
    ("scale", r"argument 'scale'"),
    ("causal", r"argument 'causal'"),
])
def test_bad_input_names_the_argument(case, match):
    q, k, v, b = _inputs((1, 4, 6, 2, 8), torch.float32)
    kwargs = dict(bias=b)
    if case == "rank":
        q = q[0]
    elif case == "k_shape":
        k = k[:, :3]
    elif case == "bias_shape":
        kwargs["bias"] = b[:, :3]
    elif case == "dtype":
        q = q.long()
    elif case == "mixed_dtype":
        k = k.half()
    elif case == "device":
        k = k.to("meta")
    elif case == "backend":
        kwargs["backend"] = "cudnn"
    elif case == "scale":
        kwargs["scale"] = -1.0
    elif case == "causal":
        kwargs["causal"] = "yes"
    with pytest.raises((FastvidInputError, fastvid.BackendUnsupportedError), match=match):
        fastvid.temporal_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_module_matches_reference_twin(backend):
    torch.manual_seed(1)
    ref_mod = reference.TemporalAttention(dim=32, heads=2, dim_head=16, causal=True).to(DEVICE)
    # The reference inits the out projection randomly; make the bias table non-trivial.
    torch.nn.init.normal_(ref_mod.rel_pos_bias.relative_attention_bias.weight)
    fast_mod = fastvid.nn.TemporalAttention(dim=32, heads=2, dim_head=16, causal=True).to(DEVICE)
    assert fast_mod.load_state_dict(ref_mod.state_dict()) is not None
    assert list(fast_mod.state_dict()) == list(ref_mod.state_dict())
    fast_mod.backend = backend
    assert_twins_agree(ref_mod, fast_mod, torch.randn(2, 7, 5, 32, device=DEVICE))


def test_module_takes_feature_maps():
    mod = fastvid.nn.TemporalAttention(dim=8, heads=2, dim_head=4).to(DEVICE)
    ref_mod = reference.TemporalAttention(dim=8, heads=2, dim_head=4).to(DEVICE)
    ref_mod.load_state_dict(mod.state_dict())
    x = torch.randn(1, 8, 5, 3, 4, device=DEVICE)  # (B, C, F, H, W)
    mod.backend = "triton"
    out = mod(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref_mod(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("frames", [3, 17])  # 17: the backward's key blocks
def test_offsets_beyond_int32_use_int64(frames):
    """The last frame starts past 2**31 elements into its buffer: a strided view whose untouched memory is never
    paged in, so the footprint stays small. int32 offset arithmetic would read the wrong address."""
    stride_f = 2**31 // (frames - 1) + 16
    shape, strides = (1, frames, 4, 1, 16), (0, stride_f, 16, 16, 1)

    def far_view():
        buffer = torch.empty((frames - 1) * stride_f + 4 * 16, dtype=torch.float16, device=DEVICE)
        view = buffer.as_strided(shape, strides)
        view.copy_(torch.randn(shape, dtype=torch.float16))
        return view

    q, k, v = far_view(), far_view(), far_view()
    bias = torch.randn(1, frames, frames, dtype=torch.float16, device=DEVICE)
    check_against_reference("int64 offsets", _fastvid("triton", False), _reference(False), [q, k, v, bias],
                            torch.float16)
