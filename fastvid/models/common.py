"""What every reference video model shares: its size presets and the seeded inputs of a sampling run."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Union

import torch

from ..samplers import randn
from .unet import UNetConfig

if TYPE_CHECKING:
    from .dit import DiTConfig

SIZE_NAMES = ("tiny", "cpu", "gpu")


@dataclass(frozen=True)
class ModelSize:
    """A model config plus the shape of the sampling run: latents (batch, C, frames, height, width)."""

    model: Union[UNetConfig, "DiTConfig"]
    frames: int
    height: int
    width: int
    steps: int
    context_len: int = 8
    batch: int = 1
    guidance_scale: float = 7.5

    def with_(self, **changes) -> "ModelSize":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def latent_shape(self) -> Tuple[int, int, int, int, int]:
        return (self.batch, self.model.in_channels, self.frames, self.height, self.width)


def unet_sizes(block_spec, conv: str = "inflated") -> dict:
    """tiny (tests), cpu (the CLI's CPU default) and gpu (Stable-Diffusion-sized, 16 x 40 x 64 latents)."""
    tiny = UNetConfig(channels=(16, 32), attention_levels=(False, True), block_spec=tuple(block_spec), conv=conv)
    small = UNetConfig(channels=(32, 64), attention_levels=(True, True), block_spec=tuple(block_spec), conv=conv)
    return {
        "tiny": ModelSize(tiny, frames=3, height=8, width=8, steps=2),
        "cpu": ModelSize(small, frames=8, height=16, width=16, steps=5),
        "gpu": ModelSize(UNetConfig(channels=(320, 640, 1280, 1280), attention_levels=(True, True, True, False),
                                    layers_per_block=2, block_spec=tuple(block_spec), conv=conv, heads=8,
                                    context_dim=768, groups=32),
                         frames=16, height=40, width=64, steps=20, context_len=77),
    }


@dataclass
class SampleInputs:
    noise: torch.Tensor  # (B, C, F, H, W) x_T
    context: torch.Tensor  # (B, L, D) text embeddings
    uncond_context: torch.Tensor  # (B, L, D) the empty prompt's embeddings
    generator: torch.Generator  # for any further noise the sampler draws


def make_inputs(size: ModelSize, *, seed: int, device, dtype: torch.dtype, frames: Optional[int] = None) -> SampleInputs:
    """Seeded inputs, drawn on the CPU so every device and every run gets the same numbers."""
    g = torch.Generator().manual_seed(seed)
    shape = list(size.latent_shape)
    if frames is not None:
        shape[2] = frames
    text_shape = (size.batch, size.context_len, size.model.context_dim)
    return SampleInputs(noise=randn(shape, g, device, dtype), context=randn(text_shape, g, device, dtype),
                        uncond_context=randn(text_shape, g, device, dtype) * 0.1, generator=g)


def guided_run(sampler, model, size: ModelSize, *, seed: int, device, dtype: torch.dtype, progress: Optional[bool],
               inputs: Optional[SampleInputs] = None, **kwargs) -> torch.Tensor:
    """``sampler`` (ddim_sample / ddpm_sample) from seeded noise with classifier-free guidance on seeded text
    (``inputs``, default :func:`make_inputs`); ``kwargs`` go to the sampler."""
    inp = make_inputs(size, seed=seed, device=device, dtype=dtype) if inputs is None else inputs
    return sampler(model, inp.noise, steps=size.steps, context=inp.context, uncond_context=inp.uncond_context,
                   guidance_scale=size.guidance_scale, generator=inp.generator, progress=progress, **kwargs)


def guided_sampler(sampler, **sampler_kwargs) -> Callable[..., torch.Tensor]:
    """The ``sample(model, size, *, seed, device, dtype, progress)`` of a model whose pipeline is
    :func:`guided_run` of ``sampler`` with ``sampler_kwargs``."""
    def sample(model, size: ModelSize, *, seed: int = 0, device="cpu", dtype=torch.float32,
               progress: Optional[bool] = None) -> torch.Tensor:
        return guided_run(sampler, model, size, seed=seed, device=device, dtype=dtype, progress=progress,
                          **sampler_kwargs)
    return sample


def with_condition(model, condition: torch.Tensor, **model_kwargs):
    """The denoiser ``model`` with ``condition`` (B, C', F, H, W) concatenated to its input channels, repeated
    over the classifier-free-guidance batch; ``model_kwargs`` go to every call."""
    def denoiser(x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        cond = condition.repeat(x.shape[0] // condition.shape[0], *[1] * (condition.dim() - 1))
        return model(torch.cat([x, cond.to(x.dtype)], dim=1), t, context, **model_kwargs)
    return denoiser
