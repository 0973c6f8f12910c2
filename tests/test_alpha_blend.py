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
    torch.library.opcheck(alpha_blend_fwd, (xs, xt, alpha, None, "alpha", False))


@pytest.mark.skipif(DEVICE == "cuda", reason="the kernels run for real on this machine")
def test_kernels_compile_for_hopper():
    """Without a GPU: both kernels compile for sm_90 (bf16, the innermost dim at unit stride), with alpha given
    and made from an fp32 mix factor and a bool indicator, switched."""
    from aot_compile import run_in_subprocess

    dt = "bf16"
    specs = []
    for alpha, mix, flags in ((dt, dt, dict(MIX=0, SWITCH=False)), ("i1", "fp32", dict(MIX=2, SWITCH=True))):
        constexprs = dict(BLOCK_R=4, BLOCK_K=1024, **flags)
        specs += [dict(kernel="alpha_blend_fwd_kernel", pointers=dict(XS=dt, XT=dt, Alpha=alpha, Mix=mix, Out=dt),
                       constexprs=constexprs, unit_axis="3"),
                  dict(kernel="alpha_blend_bwd_kernel", constexprs=constexprs, unit_axis="3",
                       pointers=dict(DOut=dt, XS=dt, XT=dt, Alpha=alpha, Mix=mix, DXS=dt, DXT=dt, Part="fp32"))]
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


# ---- alpha made in the kernel from diffusers' mix factor (learned_alpha_blend) ---------------------------

STRATEGIES = ["learned_with_images", "learned", "fixed"]


def _learned_case(layout, dtype):
    """(x_spatial, x_temporal, mix_factor, image_only_indicator) as diffusers' AlphaBlender gets them, odd sizes,
    non-contiguous: SpatioTemporalResBlock's frame-major views with an indicator in x's dtype held column-major,
    or TransformerSpatioTemporalModel's (B*F, N, C) tokens (x_temporal a transposed view) with a bool indicator."""
    images = torch.tensor([[0, 1, 0], [1, 0, 0]], device=DEVICE)  # B 2, F 3: two image frames
    mix = torch.randn(1, dtype=dtype, device=DEVICE)
    if layout == "resblock":
        b, c, f, h, w = 2, 5, 3, 4, 7
        return (_frame_major(b, c, f, h, w, dtype), _frame_major(b, c, f, h, w, dtype), mix,
                images.to(dtype).t().contiguous().t())
    xt = torch.randn(6, 5, 35, dtype=dtype, device=DEVICE).transpose(1, 2)
    return torch.randn(6, 35, 5, dtype=dtype, device=DEVICE), xt, mix, images.bool()


def _diffusers_blend(merge_strategy, switch, indicator):
    """diffusers' AlphaBlender.forward as a function of (x_spatial, x_temporal, mix_factor)."""
    resnet = pytest.importorskip("diffusers.models.resnet", reason="diffusers is an optional extra")

    def blend(xs, xt, mix):
        blender = resnet.AlphaBlender(0.0, merge_strategy, switch)
        del blender.mix_factor
        blender.mix_factor = mix
        return blender(xs, xt, indicator)
    return blend


@pytest.mark.parametrize("switch", [False, True])
@pytest.mark.parametrize("merge_strategy", STRATEGIES)
@pytest.mark.parametrize("layout", ["resblock", "transformer"])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_learned_triton_matches_diffusers(dtype, layout, merge_strategy, switch):
    """Output and the gradients of x_spatial, x_temporal and mix_factor against diffusers' AlphaBlender."""
    xs, xt, mix, indicator = _learned_case(layout, dtype)
    indicator = indicator if merge_strategy == "learned_with_images" else None

    def fused(xs, xt, mix):
        return fastvid.learned_alpha_blend(xs, xt, mix, indicator, merge_strategy=merge_strategy, switch=switch,
                                           backend="triton")
    check_against_reference(f"learned_alpha_blend {layout} {merge_strategy} switch={switch}", fused,
                            _diffusers_blend(merge_strategy, switch, indicator), [xs, xt, mix], dtype)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_learned_torch_backends_match_diffusers(backend):
    xs, xt, mix, indicator = _learned_case("transformer", torch.float32)
    check_against_reference(
        backend, lambda *a: fastvid.learned_alpha_blend(*a, indicator, switch=True, backend=backend),
        _diffusers_blend("learned_with_images", True, indicator), [xs, xt, mix], torch.float32)


@pytest.mark.parametrize("merge_strategy", STRATEGIES)
def test_alpha_is_rounded_as_diffusers_rounds_it(merge_strategy):
    """x fp16, the mix factor fp32 (alpha = sigmoid in fp32, then fp16): with x_spatial 1 and x_temporal 0 the
    output is alpha itself, equal to diffusers' at every mix factor, switched or not."""
    xs = torch.ones(2, 3, 3, 2, 2, dtype=torch.float16, device=DEVICE)
    indicator = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], device=DEVICE)
    for switch in (False, True):
        for mix in torch.linspace(-4, 4, 37, device=DEVICE):
            mix = mix.reshape(1)
            expected = _diffusers_blend(merge_strategy, switch, indicator)(xs, torch.zeros_like(xs), mix)
            out = fastvid.learned_alpha_blend(xs, torch.zeros_like(xs), mix, indicator, merge_strategy=merge_strategy,
                                              switch=switch, backend="triton")
            assert torch.equal(out, expected), (switch, mix.item())


def test_learned_indicator_whose_dims_do_not_merge_is_refused_with_a_reason():
    xs, xt, mix, indicator = _learned_case("transformer", torch.float32)
    column_major = indicator.t().contiguous().t()  # (B, F) that no (B*F,) view reads
    with pytest.raises(fastvid.BackendUnsupportedError, match="image_only_indicator's"):
        fastvid.learned_alpha_blend(xs, xt, mix, column_major, backend="triton")
    torch.testing.assert_close(fastvid.learned_alpha_blend(xs, xt, mix, column_major),
                               _diffusers_blend("learned_with_images", False, indicator)(xs, xt, mix))


def test_learned_custom_op_passes_opcheck():
    from fastvid.ops.alpha_blend import alpha_blend_fwd

    xs, xt, mix, indicator = _learned_case("resblock", torch.float32)
    xs, xt, mix = (t.requires_grad_() for t in (xs, xt, mix))
    torch.library.opcheck(alpha_blend_fwd, (xs, xt, mix, indicator, "learned_with_images", True))


@pytest.mark.parametrize("case, match", [
    ("strategy", r"argument 'merge_strategy' is 'mixed'; expected one of 'learned_with_images'"),
    ("alpha_strategy", r"argument 'merge_strategy' is 'alpha'; expected one of 'learned_with_images'"),
    ("switch", r"argument 'switch' is a int"),
    ("no_indicator", r"argument 'image_only_indicator' is None"),
    ("indicator_shape", r"argument 'image_only_indicator' has shape \(3, 2\); expected \(B, F\) = \(2, 3\)"),
    ("indicator_rank", r"argument 'image_only_indicator' has rank 1"),
    ("indicator_dtype", r"argument 'image_only_indicator' has dtype complex64"),
    ("tokens_indicator", r"argument 'image_only_indicator' has shape \(2, 2\); expected \(B, F\) with B \* F = 6"),
    ("x_rank", r"argument 'x_spatial' has rank 4"),
    ("mix_shape", r"argument 'mix_factor' has shape \(2,\)"),
    ("mix_not_tensor", r"argument 'mix_factor' is a float"),
    ("mix_dtype", r"argument 'mix_factor' has dtype int64"),
])
def test_learned_bad_input_names_the_argument(case, match):
    xs, xt, mix, indicator = _learned_case("resblock", torch.float32)
    kwargs = {}
    if case in ("strategy", "alpha_strategy"):
        kwargs["merge_strategy"] = "mixed" if case == "strategy" else "alpha"
    elif case == "switch":
        kwargs["switch"] = 1
    elif case == "no_indicator":
        indicator = None
    elif case == "indicator_shape":
        indicator = indicator.t()
    elif case == "indicator_rank":
        indicator = indicator.flatten()
    elif case == "indicator_dtype":
        indicator = indicator.to(torch.complex64)
    elif case == "tokens_indicator":
        xs, xt, mix, _ = _learned_case("transformer", torch.float32)
        indicator = indicator[:, :2]
    elif case == "x_rank":
        xs, xt = xs[0], xt[0]
    elif case == "mix_shape":
        mix = torch.zeros(2)
    elif case == "mix_not_tensor":
        mix = 0.5
    elif case == "mix_dtype":
        mix = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(FastvidInputError, match=match):
        fastvid.learned_alpha_blend(xs, xt, mix, indicator, **kwargs)
