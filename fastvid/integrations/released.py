"""The released diffusers video denoisers, one table: their configs, their sizes and the inputs of one
denoiser call with classifier-free guidance (CFG), at the released size or at a tiny size for CPU tests.

    RELEASED[name]                      the row: pipeline, denoiser class, checkpoint, sizes, configs
    build_denoiser(name, size=..., device=..., dtype=...)     random weights; device="meta" allocates nothing
    denoiser_inputs(name, denoiser, size=..., device=..., dtype=..., batch=1)   kwargs of one call

A row's ``config`` holds the released checkpoint's ``unet/config.json`` values wherever they differ from the
diffusers class's defaults (the other values are the defaults, which match the released ones); ``tiny_config``
holds small channel counts for tests. ``vae_config`` and ``scheduler_config`` are the released VAE and
scheduler configs, likewise written as overrides of the defaults (``fastvid.bench_pipelines`` builds whole
pipelines from them). Weights are random: layers diffusers initialises to zero (the
output convs of temporal blocks and motion modules) get the default init of their class instead, so that
every path of the network contributes to the output a benchmark compares.

Tensor layouts of ``sample`` (B = CFG batch = ``cfg_batch`` x batch, F frames, C channels, H x W latents):
svd ``(B, F, C, H, W)`` with C = 4 noise + 4 image-latent channels; animatediff, modelscope, i2vgenxl
``(B, C, F, H, W)``; t2v_zero ``(B*F, C, H, W)``, the unconditional frames first (CrossFrameAttnProcessor2_0
with batch_size 2 views it as ``(2, F, ...)``).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import nn

SIZES = ("released", "tiny")


@dataclass(frozen=True)
class Size:
    """Frames and pixel size of one pipeline call, and the VAE's spatial down-scaling."""

    frames: int
    height: int
    width: int
    vae_scale: int = 8
    text_tokens: int = 77

    @property
    def latent_height(self) -> int:
        return self.height // self.vae_scale

    @property
    def latent_width(self) -> int:
        return self.width // self.vae_scale


@dataclass(frozen=True)
class Released:
    """One released video pipeline: its denoiser and VAE configs (overrides of diffusers' defaults)."""

    name: str
    pipeline: str
    denoiser: str
    checkpoint: str
    released: Size
    tiny: Size
    config: Dict = field(default_factory=dict)
    tiny_config: Dict = field(default_factory=dict)
    vae: str = "AutoencoderKL"
    vae_config: Dict = field(default_factory=dict)
    tiny_vae_config: Dict = field(default_factory=dict)
    scheduler: str = "DDIMScheduler"
    scheduler_config: Dict = field(default_factory=dict)
    adapter_config: Optional[Dict] = None  # MotionAdapter (AnimateDiff)
    tiny_adapter_config: Optional[Dict] = None
    latent_channels: int = 4
    cfg_batch: int = 2
    cross_frame_processor: bool = False  # Text2Video-Zero's CrossFrameAttnProcessor2_0(batch_size=2)

    def size(self, size: str) -> Size:
        return {"released": self.released, "tiny": self.tiny}[_check_size(size)]

    def denoiser_config(self, size: str) -> Dict:
        return dict(self.config) if _check_size(size) == "released" else dict(self.tiny_config)

    def vae_kwargs(self, size: str) -> Dict:
        return dict(self.vae_config) if _check_size(size) == "released" else dict(self.tiny_vae_config)


def _check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size is {size!r}; expected one of {', '.join(SIZES)}")
    return size


_TINY = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32)
_TINY_2D = dict(_TINY, attention_head_dim=8, norm_num_groups=32, sample_size=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
_TINY_3D = dict(_TINY, attention_head_dim=8, norm_num_groups=32,
                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
_SD15 = dict(cross_attention_dim=768, sample_size=64)  # runwayml/stable-diffusion-v1-5 unet/config.json
_SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
_TINY_VAE = dict(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=32, sample_size=16,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
_SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                     set_alpha_to_one=False, steps_offset=1)
_TINY_SIZE = dict(vae_scale=2, text_tokens=8)  # the tiny VAE halves: 16x16 pixels -> 8x8 latents

RELEASED: Dict[str, Released] = {r.name: r for r in (
    Released(
        "svd", "StableVideoDiffusionPipeline", "UNetSpatioTemporalConditionModel",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        released=Size(25, 576, 1024, text_tokens=1), tiny=Size(2, 16, 16, vae_scale=2, text_tokens=1),
        config=dict(sample_size=96, num_frames=25),
        tiny_config=dict(_TINY, num_attention_heads=(2, 4), sample_size=8, addition_time_embed_dim=8,
                         projection_class_embeddings_input_dim=3 * 8, num_frames=2,
                         down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                         up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal")),
        scheduler="EulerDiscreteScheduler",
        scheduler_config=dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", sigma_min=0.002,
                              sigma_max=700.0, use_karras_sigmas=True, prediction_type="v_prediction",
                              timestep_type="continuous", interpolation_type="linear", steps_offset=1),
        vae="AutoencoderKLTemporalDecoder",
        vae_config=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768,
                        down_block_types=("DownEncoderBlock2D",) * 4),
        tiny_vae_config=dict(block_out_channels=(32, 32), layers_per_block=1, sample_size=16,
                             down_block_types=("DownEncoderBlock2D",) * 2),
    ),
    Released(
        "animatediff", "AnimateDiffPipeline", "UNetMotionModel", "guoyww/animatediff-motion-adapter-v1-5-2",
        released=Size(16, 512, 512), tiny=Size(2, 16, 16, **_TINY_SIZE),
        config=_SD15, tiny_config=_TINY_2D, vae_config=_SD_VAE, tiny_vae_config=_TINY_VAE,
        scheduler_config=dict(_SD_SCHEDULER, beta_schedule="linear", timestep_spacing="linspace"),  # its docs' DDIM
        adapter_config={},  # v1-5-2 is MotionAdapter's defaults (mid block, 32 positions, 8 heads)
        tiny_adapter_config=dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                                 motion_norm_num_groups=8, motion_max_seq_length=8),
    ),
    Released(
        "modelscope", "TextToVideoSDPipeline", "UNet3DConditionModel", "ali-vilab/text-to-video-ms-1.7b",
        released=Size(16, 256, 256), tiny=Size(2, 16, 16, **_TINY_SIZE),
        config=dict(sample_size=32), tiny_config=dict(_TINY_3D, sample_size=8), scheduler_config=_SD_SCHEDULER,
        vae_config=dict(_SD_VAE, sample_size=256), tiny_vae_config=_TINY_VAE,
    ),
    Released(
        "i2vgenxl", "I2VGenXLPipeline", "I2VGenXLUNet", "ali-vilab/i2vgen-xl",
        released=Size(16, 704, 1280), tiny=Size(2, 16, 16, **_TINY_SIZE),  # the pipeline's default size
        config=dict(sample_size=32), tiny_config=_TINY_3D,
        scheduler_config=dict(beta_start=0.0001, beta_end=0.02, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                              prediction_type="v_prediction", rescale_betas_zero_snr=True, steps_offset=1),
        vae_config=_SD_VAE, tiny_vae_config=_TINY_VAE,
    ),
    Released(
        "t2v_zero", "TextToVideoZeroPipeline", "UNet2DConditionModel", "runwayml/stable-diffusion-v1-5",
        released=Size(8, 512, 512), tiny=Size(2, 16, 16, **_TINY_SIZE),
        config=_SD15, tiny_config=_TINY_2D, vae_config=_SD_VAE, tiny_vae_config=_TINY_VAE,
        scheduler_config=_SD_SCHEDULER,  # DDIM, as the Text2Video-Zero paper samples (t0, t1 index its steps)
        cross_frame_processor=True,
    ),
)}


def row(name: str) -> Released:
    if name not in RELEASED:
        raise ValueError(f"{name!r} is not a released pipeline; expected one of {', '.join(RELEASED)}")
    return RELEASED[name]


def cross_frame_processor():
    """diffusers' Text2Video-Zero processor, CrossFrameAttnProcessor2_0(batch_size=2) (its module moved in 0.36)."""
    from diffusers.pipelines import TextToVideoZeroPipeline

    return importlib.import_module(TextToVideoZeroPipeline.__module__).CrossFrameAttnProcessor2_0(batch_size=2)


@torch.no_grad()
def init_zeroed_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights diffusers initialises to zero get their class's default init (a seeded uniform of bound
    1/sqrt(fan_in), as nn.Linear and nn.Conv do): otherwise those paths add nothing and a wrong kernel
    in them would go unnoticed. No-op on the meta device."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or weight is None:
            continue
        if weight.is_meta or weight.count_nonzero().item():
            continue
        bound = 1 / math.sqrt(weight[0].numel())
        weight.copy_((torch.rand(weight.shape, generator=g) * 2 - 1) * bound)
    return model


def build_denoiser(name: str, *, size: str = "released", device="cpu", dtype: torch.dtype = torch.float32,
                   seed: int = 0) -> nn.Module:
    """The denoiser of ``name`` with random weights (seeded), in eval mode, on ``device`` in ``dtype``.
    On ``device="meta"`` nothing is allocated (for counting FLOPs and bytes at the released size)."""
    import diffusers

    r = row(name)
    kwargs = r.denoiser_config(size)
    torch.manual_seed(seed)
    with torch.device(device):
        if r.adapter_config is not None:
            unet = diffusers.UNet2DConditionModel(**kwargs)
            adapter_kwargs = r.adapter_config if size == "released" else r.tiny_adapter_config
            model = diffusers.UNetMotionModel.from_unet2d(unet, diffusers.MotionAdapter(**adapter_kwargs),
                                                          load_weights=False)
            del unet
        else:
            model = getattr(diffusers, r.denoiser)(**kwargs)
    if r.cross_frame_processor:
        model.set_attn_processor(cross_frame_processor())
    init_zeroed_weights(model, seed)
    return model.to(device=device, dtype=dtype).eval()  # a few tensors diffusers makes with torch.Tensor([...]) are on the CPU


def denoiser_inputs(name: str, denoiser: nn.Module, *, size: str = "released", device="cpu",
                    dtype: torch.dtype = torch.float32, batch: int = 1, seed: int = 0) -> Dict[str, object]:
    """Keyword arguments of one ``denoiser(**kwargs)`` call as its pipeline makes it, CFG batch included
    (unconditional half first). Channel counts come from ``denoiser.config``; shapes from the row's size."""
    r, cfg = row(name), denoiser.config
    s = r.size(size)
    b, f, h, w = r.cfg_batch * batch, s.frames, s.latent_height, s.latent_width
    g = None if torch.device(device).type == "meta" else torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=g, device=device, dtype=dtype)

    timestep = torch.tensor(500.0 if name == "svd" else 500, device=device)
    text = randn(b, s.text_tokens, cfg.cross_attention_dim)
    if name == "svd":  # noise latents and image latents concatenated on channels; fps-1, motion bucket, noise aug
        return dict(sample=randn(b, f, cfg.in_channels, h, w), timestep=timestep,
                    encoder_hidden_states=text,
                    added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b, device=device, dtype=dtype))
    if name == "t2v_zero":
        return dict(sample=randn(b * f, cfg.in_channels, h, w), timestep=timestep,
                    encoder_hidden_states=text.repeat_interleave(f, dim=0))
    sample = randn(b, cfg.in_channels, f, h, w)
    if name == "animatediff":  # the pipeline repeats the text states per frame
        return dict(sample=sample, timestep=timestep, encoder_hidden_states=text.repeat_interleave(f, dim=0))
    if name == "i2vgenxl":
        return dict(sample=sample, timestep=timestep, encoder_hidden_states=text,
                    fps=torch.full((b,), 16, device=device), image_latents=randn(b, 4, f, h, w),
                    image_embeddings=randn(b, 1, cfg.cross_attention_dim))
    return dict(sample=sample, timestep=timestep, encoder_hidden_states=text)
