"""Pseudo-3D and temporal convolution modules: the reference twins' parameters, fastvid's kernels.

Every fused path reads its submodules' weights only when :func:`._hooks.unfused_reason` finds
them plain; otherwise it calls the submodules (so offload, casting and LoRA hooks run) and
``fastvid.PatchReport.of(model)`` names the reason. Under ``torch.autocast`` the fused GroupNorm+SiLU
computes in float32 and the temporal conv in the autocast dtype, as the native layers would.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as Fn
from torch import nn

from .. import reference
from ..ops.group_norm_silu import group_norm_silu
from ..ops.temporal_conv import temporal_conv
from ._autocast import autocast_dtype, call_under_autocast
from ._hooks import unfused_reason


def norm_silu(norm: nn.GroupNorm, x: torch.Tensor, backend: str, add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``silu(norm(x + add))`` with ``norm``'s statistics over (C/G, F, H, W) of a (B, C, F, H, W) ``x``
    (per image of an (N, C, H, W) ``x``), fused; ``add`` (a time embedding: (B, C), (B, C, F) or (N, C))
    is folded into the normalisation when it has x's dtype and autocast is off, else added first as the
    native ``x + add`` computes it. In float32 under autocast (GroupNorm is one of autocast's float32 ops)."""
    if add is not None:
        shape = (*add.shape, *[1] * (x.dim() - add.dim()))
        if (add.dtype != x.dtype or tuple(add.shape) != tuple(x.shape[:add.dim()])
                or autocast_dtype(x.device.type, fp32_op=False) is not None):
            x, add = x + add.view(shape), None
    return call_under_autocast(group_norm_silu, x, norm.num_groups, norm.weight, norm.bias, norm.eps,
                               fp32_op=True, add=add, backend=backend)


def conv_frames(conv: nn.Module, x: torch.Tensor, backend: str,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A (k, 1, 1) Conv3d or a Conv1d over the frames of (B, C, F, H, W) ``x``, plus ``residual``.

    The residual is added in the kernel's epilogue; under autocast the conv computes in the
    autocast dtype and the residual is added after it in the promoted dtype, as the native
    ``residual + conv(x)`` does."""
    weight = conv.weight
    if weight.ndim == 5:  # (C_out, C_in, k, 1, 1): one view
        weight = weight.flatten(2)
    autocasting = autocast_dtype(x.device.type, fp32_op=False) is not None
    out = call_under_autocast(temporal_conv, x, weight, conv.bias, fp32_op=False,
                              residual=None if autocasting else residual, padding=conv.padding[0], backend=backend)
    return residual + out if autocasting and residual is not None else out


class PseudoConv3d(reference.PseudoConv3d):
    """Make-A-Video's pseudo-3D conv: a 2D conv per frame, then a conv over frames initialised to
    identity; (B, C, H, W) images (or ``enable_time=False``) skip the temporal conv.

    Same parameters and state_dict keys as ``fastvid.reference.PseudoConv3d``. The spatial conv
    runs as the inflated (1, k, k) Conv3d on the video layout and the temporal conv reads its
    output in place: no (b c f h w) <-> ((b f) c h w) / ((b h w) c f) copies. A hooked or wrapped
    conv is called as a module on those reshaped copies instead.
    """

    patch_kind = "conv"
    backend = "auto"

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, ("spatial_conv", "temporal_conv"))

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.spatial_conv
        if self.unfused_reason() is not None:
            frames = conv(x.transpose(1, 2).flatten(0, 1))
            return frames.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)
        padding = conv.padding if isinstance(conv.padding, str) else (0, *conv.padding)
        return Fn.conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, *conv.stride), padding=padding,
                         dilation=(1, *conv.dilation), groups=conv.groups)

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        if self.unfused_reason() is not None:
            b, c, f, height, width = h.shape
            out = self.temporal_conv(h.permute(0, 3, 4, 1, 2).reshape(-1, c, f))
            return out.reshape(b, height, width, -1, out.shape[-1]).permute(0, 3, 4, 1, 2)
        return conv_frames(self.temporal_conv, h, self.backend)


class TemporalConvStages:
    """Fused forward of diffusers' TemporalConvLayer layout: four stages ``conv1``..``conv4`` of
    GroupNorm, SiLU, [Dropout], (k, 1, 1) Conv3d, and a residual around them.

    The (B*F, C, H, W) input is viewed as (B, C, F, H, W) without a copy, every intermediate keeps
    that frame-major memory order, GroupNorm+SiLU is one fused op, the residual is added in the
    last conv's epilogue, and the output is a view back to (B*F, C, H, W). With hooked or wrapped
    submodules the class after this mixin in the MRO runs its own (unfused) forward.
    """

    STAGES = ("conv1", "conv2", "conv3", "conv4")
    backend = "auto"

    def fused_submodules(self) -> List[str]:
        """The submodules whose weights the fused forward reads: each stage's GroupNorm and conv."""
        return [f"{stage}.{i}" for stage in self.STAGES for i in (0, len(getattr(self, stage)) - 1)]

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, self.fused_submodules())

    def norm_silu(self, norm: nn.GroupNorm, x: torch.Tensor, add: Optional[torch.Tensor] = None) -> torch.Tensor:
        return norm_silu(norm, x, self.backend, add=add)

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        if self.unfused_reason() is not None:
            return super().forward(hidden_states, num_frames)
        reference.modules.check_frames_input(self, hidden_states, num_frames)
        x = hidden_states.unflatten(0, (-1, num_frames)).permute(0, 2, 1, 3, 4)
        h = x
        for i, name in enumerate(self.STAGES):
            stage = getattr(self, name)
            h = self.norm_silu(stage[0], h)
            for layer in stage[2:-1]:  # Dropout
                h = layer(h)
            h = conv_frames(stage[-1], h, self.backend, residual=x if i == len(self.STAGES) - 1 else None)
        return h.permute(0, 2, 1, 3, 4).flatten(0, 1)


class TemporalConvBlock(TemporalConvStages, reference.TemporalConvBlock):
    """diffusers' TemporalConvLayer with fused GroupNorm+SiLU and the temporal conv read in place
    (see :class:`TemporalConvStages`). Same parameters and state_dict keys as
    ``fastvid.reference.TemporalConvBlock`` (and diffusers' class)."""

    patch_kind = "conv"


class TemporalResBlock(reference.TemporalResBlock):
    """SVD's temporal residual block with fused GroupNorm+SiLU (the time embedding added inside the
    second one) and ``fastvid.temporal_conv`` (the residual added in the second conv's epilogue). Same parameters and state_dict keys as its reference twin.
    With hooked or wrapped norms or convs, it calls them as modules."""

    patch_kind = "conv"
    backend = "auto"

    def fused_submodules(self) -> List[str]:
        """The submodules whose weights the fused forward reads."""
        return ["norm1", "conv1", "norm2", "conv2"]

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, self.fused_submodules())

    def norm_silu(self, norm: nn.GroupNorm, x: torch.Tensor, add: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.unfused_reason() is not None:
            return Fn.silu(norm(x if add is None else x + add[:, :, None, None, None]))
        return norm_silu(norm, x, self.backend, add=add)

    def conv(self, conv: nn.Conv3d, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.unfused_reason() is not None:
            return conv(x) if residual is None else residual + conv(x)
        return conv_frames(conv, x, self.backend, residual=residual)
