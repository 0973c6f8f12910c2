"""Noise schedule, seeded noise and the progress bar shared by the samplers."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, List, Optional, Sequence

import torch

from ..validation import fail

# A sampling run with at least this many model evaluations shows a progress bar when stderr is a terminal.
LONG_RUN = 20


class NoiseSchedule:
    """Stable Diffusion's "scaled_linear" betas over ``train_steps``; alpha_bar(-1) = 1 (clean data)."""

    def __init__(self, train_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        self.train_steps = train_steps
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, train_steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def timesteps(self, steps: int) -> List[int]:
        """``steps`` evenly spaced training timesteps, descending ("leading" spacing, as diffusers' DDIM)."""
        if not 1 <= steps <= self.train_steps:
            fail("sampler", "steps", f"is {steps}", f"1 <= steps <= {self.train_steps}")
        stride = self.train_steps // steps
        return [i * stride for i in reversed(range(steps))]

    def previous(self, timesteps: Sequence[int], i: int, t_end: int = -1) -> int:
        """The timestep step i of a descending run lands on; the last lands on ``t_end`` (-1: clean data)."""
        return timesteps[i + 1] if i + 1 < len(timesteps) else t_end

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alpha_bar(t)
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * noise

    def renoise(self, x: torch.Tensor, noise: torch.Tensor, t_from: int, t_to: int) -> torch.Tensor:
        """DDPM forward q(x_{t_to} | x_{t_from}) for t_to > t_from: sqrt(a) x + sqrt(1 - a) eps."""
        a = self.alpha_bar(t_to) / self.alpha_bar(t_from)
        return a ** 0.5 * x + (1 - a) ** 0.5 * noise


def randn(shape, generator: Optional[torch.Generator], device, dtype) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from ``generator`` (same numbers on every device), then moved."""
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, enabled: Optional[bool] = None, desc: str = "sampling") -> Iterator:
    """A tqdm bar (tqdm is a dependency) when ``enabled`` (None: on long runs when stderr is a terminal)."""
    if enabled is None:
        enabled = total >= LONG_RUN and sys.stderr.isatty()
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False)
    try:
        yield bar
    finally:
        bar.close()
