"""Imagen Video (Ho et al. 2022): a cascade of pixel-space video U-Nets, each with spatial and temporal
attention and pseudo-3D (spatial, then temporal) convs, cross-attending to the text:

- base: x_T -> a low-frame-rate, low-resolution video (``size``'s frames x height x width);
- TSR (temporal super-resolution): the base video upsampled in time by frame repetition, concatenated
  to the noisy input as conditioning channels, -> ``temporal_factor`` times the frames;
- SSR (spatial super-resolution): the TSR video upsampled bilinearly per frame, concatenated the
  same way, -> ``spatial_factor`` times the height and width.

Every stage is sampled with DDIM on its v-prediction (v = sqrt(a) eps - sqrt(1 - a) x0), classifier-
free guidance and dynamic thresholding of the predicted x0 (Imagen: s = the ``percentile`` of |x0|,
at least 1; x0 <- clip(x0, -s, s) / s). ``sample`` returns the SSR video and leaves each stage's shape
and time in ``model.stage_report``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as Fn
from torch import nn

from ..samplers import ddim_sample, randn
from ..validation import check_choice, fail
from .common import ModelSize, make_inputs, with_condition
from .unet import UNetConfig, VideoUNet

STAGES = ("base", "tsr", "ssr")


@dataclass(frozen=True)
class CascadeConfig:
    base: UNetConfig
    tsr: UNetConfig  # cond_channels = in_channels: the frame-repeated base video
    ssr: UNetConfig  # cond_channels = in_channels: the bilinearly upsampled TSR video
    temporal_factor: int = 2
    spatial_factor: int = 2

    @property
    def in_channels(self) -> int:
        return self.base.in_channels

    @property
    def context_dim(self) -> int:
        return self.base.context_dim

    @property
    def spatial_multiple(self) -> int:
        """Base height and width must divide by this for every stage's U-Net to fit."""
        ssr = self.ssr.spatial_multiple // math.gcd(self.ssr.spatial_multiple, self.spatial_factor)
        return math.lcm(self.base.spatial_multiple, self.tsr.spatial_multiple, ssr)


class ImagenVideo(nn.Module):
    """The three stage U-Nets; ``forward(x, t, context, stage=...)`` runs one of them."""

    def __init__(self, config: CascadeConfig):
        super().__init__()
        self.config = config
        self.base, self.tsr, self.ssr = (VideoUNet(getattr(config, s)) for s in STAGES)
        self.stage_report = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None,
                stage: str = "base") -> torch.Tensor:
        check_choice("ImagenVideo", "stage", stage, STAGES)
        return getattr(self, stage)(x, t, context)


def _sizes() -> dict:
    def cascade(channels, attention, **kw):
        stage = UNetConfig(channels=channels, attention_levels=attention, block_spec=("spatial", "temporal", "cross"),
                           conv="pseudo3d", in_channels=3, prediction="v", **kw)
        return CascadeConfig(stage, replace(stage, cond_channels=3), replace(stage, cond_channels=3))

    return {
        "tiny": ModelSize(cascade((16, 32), (False, True)), frames=2, height=8, width=8, steps=2),
        "cpu": ModelSize(cascade((32, 64), (False, True)), frames=4, height=8, width=8, steps=2),
        # Pixel-space stages: 16 x 40 x 64 base -> 32 x 40 x 64 (TSR) -> 32 x 80 x 128 (SSR).
        "gpu": ModelSize(cascade((128, 256, 512), (False, True, True), layers_per_block=2, heads=8, context_dim=768,
                                 groups=32), frames=16, height=40, width=64, steps=20, context_len=77),
    }


SIZES = _sizes()


build = ImagenVideo


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Per sample s = max(the ``percentile`` quantile of |x0| (the next order statistic up, as
    ``torch.quantile(..., interpolation="higher")``, which cannot take the large tensors), 1);
    x0 clipped to [-s, s], divided by s."""
    flat = x0.detach().flatten(1).abs()
    k = math.ceil(percentile * (flat.shape[1] - 1)) + 1
    s = flat.kthvalue(k, dim=1).values.clamp(min=1).view(-1, *[1] * (x0.dim() - 1))
    return torch.minimum(torch.maximum(x0, -s), s) / s


def stage_condition(config: CascadeConfig, size: ModelSize, stage: str, low_res: torch.Tensor) -> torch.Tensor:
    """The conditioning video of the TSR stage (``low_res``: the base video, repeated ``temporal_factor``
    times per frame) or the SSR stage (``low_res``: the TSR video, upsampled bilinearly per frame)."""
    frames = size.frames * (1 if stage == "tsr" else config.temporal_factor)
    height, width = size.height, size.width
    if low_res.dim() != 5 or tuple(low_res.shape[2:]) != (frames, height, width):
        got = f"has shape {tuple(low_res.shape)}"
        fail("imagen_video", "low_res", got, f"(B, C, {frames}, {height}, {width}) for the {stage} stage: "
             f"{frames} frames of {height} x {width}")
    if stage == "tsr":
        return low_res.repeat_interleave(config.temporal_factor, dim=2)
    f = config.spatial_factor
    return Fn.interpolate(low_res, scale_factor=(1, f, f), mode="trilinear", align_corners=False)


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None, percentile: float = 0.995) -> torch.Tensor:
    """The whole cascade: base, TSR, SSR. Returns the (B, C, F * tf, H * sf, W * sf) video."""
    config = model.config
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype)
    guide = dict(context=inp.context, uncond_context=inp.uncond_context, guidance_scale=size.guidance_scale)
    model.stage_report = []
    video = None
    for stage in STAGES:
        start = time.perf_counter()
        if stage == "base":
            denoiser, noise = (lambda x, t, c: model(x, t, c, stage="base")), inp.noise
        else:
            cond = stage_condition(config, size, stage, video)
            denoiser, noise = with_condition(model, cond, stage=stage), randn(cond.shape, inp.generator, device, dtype)
        video = ddim_sample(denoiser, noise, steps=size.steps, generator=inp.generator, prediction="v",
                            x0_hook=lambda i, t, x0: dynamic_threshold(x0, percentile), progress=progress, **guide)
        if video.device.type == "cuda":
            torch.cuda.synchronize(video.device)
        model.stage_report.append({"stage": stage, "shape": list(video.shape), "seconds": time.perf_counter() - start})
    return video
