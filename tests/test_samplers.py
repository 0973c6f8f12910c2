"""DDPM / DDIM / inversion / guidance against closed-form cases, plus seeding."""
import math

import pytest
import torch

import fastvid
from fastvid.samplers import (NoiseSchedule, ddim_invert, ddim_sample, ddpm_sample, euler_sample, guided_eps,
                              karras_sigmas, preconditioning, progress_bar, x0_and_eps)

SHAPE = (2, 3, 4, 5, 6)


def point_mass_denoiser(target, schedule):
    """The exact eps-predictor when all data is ``target``: eps = (x - sqrt(a) x*) / sqrt(1 - a)."""
    def model(x, t, context=None):
        a = schedule.alpha_bar(int(t[0]))
        return (x - a ** 0.5 * target) / (1 - a) ** 0.5
    return model


@pytest.mark.parametrize("sampler", ["ddpm", "ddim0", "ddim1"])
def test_samplers_recover_a_point_mass(sampler):
    schedule = NoiseSchedule()
    target = torch.randn(SHAPE, dtype=torch.float64)
    model = point_mass_denoiser(target, schedule)
    x_T = torch.randn(SHAPE, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    if sampler == "ddpm":
        out = ddpm_sample(model, x_T, steps=10, schedule=schedule, generator=g)
    else:
        out = ddim_sample(model, x_T, steps=10, schedule=schedule, eta=float(sampler[-1]), generator=g)
    torch.testing.assert_close(out, target, rtol=1e-9, atol=1e-9)


def test_ddim_eta1_is_ddpm():
    """With eta = 1, DDIM's update is the DDPM posterior step (Song et al.); same noise, same path."""
    model = lambda x, t, c=None: torch.sin(x) * (1 + t.double() / 1000)  # noqa: E731
    x_T = torch.randn(SHAPE, dtype=torch.float64)
    a = ddim_sample(model, x_T, steps=7, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddpm_sample(model, x_T, steps=7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_ddim_inversion_is_exact_for_an_x_independent_denoiser():
    model = lambda x, t, c=None: torch.full_like(x, 0.3) * torch.cos(t.double() / 100)  # noqa: E731
    x0 = torch.randn(SHAPE, dtype=torch.float64)
    x_T = ddim_invert(model, x0, steps=12)
    assert (x_T - x0).abs().max() > 0.1
    torch.testing.assert_close(ddim_sample(model, x_T, steps=12), x0, rtol=1e-10, atol=1e-10)


def test_ddim_inversion_round_trip_shrinks_with_steps():
    """A denoiser that depends on x: the round trip is exact only in the limit, its error falls with the steps."""
    model = lambda x, t, c=None: 0.05 * torch.tanh(x) + 0.1  # noqa: E731
    x0 = torch.randn(SHAPE, dtype=torch.float64)
    errors = [(ddim_sample(model, ddim_invert(model, x0, steps=n), steps=n) - x0).abs().max().item() for n in (5, 200)]
    assert errors[1] < 0.15 * errors[0] and errors[1] < 1e-2


def test_classifier_free_guidance_combines_two_predictions():
    calls = []

    def model(x, t, context):
        calls.append(x.shape[0])
        return x * context.mean(dim=(1, 2))[:, None, None, None, None]

    x = torch.randn(SHAPE)
    cond, uncond = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    out = guided_eps(model, x, 500, cond, uncond, guidance_scale=7.5)
    assert calls == [4]  # one batched call
    e_c, e_u = model(x, None, cond), model(x, None, uncond)
    torch.testing.assert_close(out, e_u + 7.5 * (e_c - e_u))
    torch.testing.assert_close(guided_eps(model, x, 500, cond, uncond, guidance_scale=1.0), e_c)


def test_samplers_are_deterministic_under_a_seed():
    model = lambda x, t, c=None: 0.5 * x  # noqa: E731
    x_T = torch.randn(SHAPE)
    runs = [ddpm_sample(model, x_T, steps=5, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    runs = [ddim_sample(model, x_T, steps=5, eta=0.5, generator=torch.Generator().manual_seed(s)) for s in (4, 4, 5)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_schedule():
    s = NoiseSchedule()
    ts = s.timesteps(10)
    assert ts == sorted(ts, reverse=True) and len(ts) == 10 and ts[-1] == 0 and ts[0] == 900
    assert s.alpha_bar(-1) == 1.0 and 0 < s.alpha_bar(999) < s.alpha_bar(0) < 1
    for bad in (0, 1001):
        with pytest.raises(fastvid.FastvidInputError, match="steps"):
            s.timesteps(bad)


def test_progress_bar_shows_on_request(capsys):
    pytest.importorskip("tqdm")
    with progress_bar(3, True, "demo") as bar:
        for _ in range(3):
            bar.update()
    assert "demo" in capsys.readouterr().err
    with progress_bar(3, False) as bar:
        bar.update()
    assert capsys.readouterr().err == ""


def test_v_prediction_recovers_x0_and_eps():
    x0, eps = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    a = 0.3
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    v = a ** 0.5 * eps - (1 - a) ** 0.5 * x0
    got_x0, got_eps = x0_and_eps(x_t, v, a, "v")
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)
    with pytest.raises(fastvid.FastvidInputError, match="prediction"):
        x0_and_eps(x_t, v, a, "x0")


def test_karras_sigmas():
    sigmas = karras_sigmas(5, 0.002, 700.0, 7.0)
    assert len(sigmas) == 6 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(700.0) and sigmas[4] == pytest.approx(0.002)
    roots = [s ** (1 / 7) for s in sigmas[:5]]
    steps = [b - a for a, b in zip(roots, roots[1:])]
    assert max(steps) == pytest.approx(min(steps))  # evenly spaced in sigma^(1/rho)
    with pytest.raises(fastvid.FastvidInputError, match="steps"):
        karras_sigmas(0)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_edm_euler_recovers_a_point_mass(prediction):
    """The exact network for data = target, through the preconditioning: D(x; sigma) = target, so one
    Euler step from any sigma lands on it and every later step stays."""
    target = torch.randn(SHAPE, dtype=torch.float64)

    def denoised(x, sigma):
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, prediction=prediction)
        network = (target - c_skip * x) / c_out  # what a perfect F outputs
        return c_skip * x + c_out * network

    x = torch.randn(SHAPE, dtype=torch.float64) * 80.0
    torch.testing.assert_close(euler_sample(denoised, x, karras_sigmas(4, 0.002, 80.0)), target)
    c_skip, c_out, c_in, c_noise = preconditioning(2.0, 0.5, "v")
    assert (c_skip, c_out, c_in) == pytest.approx((0.25 / 4.25, -1.0 / 4.25 ** 0.5, 1 / 4.25 ** 0.5))
    assert c_noise == pytest.approx(0.25 * math.log(2.0))
