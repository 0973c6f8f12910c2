"""ControlVideo (Zhang et al. 2023): a text-to-image U-Net whose self-attention becomes fully
cross-frame attention (every frame attends to all frames), sampled with DDIM, classifier-free
guidance and the interleaved-frame smoother, as the original pipeline runs it: at two consecutive
steps the predicted x0 of the odd, then of the even frames is replaced by the interpolation of its
neighbours (the end frames included, see :func:`interleaved_smooth`), and the DDIM update keeps the
model's noise prediction: x_{t-1} = sqrt(a_prev) x0_smoothed + sqrt(1 - a_prev) eps_model.

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
    """ControlVideo's smoother on x0 (B, C, F, H, W), frame f rewritten as (x0[s] + x0[e]) / 2.

    parity 1 (the odd frames): f = 1, 3, ... from its neighbours, while f + 1 < F.
    parity 0 (the even frames): with keys [0, 1, 3, 5, ...] (+ [F - 1] when F is odd), even frame 2k
    comes from keys k and k + 1: frame 0 from frames 0 and 1, frame 2k (k >= 1) from 2k - 1 and
    2k + 1, and for an odd F the last frame from frames F - 2 and F - 1."""
    if parity not in (0, 1):
        raise ValueError(f"interleaved_smooth: argument 'parity' is {parity!r}; "
                         "expected 1 (odd frames) or 0 (even frames)")
    frames = x0.shape[2]
    if parity == 1:
        targets = list(range(1, frames - 1, 2))
        starts, ends = [f - 1 for f in targets], [f + 1 for f in targets]
    else:
        keys = [0] + list(range(1, frames, 2)) + ([frames - 1] if frames % 2 else [])
        starts, ends = keys[:-1], keys[1:]
        targets = list(range(0, frames, 2))[:len(starts)]
    out = x0.clone()
    if targets:
        out[:, :, targets] = 0.5 * (x0[:, :, starts] + x0[:, :, ends])
    return out


def smoother_steps(steps: int) -> Sequence[int]:
    """The two consecutive step indices that smooth (ControlVideo: steps 30 and 31 of 50, here the same fraction);
    an even step index smooths the odd frames, an odd one the even frames, as in the original."""
    first = min(max(round(0.6 * steps), 0), max(steps - 2, 0))
    return (first, first + 1)


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None) -> torch.Tensor:
    at = smoother_steps(size.steps)

    def smooth(i, t, x0):
        return interleaved_smooth(x0, parity=1 - i % 2) if i in at else x0

    return guided_run(ddim_sample, model, size, seed=seed, device=device, dtype=dtype, progress=progress,
                      x0_hook=smooth)
