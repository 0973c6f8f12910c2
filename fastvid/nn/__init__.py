"""Drop-in torch modules; each subclasses its twin in fastvid.reference (identical state_dict keys)."""
from .add_layer_norm import AddLayerNorm
from .alpha_blend import AlphaBlender
from .frame_attention import FrameAttention, SparseCausalAttention
from .geglu import GEGLU
from .linear import Linear
from .temporal_attention import TemporalAttention
from .inflate import deflate_conv3d, inflate_conv2d
from .temporal_conv import PseudoConv3d, TemporalConvBlock, TemporalResBlock

__all__ = ["AddLayerNorm", "AlphaBlender", "GEGLU", "FrameAttention", "Linear", "SparseCausalAttention",
           "TemporalAttention", "PseudoConv3d", "TemporalConvBlock", "TemporalResBlock", "inflate_conv2d",
           "deflate_conv3d"]
