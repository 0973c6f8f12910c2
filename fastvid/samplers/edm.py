"""The EDM sampler (Karras et al. 2022) as Stable Video Diffusion runs it: Karras sigmas, Euler steps,
and the c_skip / c_out / c_in / c_noise preconditioning of a v- or eps-predicting network."""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from ..validation import fail
from .schedule import progress_bar

# denoised(x, sigma) -> D(x; sigma), the preconditioned (and guided) estimate of x0
Denoised = Callable[[torch.Tensor, float], torch.Tensor]


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> List[float]:
    """``steps`` sigmas from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho), then 0."""
    if steps < 1:
        fail("karras_sigmas", "steps", f"is {steps}", "a positive integer")
    if not 0 < sigma_min < sigma_max:
        fail("karras_sigmas", "sigma_min", f"is {sigma_min} (sigma_max {sigma_max})", "0 < sigma_min < sigma_max")
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    ramp = [i / max(steps - 1, 1) for i in range(steps)]
    return [(hi + r * (lo - hi)) ** rho for r in ramp] + [0.0]


def preconditioning(sigma: float, sigma_data: float = 1.0, prediction: str = "v") -> Tuple[float, float, float, float]:
    """(c_skip, c_out, c_in, c_noise): D(x) = c_skip x + c_out F(c_in x, c_noise). "v" is EDM's own
    (and SVD's: c_out = -sigma sigma_data / sqrt(sigma^2 + sigma_data^2)); "eps" has c_skip = 1, c_out = -sigma."""
    s2 = sigma ** 2 + sigma_data ** 2
    c_in, c_noise = 1 / math.sqrt(s2), 0.25 * math.log(sigma)
    if prediction == "v":
        return sigma_data ** 2 / s2, -sigma * sigma_data / math.sqrt(s2), c_in, c_noise
    if prediction == "eps":
        return 1.0, -sigma, c_in, c_noise
    return fail("preconditioning", "prediction", f"is {prediction!r}", "'v' or 'eps'")


def euler_sample(denoised: Denoised, x: torch.Tensor, sigmas: List[float],
                 progress: Optional[bool] = None) -> torch.Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma from ``x`` at sigmas[0]."""
    with progress_bar(len(sigmas) - 1, progress, "EDM Euler") as bar:
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            d = (x - denoised(x, sigma)) / sigma
            x = x + (sigma_next - sigma) * d
            bar.update()
    return x
