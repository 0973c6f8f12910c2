"""DDPM ancestral sampling on a (possibly respaced) subsequence of the training timesteps."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .ddim import predict_x0
from .guidance import Denoiser, guided_eps
from .schedule import NoiseSchedule, progress_bar, randn


def ddpm_sample(model: Denoiser, x: torch.Tensor, *, steps: int, schedule: Optional[NoiseSchedule] = None,
                timesteps: Optional[Sequence[int]] = None, context: Optional[torch.Tensor] = None,
                uncond_context: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
                generator: Optional[torch.Generator] = None, progress: Optional[bool] = None) -> torch.Tensor:
    """x_{t_prev} ~ q(x_{t_prev} | x_t, x0_pred): the posterior mean
    (sqrt(a_prev) beta / (1 - a)) x0 + (sqrt(alpha) (1 - a_prev) / (1 - a)) x_t plus
    sqrt(beta (1 - a_prev) / (1 - a)) z, with alpha = a / a_prev and beta = 1 - alpha over each respaced step."""
    schedule = schedule or NoiseSchedule()
    timesteps = list(schedule.timesteps(steps) if timesteps is None else timesteps)
    with progress_bar(len(timesteps), progress, "DDPM") as bar:
        for i, t in enumerate(timesteps):
            t_prev = schedule.previous(timesteps, i)
            a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
            alpha = a / a_prev
            beta = 1 - alpha
            x0 = predict_x0(x, guided_eps(model, x, t, context, uncond_context, guidance_scale), a)
            x = (a_prev ** 0.5 * beta / (1 - a)) * x0 + (alpha ** 0.5 * (1 - a_prev) / (1 - a)) * x
            if t_prev >= 0:
                x = x + (beta * (1 - a_prev) / (1 - a)) ** 0.5 * randn(x.shape, generator, x.device, x.dtype)
            bar.update()
    return x
