"""Reference video models: structure, patched vs reference samples (torch backends and Triton under the
interpreter), seeding, size checks, and the Text2Video-Zero / ControlVideo sampler pieces."""
import ast
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
    }
    assert set(expect) == set(NAMES)
    for name in NAMES:
        assert expect[name](models.build(name, "tiny")), name


@pytest.mark.parametrize("name", NAMES)
def test_patched_samples_match_reference(name):
    """err(patched fp32) <= 2 err(reference fp32) + floor, both against the reference sampled in float64;
    with the "auto" backends (torch on CPU) and with the Triton kernels (under the interpreter here)."""
    size = models.size(name, "tiny")
    model = models.build(name, size)
    gold = models.sample(name, model.double(), size, seed=1)
    plain = models.sample(name, model.float(), size, seed=1)
    twins = twin_table()
    for backend in ("auto", "triton"):
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


def test_controlvideo_interleaved_smoother():
    x0 = torch.randn(1, 2, 6, 3, 3)
    odd, even = interleaved_smooth(x0, 1), interleaved_smooth(x0, 2)
    for i in range(6):
        avg = 0.5 * (x0[:, :, i - 1] + x0[:, :, (i + 1) % 6])
        torch.testing.assert_close(odd[:, :, i], avg if i in (1, 3) else x0[:, :, i])
        torch.testing.assert_close(even[:, :, i], avg if i in (2, 4) else x0[:, :, i])
    with pytest.raises(ValueError, match="parity"):
        interleaved_smooth(x0, 0)
