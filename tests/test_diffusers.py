"""fastvid inside diffusers video models: patched vs unpatched tiny random-weight models, the
Text2Video-Zero processor vs diffusers' own, the processor protocol, patch/unpatch round trips,
and the errors for a missing diffusers or a non-video model."""
import importlib
import sys

import pytest
import torch

import fastvid
from fastvid.testing import assert_close_to_gold
from fastvid.validation import FastvidInputError

from conftest import DEVICE

pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'fastvid[diffusers]'")
patching = pytest.importorskip("fastvid.patching", reason="fastvid.patching (issue 5) is not in this build")

from diffusers import UNet2DConditionModel, UNet3DConditionModel, UNetSpatioTemporalConditionModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0  # noqa: E402
from diffusers.models.resnet import TemporalConvLayer, TemporalResnetBlock  # noqa: E402
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel  # noqa: E402

from fastvid.integrations import diffusers as fd  # noqa: E402

BACKENDS = ["torch", "triton"]  # "triton" runs under the interpreter on CPU
# Whole models under the interpreter swap attention only (group_norm_silu costs seconds a call there);
# the conv swaps run under the interpreter module by module in test_conv_modules_match_diffusers.
WHOLE_MODEL = {"torch": {"backend": "torch"}, "triton": {"backend": "triton", "conv": False}}

try:  # Text2Video-Zero's module imports transformers (part of the fastvid[diffusers] extra)
    from diffusers.pipelines import TextToVideoZeroPipeline

    t2v_zero = importlib.import_module(TextToVideoZeroPipeline.__module__)  # moved to deprecated/ in 0.36
    CrossFrameAttnProcessor = t2v_zero.CrossFrameAttnProcessor
    CrossFrameAttnProcessor2_0 = t2v_zero.CrossFrameAttnProcessor2_0
    T2V_ZERO_MISSING = ""
except (ImportError, AttributeError) as exc:  # without transformers diffusers hands out a dummy class
    T2V_ZERO_MISSING = f"Text2Video-Zero processors need transformers (the fastvid[diffusers] extra): {exc}"
    CrossFrameAttnProcessor = CrossFrameAttnProcessor2_0 = None
T2V_ZERO = pytest.mark.skipif(bool(T2V_ZERO_MISSING), reason=T2V_ZERO_MISSING)


def needs(*names):
    missing = [n for n in names if not hasattr(fastvid.nn if n.startswith("nn.") else fastvid, n.split(".")[-1])]
    return pytest.mark.skipif(bool(missing), reason=f"fastvid.{', fastvid.'.join(missing)} not in this build")


def _randomize(model, seed=0):
    """Random weights everywhere (diffusers zero-inits some output convs, which would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.to(DEVICE).eval()


def unet3d():
    return _randomize(UNet3DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    ))


def unet3d_inputs(frames=3):
    return (torch.randn(1, 4, frames, 8, 6, device=DEVICE), torch.tensor([10], device=DEVICE),
            torch.randn(1, 5, 32, device=DEVICE))


def svd():
    return _randomize(UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=(2, 4),
        in_channels=4, out_channels=4, sample_size=8, projection_class_embeddings_input_dim=3 * 8,
        addition_time_embed_dim=8,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    ))


def svd_inputs(frames=3):
    return (torch.randn(1, frames, 4, 8, 6, device=DEVICE), torch.tensor([10.0], device=DEVICE),
            torch.randn(1, 1, 32, device=DEVICE), torch.randn(1, 3, device=DEVICE))


def unet2d(processor=None):
    model = _randomize(UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ))
    if processor is not None:
        model.set_attn_processor(processor)
    return model


def unet2d_inputs(frames=3):  # two groups (classifier-free guidance) of `frames` frames
    return (torch.randn(2 * frames, 4, 8, 6, device=DEVICE), torch.tensor([10], device=DEVICE),
            torch.randn(2 * frames, 5, 32, device=DEVICE))


def run(model, inputs):
    with torch.no_grad():
        out = model(*inputs)
    return getattr(out, "sample", out)


def patch(model, **kwargs):
    report = patching.PatchReport()
    fd.patch_diffusers(model, report, **kwargs)
    return report


def check_patched_matches(model, inputs, **kwargs):
    """Patched fp32 vs unpatched fp32, both against the unpatched model in float64 (the gold)."""
    gold = run(model.double(), [t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs])
    model.float()
    expected = run(model, inputs)
    report = patch(model, **kwargs)
    assert_close_to_gold("patched model", run(model, inputs), expected, gold, torch.float32)
    return report


def gradients(model, inputs):
    """d(out . dout) / d(sample and every parameter), for a fixed random dout."""
    inputs = [t.clone().requires_grad_() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs]
    out = model(*inputs)
    out = getattr(out, "sample", out)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    out.backward(dout.to(out))
    return [inputs[0].grad] + [p.grad for p in model.parameters()]


def check_patched_gradients(model, inputs, **kwargs):
    gold = gradients(model.double(), [t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs])
    model.float()
    expected = gradients(model, inputs)
    patch(model, **kwargs)
    got = gradients(model, inputs)
    names = ["sample"] + [name for name, _ in model.named_parameters()]
    for name, g, e, ref in zip(names, got, expected, gold):
        assert (g is None) == (ref is None), name
        if ref is not None:
            assert_close_to_gold(f"grad {name}", g, e, ref, torch.float32)


def kinds(report):
    return {kind: len(names) for kind, names in report.swapped.items() if names}


def has_conv():
    return all(hasattr(fastvid, n) for n in ("temporal_conv", "group_norm_silu")) and hasattr(fastvid.nn, "TemporalConvBlock")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unet3d_patched_matches_diffusers(backend):
    model = unet3d()
    report = check_patched_matches(model, unet3d_inputs(), **WHOLE_MODEL[backend])
    # 5 TransformerTemporalModels (transformer_in + 4 temp_attentions), each with 2 temporal self-attentions.
    assert kinds(report).get("temporal_attention") == 5 * 2 + 5
    assert kinds(report).get("conv", 0) == (8 if has_conv() and backend == "torch" else 0)
    assert all(type(m) is not fd.TransformerTemporalModel for m in model.modules())


@pytest.mark.parametrize("backend", BACKENDS)
def test_svd_patched_matches_diffusers(backend):
    model = svd()
    report = check_patched_matches(model, svd_inputs(), **WHOLE_MODEL[backend])
    assert kinds(report).get("temporal_attention") == 4
    assert kinds(report).get("conv", 0) == (8 if has_conv() and backend == "torch" else 0)


@needs("temporal_conv", "group_norm_silu")
def test_svd_alpha_blender_mixing_is_kept_exact():
    model = svd()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "mix_factor"):
                m.mix_factor.fill_(0.3)
    check_patched_matches(model, svd_inputs(frames=4), backend="torch")
    assert any(isinstance(m, fd.FastvidTemporalResnetBlock) for m in model.modules())


@pytest.mark.parametrize("backend", BACKENDS)
def test_temporal_transformer_gradients_match_diffusers(backend):
    # Module level: through a whole random-weight UNet, fp32 gradients are ill-conditioned (torch's own
    # error reaches the size of some gradients), so the 2x-torch-error rule cannot judge them there.
    model = _randomize(TransformerTemporalModel(num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                                norm_num_groups=8))
    check_patched_gradients(model, (torch.randn(2 * 5, 16, 3, 4, device=DEVICE), None, None, None, 5),
                            backend=backend)
    assert type(model) is fd.FastvidTransformerTemporalModel


@T2V_ZERO
@needs("frame_attention")
@pytest.mark.parametrize("backend", BACKENDS)
def test_first_frame_processor_gradients_match_diffusers(backend):
    attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16))
    attn.set_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    check_patched_gradients(attn, (torch.randn(2 * 3, 7, 32, device=DEVICE),), backend=backend)


@needs("temporal_conv", "group_norm_silu", "nn.TemporalConvBlock")
@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_modules_match_diffusers(backend):
    layer = _randomize(TemporalConvLayer(32, 32, norm_num_groups=8))
    frames_major = torch.randn(2 * 3, 32, 4, 3, device=DEVICE)
    assert kinds(check_patched_matches(layer, (frames_major, 3), backend=backend)) == {"conv": 1}
    block = _randomize(TemporalResnetBlock(32, 32, temb_channels=16))
    video = frames_major.unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4)  # SpatioTemporalResBlock's view
    temb = torch.randn(2, 3, 16, device=DEVICE)
    assert kinds(check_patched_matches(block, (video, temb), backend=backend)) == {"conv": 1}
    fd.unpatch_diffusers(layer)
    fd.unpatch_diffusers(block)
    check_patched_gradients(layer, (frames_major, 3), backend=backend)
    check_patched_gradients(block, (video, temb), backend=backend)


@needs("frame_attention")
@pytest.mark.parametrize("backend", BACKENDS)
def test_spatial_self_attention_on_request(backend):
    model = unet3d()
    report = check_patched_matches(model, unet3d_inputs(frames=2), spatial_self_attention=True, **WHOLE_MODEL[backend])
    assert kinds(report)["frame_attention"] == 4
    assert isinstance(model.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor, fd.FrameAttnProcessor)


def test_spatial_self_attention_stays_on_sdpa_by_default():
    model = unet3d()
    report = patch(model)
    spatial = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    assert type(model.get_submodule(spatial).processor) is AttnProcessor2_0
    assert any(name == spatial and "SDPA" in why for name, why in report.skipped)


@T2V_ZERO
@needs("frame_attention")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("original_cls", [CrossFrameAttnProcessor, CrossFrameAttnProcessor2_0])
@pytest.mark.parametrize("groups, frames", [(2, 3), (1, 4)])
def test_first_frame_processor_matches_diffusers(backend, original_cls, groups, frames):
    attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16))
    hidden = torch.randn(groups * frames, 7, 32, device=DEVICE)
    original = original_cls(batch_size=groups)
    ours = fd.FirstFrameAttnProcessor(original, backend)
    with torch.no_grad():
        gold = original(attn.double(), hidden.double())
        attn.float()
        expected = original(attn, hidden)
        got = ours(attn, hidden)
    assert_close_to_gold("first-frame processor", got, expected, gold, torch.float32)


@T2V_ZERO
@needs("frame_attention")
def test_first_frame_processor_hands_cross_attention_to_diffusers():
    attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16, cross_attention_dim=24))
    hidden, context = torch.randn(6, 7, 32, device=DEVICE), torch.randn(6, 5, 24, device=DEVICE)
    original = CrossFrameAttnProcessor2_0(batch_size=2)
    with torch.no_grad():
        assert torch.equal(fd.FirstFrameAttnProcessor(original)(attn, hidden, context), original(attn, hidden, context))


@T2V_ZERO
@needs("frame_attention")
@pytest.mark.parametrize("backend", BACKENDS)
def test_text2video_zero_unet_patched_matches_diffusers(backend):
    model = unet2d(CrossFrameAttnProcessor2_0(batch_size=2))
    report = check_patched_matches(model, unet2d_inputs(), backend=backend)
    assert kinds(report) == {"frame_attention": 8}  # every self- and cross-attention; cross ones delegate
    fd.unpatch_diffusers(model)
    assert all(type(p) is CrossFrameAttnProcessor2_0 for p in model.attn_processors.values())


@T2V_ZERO
@needs("frame_attention")
def test_text2video_zero_pipeline_processors_are_translated():
    # The pipeline installs CrossFrameAttnProcessor2_0 at the start of every __call__ and restores the
    # previous processors at its end: patching translates what it installs.
    pipe = TextToVideoZeroPipeline.__new__(TextToVideoZeroPipeline)
    object.__setattr__(pipe, "unet", unet2d())
    report = patch(pipe)
    assert any("set_attn_processor" in name for name in report.swapped["frame_attention"])
    before = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    assert all(isinstance(p, fd.FirstFrameAttnProcessor) for p in pipe.unet.attn_processors.values())
    pipe.unet.set_attn_processor(before)
    assert all(type(p) is AttnProcessor2_0 for p in pipe.unet.attn_processors.values())
    fd.unpatch_diffusers(pipe)
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    assert all(type(p) is CrossFrameAttnProcessor2_0 for p in pipe.unet.attn_processors.values())


def test_processors_follow_the_diffusers_protocol():
    model, inputs = unet3d(), unet3d_inputs()
    patch(model, backend="torch")
    patched = run(model, inputs)
    saved = model.attn_processors
    assert sum(isinstance(p, fd.TemporalAttnProcessor) for p in saved.values()) == 10
    model.set_attn_processor(AttnProcessor2_0())  # the frame-major modules fall back to diffusers' forward
    model.set_attn_processor(saved)
    assert torch.equal(run(model, inputs), patched)
    # Set by hand on one attention, like any diffusers processor.
    attn = model.transformer_in.transformer_blocks[0].attn1
    attn.set_processor(fd.TemporalAttnProcessor(AttnProcessor(), backend="torch"))
    torch.testing.assert_close(run(model, inputs), patched, atol=1e-5, rtol=1e-5)


def test_temporal_processor_hands_masks_to_the_original():
    attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16))
    hidden = torch.randn(5, 4, 32, device=DEVICE)
    mask = torch.zeros(5, 4, 4, device=DEVICE)
    mask[:, :, -1] = float("-inf")
    ours = fd.TemporalAttnProcessor(AttnProcessor2_0())
    with torch.no_grad():
        expected = AttnProcessor2_0()(attn, hidden, attention_mask=mask)
        assert torch.equal(ours(attn, hidden, attention_mask=mask), expected)


@pytest.mark.parametrize("make, inputs", [(unet3d, unet3d_inputs), (svd, svd_inputs)])
def test_patch_unpatch_round_trip(make, inputs):
    model, x = make(), inputs()
    classes = {name: type(m) for name, m in model.named_modules()}
    processors = {name: type(p) for name, p in model.attn_processors.items()}
    keys = list(model.state_dict())
    expected = run(model, x)
    patch(model, backend="torch")
    assert list(model.state_dict()) == keys
    fd.unpatch_diffusers(model)
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert {name: type(p) for name, p in model.attn_processors.items()} == processors
    assert torch.equal(run(model, x), expected)


def test_custom_processors_are_left_alone_and_reported():
    class MyProcessor(AttnProcessor2_0):
        pass

    model, x = unet3d(), unet3d_inputs()
    name = "mid_block.temp_attentions.0.transformer_blocks.0.attn1"
    model.get_submodule(name).set_processor(MyProcessor())
    expected = run(model, x)
    report = patch(model, backend="torch")
    assert type(model.get_submodule(name).processor) is MyProcessor
    skipped = dict(report.skipped)
    assert "MyProcessor" in skipped[name]
    assert "temporal processor" in skipped["mid_block.temp_attentions.0"]
    assert type(model.mid_block.temp_attentions[0]) is fd.TransformerTemporalModel
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    again = patch(model)
    assert any("already patched" in why for _, why in again.skipped)


def test_disabled_kinds_are_not_swapped():
    model = unet3d()
    report = patch(model, temporal_attention=False, conv=False)
    assert report.total == 0
    assert all(not isinstance(p, fd.TemporalAttnProcessor) for p in model.attn_processors.values())


@pytest.mark.parametrize("model, match", [
    (lambda: unet2d(), "UNet2DConditionModel with no temporal layers"),
    (lambda: object(), "argument 'model' is a object with no UNet"),
])
def test_not_a_video_model_is_refused(model, match):
    model = model()
    with pytest.raises(FastvidInputError, match=match):
        patch(model)
    if isinstance(model, torch.nn.Module):
        assert all(type(p) is AttnProcessor2_0 for p in model.attn_processors.values())


def test_missing_diffusers_names_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "diffusers" or n.startswith("diffusers.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fastvid.integrations.diffusers")
    with pytest.raises(ImportError, match=r"pip install 'fastvid\[diffusers\]'"):
        import fastvid.integrations.diffusers  # noqa: F401


@pytest.mark.skipif(not hasattr(fastvid, "patch"), reason="fastvid.patch (issue 5) is not in this build")
def test_fastvid_patch_entry_point():
    model, x = svd(), svd_inputs()
    expected = run(model, x)
    report = fastvid.patch(model, backend="torch")
    assert report.swapped["temporal_attention"]
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    fastvid.unpatch(model)
    assert not any(isinstance(p, fd.TemporalAttnProcessor) for p in model.attn_processors.values())
    assert torch.equal(run(model, x), expected)
