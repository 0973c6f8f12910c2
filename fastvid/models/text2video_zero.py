"""Text2Video-Zero (Khachatryan et al. 2023): a text-to-image U-Net whose self-attention is
replaced by first-frame cross-frame attention (frame k attends to frame 1's keys and values),
and its zero-shot sampler:

- motion dynamics: DDIM-backward x_T^1 for dt steps to x_{T'}^1, translate it for every frame k
  by delta_k = lambda (k - 1) delta (diffusers' ``create_motion_field_and_warp_latents``,
  reproduced exactly), then forward back to timestep T: the DDPM forward process (noise, as the
  paper and diffusers do) or, with ``forward="ddim"``, deterministic DDIM inversion of the clip;
- background smoothing at every step: x_bar^k = M^k x^k + (1 - M^k) (alpha x_warped^k + (1 - alpha) x^k),
  x_warped^k being frame 1's latents translated for frame k, M the foreground mask.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as Fn

from ..samplers import NoiseSchedule, ddim_invert, ddim_sample, randn
from .common import ModelSize, make_inputs, unet_sizes
from .unet import VideoUNet

BLOCK = ("first", "cross")
SIZES = unet_sizes(BLOCK, "inflated")
# diffusers' defaults: motion_field_strength_x = y = 12 (pixels of its 512 x 512 flow field per frame).
MOTION_STRENGTH = 12.0
FLOW_SIZE = 512


build = VideoUNet


def warp_latents(latents: torch.Tensor, frame_ids: Sequence[int], strength_x: float = MOTION_STRENGTH,
                 strength_y: float = MOTION_STRENGTH, flow_size: int = FLOW_SIZE) -> torch.Tensor:
    """Translates latent k (K, C, h, w) by frame_ids[k] * (strength_x, strength_y) pixels of a
    ``flow_size``-square flow field, as diffusers does: coordinates + flow, normalised by the flow
    field's size to [-1, 1], resized bilinearly to (h, w), then nearest sampling with reflection padding."""
    size = flow_size
    rows, cols = torch.meshgrid(torch.arange(size, device=latents.device), torch.arange(size, device=latents.device),
                                indexing="ij")
    coords = torch.stack([cols, rows]).float().to(latents.dtype)[None]  # (1, 2, size, size), x first
    flow = torch.tensor([[strength_x * f, strength_y * f] for f in frame_ids], device=latents.device,
                        dtype=latents.dtype)
    coords = coords + flow[:, :, None, None]
    coords[:, 0] /= size
    coords[:, 1] /= size
    coords = Fn.interpolate(coords * 2.0 - 1.0, size=latents.shape[-2:], mode="bilinear", align_corners=False)
    return Fn.grid_sample(latents, coords.permute(0, 2, 3, 1), mode="nearest", padding_mode="reflection",
                          align_corners=False)


def translate_first_frame(x1: torch.Tensor, frame_ids: Sequence[int], strength: float) -> torch.Tensor:
    """(B, C, 1, H, W) frame-1 latents -> (B, C, K, H, W), frame k translated by frame_ids[k] * strength."""
    b, c, _, h, w = x1.shape
    k = len(frame_ids)
    frames = x1[:, :, 0, None].expand(b, c, k, h, w).transpose(1, 2).reshape(b * k, c, h, w)
    warped = warp_latents(frames, list(frame_ids) * b, strength, strength)
    return warped.reshape(b, k, c, h, w).transpose(1, 2)


def background_smoothing(x: torch.Tensor, mask: torch.Tensor, alpha: float, strength: float) -> torch.Tensor:
    """x_bar = M x + (1 - M) (alpha x_warped + (1 - alpha) x); x (B, C, F, H, W), M broadcastable (1 = foreground)."""
    warped = translate_first_frame(x[:, :, :1], range(x.shape[2]), strength)
    return mask * x + (1 - mask) * (alpha * warped + (1 - alpha) * x)


def center_mask(frames: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """A (1, 1, F, H, W) foreground mask covering the central half of each frame (a salient-object stand-in)."""
    mask = torch.zeros(1, 1, frames, height, width, device=device, dtype=dtype)
    mask[..., height // 4: height - height // 4, width // 4: width - width // 4] = 1
    return mask


def motion_latents(model, x1_T: torch.Tensor, *, frames: int, dt: int, strength: float, timesteps: Sequence[int],
                   schedule: NoiseSchedule, context, uncond_context, guidance_scale: float,
                   generator: torch.Generator, forward: str = "ddpm", progress: Optional[bool] = None) -> torch.Tensor:
    """x_T^{1..F}: frame 1 keeps x_T^1; frame k is x_{T'}^1 (dt DDIM steps from x_T^1) translated by
    lambda (k - 1) delta and carried back to timestep T by the DDPM forward process (``forward="ddpm"``)
    or by DDIM inversion of the translated clip (``forward="ddim"``)."""
    t_start, t_prime = timesteps[0], timesteps[dt]
    guide = dict(context=context, uncond_context=uncond_context, guidance_scale=guidance_scale, progress=progress)
    x1 = ddim_sample(model, x1_T, steps=dt, schedule=schedule, timesteps=timesteps[:dt], t_end=t_prime, **guide)
    if forward == "ddpm":
        moved = translate_first_frame(x1, range(1, frames), strength)
        noise = randn(moved.shape, generator, moved.device, moved.dtype)
        return torch.cat([x1_T, schedule.renoise(moved, noise, t_prime, t_start)], dim=2)
    if forward == "ddim":
        clip = translate_first_frame(x1, range(frames), strength)
        inverted = ddim_invert(model, clip, steps=dt, schedule=schedule, timesteps=timesteps[:dt], t_start=t_prime,
                               **guide)
        return torch.cat([x1_T, inverted[:, :, 1:]], dim=2)
    raise ValueError(f"motion_latents: argument 'forward' is {forward!r}; expected 'ddpm' or 'ddim'")


def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
           progress: Optional[bool] = None, dt: Optional[int] = None, strength: float = MOTION_STRENGTH,
           mask: Optional[torch.Tensor] = None, alpha: float = 0.5, forward: str = "ddpm") -> torch.Tensor:
    """The zero-shot pipeline. ``dt`` defaults to a tenth of the steps (at least 1); ``mask`` (1 = foreground,
    broadcastable to the (B, C, F, H, W) latents) defaults to :func:`center_mask`."""
    schedule = NoiseSchedule()
    timesteps = schedule.timesteps(size.steps)
    dt = max(1, min(size.steps // 10, size.steps - 1)) if dt is None else dt
    if not 1 <= dt < size.steps:
        raise ValueError(f"text2video_zero.sample: argument 'dt' is {dt}; expected 1 <= dt < steps ({size.steps})")
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype, frames=1)
    guide = dict(context=inp.context, uncond_context=inp.uncond_context, guidance_scale=size.guidance_scale)
    x_T = motion_latents(model, inp.noise, frames=size.frames, dt=dt, strength=strength, timesteps=timesteps,
                         schedule=schedule, generator=inp.generator, forward=forward, progress=progress, **guide)
    mask = center_mask(size.frames, size.height, size.width, device, dtype) if mask is None else mask

    def smooth(i, t, x):
        return background_smoothing(x, mask, alpha, strength)

    return ddim_sample(model, x_T, steps=size.steps, schedule=schedule, timesteps=timesteps,
                       generator=inp.generator, x_hook=smooth, progress=progress, **guide)
