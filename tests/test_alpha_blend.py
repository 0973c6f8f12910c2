"""fastvid.alpha_blend against fastvid.reference.alpha_blend (AlphaBlender's mix), and the AlphaBlender twin."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import assert_twins_agree, check_against_reference
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES


def _frame_major(b, c, f, h, w, dtype):
    """SVD's SpatioTemporalResBlock view: (B, C, F, H, W) over (B*F, C, H, W) frames."""
    return torch.randn(b, f, c, h, w, dtype=dtype, device=DEVICE).permute(0, 2, 1, 3, 4)


def _case(name, dtype):
    """(x_spatial, x_temporal, alpha) as the callers of AlphaBlender pass them, odd sizes."""
    if name == "resblock":  # frame-major views, alpha per (sample, frame) ("learned_with_images")
        b, c, f, h, w = 2, 5, 3, 4, 7
        return (_frame_major(b, c, f, h, w, dtype), _frame_major(b, c, f, h, w, dtype),
                torch.rand(b, 1, f, 1, 1, dtype=dtype, device=DEVICE))
    if name == "transformer":  # (B*F, N, C) tokens, alpha per row
        return (torch.randn(6, 35, 5, dtype=dtype, device=DEVICE), torch.randn(6, 35, 5, dtype=dtype, device=DEVICE),
                torch.rand(6, 1, 1, dtype=dtype, device=DEVICE))
    # one alpha ("learned"), x_temporal in a layout of its own (contiguous (B, C, F, H, W))
    b, c, f, h, w = 1, 3, 5, 3, 9
    return (_frame_major(b, c, f, h, w, dtype), torch.randn(b, c, f, h, w, dtype=dtype, device=DEVICE),
            torch.rand(1, dtype=dtype, device=DEVICE))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("case", ["resblock", "transformer", "scalar"])
def test_triton_matches_reference(dtype, case):
    check_against_reference(f"alpha_blend {case}", lambda xs, xt, a: fastvid.alpha_blend(xs, xt, a, backend="triton"),
                            reference.alpha_blend, list(_case(case, dtype)), dtype)


def test_output_keeps_the_memory_order_of_x_spatial():
    xs, xt, alpha = _case("resblock", torch.float32)
    out = fastvid.alpha_blend(xs, xt, alpha, backend="triton")
    assert out.stride() == xs.stride()


def test_torch_backends_match_reference():
    inputs = list(_case("resblock", torch.float32))
    for backend in ("torch", "reference"):
        check_against_reference(backend, lambda xs, xt, a, b=backend: fastvid.alpha_blend(xs, xt, a, backend=b),
                                reference.alpha_blend, inputs, torch.float32)


def test_alpha_along_the_innermost_dim_is_refused_with_a_reason():
    xs, xt = torch.randn(2, 3, 4, device=DEVICE), torch.randn(2, 3, 4, device=DEVICE)
    alpha = torch.rand(4, device=DEVICE)
    with pytest.raises(fastvid.BackendUnsupportedError, match="alpha varies along the innermost dim"):
        fastvid.alpha_blend(xs, xt, alpha, backend="triton")
    torch.testing.assert_close(fastvid.alpha_blend(xs, xt, alpha), reference.alpha_blend(xs, xt, alpha))


@pytest.mark.parametrize("case", ["resblock", "transformer"])
def test_custom_op_passes_opcheck(case):
    """Schema, fake tensor (strides included), autograd registration and AOT dispatch (torch.compile)."""
    from fastvid.ops.alpha_blend import alpha_blend_fwd

    xs, xt, alpha = (t.requires_grad_() for t in _case(case, torch.float32))
    torch.library.opcheck(alpha_blend_fwd, (xs, xt, alpha))


@pytest.mark.skipif(DEVICE == "cuda", reason="the kernels run for real on this machine")
def test_kernels_compile_for_hopper():
    """Without a GPU: both kernels compile for sm_90 (bf16, the innermost dim at unit stride)."""
    from aot_compile import run_in_subprocess

    dt, tile = "bf16", dict(BLOCK_R=4, BLOCK_K=1024)
    specs = [dict(kernel="alpha_blend_fwd_kernel", pointers=dict(XS=dt, XT=dt, Alpha=dt, Out=dt), constexprs=tile,
                  unit_axis="3"),
             dict(kernel="alpha_blend_bwd_kernel",
                  pointers=dict(DOut=dt, XS=dt, XT=dt, Alpha=dt, DXS=dt, DXT=dt, Part="fp32"), constexprs=tile,
                  unit_axis="3")]
    assert len(run_in_subprocess("fastvid.kernels.alpha_blend", specs)) == len(specs)


@pytest.mark.parametrize("case, match", [
    ("shape", r"argument 'x_spatial' has shape"),
    ("rank", r"argument 'x_temporal' has rank 2"),
    ("alpha_shape", r"argument 'alpha' has shape \(3, 1, 1\)"),
    ("dtype", r"argument 'alpha' has dtype"),
    ("not_tensor", r"argument 'alpha' is a float"),
])
def test_bad_input_names_the_argument(case, match):
    xs, xt, alpha = _case("transformer", torch.float32)
    if case == "shape":
        xt = xt[:, :3]
    elif case == "rank":
        xt = xt[0]
    elif case == "alpha_shape":
        alpha = alpha[:3]
    elif case == "dtype":
        alpha = alpha.half()
    elif case == "not_tensor":
        alpha = 0.5
    with pytest.raises(FastvidInputError, match=match):
        fastvid.alpha_blend(xs, xt, alpha)


def test_module_twin_agrees_with_reference_and_is_patched():
    ref = reference.AlphaBlender(0.3).to(DEVICE)
    with torch.no_grad():
        ref.mix_factor.fill_(0.7)
    fast = fastvid.nn.AlphaBlender().to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    fast.backend = "triton"
    xs, xt, _ = _case("resblock", torch.float32)

    class Pair(torch.nn.Module):
        def __init__(self, mixer):
            super().__init__()
            self.mixer = mixer

        def forward(self, x):
            return self.mixer(x, xt)

    assert_twins_agree(Pair(ref), Pair(fast), xs)
    model = Pair(reference.AlphaBlender())
    report = fastvid.patch(model, backend="triton")
    assert report.swapped["conv"] == ["mixer"] and type(model.mixer) is fastvid.nn.AlphaBlender
