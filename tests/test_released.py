"""The released-denoiser table: tiny denoisers run on CPU with the inputs their pipelines give them, the
released ones construct and run on the meta device without allocating, and their sizes are the released ones."""
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'fastvid[diffusers]'")

from fastvid.integrations import released  # noqa: E402

NAMES = list(released.RELEASED)


def _prediction_shape(name, kwargs):
    """The denoiser predicts the noise latents: the sample without SVD's image-latent channels."""
    shape = list(kwargs["sample"].shape)
    if name == "svd":
        shape[2] = released.RELEASED[name].latent_channels
    return tuple(shape)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_denoiser_runs_on_its_pipeline_inputs(name, one_thread):
    model = released.build_denoiser(name, size="tiny")
    kwargs = released.denoiser_inputs(name, model, size="tiny", batch=1)
    size = released.RELEASED[name].tiny
    frames_axis = {"svd": 1, "t2v_zero": None}.get(name, 2)
    sample = kwargs["sample"]
    if frames_axis is None:
        assert sample.shape[0] == 2 * size.frames
    else:
        assert sample.shape[0] == 2 and sample.shape[frames_axis] == size.frames
    assert sample.shape[-2:] == (size.latent_height, size.latent_width)
    with torch.no_grad():
        out = model(**kwargs).sample
    assert out.shape == _prediction_shape(name, kwargs)
    assert torch.isfinite(out).all()


def test_zero_initialised_weights_are_randomised(one_thread):
    model = released.build_denoiser("modelscope", size="tiny")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]  # TemporalConvLayer.conv4 starts at 0
    assert convs and all(m.weight.count_nonzero() > 0 for m in convs)


@pytest.mark.parametrize("name", NAMES)
def test_released_denoiser_on_meta_allocates_nothing(name, one_thread):
    r = released.RELEASED[name]
    model = released.build_denoiser(name, size="released", device="meta", dtype=torch.bfloat16)
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.is_meta for t in tensors)
    assert {t.dtype for t in model.parameters()} == {torch.bfloat16}
    kwargs = released.denoiser_inputs(name, model, size="released", device="meta", dtype=torch.bfloat16)
    assert kwargs["sample"].shape[-2:] == (r.released.height // 8, r.released.width // 8)
    with torch.no_grad():
        out = model(**kwargs).sample
    assert out.is_meta and out.shape == _prediction_shape(name, kwargs)


# The published parameter counts of the released denoisers (SVD-XT unet, Stable Diffusion 1.5 unet).
PUBLISHED_PARAMETERS = {"svd": 1_524_623_082, "t2v_zero": 859_520_964}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_released_configs_have_the_published_sizes(name):
    model = released.build_denoiser(name, size="released", device="meta")
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def test_unknown_names_and_sizes_are_refused():
    with pytest.raises(ValueError, match="not a released pipeline"):
        released.build_denoiser("sora", device="meta")
    with pytest.raises(ValueError, match="size"):
        released.RELEASED["svd"].size("huge")
