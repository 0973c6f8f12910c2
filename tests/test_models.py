"""Reference video models: structure, patched vs reference samples (torch backends and Triton under the
interpreter), seeding, size checks, and the Text2Video-Zero / ControlVideo sampler pieces."""
import ast
import copy
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as Fn

import fastvid
from fastvid import models, reference
from fastvid.models.controlvideo import interleaved_smooth
from fastvid.models.text2video_zero import (background_smoothing, center_mask, motion_latents, translate_first_frame,
                                            warp_latents)
from fastvid.patching import twin_table
from fastvid.samplers import NoiseSchedule, ddim_sample
from fastvid.testing import assert_close_to_gold

NAMES = list(models.MODELS)


def frame_modes(model):
    return {m.frames for m in model.modules() if type(m) is reference.FrameAttention}


def test_models_are_built_from_reference_modules():
    expect = {
        "vdm": lambda m: frame_modes(m) == {"self"} and any(
            isinstance(x, reference.TemporalAttention) and x.rel_pos_bias is not None for x in m.modules()),
        "make_a_video": lambda m: frame_modes(m) == {"self"} and any(isinstance(x, reference.PseudoConv3d)
                                                                    for x in m.modules()),
        "tune_a_video": lambda m: any(type(x) is reference.SparseCausalAttention for x in m.modules()),
        "text2video_zero": lambda m: frame_modes(m) == {"first"},
        "controlvideo": lambda m: frame_modes(m) == {"all"},
        "dit": lambda m: frame_modes(m) == {"all"},
        "dit_alternating": lambda m: frame_modes(m) == {"self"} and any(
            isinstance(x, reference.TemporalAttention) for x in m.modules()),
        "video_ldm": lambda m: frame_modes(m) == {"self"} and {reference.TemporalAttention, reference.TemporalResBlock}
        <= {type(x) for x in m.decoder.modules()} | {type(x) for x in m.unet.modules()}
        and any(type(x) is reference.TemporalResBlock for x in m.decoder.modules()),
        "imagen_video": lambda m: all(
            frame_modes(u) == {"self"} and {reference.TemporalAttention, reference.PseudoConv3d}
            <= {type(x) for x in u.modules()} for u in (m.base, m.tsr, m.ssr)),
        "gen1": lambda m: frame_modes(m) == {"self"} and any(isinstance(x, reference.PseudoConv3d) for x in m.modules())
        and m.config.cond_channels == 1,
        "svd": lambda m: frame_modes(m) == {"self"} and {reference.TemporalAttention, reference.TemporalResBlock}
        <= {type(x) for x in m.modules()},
    }
    assert set(expect) == set(NAMES)
    for name in NAMES:
        assert expect[name](models.build(name, "tiny")), name


# Systems whose whole sampler is too slow under the Triton interpreter: torch backends here, their
# distinctive kernel path (TemporalResBlock) through Triton in test_temporal_res_block_kernels.
TORCH_ONLY = {"svd", "video_ldm", "imagen_video", "gen1"}


@pytest.mark.parametrize("name", NAMES)
def test_patched_samples_match_reference(name):
    """err(patched fp32) <= 2 err(reference fp32) + floor, both against the reference sampled in float64;
    with the "auto" backends (torch on CPU) and with the Triton kernels (under the interpreter here)."""
    size = models.size(name, "tiny")
    model = models.build(name, size)
    gold = models.sample(name, model.double(), size, seed=1)
    plain = models.sample(name, model.float(), size, seed=1)
    twins = twin_table()
    for backend in ("auto",) if name in TORCH_ONLY else ("auto", "triton"):
        report = fastvid.patch(model, backend=backend)
        assert not any(type(m) in twins for m in model.modules())  # every twinned module swapped
        swapped = {type(m).patch_kind for m in model.modules() if type(m) in twins.values()}
        assert swapped == set(report.counts())
        patched = models.sample(name, model, size, seed=1)
        assert_close_to_gold(f"{name} ({backend})", patched, plain, gold, torch.float32)
        assert fastvid.unpatch(model) == report.total


@pytest.mark.parametrize("name", ["vdm", "text2video_zero", "dit"])
def test_sampling_is_deterministic_under_a_seed(name):
    model = models.build(name, "tiny")
    a, b, c = (models.sample(name, model, "tiny", seed=s) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == models.size(name, "tiny").latent_shape and torch.isfinite(a).all()


def test_build_is_seeded():
    a, b = (models.build("make_a_video", "tiny", seed=3).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_names_and_sizes():
    with pytest.raises(fastvid.FastvidInputError, match="model"):
        models.size("sora", "tiny")
    with pytest.raises(fastvid.FastvidInputError, match="size"):
        models.size("vdm", "huge")
    with pytest.raises(fastvid.FastvidInputError, match="height/width"):
        models.size("vdm", "gpu", height=41)
    with pytest.raises(fastvid.FastvidInputError, match="frames"):
        models.size("dit", "tiny", frames=0)
    model = models.build("vdm", "tiny")
    with pytest.raises(fastvid.FastvidInputError, match="channels"):
        model(torch.randn(1, 3, 2, 8, 8), torch.tensor([1]), None)
    with pytest.raises(fastvid.FastvidInputError, match="divisible"):
        models.build("dit", "tiny")(torch.randn(1, 4, 2, 7, 8), torch.tensor([1]), None)


def diffusers_warp():
    """diffusers' own ``create_motion_field_and_warp_latents``; read from its source when the pipeline
    module cannot be imported (it imports transformers at the top)."""
    spec = importlib.util.find_spec("diffusers")
    if spec is None:
        pytest.skip("diffusers is not installed")
    for module in ("diffusers.pipelines.text_to_video_synthesis.pipeline_text_to_video_zero",
                   "diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero"):
        try:
            return importlib.import_module(module).create_motion_field_and_warp_latents
        except (ImportError, AttributeError):
            pass
    root = os.path.dirname(spec.origin)
    for sub in ("pipelines/text_to_video_synthesis", "pipelines/deprecated/text_to_video_synthesis"):
        path = os.path.join(root, sub, "pipeline_text_to_video_zero.py")
        if os.path.exists(path):
            break
    else:
        pytest.skip("this diffusers has no TextToVideoZeroPipeline")
    names = {"coords_grid", "warp_single_latent", "create_motion_field", "create_motion_field_and_warp_latents"}
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace = {"torch": torch, "F": Fn, "grid_sample": Fn.grid_sample}
    exec(compile(ast.Module(body, []), path, "exec"), namespace)
    return namespace["create_motion_field_and_warp_latents"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape,strength", [((5, 4, 8, 8), (12.0, 12.0)), ((3, 4, 40, 64), (12.0, 12.0)),
                                            ((4, 3, 13, 21), (5.5, -3.0)), ((2, 4, 64, 64), (100.0, 40.0))])
def test_t2v_zero_warp_matches_diffusers_exactly(shape, strength):
    ref = diffusers_warp()
    latents = torch.randn(shape)
    ids = list(range(1, shape[0] + 1))
    expected = ref(strength[0], strength[1], ids, latents)
    got = warp_latents(latents, ids, *strength)
    assert torch.equal(got, expected)
    assert not torch.equal(got, latents)


def test_t2v_zero_background_smoothing():
    x = torch.randn(1, 4, 3, 8, 8)
    ones, zeros = torch.ones(1, 1, 3, 8, 8), torch.zeros(1, 1, 3, 8, 8)
    torch.testing.assert_close(background_smoothing(x, ones, 0.7, 12.0), x)
    warped = background_smoothing(x, zeros, 1.0, 12.0)
    frames = x[:, :, 0].expand(3, -1, -1, -1)
    torch.testing.assert_close(warped.transpose(1, 2)[0], warp_latents(frames, [0, 1, 2], 12.0, 12.0))
    mask = center_mask(3, 8, 8)
    mixed = background_smoothing(x, mask, 0.25, 12.0)
    torch.testing.assert_close(mixed, mask * x + (1 - mask) * (0.25 * warped + 0.75 * x))


def test_t2v_zero_motion_latents():
    """Frame 1 keeps x_T^1; frame k is frame 1 after dt DDIM steps, translated and re-noised to T."""
    schedule = NoiseSchedule()
    ts = schedule.timesteps(10)
    x1 = torch.randn(1, 4, 1, 8, 8, dtype=torch.float64)
    model = lambda x, t, c=None: 0.1 * x  # noqa: E731
    out = motion_latents(model, x1, frames=4, dt=2, strength=40.0, timesteps=ts, schedule=schedule, context=None,
                         uncond_context=None, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 4, 4, 8, 8) and torch.equal(out[:, :, :1], x1)
    again = motion_latents(model, x1, frames=4, dt=2, strength=40.0, timesteps=ts, schedule=schedule, context=None,
                           uncond_context=None, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_t2v_zero_motion_latents_ddim_forward_retraces():
    """forward="ddim": DDIM inversion from T' to T, so dt DDIM steps from x_T^k land on the translated x_{T'}^1."""
    schedule = NoiseSchedule()
    ts = schedule.timesteps(10)
    x1_T = torch.randn(1, 4, 1, 8, 8, dtype=torch.float64)
    model = lambda x, t, c=None: torch.full_like(x, 0.2) * torch.cos(t.double() / 300)  # noqa: E731
    kw = dict(frames=3, dt=3, strength=40.0, timesteps=ts, schedule=schedule, context=None, uncond_context=None,
              guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    out = motion_latents(model, x1_T, forward="ddim", **kw)
    assert torch.equal(out[:, :, :1], x1_T)
    back = ddim_sample(model, out, steps=3, schedule=schedule, timesteps=ts[:3], t_end=ts[3])
    x1_prime = ddim_sample(model, x1_T, steps=3, schedule=schedule, timesteps=ts[:3], t_end=ts[3])
    torch.testing.assert_close(back[:, :, 1:], translate_first_frame(x1_prime, [1, 2], 40.0), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="forward"):
        motion_latents(model, x1_T, forward="euler", **kw)


def original_smoother(x0, step):
    """ControlVideo's pipeline loop, transcribed: in-place interpolation on a copy, step parity picks the frames."""
    out, frames = x0.clone(), x0.shape[2]
    evens, odds = list(range(0, frames, 2)), list(range(1, frames, 2))
    interp = lambda s, e: 0.5 * (out[:, :, s] + out[:, :, e])  # noqa: E731
    if step % 2 == 0:
        for k in range(len(evens) - 1):
            out[:, :, odds[k]] = interp(evens[k], evens[k + 1])
    else:
        keys = [0] + odds + ([frames - 1] if frames % 2 else [])
        for k in range(len(keys) - 1):
            out[:, :, evens[k]] = interp(keys[k], keys[k + 1])
    return out


@pytest.mark.parametrize("frames", [1, 2, 5, 6])
def test_controlvideo_interleaved_smoother_matches_the_original(frames):
    x0 = torch.randn(2, 3, frames, 3, 4, dtype=torch.float64)
    for step in (30, 31):
        torch.testing.assert_close(interleaved_smooth(x0, parity=1 - step % 2), original_smoother(x0, step),
                                   rtol=0, atol=0)
    if frames == 5:
        even = interleaved_smooth(x0, 0)
        torch.testing.assert_close(even[:, :, 0], 0.5 * (x0[:, :, 0] + x0[:, :, 1]))
        torch.testing.assert_close(even[:, :, 4], 0.5 * (x0[:, :, 3] + x0[:, :, 4]))
        torch.testing.assert_close(even[:, :, 2], 0.5 * (x0[:, :, 1] + x0[:, :, 3]))
    with pytest.raises(ValueError, match="parity"):
        interleaved_smooth(x0, 2)


def test_controlvideo_step_keeps_the_model_eps():
    """x_{t-1} = sqrt(a_prev) x0_smoothed + sqrt(1 - a_prev) eps_model at a smoothing step."""
    schedule = NoiseSchedule()
    ts = schedule.timesteps(4)
    model = lambda x, t, c=None: torch.sin(x) * 0.5  # noqa: E731
    x = torch.randn(1, 2, 5, 3, 3, dtype=torch.float64)
    out = ddim_sample(model, x, steps=1, schedule=schedule, timesteps=ts[:1], t_end=ts[1],
                      x0_hook=lambda i, t, x0: interleaved_smooth(x0, 0))
    a, a_prev = schedule.alpha_bar(ts[0]), schedule.alpha_bar(ts[1])
    eps = model(x, None)
    x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
    torch.testing.assert_close(out, a_prev ** 0.5 * interleaved_smooth(x0, 0) + (1 - a_prev) ** 0.5 * eps)


def test_svd_conditioning_inputs_are_checked():
    model = models.build("svd", "tiny")
    x, t, ctx = torch.randn(1, 8, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 1, 32)
    assert model(x, t, ctx, added_time_ids=torch.tensor([[6.0, 127.0, 0.02]])).shape == (1, 4, 3, 8, 8)
    with pytest.raises(fastvid.FastvidInputError, match="added_time_ids"):
        model(x, t, ctx, added_time_ids=torch.tensor([[6.0, 127.0]]))
    with pytest.raises(fastvid.FastvidInputError, match="4 latent \\+ 4 conditioning"):
        model(x[:, :4], t, ctx, added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]))


def test_video_ldm_trains_only_the_temporal_layers():
    """Spatial layers frozen; every temporal parameter (alphas included) gets a gradient, through the kernels."""
    model = models.build("video_ldm", "tiny")
    fastvid.patch(model)
    x = torch.randn(1, 9, 4, 8, 8)
    loss = model.decoder(model(x, torch.tensor([10]), torch.randn(1, 8, 32))).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        temporal = any(k in name.split(".") for k in ("temporal_res_block", "temporal_block", "time_pos_embed",
                                                       "time_mixer", "temporal"))
        assert p.requires_grad == temporal, name
        assert (p.grad is not None) == temporal, name
    mixers = [m for m in model.modules() if type(m).__name__ == "AlphaBlender"]
    assert mixers and all(m.mix_factor.grad is not None for m in mixers)


def test_video_ldm_interpolation_mode():
    from fastvid.models.video_ldm import interpolation_condition

    frames = torch.randn(1, 4, 7, 8, 8)
    cond = interpolation_condition(frames, 3)
    assert cond[:, 4, :, 0, 0].tolist() == [[1, 0, 0, 1, 0, 0, 1]]
    torch.testing.assert_close(cond[:, :4, ::3], frames[:, :, ::3])
    assert not cond[:, :4, 1::3].any() and not cond[:, :4, 2::3].any()
    model = models.build("video_ldm", "tiny")
    a, b = (models.sample("video_ldm", model, "tiny", mode=m, stride=2, decode=False)
            for m in ("generate", "interpolate"))
    assert a.shape == b.shape and not torch.equal(a, b)
    with pytest.raises(fastvid.FastvidInputError, match="stride"):
        models.sample("video_ldm", model, "tiny", mode="interpolate", stride=4)
    with pytest.raises(fastvid.FastvidInputError, match="mode"):
        models.sample("video_ldm", model, "tiny", mode="extrapolate")


def test_imagen_video_cascade_stages():
    from fastvid.models.imagen_video import dynamic_threshold, stage_condition

    size = models.size("imagen_video", "tiny")
    model = models.build("imagen_video", size)
    video = models.sample("imagen_video", model, size)
    assert [r["stage"] for r in model.stage_report] == ["base", "tsr", "ssr"]
    assert [r["shape"] for r in model.stage_report] == [[1, 3, 2, 8, 8], [1, 3, 4, 8, 8], [1, 3, 4, 16, 16]]
    assert list(video.shape) == [1, 3, 4, 16, 16] and video.abs().max() <= 1
    base = torch.randn(1, 3, 2, 8, 8)
    tsr = stage_condition(model.config, size, "tsr", base)
    assert torch.equal(tsr[:, :, 0::2], base) and torch.equal(tsr[:, :, 1::2], base)
    ssr = stage_condition(model.config, size, "ssr", tsr)
    torch.testing.assert_close(ssr[:, :, 1], Fn.interpolate(tsr[:, :, 1], scale_factor=2, mode="bilinear"))
    with pytest.raises(fastvid.FastvidInputError, match="low_res.*2 frames"):
        stage_condition(model.config, size, "tsr", torch.randn(1, 3, 3, 8, 8))
    with pytest.raises(fastvid.FastvidInputError, match="stage"):
        model(torch.randn(1, 3, 2, 8, 8), torch.tensor([1]), None, stage="tssr")
    x0 = torch.randn(2, 3, 4, 5, 6) * torch.tensor([0.2, 5.0]).view(2, 1, 1, 1, 1)
    out = dynamic_threshold(x0, 0.9)
    torch.testing.assert_close(out[0], x0[0])  # |x0| quantile below 1: s = 1, nothing clipped
    s = torch.quantile(x0[1].abs().flatten(), 0.9, interpolation="higher")
    torch.testing.assert_close(out[1], x0[1].clamp(-s, s) / s)


def test_gen1_structure_conditioning():
    from fastvid.models.gen1 import blur_structure, structure_condition

    size = models.size("gen1", "tiny")
    structure = torch.randn(1, 1, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(blur_structure(structure, 0), structure)
    once = blur_structure(structure, 1)
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4
    padded = Fn.pad(structure[0, :, 1], (1, 1, 1, 1), mode="replicate")[0]
    expected = sum(k[i] * k[j] * padded[i:i + 16, j:j + 16] for i in range(3) for j in range(3))
    torch.testing.assert_close(once[0, 0, 1], expected)
    assert blur_structure(structure, 3).std() < once.std() < structure.std()
    cond = structure_condition(structure, size, 0)
    torch.testing.assert_close(cond[0, 0, 2, 0, 0], structure[0, 0, 2, :2, :2].mean())
    for bad in (torch.randn(1, 1, 3, 12, 16), torch.randn(1, 1, 2, 16, 16), torch.randn(1, 2, 3, 16, 16)):
        with pytest.raises(fastvid.FastvidInputError, match="structure"):
            structure_condition(bad, size)
    with pytest.raises(fastvid.FastvidInputError, match="t_s"):
        blur_structure(structure, -1)
    model = models.build("gen1", size)
    a, b = (models.sample("gen1", model, size, structure=structure.float(), t_s=t) for t in (0, 4))
    assert a.shape == size.latent_shape and not torch.equal(a, b)


def test_temporal_res_block_kernels():
    """fastvid.nn.TemporalResBlock (fused GroupNorm+SiLU, temporal conv with the residual in its epilogue)
    against its reference twin, outputs and gradients, through the Triton kernels (interpreter on CPU)."""
    torch.manual_seed(0)
    ref = reference.TemporalResBlock(8, 12, norm_num_groups=4).double()
    fast = fastvid.nn.TemporalResBlock(8, 12, norm_num_groups=4)
    fast.load_state_dict(ref.state_dict())
    fast.backend = "triton"
    x = torch.randn(2, 8, 5, 3, 7, dtype=torch.float64)[:, :, :, :, 1:6]  # non-contiguous
    temb = torch.randn(2, 12, dtype=torch.float64)
    ref32 = copy.deepcopy(ref).float()
    x_ref, x_plain, x_fast = (x.to(d).clone().requires_grad_() for d in (torch.float64, torch.float32, torch.float32))
    gold, plain, out = ref(x_ref, temb), ref32(x_plain, temb.float()), fast(x_fast, temb.float())
    assert_close_to_gold("TemporalResBlock", out, plain, gold, torch.float32)
    grad = torch.randn_like(gold)
    for y, g in ((gold, grad), (plain, grad.float()), (out, grad.float())):
        y.backward(g)
    assert_close_to_gold("TemporalResBlock grad x", x_fast.grad, x_plain.grad, x_ref.grad, torch.float32)
    for name in ("conv1.weight", "conv2.weight", "norm1.weight", "time_emb_proj.weight"):
        grads = [dict(m.named_parameters())[name].grad for m in (fast, ref32, ref)]
        assert_close_to_gold(f"TemporalResBlock grad {name}", *grads, torch.float32)
