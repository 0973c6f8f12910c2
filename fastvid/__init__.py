"""fastvid: Triton and fused GPU kernels for video diffusion models."""
from ._kernels_path import register_checkout_kernels

register_checkout_kernels()

from . import reference  # noqa: E402
from .dispatch import BackendUnsupportedError, last_backend  # noqa: E402
from .ops import frame_attention, group_norm_silu, temporal_attention, temporal_conv  # noqa: E402
from .validation import FastvidInputError  # noqa: E402
from . import nn  # noqa: E402
from .nn.inflate import deflate_conv3d, inflate_conv2d  # noqa: E402
from .patching import PatchReport, patch, unpatch  # noqa: E402

__version__ = "0.1.0"
_LAZY_SUBMODULES = ("bench", "models", "samplers", "timing")  # imported on first use: keeps `import fastvid` light


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastvid' has no attribute {name!r}")

__all__ = [
    "BackendUnsupportedError",
    "FastvidInputError",
    "PatchReport",
    "deflate_conv3d",
    "frame_attention",
    "group_norm_silu",
    "inflate_conv2d",
    "last_backend",
    "models",
    "nn",
    "patch",
    "reference",
    "temporal_attention",
    "temporal_conv",
    "unpatch",
]
