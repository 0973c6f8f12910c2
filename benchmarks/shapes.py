"""Benchmark shapes taken from the real models, in one place.

Attention shapes are (B, F, N, heads, head_dim); N = latent H * W at the layer's resolution.
- ModelScope T2V (diffusers UNet3DConditionModel): 16 frames, 256x256 video -> 32x32 latents,
  channels 320/640/1280, head_dim 64 (heads 5/10/20).
- Stable Video Diffusion (UNetSpatioTemporalConditionModel): 14 frames, 576x1024 -> 72x128 latents,
  channels 320/640/1280, head_dim 64.
- Latte / Open-Sora style DiT: 16 frames of 32x32 latents, patch 2 -> 256 tokens per frame, hidden 1152,
  16 heads of 72.
- Text2Video-Zero / ControlVideo (Stable Diffusion 1.5): 8 frames, 512x512 -> 64x64 latents, 8 heads of 40.
"""

TEMPORAL_ATTENTION = {  # name: (B, F, N, heads, head_dim)
    "modelscope-32x32-c320": (2, 16, 32 * 32, 5, 64),
    "modelscope-16x16-c640": (2, 16, 16 * 16, 10, 64),
    "svd-72x128-c320": (2, 14, 72 * 128, 5, 64),
    "svd-36x64-c640": (2, 14, 36 * 64, 10, 64),
    "vdm-64x64-h16": (2, 16, 64 * 64, 16, 64),  # 131,072 sequences: past 65,535
    "latte-16x16-h16": (2, 16, 16 * 16, 16, 72),
}

FRAME_ATTENTION = {  # name: (B, F, N, heads, head_dim); keys M = N
    "t2vzero-64x64": (1, 8, 64 * 64, 8, 40),
    "controlvideo-64x64": (1, 8, 64 * 64, 8, 40),
    "modelscope-32x32-c320": (2, 16, 32 * 32, 5, 64),
    "latte-16x16": (2, 16, 16 * 16, 16, 72),
}

TEMPORAL_CONV = {  # name: (B, C, F, H, W)
    "c320-32x32": (1, 320, 16, 32, 32),
    "c640-32x32": (1, 640, 16, 32, 32),
    "c1280-32x32": (1, 1280, 16, 32, 32),
    "c320-64x64": (1, 320, 16, 64, 64),
    "c640-64x64": (1, 640, 16, 64, 64),
    "c1280-64x64": (1, 1280, 16, 64, 64),
}

ALPHA_BLEND = {  # name: (B, C, F, H, W), SVD's SpatioTemporalResBlock mix (CFG batch 2, 14 frames), frame-major
    "svd-72x128-c320": (2, 320, 14, 72, 128),
    "svd-36x64-c640": (2, 640, 14, 36, 64),
    "svd-18x32-c1280": (2, 1280, 14, 18, 32),
}

# Tiny stand-ins for CPU runs of the same scripts (harness checks only, not speed).
CPU_TEMPORAL_ATTENTION = {"tiny": (1, 8, 64, 2, 32), "odd": (1, 13, 37, 3, 24)}
CPU_FRAME_ATTENTION = {"tiny": (1, 4, 64, 2, 32), "odd": (1, 5, 37, 3, 40)}
CPU_TEMPORAL_CONV = {"tiny": (1, 16, 8, 8, 8), "odd": (1, 20, 7, 5, 9)}
CPU_ALPHA_BLEND = {"tiny": (1, 16, 8, 8, 8), "odd": (1, 20, 7, 5, 9)}
