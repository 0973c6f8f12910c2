"""fastvid inside diffusers video models: patched vs unpatched tiny random-weight models, the
Text2Video-Zero processor vs diffusers' own, the processor protocol, patch/unpatch round trips,
and the errors for a missing diffusers or a non-video model."""
import collections
import copy
import importlib
import io
import subprocess
import sys

import pytest
import torch

import fastvid
from fastvid import patching
from fastvid.testing import assert_close_to_gold, counting_launches
from fastvid.validation import FastvidInputError

from conftest import DEVICE

pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'fastvid[diffusers]'")

from diffusers import UNet2DConditionModel, UNet3DConditionModel, UNetSpatioTemporalConditionModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0  # noqa: E402
from diffusers.models.resnet import (  # noqa: E402
    AlphaBlender,
    ResnetBlock2D,
    SpatioTemporalResBlock,
    TemporalConvLayer,
    TemporalResnetBlock,
)
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel  # noqa: E402
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D  # noqa: E402

from fastvid.integrations import diffusers as fd  # noqa: E402

BACKENDS = ["torch", "triton"]  # "triton" runs under the interpreter on CPU
# Whole models run on every backend; under the interpreter they swap attention only (group_norm_silu
# costs seconds a call there, geglu and add_layer_norm tenths): the conv swaps run under the interpreter module
# by module in test_conv_modules_match_diffusers, the GEGLU swap in tests/test_geglu.py, the transformer blocks in
# test_temporal_basic_transformer_block_fused_matches_diffusers.
WHOLE_MODEL = {"auto": {"backend": "auto"}, "torch": {"backend": "torch"}, "reference": {"backend": "reference"},
               "triton": {"backend": "triton", "conv": False, "feed_forward": False, "transformer_block": False}}

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


def fusable(model):
    """How many ResNet blocks and AlphaBlenders of ``model`` the conv swaps take (before patching)."""
    return sum(type(m) in (TemporalConvLayer, TemporalResnetBlock, ResnetBlock2D, AlphaBlender) for m in model.modules())


@pytest.mark.parametrize("backend", sorted(WHOLE_MODEL))
def test_unet3d_patched_matches_diffusers(backend):
    model = unet3d()
    convs = fusable(model)  # 8 TemporalConvLayers, 8 ResnetBlock2Ds
    report = check_patched_matches(model, unet3d_inputs(), **WHOLE_MODEL[backend])
    # 5 TransformerTemporalModels (transformer_in + 4 temp_attentions), each with 2 temporal self-attentions.
    assert kinds(report).get("temporal_attention") == 5 * 2 + 5
    assert convs == 16 and kinds(report).get("conv", 0) == (convs if has_conv() and backend != "triton" else 0)
    assert all(type(m) is not fd.TransformerTemporalModel for m in model.modules())


@pytest.mark.parametrize("backend", sorted(WHOLE_MODEL))
def test_svd_patched_matches_diffusers(backend):
    model = svd()
    convs = fusable(model)  # 8 SpatioTemporalResBlocks (ResnetBlock2D, TemporalResnetBlock, AlphaBlender), 4 mixers
    report = check_patched_matches(model, svd_inputs(), **WHOLE_MODEL[backend])
    # 4 temporal processors and the 4 TransformerSpatioTemporalModels running their temporal blocks frame-major
    assert kinds(report).get("temporal_attention") == 4 + 4
    assert convs == 28 and kinds(report).get("conv", 0) == (convs if has_conv() and backend != "triton" else 0)


def test_svd_temporal_blocks_run_frame_major_and_fall_back(monkeypatch):
    native, x = svd(), svd_inputs(frames=4)
    expected = run(native, x)
    model = svd()
    patch(model, backend="torch")
    assert sum(isinstance(m, fd.FastvidTransformerSpatioTemporalModel) for m in model.modules()) == 4
    blocks = [m for m in model.modules() if isinstance(m, fd.FastvidTemporalBasicTransformerBlock)]
    layouts = []
    forward = fd.FastvidTemporalBasicTransformerBlock.forward

    def recorded(self, *args, fastvid_frame_major=False, **kwargs):
        layouts.append(fastvid_frame_major)
        return forward(self, *args, fastvid_frame_major=fastvid_frame_major, **kwargs)

    monkeypatch.setattr(fd.FastvidTemporalBasicTransformerBlock, "forward", recorded)
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert layouts == [True] * 4
    blocks[0].set_chunk_feed_forward(1)  # a chunked feed-forward: that transformer runs diffusers' layout
    layouts.clear()
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert sorted(layouts) == [False, True, True, True]


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


@needs("group_norm_silu", "alpha_blend")
@pytest.mark.parametrize("backend", BACKENDS)
def test_spatio_temporal_res_block_matches_diffusers(backend):
    """SVD's SpatioTemporalResBlock, all three parts swapped: the ResnetBlock2D (GroupNorm+SiLU per frame,
    the time embedding folded into the second, a 1x1 shortcut), the TemporalResnetBlock (per-frame
    embedding folded) and the AlphaBlender ("learned_with_images": the second frame is an image)."""
    block = _randomize(SpatioTemporalResBlock(32, 32, temb_channels=8))
    with torch.no_grad():
        block.time_mixer.mix_factor.fill_(0.4)
    x, temb = torch.randn(2, 32, 2, 3, device=DEVICE), torch.randn(2, 8, device=DEVICE)  # 1 sample of 2 frames
    images = torch.tensor([[0.0, 1.0]], device=DEVICE)
    assert kinds(check_patched_matches(block, (x, temb, images), backend=backend)) == {"conv": 3}
    assert [type(m) for m in block.children()] == [fd.FastvidResnetBlock2D, fd.FastvidTemporalResnetBlock,
                                                   fd.FastvidAlphaBlender]
    fd.unpatch_diffusers(block)
    check_patched_gradients(block, (x, temb, images), backend=backend)
    assert block.time_mixer.mix_factor.grad is not None


@needs("learned_alpha_blend")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("merge_strategy, switch", [("learned_with_images", False), ("learned_with_images", True),
                                                    ("learned", True), ("fixed", False)])
@pytest.mark.parametrize("layout", ["resblock", "transformer"])
def test_alpha_blender_matches_diffusers(backend, merge_strategy, switch, layout):
    """Every merge strategy, switched or not, on SpatioTemporalResBlock's (B, C, F, H, W) frame-major views and
    TransformerSpatioTemporalModel's (B*F, N, C) tokens: output, x_spatial's and mix_factor's gradients."""
    blender = AlphaBlender(0.3, merge_strategy, switch).to(DEVICE)
    if layout == "resblock":
        x = torch.randn(2, 3, 5, 4, 6, device=DEVICE).permute(0, 2, 1, 3, 4)  # (B, C, F, H, W) over (B, F, ...)
    else:
        x = torch.randn(2 * 3, 7, 5, device=DEVICE)
    frames = x.shape[2] if layout == "resblock" else 3
    images = (torch.arange(2 * frames, device=DEVICE).reshape(2, frames) % 4 == 1).float()
    inputs = (x, torch.randn(x.shape, device=DEVICE), images)
    assert kinds(check_patched_matches(blender, inputs, backend=backend)) == {"conv": 1}
    fd.unpatch_diffusers(blender)
    check_patched_gradients(blender, inputs, backend=backend)


@needs("learned_alpha_blend")
def test_alpha_blender_is_one_launch_and_falls_back_for_other_indicators():
    """The patched AlphaBlender's forward: one Triton launch and no torch op (alpha made in the kernel). An
    indicator diffusers broadcasts ((1, F) for B = 2) takes get_alpha, then alpha_blend."""
    blender = AlphaBlender(0.3).to(DEVICE)
    x, x_temporal = torch.randn(2, 4, 3, 5, 6, device=DEVICE), torch.randn(2, 4, 3, 5, 6, device=DEVICE)
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], device=DEVICE)
    with torch.no_grad():
        expected, broadcast = blender(x, x_temporal, images), blender(x, x_temporal, images[:1])
    patch(blender, backend="triton")
    with torch.no_grad():
        with counting_launches() as counter:
            out = blender(x, x_temporal, images)
        torch.testing.assert_close(out, expected)
        assert dict(counter.triton) == {"alpha_blend_fwd_kernel": 1} and not counter.torch
        torch.testing.assert_close(blender(x, x_temporal, images[:1]), broadcast)


def test_resnet_blocks_the_fusion_does_not_cover_are_reported():
    model = torch.nn.ModuleDict(dict(
        scale_shift=ResnetBlock2D(in_channels=32, temb_channels=8, time_embedding_norm="scale_shift"),
        mish=ResnetBlock2D(in_channels=32, temb_channels=8, non_linearity="mish"),
        plain=ResnetBlock2D(in_channels=32, temb_channels=8), temporal=TemporalConvLayer(32, 32, norm_num_groups=8)))
    report = patch(model, backend="torch")
    skipped = dict(report.skipped)
    assert "'scale_shift' applies the embedding after the GroupNorm" in skipped["scale_shift"]
    assert "nonlinearity is Mish" in skipped["mish"]
    assert sorted(report.swapped["conv"]) == ["plain", "temporal"]
    assert type(model["scale_shift"]) is ResnetBlock2D and type(model["plain"]) is fd.FastvidResnetBlock2D


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
    processor = model.get_submodule(spatial).processor
    assert type(processor) is fd.SDPAAttnProcessor and type(processor.original) is AttnProcessor2_0
    assert spatial in report.swapped["transformer_block"] and spatial not in report.swapped["frame_attention"]


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
    convs = fusable(model)  # its ResnetBlock2Ds: frames are images of the batch
    report = check_patched_matches(model, unet2d_inputs(), **WHOLE_MODEL[backend])
    geglus = {"feed_forward": len(feed_forward_modules(model))} if WHOLE_MODEL[backend].get("feed_forward", 1) else {}
    # 4 BasicTransformerBlocks and their 4 Transformer2DModels (not under the interpreter)
    blocks = {"transformer_block": 4 + 4} if WHOLE_MODEL[backend].get("transformer_block", 1) else {}
    resnets = {"conv": convs} if WHOLE_MODEL[backend].get("conv", 1) else {}
    # every self- and cross-attention (cross ones delegate)
    assert kinds(report) == {"frame_attention": 8, **geglus, **blocks, **resnets}
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
    assert pipe.unet.attn_processors == before
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


@pytest.mark.parametrize("num_frames", [None, 2])
def test_temporal_processor_copies_nothing_around_the_op(num_frames):
    # SVD's (B*N, F, C) tokens, and the frame-major (B*F, N, C) ones the patched TransformerTemporalModel
    # passes: the op's output views back as the tokens' layout, so only the projections, the op and
    # the output projection run (no clone / copy_ of a rearrange). Triton: the counter does not see
    # inside a custom op, whereas the torch backends' own rearranges would count.
    attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16))
    hidden = torch.randn(6, 4, 32, device=DEVICE)
    proc = fd.TemporalAttnProcessor(AttnProcessor2_0(), backend="triton")
    kwargs = {} if num_frames is None else {"fastvid_num_frames": num_frames}
    with torch.no_grad():
        expected = proc(attn, hidden, **kwargs)
        with fastvid.testing.counting_launches() as counter:
            out = proc(attn, hidden, **kwargs)
    copies = {op: n for op, n in counter.torch.items() if any(c in op for c in ("clone", "copy", "contiguous"))}
    assert not copies, copies
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    if num_frames is None:
        torch.testing.assert_close(out, AttnProcessor2_0()(attn, hidden), atol=1e-5, rtol=1e-5)


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
    report = patch(model, backend="torch")
    assert list(model.state_dict()) == keys
    assert fd.unpatch_diffusers(model) == report.total > 0
    assert fd.unpatch_diffusers(model) == 0
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
    report = patch(model, temporal_attention=False, conv=False, feed_forward=False, transformer_block=False)
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


def test_fastvid_patch_entry_point():
    model, x = svd(), svd_inputs()
    expected = run(model, x)
    report = fastvid.patch(model, backend="torch")
    assert report.swapped["temporal_attention"]
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert fastvid.unpatch(model) == report.total > 0
    assert not any(isinstance(p, fd.TemporalAttnProcessor) for p in model.attn_processors.values())
    assert torch.equal(run(model, x), expected)


# ---- how diffusers' users run models: default processors, autocast, hooks, save/load, copies ---------

MODELS = [(unet3d, unet3d_inputs), (svd, svd_inputs)]


def conv_modules(model):
    return sorted(name for name, m in model.named_modules() if type(m) in fd.ORIGINAL_CLASS and m.patch_kind == "conv")


def weight_reading_modules(model, norms=True, linears=True):
    """The swapped modules that read their convs' (with ``linears``, their projections' and feed-forward
    Linears'; with ``norms``, the ResnetBlock2Ds' norms') weights: those a hook or wrapper on those submodules
    sends to their unfused path."""
    readers = (fd.FastvidTemporalConvLayer, fd.FastvidTemporalResnetBlock)
    if linears:  # transformer blocks read their feed-forward's last Linear and their norms
        readers += (fd.FastvidTransformer2DModel, fd.FastvidTransformerTemporalModel,
                    fd.FastvidAnimateDiffTransformer3D, fd.FastvidTransformerSpatioTemporalModel, fd.FastvidBasicTransformerBlock,
                    fd.FastvidTemporalBasicTransformerBlock)
    if norms:
        readers += (fd.FastvidResnetBlock2D,)
    return sorted(name for name, m in model.named_modules() if type(m) in readers)


def transformers_2d(model):
    """The swapped Transformer2DModels (their proj_in / proj_out read in place)."""
    return [name for name, m in model.named_modules() if type(m) is fd.FastvidTransformer2DModel]


def feed_forward_modules(model):
    """Every diffusers GEGLU, swapped or not."""
    return sorted(name for name, m in model.named_modules() if isinstance(m, fd.GEGLU))


@pytest.mark.parametrize("make, inputs", MODELS)
def test_set_default_attn_processor_hands_back_fastvid_attention(make, inputs):
    native, x = make(), inputs()
    native.set_default_attn_processor()
    expected = run(native, x)
    model = make()
    patch(model, backend="torch")
    model.set_default_attn_processor()
    assert all(type(p) is AttnProcessor for p in model.attn_processors.values())
    assert not any(type(m) is fd.FastvidTransformerTemporalModel for m in model.modules())
    report = patching.PatchReport.of(model)
    assert "temporal_attention" not in report.counts()
    assert report.counts().get("conv", 0) == len(conv_modules(model)) > 0  # convs are not attention: kept
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("make, inputs", MODELS)
def test_autocast_follows_native_dtype_rules(make, inputs, dtype):
    model, x = make(), inputs()
    gold = run(model.double(), [t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in x])
    model.float()
    with torch.autocast(DEVICE, dtype=dtype):
        expected = run(model, x)
        patch(model, backend="torch")
        got = run(model, x)
    assert got.dtype == expected.dtype
    assert_close_to_gold("patched model under autocast", got, expected, gold, dtype)


@needs("temporal_conv", "group_norm_silu")
@pytest.mark.parametrize("backend, dtype", [("torch", torch.bfloat16), ("torch", torch.float16),
                                            ("triton", torch.float16)])  # bf16 tl.dot: GPU only
def test_autocast_conv_modules_compute_in_native_dtypes(backend, dtype, monkeypatch):
    """GroupNorm+SiLU in float32, the temporal convs in the autocast dtype, the residual added after."""
    layer = _randomize(TemporalConvLayer(32, 32, norm_num_groups=8))
    frames = torch.randn(2 * 3, 32, 4, 3, device=DEVICE)
    with torch.no_grad():
        gold = layer.double()(frames.double(), 3)
    layer.float()
    with torch.no_grad(), torch.autocast(DEVICE, dtype=dtype):
        expected = layer(frames, 3)
        patch(layer, backend=backend)
        seen = []
        for name in ("group_norm_silu", "temporal_conv"):
            op = getattr(fastvid.nn.temporal_conv, name)
            monkeypatch.setattr(fastvid.nn.temporal_conv, name,
                                lambda *a, _op=op, _name=name, **k: seen.append((_name, a[0].dtype, a[2].dtype)) or _op(*a, **k))
        got = layer(frames, 3)
    assert got.dtype == expected.dtype == torch.float32  # identity (fp32) + conv output, promoted
    assert set(seen) == {("group_norm_silu", torch.float32, torch.float32), ("temporal_conv", dtype, dtype)}
    assert_close_to_gold("TemporalConvLayer under autocast", got, expected, gold, dtype)


def _layerwise_casting(model):
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)


def _sequential_offload(model):
    accelerate = pytest.importorskip("accelerate")
    accelerate.cpu_offload(model, execution_device=DEVICE)


def _group_offload_leaf_level(model):
    pytest.importorskip("accelerate")  # diffusers' group offloading moves tensors with accelerate
    try:
        model.enable_group_offload(onload_device=torch.device(DEVICE), offload_type="leaf_level")
    except AttributeError:  # diffusers before 0.42 asks torch.accelerator for the onload device's module
        if hasattr(torch, "accelerator") and torch.accelerator.current_accelerator() is None:
            pytest.skip("this diffusers' group offloading needs an accelerator; torch.accelerator finds none")
        raise


# Layerwise casting leaves norms alone (diffusers skips "norm" layers): ResnetBlock2Ds stay fused there.
@pytest.mark.parametrize("hook, norms", [(_layerwise_casting, False), (_sequential_offload, True),
                                         (_group_offload_leaf_level, True)])
@pytest.mark.parametrize("make, inputs", MODELS)
def test_submodule_hooks_run_and_fused_modules_report_the_fallback(make, inputs, hook, norms):
    """Hooks on the convs, norms and GEGLU projections (fp8 storage with upcast, weights on meta until their
    hook loads them) make the fused modules that read those weights call their submodules; PatchReport.of
    names each one (a ResnetBlock2D calls its convs as modules: only hooked norms unfuse it)."""
    native, model, x = make(), make(), inputs()
    hook(native)
    expected = run(native, x)
    patch(model, backend="torch")
    hook(model)
    got = run(model, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    unfused = dict(patching.PatchReport.of(model).unfused)
    # Every hook reaches the GEGLU projections (Linears): those GEGLUs call them and fuse only the activation.
    assert sorted(unfused) == sorted(weight_reading_modules(model, norms) + feed_forward_modules(model))
    assert all("hook" in why or "meta" in why for why in unfused.values())


def test_model_offload_keeps_the_fused_path():
    accelerate = pytest.importorskip("accelerate")
    model, x = unet3d(), unet3d_inputs()
    expected = run(model, x)
    patch(model, backend="torch")
    model, _ = accelerate.cpu_offload_with_hook(model, execution_device=DEVICE)  # one hook, on the whole model
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert patching.PatchReport.of(model).unfused == []


def test_lora_wrapped_convs_and_projections_are_called():
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, init_lora_weights=False,
                             target_modules=r".*temp_convs\.\d+\.conv1\.2|.*temp_attentions.*\.to_q|.*resnets\.\d+\.conv1")
    native, model, x = unet3d(), unet3d(), unet3d_inputs()
    for m in (native, model):
        torch.manual_seed(0)
        peft.inject_adapter_in_model(config, m)
    expected = run(native, x)
    assert not torch.allclose(expected, run(unet3d(), x), atol=1e-3)  # the LoRA layers change the output
    report = patch(model, backend="torch")
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert sorted(name for name, _ in report.unfused) == weight_reading_modules(model, norms=False, linears=False)
    assert all("not a plain torch layer" in why for _, why in report.unfused)


def test_saved_patched_models_load_in_plain_diffusers(tmp_path):
    temporal = _randomize(TransformerTemporalModel(num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                                   norm_num_groups=8))
    model = unet3d()
    for m in (temporal, model):
        patch(m, backend="torch")
    assert type(temporal) is fd.FastvidTransformerTemporalModel
    for name, m in (("temporal", temporal), ("unet", model)):
        m.save_pretrained(tmp_path / name)
        assert "fastvid" not in (tmp_path / name / "config.json").read_text().lower()
    # A fresh interpreter with fastvid made unimportable loads both.
    script = (
        "import sys, torch; sys.modules['fastvid'] = None\n"
        "from diffusers import UNet3DConditionModel\n"
        "from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel\n"
        f"t = TransformerTemporalModel.from_pretrained({str(tmp_path / 'temporal')!r})\n"
        f"u = UNet3DConditionModel.from_pretrained({str(tmp_path / 'unet')!r})\n"
        "assert type(t) is TransformerTemporalModel and type(u) is UNet3DConditionModel\n"
        "torch.save({'t': t.state_dict(), 'u': u.state_dict()}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "loaded.pt")], check=True)
    loaded = torch.load(tmp_path / "loaded.pt")
    for key, m in (("t", temporal), ("u", model)):
        assert all(torch.equal(loaded[key][name], p) for name, p in m.state_dict().items())


def _t2v_zero_unet():
    pipe = TextToVideoZeroPipeline.__new__(TextToVideoZeroPipeline)
    object.__setattr__(pipe, "unet", unet2d())
    patch(pipe, backend="torch")
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    return pipe.unet


def _motion():
    from diffusers import MotionAdapter, UNetMotionModel

    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=8)
    return _randomize(UNetMotionModel.from_unet2d(unet2d(), adapter))


def motion_inputs(frames=3):  # the AnimateDiff pipelines repeat the text states per frame
    return (torch.randn(1, 4, frames, 8, 6, device=DEVICE), torch.tensor([10], device=DEVICE),
            torch.randn(frames, 5, 32, device=DEVICE))


COPYABLE = [(unet3d, unet3d_inputs), (svd, svd_inputs), (_motion, motion_inputs)]
if not T2V_ZERO_MISSING:
    COPYABLE.append((_t2v_zero_unet, unet2d_inputs))


@pytest.mark.parametrize("make, inputs", COPYABLE)
def test_patched_models_deepcopy_and_pickle(make, inputs):
    model, x = make(), inputs()
    if type(model).__name__ != "UNet2DConditionModel":
        patch(model, backend="torch")
    expected = run(model, x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(model), torch.load(buffer, weights_only=False)]
    for clone in copies:
        assert patching.PatchReport.of(clone).counts() == patching.PatchReport.of(model).counts()
        assert torch.equal(run(clone, x), expected)
        for name in ("set_attn_processor", "set_default_attn_processor"):
            if name in clone.__dict__:
                assert clone.__dict__[name].unet is clone
    clone = copies[0]
    with torch.no_grad():
        for p in clone.parameters():
            p.mul_(2)
    clone.set_attn_processor(AttnProcessor())
    assert torch.equal(run(model, x), expected)
    assert patching.PatchReport.of(model).counts() == patching.PatchReport.of(copies[1]).counts()


@pytest.mark.parametrize("make, inputs", COPYABLE[:3], ids=["unet3d", "svd", "motion"])
def test_video_unets_patched_with_triton_kernels_match_diffusers(make, inputs, monkeypatch):
    """Every swap on fastvid's Triton kernels inside a whole tiny video U-Net (without a GPU: the Triton
    interpreter), against the unpatched model: the kernels' strides, layouts and flags as the models call them."""
    monkeypatch.setattr(fastvid.dispatch, "_last", {})  # the backends of this model's calls only
    model = make()
    check_patched_matches(model, inputs(), backend="triton")
    used = {op: fastvid.last_backend(op) for op in ("temporal_attention", "group_norm_silu", "add_layer_norm",
                                                    "geglu_linear", "linear")}
    assert set(used.values()) == {"triton"}, used


def test_animatediff_motion_modules_patched_match_diffusers():
    model = _motion()
    motion_attentions = [n for n, m in model.named_modules() if isinstance(m, Attention) and "motion_modules" in n]
    motion_modules = [n for n, m in model.named_modules() if type(m) is AnimateDiffTransformer3D]
    report = check_patched_matches(model, motion_inputs(), backend="torch")
    assert motion_modules and all(type(model.get_submodule(n)) is fd.FastvidAnimateDiffTransformer3D
                                  for n in motion_modules)  # frame-major tokens, no rearrange copies
    assert sorted(report.swapped["temporal_attention"]) == sorted(motion_attentions + motion_modules)
    assert all(isinstance(model.get_submodule(n).processor, fd.TemporalAttnProcessor) for n in motion_attentions)
    motion_blocks = [m for n, m in model.named_modules()
                     if "motion_modules" in n and n.endswith("transformer_blocks.0")]
    assert motion_blocks and all(type(m) is fd.FastvidBasicTransformerBlock and m.pos_embed is not None
                                 for m in motion_blocks)  # sinusoidal positions added after the fused norms
    fd.unpatch_diffusers(model)
    assert not any(isinstance(p, fd.TemporalAttnProcessor) for p in model.attn_processors.values())


def test_free_noise_on_a_patched_animatediff_pipeline():
    """AnimateDiff's FreeNoise (motion modules over sliding frame windows: its blocks replace the motion modules'
    transformer blocks) gives the same latents patched as unpatched, whether enabled before or after the patch;
    enabled after, its windowed blocks run diffusers' layout and the report says why."""
    import types

    from fastvid import bench_pipelines as bp

    def latents(order, dtype=torch.float32):
        settings = bp.Settings(size="tiny", device=DEVICE, dtype=dtype, warmup=0, timed=1)
        pipe = bp.build_pipeline("animatediff", settings)
        # the bench builds the UNetMotionModel whole; FreeNoise reads the adapter's longest window
        pipe.motion_adapter = types.SimpleNamespace(config=types.SimpleNamespace(motion_max_seq_length=32))
        if order == "patch, then FreeNoise":
            patch(pipe, backend="torch")
        pipe.enable_free_noise(context_length=4, context_stride=2)
        if order == "FreeNoise, then patch":
            patch(pipe, backend="torch")
            unfused = dict(fastvid.PatchReport.of(pipe.unet).unfused)
            assert unfused and all("FreeNoiseTransformerBlock" in why for why in unfused.values())
        torch.manual_seed(0)
        with torch.no_grad():  # 8 frames: windows of 4 every 2 frames
            return pipe(**dict(bp.call_kwargs("animatediff", settings), num_frames=8)).frames

    gold, native = latents("diffusers", torch.float64), latents("diffusers")
    for order in ("patch, then FreeNoise", "FreeNoise, then patch"):
        assert_close_to_gold(order, latents(order).double(), native.double(), gold, torch.float32)


def test_pyramid_attention_broadcast_on_a_patched_model():
    from diffusers import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    outputs = []
    sample, _, context = unet3d_inputs()
    for patched in (False, True):
        model = unet3d()
        if patched:
            patch(model, backend="torch")
        timestep = [None]
        config = PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000),
            spatial_attention_block_identifiers=("transformer_blocks",), current_timestep_callback=lambda: timestep[0])
        apply_pyramid_attention_broadcast(model, config)
        outputs.append([])
        for t in (900, 800, 700, 600):  # attention recomputed at every other step, cached in between
            timestep[0] = t
            outputs[-1].append(run(model, (sample, torch.tensor([t], device=DEVICE), context)))
    for native, ours in zip(*outputs):
        torch.testing.assert_close(ours, native, atol=1e-5, rtol=1e-5)
    uncached = unet3d()
    patch(uncached, backend="torch")
    assert not torch.allclose(run(uncached, (sample, torch.tensor([800], device=DEVICE), context)), outputs[1][1],
                              atol=1e-3)  # step 800 reused step 900's cached attention


def test_i2vgenxl_temporal_layers_patched_match_diffusers():
    from diffusers import I2VGenXLUNet

    model = _randomize(I2VGenXLUNet(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    ))
    frames = 3
    inputs = (torch.randn(1, 4, frames, 8, 8, device=DEVICE), torch.tensor([10], device=DEVICE),
              torch.tensor([8], device=DEVICE), torch.randn(1, 4, frames, 8, 8, device=DEVICE),
              torch.randn(1, 32, device=DEVICE), torch.randn(1, 5, 32, device=DEVICE))
    report = check_patched_matches(model, inputs, backend="torch")
    assert "image_latents_temporal_encoder.attn1" in report.swapped["temporal_attention"]
    blocks = [n for n, m in model.named_modules() if type(m) is fd.FastvidBasicTransformerBlock]
    processors = [n for n, p in model.attn_processors.items() if type(p) is fd.SDPAAttnProcessor]
    assert kinds(report) == {"temporal_attention": 5 * 2 + 5 + 1, "conv": len(conv_modules(model)),
                             "feed_forward": len(feed_forward_modules(model)),
                             "transformer_block": len(blocks) + len(processors) + len(transformers_2d(model))}


# ---- transformer blocks: residual add + LayerNorm fused, SDPA without its no-op divide ---------------------

def _temporal_block(cross=True):
    from diffusers.models.attention import TemporalBasicTransformerBlock

    return _randomize(TemporalBasicTransformerBlock(16, 16, 2, 8, cross_attention_dim=24 if cross else None))


def _temporal_block_inputs(frames=3):
    """(B * F, S, C) tokens and, as SVD passes it, one context token per (b, s) sequence: (B * S, 1, C')."""
    return (torch.randn(2 * frames, 5, 16, device=DEVICE), frames, torch.randn(2 * 5, 1, 24, device=DEVICE))


@needs("add_layer_norm")
@pytest.mark.parametrize("backend", BACKENDS)
def test_temporal_basic_transformer_block_fused_matches_diffusers(backend):
    """SVD's TemporalBasicTransformerBlock: ff_in + residual, attn1 and attn2 outputs each added and normed in
    one pass; output and every gradient against diffusers' block in float64."""
    block = _temporal_block()
    keys = list(block.state_dict())
    report = check_patched_matches(block, _temporal_block_inputs(), backend=backend)
    assert type(block) is fd.FastvidTemporalBasicTransformerBlock and list(block.state_dict()) == keys
    # the block and attn2's processor; GEGLU in ff_in and ff
    assert kinds(report) == {"temporal_attention": 1, "transformer_block": 2, "feed_forward": 2}
    fd.unpatch_diffusers(block)
    check_patched_gradients(block, _temporal_block_inputs(), backend=backend)


@needs("add_layer_norm")
def test_basic_transformer_blocks_fused_in_whole_models():
    """Every BasicTransformerBlock of the tiny ModelScope and SVD UNets (spatial and temporal) and SVD's temporal
    blocks are swapped, their spatial and cross attentions run SDPAAttnProcessor (the outputs are checked
    against diffusers' by test_unet3d_patched_matches_diffusers and test_svd_patched_matches_diffusers)."""
    for make, blocks in ((unet3d, 4 + 5), (svd, 4 + 4)):
        model = make()
        report = patch(model, backend="torch")
        swapped = [m for m in model.modules() if type(m) in (fd.FastvidBasicTransformerBlock,
                                                              fd.FastvidTemporalBasicTransformerBlock)]
        processors = [p for p in model.attn_processors.values() if type(p) is fd.SDPAAttnProcessor]
        assert len(swapped) == blocks and processors
        assert kinds(report)["transformer_block"] == len(swapped) + len(processors) + len(transformers_2d(model))


@needs("add_layer_norm")
def test_sdpa_processor_is_diffusers_sdpa_bit_for_bit():
    """Self- and cross-attention, with and without a mask: the same values as AttnProcessor2_0 (whose / 1.0 is
    exact), and calls it cannot take (4D input) go to the original."""
    attn = _randomize(Attention(query_dim=32, cross_attention_dim=24, heads=2, dim_head=16))
    self_attn = _randomize(Attention(query_dim=32, heads=2, dim_head=16))
    hidden, context = torch.randn(3, 7, 32, device=DEVICE), torch.randn(3, 5, 24, device=DEVICE)
    mask = torch.zeros(3, 1, 5, device=DEVICE)
    mask[:, :, -2:] = -10000.0
    ours = fd.SDPAAttnProcessor(AttnProcessor2_0())
    with torch.no_grad():
        for module, kwargs in ((attn, dict(encoder_hidden_states=context)),
                               (attn, dict(encoder_hidden_states=context, attention_mask=mask)),
                               (self_attn, {})):
            assert torch.equal(ours(module, hidden, **kwargs), AttnProcessor2_0()(module, hidden, **kwargs))
        image = torch.randn(2, 32, 3, 4, device=DEVICE)
        assert torch.equal(ours(self_attn, image), AttnProcessor2_0()(self_attn, image))


def test_transformer_blocks_refused_with_reasons():
    from diffusers.models.attention import BasicTransformerBlock

    ada = BasicTransformerBlock(16, 2, 8, norm_type="ada_norm_zero", num_embeds_ada_norm=10)
    assert "ada_norm_zero" in fd.FastvidBasicTransformerBlock.refusal(ada)
    plain = BasicTransformerBlock(16, 2, 8)
    assert fd.FastvidBasicTransformerBlock.refusal(plain) is None
    plain.norm3 = torch.nn.GroupNorm(1, 16)
    assert "norm3 is a GroupNorm" in fd.FastvidBasicTransformerBlock.refusal(plain)


@needs("add_layer_norm")
def test_hooked_norms_run_the_block_unfused_and_are_reported():
    block, x = _temporal_block(), _temporal_block_inputs()
    expected = run(block, x)
    calls = []
    patch(block, backend="torch")
    block.norm2.register_forward_hook(lambda *args: calls.append(1))
    torch.testing.assert_close(run(block, x), expected, atol=1e-5, rtol=1e-5)
    assert calls and dict(patching.PatchReport.of(block).unfused) == {"": "norm2 has forward hooks"}


# ---- token projections: no rearrange copies, proj_out + residual in one GEMM ------------------------------

def _transformer_2d(linear_projection):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    return _randomize(Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=8,
                                         cross_attention_dim=24, use_linear_projection=linear_projection))


def _transformer_2d_inputs():
    return (torch.randn(3, 16, 5, 3, device=DEVICE), torch.randn(3, 4, 24, device=DEVICE))


def _swapped(model):
    """A Transformer2DModel alone is no video model (patch refuses it): swapped as patch swaps it inside one."""
    model.__class__ = fd.FastvidTransformer2DModel
    model.backend = "torch"
    return model


@pytest.mark.parametrize("linear_projection", [True, False], ids=["linear", "conv1x1"])
def test_transformer_2d_swap_matches_diffusers(linear_projection):
    """proj_in reads the normed (N, C, H, W) map as tokens in place (a Linear, or a 1x1 conv's weight as one),
    proj_out writes its output plus the input back into (N, C, H, W); output, layout and gradients as diffusers'."""
    model, inputs = _transformer_2d(linear_projection), _transformer_2d_inputs()
    gold = run(model.double(), [t.double() for t in inputs])
    expected, expected_grads = run(model.float(), inputs), gradients(model, inputs)
    _swapped(model)
    got = run(model, inputs)
    assert_close_to_gold("Transformer2DModel", got, expected, gold, torch.float32)
    assert got.is_contiguous()
    for g, e in zip(gradients(model, inputs), expected_grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
    assert fd.FastvidTransformer2DModel.refusal(model) is None


def _motion_module(frames_table=8):
    return _randomize(AnimateDiffTransformer3D(num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                               norm_num_groups=8, positional_embeddings="sinusoidal",
                                               num_positional_embeddings=frames_table))


def test_motion_module_runs_frame_major_and_matches_diffusers():
    """AnimateDiff's motion module on frame-major tokens: sinusoidal positions per frame, no rearranges; output
    (contiguous (B*F, C, H, W), as diffusers returns it) and every gradient against diffusers' module."""
    frames = 3
    inputs = (torch.randn(2 * frames, 16, 5, 3, device=DEVICE), None, None, None, frames)
    model = _motion_module()
    report = check_patched_matches(model, inputs, backend="torch")
    assert type(model) is fd.FastvidAnimateDiffTransformer3D and "" in report.swapped["temporal_attention"]
    assert run(model, inputs).is_contiguous()
    fd.unpatch_diffusers(model)
    check_patched_gradients(model, inputs, backend="torch")


@pytest.mark.parametrize("make, inputs", [(_motion, motion_inputs), (svd, svd_inputs)], ids=["animatediff", "svd"])
def test_gradient_checkpointing_on_patched_unets(make, inputs):
    """``enable_gradient_checkpointing()`` (diffusers' training scripts) on a patched U-Net: every gradient
    against the float64 gold, and the checkpointed blocks (fastvid's fused ResNets among them) run their forward
    again in the backward."""
    torch.manual_seed(0)
    model = make().train()
    model.enable_gradient_checkpointing()
    torch.manual_seed(1)
    check_patched_gradients(model, inputs(), backend="torch")
    resnet = next(m for m in model.modules() if type(m) is fd.FastvidResnetBlock2D)
    calls = []
    handle = resnet.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    gradients(model, inputs())
    handle.remove()
    assert len(calls) == 2 and fastvid.PatchReport.of(model).unfused == []  # forward, then the recompute


def test_token_projections_follow_autocast_and_hooks():
    """Under autocast the projections run as autocast runs nn.Linear / Conv2d and the residual is added in the
    promoted dtype, as diffusers' expression does; a LoRA-wrapped feed-forward Linear is called (and reported)."""
    peft = pytest.importorskip("peft")
    for linear_projection in (True, False):
        native, model = _transformer_2d(linear_projection), _swapped(_transformer_2d(linear_projection))
        inputs = _transformer_2d_inputs()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            expected, got = run(native, inputs), run(model, inputs)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)
    config = peft.LoraConfig(r=4, init_lora_weights=False, target_modules=r".*ff\.net\.2")
    native, model = _motion_module(), _motion_module()
    inputs = (torch.randn(2 * 3, 16, 5, 3, device=DEVICE), None, None, None, 3)
    for m in (native, model):
        torch.manual_seed(0)
        peft.inject_adapter_in_model(config, m)
    patch(model, backend="torch")
    torch.testing.assert_close(run(model, inputs), run(native, inputs), atol=1e-5, rtol=1e-5)
    assert dict(patching.PatchReport.of(model).unfused)["transformer_blocks.0"].startswith("ff.net.2")


def test_motion_module_without_fused_blocks_runs_diffusers_layout_and_says_so():
    """With the transformer_block kind off, the motion modules' blocks (diffusers') add their positions over the
    (S, F, C) layout only: the modules run diffusers' rearranges, report why, and match diffusers."""
    frames = 3
    inputs = (torch.randn(2 * frames, 16, 5, 3, device=DEVICE), None, None, None, frames)
    model = _motion_module()
    check_patched_matches(model, inputs, backend="torch", transformer_block=False)
    assert type(model) is fd.FastvidAnimateDiffTransformer3D
    assert "transformer_block kind is off" in dict(patching.PatchReport.of(model).unfused)[""]


@pytest.mark.parametrize("make, inputs", [COPYABLE[0], COPYABLE[2]], ids=["unet3d", "motion"])
def test_fused_qkv_projections_kept_by_fastvids_processors(make, inputs):
    """diffusers' fuse_qkv_projections() before fastvid.patch: every attention gets fastvid's processor, as
    without the fusion, and projects through the fused to_qkv / to_kv (one GEMM), never to_q / to_k / to_v.
    (SVD's UNet fuses nothing: its Attention modules do not declare QKV fusion.)"""
    model, x = make(), inputs()
    expected = run(model, x)
    unfused_counts = patch(copy.deepcopy(model), backend="torch").counts()
    model.fuse_qkv_projections()
    report = patch(model, backend="torch")
    assert report.counts() == unfused_counts
    assert all(isinstance(p, fd._FastvidAttnProcessor) for p in model.attn_processors.values())
    calls = collections.Counter()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "to_qkv", "to_kv"):
            module.register_forward_hook(lambda m, i, o, kind=name.rsplit(".", 1)[-1]: calls.update([kind]))
    torch.testing.assert_close(run(model, x), expected, atol=1e-5, rtol=1e-5)
    assert calls["to_qkv"] > 0 and calls["to_k"] == calls["to_v"] == 0, calls
    assert calls["to_q"] == calls["to_kv"]  # cross-attentions: the query alone, keys and values fused
    fd.unpatch_diffusers(model)
    assert {type(p).__name__ for p in model.attn_processors.values()} == {"FusedAttnProcessor2_0"}
