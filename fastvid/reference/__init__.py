"""Reference implementations: plain torch, from the papers' equations. The baseline for every test and benchmark."""
from . import functional
from .functional import (
    add_layer_norm,
    add_per_frame,
    alpha_blend,
    all_frame_attention,
    attention,
    blender_alpha,
    first_frame_attention,
    frame_attention,
    frame_table,
    gelu,
    geglu,
    geglu_linear,
    group_norm_silu,
    linear,
    pseudo3d_attention,
    pseudo3d_conv,
    sparse_causal_attention,
    spatial_attention,
    spatial_conv,
    spatiotemporal_attention,
    temporal_attention,
    temporal_conv,
    temporal_conv3d,
)
from .modules import AddLayerNorm, AlphaBlender, FrameAttention, GEGLU, Linear, PseudoConv3d, RelativePositionBias
from .modules import SparseCausalAttention, TemporalAttention, TemporalConvBlock, TemporalResBlock
