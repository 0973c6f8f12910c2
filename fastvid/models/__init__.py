"""Reference video models of the survey, random-weight, built from fastvid.reference modules so that
``fastvid.patch`` can swap in the fastvid kernels; each comes with its sampler and size presets.

    model = fastvid.models.build("vdm", "tiny")
    video_latents = fastvid.models.sample("vdm", model, "tiny", seed=0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ..validation import check_choice, fail
from . import controlvideo, dit, gen1, imagen_video, make_a_video, svd, text2video_zero, tune_a_video, vdm, video_ldm
from .common import SIZE_NAMES, ModelSize, SampleInputs, make_inputs
from .dit import DiTConfig, VideoDiT
from .layers import perturb_identity_inits
from .unet import UNetConfig, VideoUNet


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    sizes: Dict[str, ModelSize]
    build: Callable[..., nn.Module]
    sample: Callable[..., torch.Tensor]


MODELS: Dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry("vdm", "VDM 3D U-Net: 1x3x3 convs, spatial + temporal attention (rel-pos bias); DDPM",
               vdm.SIZES, vdm.build, vdm.sample),
    ModelEntry("make_a_video", "Make-A-Video: pseudo-3D conv and attention U-Net; DDIM",
               make_a_video.SIZES, make_a_video.build, make_a_video.sample),
    ModelEntry("tune_a_video", "Tune-A-Video: sparse-causal ST-attention U-Net; DDIM inversion + DDIM",
               tune_a_video.SIZES, tune_a_video.build, tune_a_video.sample),
    ModelEntry("text2video_zero", "Text2Video-Zero: first-frame attention; motion warping, background smoothing",
               text2video_zero.SIZES, text2video_zero.build, text2video_zero.sample),
    ModelEntry("controlvideo", "ControlVideo: fully cross-frame attention; interleaved-frame smoother",
               controlvideo.SIZES, controlvideo.build, controlvideo.sample),
    ModelEntry("dit", "Sora-style DiT on spacetime patches, full spatio-temporal attention; DDIM",
               dit.SIZES, dit.build, dit.sample),
    ModelEntry("dit_alternating", "Sora-style DiT, alternating spatial / temporal attention blocks; DDIM",
               dit.SIZES_ALTERNATING, dit.build, dit.sample),
    ModelEntry("svd", "Stable Video Diffusion: spatial + temporal blocks, AlphaBlender; image-to-video, EDM Euler",
               svd.SIZES, svd.build, svd.sample),
    ModelEntry("video_ldm", "Video LDM: frozen spatial + alpha-mixed temporal layers, temporal VAE decoder; DDIM",
               video_ldm.SIZES, video_ldm.build, video_ldm.sample),
    ModelEntry("imagen_video", "Imagen Video cascade: base, TSR, SSR pseudo-3D U-Nets; v-prediction DDIM, CFG, "
               "dynamic thresholding", imagen_video.SIZES, imagen_video.build, imagen_video.sample),
    ModelEntry("gen1", "Gen-1: pseudo-3D U-Net, structure map concatenated (t_s blur), content embedding; DDIM",
               gen1.SIZES, gen1.build, gen1.sample),
]}


def entry(name: str) -> ModelEntry:
    check_choice("fastvid.models", "model", name, MODELS)
    return MODELS[name]


def size(name: str, size_name: str = "tiny", *, frames: Optional[int] = None, height: Optional[int] = None,
         width: Optional[int] = None, steps: Optional[int] = None, batch: Optional[int] = None) -> ModelSize:
    """The ``size_name`` preset of model ``name`` with any of frames/height/width/steps/batch overridden,
    checked: latent height and width divisible by the model's down-sampling (or patch) factor."""
    e = entry(name)
    check_choice("fastvid.models", "size", size_name, SIZE_NAMES)
    s = e.sizes[size_name].with_(frames=frames, height=height, width=width, steps=steps, batch=batch)
    m = s.model.spatial_multiple
    for arg in ("frames", "height", "width", "steps", "batch"):
        if getattr(s, arg) < 1:
            fail(name, arg, f"is {getattr(s, arg)}", "a positive integer")
    if s.height % m or s.width % m:
        fail(name, "height/width", f"are {s.height}x{s.width} latents", f"multiples of {m} for this model")
    if isinstance(s.model, DiTConfig) and s.frames % s.model.patch[0]:
        fail(name, "frames", f"is {s.frames}", f"a multiple of the temporal patch {s.model.patch[0]}")
    return s


def build(name: str, size_or_name="tiny", *, seed: int = 0) -> nn.Module:
    """A random-weight model (seeded); identity-initialised temporal convs get noise so they mix frames."""
    s = size(name, size_or_name) if isinstance(size_or_name, str) else size_or_name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry(name).build(s.model)
        perturb_identity_inits(model, 0.1, torch.Generator().manual_seed(seed))
    return model.eval()


def evaluation(model: nn.Module, size: ModelSize, *, device, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    """One classifier-free-guided model evaluation at ``size`` on seeded latents, as a closure: zero
    conditioning channels where the model takes them, SVD's default micro-conditioning, the base stage
    of a cascade."""
    inp = make_inputs(size, seed=0, device=device, dtype=dtype)
    x = torch.cat([inp.noise, inp.noise])
    cond = getattr(model.config, "cond_channels", 0)
    if cond:
        x = torch.cat([x, x.new_zeros((x.shape[0], cond) + tuple(x.shape[2:]))], dim=1)
    context = torch.cat([inp.uncond_context, inp.context])
    t = torch.tensor([500], device=device)
    kwargs = {}
    if isinstance(model, svd.SVDUNet):
        kwargs["added_time_ids"] = torch.tensor([[6.0, 127.0, 0.02]] * x.shape[0], device=device, dtype=dtype)
    return lambda: model(x, t, context, **kwargs)


@torch.no_grad()
def sample(name: str, model: nn.Module, size_or_name="tiny", *, seed: int = 0, device=None, dtype=None,
           progress: Optional[bool] = None, **kwargs) -> torch.Tensor:
    """Runs model ``name``'s sampler; returns the (B, C, F, H, W) latents. Deterministic under ``seed``."""
    s = size(name, size_or_name) if isinstance(size_or_name, str) else size_or_name
    p = next(model.parameters())
    device = p.device if device is None else device
    dtype = p.dtype if dtype is None else dtype
    return entry(name).sample(model, s, seed=seed, device=device, dtype=dtype, progress=progress, **kwargs)


__all__ = ["MODELS", "SIZE_NAMES", "DiTConfig", "ModelEntry", "ModelSize", "SampleInputs", "UNetConfig", "VideoDiT",
           "VideoUNet", "build", "entry", "evaluation", "make_inputs", "sample", "size"]
