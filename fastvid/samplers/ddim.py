"""DDIM sampling (with eta) and DDIM inversion."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .guidance import Denoiser, guided_eps
from ..validation import fail
from .schedule import NoiseSchedule, progress_bar, randn

# hook(i, t, tensor) -> tensor: lets a pipeline edit the predicted x0 or the next latents of step i.
StepHook = Callable[[int, int, torch.Tensor], torch.Tensor]


PREDICTIONS = ("eps", "v")


def predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    return (x - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


def x0_and_eps(x: torch.Tensor, out: torch.Tensor, alpha_bar: float, prediction: str = "eps"):
    """(x0, eps) from the model output: eps itself, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho),
    so x0 = sqrt(a) x_t - sqrt(1 - a) v and eps = sqrt(1 - a) x_t + sqrt(a) v."""
    if prediction == "eps":
        return predict_x0(x, out, alpha_bar), out
    if prediction == "v":
        a, s = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
        return a * x - s * out, s * x + a * out
    return fail("ddim_sample", "prediction", f"is {prediction!r}", f"one of {PREDICTIONS}")


def ddim_step(x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, alpha_bar: float, alpha_bar_prev: float,
              eta: float, noise: Optional[torch.Tensor]) -> torch.Tensor:
    """x_{t_prev} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z (Song et al., eq. 12)."""
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)) ** 0.5
    out = alpha_bar_prev ** 0.5 * x0 + max(1 - alpha_bar_prev - sigma ** 2, 0.0) ** 0.5 * eps
    return out if sigma == 0 else out + sigma * noise


def ddim_sample(model: Denoiser, x: torch.Tensor, *, steps: int, schedule: Optional[NoiseSchedule] = None,
                timesteps: Optional[Sequence[int]] = None, t_end: int = -1, eta: float = 0.0, context: Optional[torch.Tensor] = None,
                uncond_context: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
                generator: Optional[torch.Generator] = None, x0_hook: Optional[StepHook] = None,
                x_hook: Optional[StepHook] = None, prediction: str = "eps",
                progress: Optional[bool] = None) -> torch.Tensor:
    """Runs DDIM from the noisy latents ``x`` (B, C, F, H, W) at ``timesteps[0]`` down to x_0
    (or to timestep ``t_end``, for a partial run).

    ``timesteps`` (descending) defaults to ``schedule.timesteps(steps)``; eta = 0 is deterministic,
    eta = 1 is DDPM-like ancestral sampling. ``prediction`` is what the model outputs: "eps" or "v".
    ``x0_hook`` may edit the predicted x0 and ``x_hook`` the next latents at each step (ControlVideo's
    smoother, dynamic thresholding, Text2Video-Zero's background smoothing); the update keeps the
    model's eps after an x0 edit, as ControlVideo and diffusers' DDIMScheduler (thresholding) do.
    """
    schedule = schedule or NoiseSchedule()
    timesteps = list(schedule.timesteps(steps) if timesteps is None else timesteps)
    with progress_bar(len(timesteps), progress, "DDIM") as bar:
        for i, t in enumerate(timesteps):
            t_prev = schedule.previous(timesteps, i, t_end)
            a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
            x0, eps = x0_and_eps(x, guided_eps(model, x, t, context, uncond_context, guidance_scale), a, prediction)
            if x0_hook is not None:
                x0 = x0_hook(i, t, x0)
            noise = randn(x.shape, generator, x.device, x.dtype) if eta > 0 and t_prev >= 0 else None
            x = ddim_step(x, eps, x0, a, a_prev, eta if t_prev >= 0 else 0.0, noise)
            if x_hook is not None:
                x = x_hook(i, t, x)
            bar.update()
    return x


def ddim_invert(model: Denoiser, x0: torch.Tensor, *, steps: int, schedule: Optional[NoiseSchedule] = None,
                timesteps: Optional[Sequence[int]] = None, t_start: int = -1, context: Optional[torch.Tensor] = None,
                uncond_context: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
                progress: Optional[bool] = None) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 -> x_T (Tune-A-Video's ``ddim_inversion``): at each step the
    noise predicted at the next timestep carries x to it. ``timesteps`` are given descending, as for
    :func:`ddim_sample`, which run on the result retraces the same path backwards; ``x0`` sits at
    ``t_start`` (-1: clean data), below the last of them."""
    schedule = schedule or NoiseSchedule()
    timesteps = list(schedule.timesteps(steps) if timesteps is None else timesteps)
    x = x0
    with progress_bar(len(timesteps), progress, "DDIM inversion") as bar:
        for i in reversed(range(len(timesteps))):
            t, t_from = timesteps[i], schedule.previous(timesteps, i, t_start)
            a_from, a = schedule.alpha_bar(t_from), schedule.alpha_bar(t)
            eps = guided_eps(model, x, t, context, uncond_context, guidance_scale)
            x = a ** 0.5 * predict_x0(x, eps, a_from) + (1 - a) ** 0.5 * eps
            bar.update()
    return x
