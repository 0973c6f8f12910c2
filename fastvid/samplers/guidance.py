"""Classifier-free guidance: eps = eps_uncond + s (eps_cond - eps_uncond), one batched model call."""
from __future__ import annotations

from typing import Callable, Optional

import torch

# model(x (B, C, F, H, W), t (1,) long, context (B, L, D) or None) -> eps like x
Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def guided_eps(model: Denoiser, x: torch.Tensor, t: int, context: Optional[torch.Tensor] = None,
               uncond_context: Optional[torch.Tensor] = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The model's noise prediction at timestep ``t``, guided when ``uncond_context`` is given and scale != 1."""
    tt = torch.tensor([t], device=x.device, dtype=torch.long)
    if uncond_context is None or guidance_scale == 1.0:
        return model(x, tt, context)
    eps_uncond, eps_cond = model(torch.cat([x, x]), tt, torch.cat([uncond_context, context])).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
