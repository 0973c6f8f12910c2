"""ControlVideo (Zhang et al. 2023): a text-to-image U-Net whose self-attention becomes fully
cross-frame attention (every frame attends to all frames), sampled with DDIM, classifier-free
guidance and the interleaved-frame smoother: at two consecutive steps the predicted x0 of the odd,
then of the even interior frames is replaced by the interpolation of its neighbours.

ControlVideo interpolates decoded frames with a RIFE model; with no weights to download, the
smoother here interpolates the latents linearly (the same interleaving, a simpler interpolator).
The ControlNet branch is outside the scope of these benchmarks."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..samplers import ddim_sample
from .common import ModelSize, guided_run, unet_sizes
from .unet import VideoUNet

BLOCK = ("all", "cross")
SIZES = unet_sizes(BLOCK, "inflated")


build = VideoUNet


def interleaved_smooth(x0: torch.Tensor, parity: int) -> torch.Tensor:
    """Frames i = parity, parity + 2, ... (parity 1: odd, 2: even) strictly inside the clip become
    (x0[i-1] + x0[i+1]) / 2; x0 is (B, C, F, H, W)."""
    if parity not in (1, 2):
        raise ValueError(f"interleaved_smooth: parity is {parity!r}; expected 1 (odd frames) or 2 (even frames)")
    out = x0.clone()
    idx = torch.arange(parity, x0.shape[2] - 1, 2, device=x0.device)
    if idx.numel():
        out[:, :, idx] = 0.5 * (x0[:, :, idx - 1] + x0[:, :, idx + 1])
    return out


def smoother_steps(steps: int) -> Sequence[int]:
    """The two consecutive step indices that smooth (ControlVideo: timesteps 30 and 31 of 50, here the same fraction)."""
    first = min(max(round(0.6 * steps), 0), max(steps - 2, 0))
    return (first, first + 1)


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None) -> torch.Tensor:
    at = smoother_steps(size.steps)

    def smooth(i, t, x0):
        return interleaved_smooth(x0, parity=1 + at.index(i)) if i in at else x0

    return guided_run(ddim_sample, model, size, seed=seed, device=device, dtype=dtype, progress=progress,
                      x0_hook=smooth)
