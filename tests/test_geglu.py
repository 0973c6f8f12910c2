"""fastvid.geglu against fastvid.reference.geglu (hidden * gelu(gate)), its module twin, and the GEGLU
swap inside diffusers' video UNets."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.testing import assert_twins_agree, check_against_reference
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

APPROXIMATIONS = ["none", "tanh"]


def _proj_out(layout, dtype, rows=13, inner=77):
    """A (rows, 3, 2 * inner) projection output: contiguous, a slice of a wider last dim, or with its
    leading dims swapped in memory (they do not merge: the launcher copies)."""
    if layout == "contiguous":
        return torch.randn(rows, 3, 2 * inner, dtype=dtype, device=DEVICE)
    if layout == "sliced":
        return torch.randn(rows, 3, 2 * inner + 5, dtype=dtype, device=DEVICE)[..., :2 * inner]
    return torch.randn(3, rows, 2 * inner, dtype=dtype, device=DEVICE).transpose(0, 1)


def _fastvid(approximate, backend="triton"):
    return lambda p: fastvid.geglu(p, approximate=approximate, backend=backend)


def _reference(approximate):
    return lambda p: reference.geglu(p, approximate=approximate)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "leading_dims_swapped"])
def test_triton_matches_reference(dtype, approximate, layout):
    p = _proj_out(layout, dtype) * 2
    check_against_reference(f"geglu {approximate} {layout}", _fastvid(approximate), _reference(approximate), [p],
                            dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the interpreter: exp2 overflows to inf (then 0)
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_wide_rows_split_into_column_blocks(approximate):
    # inner 1040: three column blocks of 512 (the last ragged), 16-aligned halves (the vectorised path).
    p = torch.randn(3, 2 * 1040, dtype=torch.float16, device=DEVICE) * 3
    check_against_reference("geglu wide", _fastvid(approximate), _reference(approximate), [p], torch.float16)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_torch_backends_match_reference(backend, approximate):
    p = _proj_out("sliced", torch.float32)
    check_against_reference(backend, _fastvid(approximate, backend), _reference(approximate), [p], torch.float32)


def test_gelu_reference_is_torchs_gelu():
    x = torch.linspace(-8, 8, 301, dtype=torch.float64)
    for approximate in APPROXIMATIONS:
        torch.testing.assert_close(reference.gelu(x, approximate), torch.nn.functional.gelu(x, approximate=approximate))


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_custom_op_passes_opcheck(approximate):
    """Schema, fake tensor, autograd registration and AOT dispatch (torch.compile)."""
    from fastvid.ops.geglu import geglu_fwd

    p = _proj_out("sliced", torch.float32, rows=2, inner=5).requires_grad_()
    torch.library.opcheck(geglu_fwd, (p, approximate))


def test_auto_uses_torch_on_cpu_and_reports_it():
    fastvid.geglu(_proj_out("contiguous", torch.float32, rows=2, inner=4))
    assert fastvid.last_backend("geglu") == ("triton" if DEVICE == "cuda" else "torch")


def test_triton_refuses_float64_with_a_reason():
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        fastvid.geglu(_proj_out("contiguous", torch.float64, rows=2, inner=4), backend="triton")


@pytest.mark.parametrize("case, match", [
    ("odd", r"argument 'proj_out' has shape \(2, 3, 7\); expected an even last dim"),
    ("scalar", r"argument 'proj_out' has shape \(\); expected an even last dim"),
    ("dtype", r"argument 'proj_out' has dtype int64"),
    ("not_a_tensor", r"argument 'proj_out' is a list"),
    ("approximate", r"argument 'approximate' is 'fast'"),
    ("backend", r"argument 'backend' is 'apex'"),
])
def test_bad_input_names_the_argument(case, match):
    p, kwargs = _proj_out("contiguous", torch.float32, rows=2, inner=4), {}
    if case == "odd":
        p = p[..., :7]
    elif case == "scalar":
        p = p[0, 0, 0]
    elif case == "dtype":
        p = p.long()
    elif case == "not_a_tensor":
        p = [1.0, 2.0]
    elif case == "approximate":
        kwargs["approximate"] = "fast"
    elif case == "backend":
        kwargs["backend"] = "apex"
    with pytest.raises(FastvidInputError, match=match):
        fastvid.geglu(p, **kwargs)


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_module_twin_matches_the_reference_module(approximate):
    ref = reference.GEGLU(12, 7, approximate=approximate).to(DEVICE)
    fast = fastvid.nn.GEGLU(12, 7, approximate=approximate).to(DEVICE)
    assert list(fast.state_dict()) == list(ref.state_dict()) == ["proj.weight", "proj.bias"]
    fast.load_state_dict(ref.state_dict())
    fast.backend = "triton"
    assert_twins_agree(ref, fast, torch.randn(2, 5, 12, device=DEVICE))


def test_patch_swaps_reference_geglu_and_unpatch_restores_it():
    model = torch.nn.Sequential(reference.GEGLU(8, 5), torch.nn.Linear(5, 8)).to(DEVICE)
    x = torch.randn(3, 8, device=DEVICE)
    expected = model(x)
    report = fastvid.patch(model, backend="triton")
    assert report.swapped["feed_forward"] == ["0"] and type(model[0]) is fastvid.nn.GEGLU
    torch.testing.assert_close(model(x), expected)
    assert fastvid.unpatch(model) == 1 and type(model[0]) is reference.GEGLU


# ---- diffusers' GEGLU, swapped by fastvid.patch --------------------------------------------------

FEED_FORWARD_ONLY = dict(temporal_attention=False, frame_attention=False, conv=False, transformer_block=False)


def test_patched_diffusers_unet_matches_unpatched(monkeypatch):
    """Every GEGLU of a tiny ModelScope UNet runs the Triton kernel (the other swaps off; tests/test_diffusers.py
    patches SVD, AnimateDiff and I2VGenXL with every swap on): same output as the unpatched model (judged
    against its float64 run), same state_dict keys, each GEGLU in the report, all handed back by unpatch.
    Their projections are plain Linears: each GEGLU runs as one GEMM with the activation in its epilogue."""
    td = pytest.importorskip("test_diffusers")
    model = td.unet3d()
    keys = list(model.state_dict())
    gemms = []
    monkeypatch.setattr(td.fd, "geglu_linear",
                        lambda x, *a, **k: gemms.append(x.shape) or fastvid.geglu_linear(x, *a, **k))
    report = td.check_patched_matches(model, td.unet3d_inputs(), backend="triton", **FEED_FORWARD_ONLY)
    names = td.feed_forward_modules(model)
    assert len(gemms) >= len(names) and report.unfused == []
    assert names and sorted(report.swapped["feed_forward"]) == names
    assert td.kinds(report) == {"feed_forward": len(names)}
    assert all(type(model.get_submodule(n)) is td.fd.FastvidGEGLU for n in names)
    assert list(model.state_dict()) == keys
    assert td.fd.unpatch_diffusers(model) == len(names) and not any(
        type(m) is td.fd.FastvidGEGLU for m in model.modules())


def _temporal_transformer(td):
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    model = TransformerTemporalModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=8)
    return td._randomize(model), (torch.randn(2 * 3, 16, 3, 2, device=DEVICE), None, None, None, 3)


def test_patched_diffusers_geglu_gradients_match():
    td = pytest.importorskip("test_diffusers")
    model, inputs = _temporal_transformer(td)
    td.check_patched_gradients(model, inputs, backend="triton", **FEED_FORWARD_ONLY)
    assert type(model.transformer_blocks[0].ff.net[0]) is td.fd.FastvidGEGLU


def test_lora_wrapped_projection_is_called_the_activation_fused_and_the_projection_reported():
    td = pytest.importorskip("test_diffusers")
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, init_lora_weights=False, target_modules=r".*ff\.net\.0\.proj")
    (native, x), (model, _), (plain, _) = (_temporal_transformer(td) for _ in range(3))
    for m in (native, model):
        torch.manual_seed(0)
        peft.inject_adapter_in_model(config, m)
    expected = td.run(native, x)
    assert not torch.allclose(expected, td.run(plain, x), atol=1e-3)  # the LoRA layers change the output
    report = td.patch(model, backend="triton", **FEED_FORWARD_ONLY)
    torch.testing.assert_close(td.run(model, x), expected, atol=1e-5, rtol=1e-5)
    names = td.feed_forward_modules(model)
    assert report.swapped["feed_forward"] == names != [] and [name for name, _ in report.unfused] == names
    assert all(why.startswith("proj is a Linear, not a plain torch layer") for _, why in report.unfused)


def test_geglu_with_its_forward_replaced_runs_it_and_is_reported():
    td = pytest.importorskip("test_diffusers")
    model, x = _temporal_transformer(td)
    expected = td.run(model, x)
    name = td.feed_forward_modules(model)[0]
    geglu = model.get_submodule(name)
    calls = []
    original = geglu.forward
    geglu.forward = lambda h: calls.append(h.shape) or original(h)
    td.patch(model, backend="torch", **FEED_FORWARD_ONLY)
    torch.testing.assert_close(td.run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert calls and dict(td.patching.PatchReport.of(model).unfused) == {
        name: "has its forward replaced on the instance"}


def test_accelerate_hook_added_after_patching_keeps_the_fused_path(monkeypatch):
    td = pytest.importorskip("test_diffusers")
    accelerate = pytest.importorskip("accelerate")
    model, x = _temporal_transformer(td)
    expected = td.run(model, x)
    td.patch(model, backend="torch", **FEED_FORWARD_ONLY)
    names = td.feed_forward_modules(model)
    hooked = []

    class Hook(accelerate.hooks.ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            hooked.append(module)
            return args, kwargs

    accelerate.hooks.add_hook_to_module(model.get_submodule(names[0]), Hook())
    fused = []
    # a plain projection: the fused path is the GEMM with the activation in its epilogue
    monkeypatch.setattr(td.fd, "geglu_linear",
                        lambda x, *a, **k: fused.append(x.shape) or fastvid.geglu_linear(x, *a, **k))
    torch.testing.assert_close(td.run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert hooked and len(fused) == len(names) and td.patching.PatchReport.of(model).unfused == []
