"""fastvid.temporal_conv against the references (permute + Conv1d, and a (k, 1, 1) Conv3d), and the
PseudoConv3d / TemporalConvBlock modules against their reference twins (and diffusers)."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import check_against_reference, poisoned_outputs
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

B, C_IN, C_OUT, F, H, W = 2, 20, 36, 7, 5, 9
LAYOUTS = ["contiguous", "channels_last_3d", "frame_major"]


def _video(shape, dtype, layout="contiguous"):
    """(B, C, F, H, W) random video in the given memory layout; "frame_major" is the
    (B, F, C, H, W)-ordered view diffusers' TemporalConvLayer makes from (B*F, C, H, W)."""
    b, c, f, h, w = shape
    if layout == "frame_major":
        return torch.randn(b, f, c, h, w, dtype=dtype, device=DEVICE).permute(0, 2, 1, 3, 4)
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    return x.to(memory_format=torch.channels_last_3d) if layout == "channels_last_3d" else x


def _params(c_in, c_out, k, dtype):
    weight = torch.randn(c_out, c_in, k, dtype=dtype, device=DEVICE) / (c_in * k) ** 0.5
    bias = torch.randn(c_out, dtype=dtype, device=DEVICE)
    return weight, bias


def _fastvid(backend="triton", padding="same"):
    def run(x, weight, bias=None, residual=None):
        return fastvid.temporal_conv(x, weight, bias, residual=residual, padding=padding, backend=backend)
    return run


def _reference(padding="same"):
    def run(x, weight, bias=None, residual=None):
        return reference.temporal_conv(x, weight, bias, residual=residual, padding=padding)
    return run


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("residual", [False, True])
def test_triton_matches_permute_conv1d(dtype, layout, residual):
    x = _video((B, C_IN, F, H, W), dtype, layout)
    weight, bias = _params(C_IN, C_OUT, 3, dtype)
    res = _video((B, C_OUT, F, H, W), dtype, layout) if residual else None
    check_against_reference(f"temporal_conv {layout}", _fastvid(), _reference(), [x, weight, bias, res], dtype)


@pytest.mark.parametrize("k, padding", [(3, "same"), (1, "same"), (5, "same"), (3, "valid"), (4, 2), (3, 0),
                                        (21, "same")])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_triton_matches_conv3d(k, padding, layout):
    """Against the (k, 1, 1) Conv3d of TemporalConvLayer, with other kernel sizes and paddings (k 21: most
    taps of every output frame read padding), pixels or channels at unit stride."""
    dtype = torch.float32
    x = _video((1, 12, 6, 3, 7), dtype, layout)
    weight, bias = _params(12, 17, k, dtype)
    pad = (k - 1) // 2 if padding == "same" else (0 if padding == "valid" else padding)
    check_against_reference(f"temporal_conv k={k} padding={padding}", _fastvid(padding=padding),
                            lambda x, w, b: reference.temporal_conv3d(x, w, b, padding=pad), [x, weight, bias], dtype)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_several_tiles_along_every_axis(dtype, layout):
    # 130 output channels, 70 input channels and 153 pixels each span several tiles (ragged last ones).
    x = _video((1, 70, 5, 9, 17), dtype, layout)
    weight, bias = _params(70, 130, 3, dtype)
    check_against_reference("tiles", _fastvid(), _reference(), [x, weight, bias], dtype)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_tiles_along_every_axis(dtype, layout):
    # 64 channels in and out and 128 pixels fill every tile (the launchers drop the bounds masks), with
    # several input-channel (fp32) and pixel (dW) tiles, two samples and padding frames.
    x = _video((2, 64, 5, 8, 16), dtype, layout)
    weight, bias = _params(64, 64, 3, dtype)
    res = _video((2, 64, 5, 8, 16), dtype, layout)
    check_against_reference(f"full tiles {layout}", _fastvid(), _reference(), [x, weight, bias, res], dtype)


def test_non_contiguous_inputs_are_read_in_place():
    # Every second column (H and W no longer merge), a tap-major weight, a transposed residual.
    dtype = torch.float32
    x = torch.randn(B, C_IN, F, H, 2 * W, device=DEVICE)[..., ::2]
    weight = torch.randn(3, C_OUT, C_IN, device=DEVICE).permute(1, 2, 0) * 0.1
    bias = torch.randn(2 * C_OUT, device=DEVICE)[::2]
    res = torch.randn(B, C_OUT, F, W, H, device=DEVICE).transpose(-1, -2)
    assert not (x.is_contiguous() or weight.is_contiguous() or res.is_contiguous())
    check_against_reference("strided", _fastvid(), _reference(), [x, weight, bias, res], dtype)


def test_width_outer_to_height_layout():
    # (B, C, F, W, H) storage: H and W do not merge into one pixel axis; the outputs (and dX) are
    # allocated with H and W adjacent, so they still view as (B, C, F, H * W).
    x = torch.randn(B, C_IN, F, W, H, device=DEVICE).transpose(-1, -2)
    res = torch.randn(B, C_OUT, F, W, H, device=DEVICE).transpose(-1, -2)
    weight, bias = _params(C_IN, C_OUT, 3, torch.float32)
    check_against_reference("w-major", _fastvid(), _reference(), [x, weight, bias, res], torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_keeps_the_memory_order_of_x(layout):
    x = _video((1, 4, 3, 2, 5), torch.float32, layout)
    weight, bias = _params(4, 6, 3, torch.float32)
    out = fastvid.temporal_conv(x, weight, bias, backend="triton")
    dense = out.permute(*sorted(range(5), key=lambda d: -x.stride(d)))
    assert dense.is_contiguous()


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_identity_initialisation_reproduces_the_input_exactly(dtype):
    # Make-A-Video initialises the temporal conv to the identity (dirac weight, zero bias).
    x = _video((B, C_IN, F, H, W), dtype, "channels_last_3d")
    weight = torch.nn.init.dirac_(torch.empty(C_IN, C_IN, 3, dtype=dtype, device=DEVICE))
    bias = torch.zeros(C_IN, dtype=dtype, device=DEVICE)
    with poisoned_outputs():
        out = fastvid.temporal_conv(x, weight, bias, backend="triton")
    assert torch.equal(out, x)


def test_weight_gradient_is_deterministic():
    x = _video((B, C_IN, F, H, W), torch.float32)
    w0, b0 = _params(C_IN, C_OUT, 3, torch.float32)
    grads = []
    for _ in range(2):
        weight, bias = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        fastvid.temporal_conv(x, weight, bias, backend="triton").square().sum().backward()
        grads.append((weight.grad, bias.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_gradient_of_only_some_inputs():
    x = _video((1, 6, 5, 3, 4), torch.float32)
    weight, bias = _params(6, 8, 3, torch.float32)
    weight.requires_grad_()
    with poisoned_outputs():
        fastvid.temporal_conv(x, weight, bias, backend="triton").sum().backward()
    weight_ref = weight.detach().clone().requires_grad_()
    reference.temporal_conv(x, weight_ref, bias).sum().backward()
    torch.testing.assert_close(weight.grad, weight_ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_torch_backends_match_reference(backend):
    x = _video((B, C_IN, F, H, W), torch.float32, "frame_major")
    weight, bias = _params(C_IN, C_OUT, 3, torch.float32)
    res = _video((B, C_OUT, F, H, W), torch.float32)
    check_against_reference(backend, _fastvid(backend), _reference(), [x, weight, bias, res], torch.float32)


@pytest.mark.parametrize("layout", ["channels_last_3d", "frame_major"])
def test_custom_op_passes_opcheck(layout):
    """Schema, fake tensor (strides included), autograd registration and AOT dispatch (torch.compile)."""
    from fastvid.ops.temporal_conv import temporal_conv_fwd

    x = _video((1, 6, 5, 3, 4), torch.float32, layout).requires_grad_()
    weight, bias = (t.requires_grad_() for t in _params(6, 8, 3, torch.float32))
    res = _video((1, 8, 5, 3, 4), torch.float32, layout).requires_grad_()
    torch.library.opcheck(temporal_conv_fwd, (x, weight, bias, res, 1))


@pytest.mark.skipif(DEVICE == "cuda", reason="the kernels run for real on this machine")
def test_kernels_compile_for_hopper():
    """Without a GPU: both kernels compile for sm_90 (bf16 and fp32; pixels or channels at unit stride;
    full tiles or masked ones)."""
    from aot_compile import run_in_subprocess

    specs = []
    for dtype, precision, block_ci in (("bf16", "tf32", 64), ("fp32", "ieee", 32)):
        for unit in ("p", "c"):  # contiguous, channels_last_3d
            specs.append(dict(kernel="temporal_conv_fwd_kernel", num_warps=8, unit_axis=unit,
                              pointers=dict(X=dtype, Wt=dtype, Bias=dtype, Res=dtype, Out=dtype),
                              constexprs=dict(stride_wi=1, HAS_BIAS=True, HAS_RES=True, PRECISION=precision,
                                              EVEN=unit == "p", BLOCK_CO=128, BLOCK_P=128, BLOCK_CI=block_ci)))
            specs.append(dict(kernel="temporal_conv_dw_kernel", unit_axis=unit,
                              pointers=dict(X=dtype, DY=dtype, DWPart="fp32", DBPart="fp32"),
                              constexprs=dict(stride_pt=1, stride_qo=1, HAS_BIAS=True, PRECISION=precision,
                                              EVEN=unit == "c", BLOCK_CO=64, BLOCK_CI=64, BLOCK_P=64)))
    assert len(run_in_subprocess("fastvid.kernels.temporal_conv", specs)) == len(specs)


def test_empty_batch_returns_empty():
    x = _video((0, 4, 3, 2, 5), torch.float32)
    weight, bias = _params(4, 6, 3, torch.float32)
    for backend in ("triton", "torch"):
        assert fastvid.temporal_conv(x, weight, bias, backend=backend).shape == (0, 6, 3, 2, 5)


def test_auto_uses_torch_on_cpu_and_reports_it():
    x = _video((1, 4, 3, 2, 5), torch.float32)
    weight, _ = _params(4, 4, 3, torch.float32)
    fastvid.temporal_conv(x, weight)
    assert fastvid.last_backend("temporal_conv") == ("triton" if DEVICE == "cuda" else "torch")


def test_float64_refused_by_triton_with_reason():
    x = _video((1, 4, 3, 2, 5), torch.float64)
    weight, _ = _params(4, 4, 3, torch.float64)
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        fastvid.temporal_conv(x, weight, backend="triton")
    assert fastvid.temporal_conv(x, weight, backend="torch").dtype == torch.float64


@pytest.mark.parametrize("case, match", [
    ("rank", r"argument 'x' has rank 4"),
    ("weight_rank", r"argument 'weight' has rank 5"),
    ("channels", r"argument 'weight' has shape \(6, 5, 3\)"),
    ("even_same", r"argument 'padding' is 'same' with an even temporal kernel"),
    ("padding", r"argument 'padding' is -1"),
    ("frames", r"argument 'x' has 3 frames"),
    ("dtype", r"argument 'x' has dtype int64"),
    ("mixed_dtype", r"argument 'weight' has dtype"),
    ("bias_shape", r"argument 'bias' has shape"),
    ("residual_shape", r"argument 'residual' has shape"),
    ("device", r"argument 'weight' is on meta"),
    ("backend", r"argument 'backend' is 'cudnn'"),
])
def test_bad_input_names_the_argument(case, match):
    x = _video((1, 4, 3, 2, 5), torch.float32)
    weight, bias = _params(4, 6, 3, torch.float32)
    kwargs = dict(bias=bias)
    if case == "rank":
        x = x[0]
    elif case == "weight_rank":
        weight = weight[..., None, None]
    elif case == "channels":
        weight = torch.randn(6, 5, 3, device=DEVICE)
    elif case == "even_same":
        weight = torch.randn(6, 4, 2, device=DEVICE)
    elif case == "padding":
        kwargs["padding"] = -1
    elif case == "frames":
        weight = torch.randn(6, 4, 5, device=DEVICE)
        kwargs["padding"] = "valid"
    elif case == "dtype":
        x = x.long()
    elif case == "mixed_dtype":
        weight = weight.half()
    elif case == "bias_shape":
        kwargs["bias"] = bias[:3]
    elif case == "residual_shape":
        kwargs["residual"] = torch.randn(1, 4, 3, 2, 5, device=DEVICE)
    elif case == "device":
        weight = weight.to("meta")
    elif case == "backend":
        kwargs["backend"] = "cudnn"
    with pytest.raises((FastvidInputError, fastvid.BackendUnsupportedError), match=match):
        fastvid.temporal_conv(x, weight, **kwargs)


# ---- modules --------------------------------------------------------------------------------

def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


def _close(actual, expected, name, rel=1e-5):
    """fp32 agreement relative to the largest magnitude (sums of many products differ in order)."""
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{name}: max error {err:.3e} > {rel * scale:.3e}"


def _compare_modules(ref_mod, fast_mod, x, **kwargs):
    assert list(fast_mod.state_dict()) == list(ref_mod.state_dict())
    fast_mod.load_state_dict(ref_mod.state_dict())
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    with poisoned_outputs():
        y_fast = fast_mod(x_fast, **kwargs)
    y_ref = ref_mod(x_ref, **kwargs)
    _close(y_fast, y_ref, "output")
    dy = torch.randn_like(y_ref)
    y_ref.backward(dy)
    with poisoned_outputs():
        y_fast.backward(dy)
    _close(x_fast.grad, x_ref.grad, "x.grad")
    for (name, p_ref), p_fast in zip(ref_mod.named_parameters(), fast_mod.parameters()):
        _close(p_fast.grad, p_ref.grad, f"{name}.grad")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_pseudo_conv3d_matches_reference_twin(layout):
    ref_mod = _randomise(reference.PseudoConv3d(C_IN, 12)).to(DEVICE)
    fast_mod = fastvid.nn.PseudoConv3d(C_IN, 12).to(DEVICE)
    fast_mod.backend = "triton"
    _compare_modules(ref_mod, fast_mod, _video((B, C_IN, F, H, W), torch.float32, layout))


def test_pseudo_conv3d_identity_init_and_images():
    torch.manual_seed(3)
    mod = fastvid.nn.PseudoConv3d(6, 8).to(DEVICE)
    mod.backend = "triton"
    x = _video((1, 6, 5, 4, 7), torch.float32)
    spatial_only = mod(x, enable_time=False)
    assert torch.equal(mod(x), spatial_only)  # identity-initialised temporal conv
    torch.testing.assert_close(spatial_only, reference.spatial_conv(x, mod.spatial_conv.weight, mod.spatial_conv.bias),
                               atol=1e-5, rtol=1e-5)
    image = x[:, :, 0]
    assert torch.equal(mod(image), mod.spatial_conv(image))  # (B, C, H, W) images skip the temporal conv


def test_temporal_conv_block_matches_reference_twin():
    ref_mod = _randomise(reference.TemporalConvBlock(16, norm_num_groups=4)).to(DEVICE)
    fast_mod = fastvid.nn.TemporalConvBlock(16, norm_num_groups=4).to(DEVICE)
    fast_mod.backend = "triton"
    x = torch.randn(2 * 5, 16, 3, 7, device=DEVICE)  # (B*F, C, H, W)
    _compare_modules(ref_mod, fast_mod, x, num_frames=5)


def test_temporal_conv_block_starts_as_identity():
    mod = fastvid.nn.TemporalConvBlock(8, norm_num_groups=2).to(DEVICE)
    mod.backend = "triton"
    x = torch.randn(3 * 4, 8, 2, 5, device=DEVICE)
    out = mod(x, num_frames=4)
    assert out.is_contiguous() and torch.equal(out, x)


@pytest.mark.parametrize("num_frames, match", [(4, r"argument 'num_frames' is 4"), (0, r"argument 'num_frames' is 0")])
def test_temporal_conv_block_bad_frame_count(num_frames, match):
    mod = fastvid.nn.TemporalConvBlock(8, norm_num_groups=2)
    with pytest.raises(FastvidInputError, match=match):
        mod(torch.randn(6, 8, 2, 3, device=DEVICE), num_frames=num_frames)
    with pytest.raises(FastvidInputError, match=r"argument 'hidden_states' has rank 5"):
        mod(torch.randn(1, 8, 6, 2, 3, device=DEVICE), num_frames=6)


def test_twins_add_nothing_and_declare_their_patch_kind():
    for twin, ref_cls, args in ((fastvid.nn.PseudoConv3d, reference.PseudoConv3d, (8,)),
                                (fastvid.nn.TemporalConvBlock, reference.TemporalConvBlock, (8, None, 0.0, 2))):
        assert issubclass(twin, ref_cls) and twin.patch_kind == "conv"
        a, b = twin(*args), ref_cls(*args)
        assert list(a.state_dict()) == list(b.state_dict())
        assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]


def test_patching_by_class_swap():
    ref_mod = _randomise(reference.TemporalConvBlock(8, norm_num_groups=2)).to(DEVICE)
    x = torch.randn(2 * 3, 8, 2, 3, device=DEVICE)
    expected = ref_mod(x, num_frames=3)
    ref_mod.__class__ = fastvid.nn.TemporalConvBlock
    ref_mod.backend = "triton"
    _close(ref_mod(x, num_frames=3), expected, "patched output")


def test_reference_block_equals_diffusers_temporal_conv_layer():
    resnet = pytest.importorskip("diffusers.models.resnet", reason="diffusers is not installed")
    theirs = _randomise(resnet.TemporalConvLayer(16, dropout=0.1, norm_num_groups=4)).to(DEVICE).eval()
    ours = reference.TemporalConvBlock(16, dropout=0.1, norm_num_groups=4).to(DEVICE).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(n, type(m).__name__) for n, m in ours.named_modules()][1:] == \
        [(n, type(m).__name__) for n, m in theirs.named_modules()][1:]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2 * 5, 16, 3, 4, device=DEVICE)
    assert torch.equal(ours(x, num_frames=5), theirs(x, num_frames=5))


def test_modules_compile_into_one_graph():
    """Both twins trace with torch.compile(fullgraph=True), the custom ops inside (aot_eager: no codegen)."""
    block = _randomise(fastvid.nn.TemporalConvBlock(8, norm_num_groups=2)).to(DEVICE)
    block.backend = "triton"
    x = torch.randn(2 * 3, 8, 2, 3, device=DEVICE, requires_grad=True)
    expected = block(x, num_frames=3)
    out = torch.compile(block, fullgraph=True, backend="aot_eager")(x, num_frames=3)
    _close(out, expected, "compiled TemporalConvBlock")
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    conv = fastvid.nn.PseudoConv3d(4, 6).to(DEVICE)
    conv.backend = "triton"
    video = torch.randn(1, 4, 3, 5, 4, device=DEVICE)
    _close(torch.compile(conv, fullgraph=True, backend="aot_eager")(video), conv(video), "compiled PseudoConv3d")


def test_diffusers_layer_patched_by_class_swap():
    """patch() swaps ``module.__class__``: a diffusers TemporalConvLayer becomes the fastvid twin in place."""
    resnet = pytest.importorskip("diffusers.models.resnet", reason="diffusers is not installed")
    layer = _randomise(resnet.TemporalConvLayer(16, norm_num_groups=4)).to(DEVICE).eval()
    x = torch.randn(2 * 5, 16, 3, 4, device=DEVICE)
    expected = layer(x, num_frames=5)
    layer.__class__ = fastvid.nn.TemporalConvBlock
    layer.backend = "triton"
    _close(layer(x, num_frames=5), expected, "patched diffusers layer")
