"""fastvid: Triton and fused GPU kernels for video diffusion models."""
from . import reference
from .dispatch import BackendUnsupportedError, last_backend
from .ops.alpha_blend import alpha_blend, learned_alpha_blend
from .graphs import CapturedStep, capture_step
from .ops.add_layer_norm import add_layer_norm
from .ops.frame_attention import frame_attention
from .ops.geglu import geglu
from .ops.geglu_linear import geglu_linear
from .ops.group_norm_silu import group_norm_silu
from .ops.linear import linear
from .ops.temporal_attention import temporal_attention
from .ops.temporal_conv import temporal_conv
from .validation import FastvidInputError
from . import nn
from .nn.inflate import deflate_conv3d, inflate_conv2d
from .patching import PatchReport, patch, unpatch

__version__ = "0.1.0"
_LAZY_SUBMODULES = ("bench", "models", "samplers", "timing")  # imported on first use: keeps `import fastvid` light


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastvid' has no attribute {name!r}")


__all__ = [
    "BackendUnsupportedError",
    "CapturedStep",
    "FastvidInputError",
    "PatchReport",
    "add_layer_norm",
    "alpha_blend",
    "capture_step",
    "deflate_conv3d",
    "frame_attention",
    "geglu",
    "geglu_linear",
    "group_norm_silu",
    "inflate_conv2d",
    "last_backend",
    "learned_alpha_blend",
    "linear",
    "models",
    "nn",
    "patch",
    "reference",
    "temporal_attention",
    "temporal_conv",
    "unpatch",
]
