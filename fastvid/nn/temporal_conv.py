"""Pseudo-3D and temporal convolution modules: the reference twins' parameters, fastvid's kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as Fn

from .. import reference
from ..ops.group_norm_silu import group_norm_silu
from ..ops.temporal_conv import temporal_conv


class PseudoConv3d(reference.PseudoConv3d):
    """Make-A-Video's pseudo-3D conv: a 2D conv per frame, then a conv over frames initialised to
    identity; (B, C, H, W) images (or ``enable_time=False``) skip the temporal conv.

    Same parameters and state_dict keys as ``fastvid.reference.PseudoConv3d``. The spatial conv
    runs as the inflated (1, k, k) Conv3d on the video layout and the temporal conv reads its
    output in place: no (b c f h w) <-> ((b f) c h w) / ((b h w) c f) copies.
    """

    patch_kind = "conv"
    backend = "auto"

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.spatial_conv
        padding = conv.padding if isinstance(conv.padding, str) else (0, *conv.padding)
        return Fn.conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, *conv.stride), padding=padding,
                         dilation=(1, *conv.dilation), groups=conv.groups)

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        conv = self.temporal_conv
        return temporal_conv(h, conv.weight, conv.bias, padding=conv.padding[0], backend=self.backend)


class TemporalConvBlock(reference.TemporalConvBlock):
    """diffusers' TemporalConvLayer with fused GroupNorm+SiLU and the temporal conv read in place.

    Same parameters and state_dict keys as ``fastvid.reference.TemporalConvBlock`` (and
    diffusers' class). The (B*F, C, H, W) input is viewed as (B, C, F, H, W) without a copy,
    every intermediate keeps that frame-major memory order, the residual is added in the last
    conv's epilogue, and the output is a view back to (B*F, C, H, W).
    """

    patch_kind = "conv"
    backend = "auto"

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        reference.modules.check_frames_input(self, hidden_states, num_frames)
        x = hidden_states.unflatten(0, (-1, num_frames)).permute(0, 2, 1, 3, 4)
        h = x
        stages = (self.conv1, self.conv2, self.conv3, self.conv4)
        for i, stage in enumerate(stages):
            norm, conv = stage[0], stage[-1]
            h = group_norm_silu(h, norm.num_groups, norm.weight, norm.bias, norm.eps, backend=self.backend)
            for layer in stage[2:-1]:  # Dropout
                h = layer(h)
            h = temporal_conv(h, conv.weight[:, :, :, 0, 0], conv.bias, residual=x if i == len(stages) - 1 else None,
                              padding=conv.padding[0], backend=self.backend)
        return h.permute(0, 2, 1, 3, 4).flatten(0, 1)


class TemporalResBlock(reference.TemporalResBlock):
    """SVD's temporal residual block with fused GroupNorm+SiLU and ``fastvid.temporal_conv`` (the residual
    added in the second conv's epilogue). Same parameters and state_dict keys as its reference twin."""

    patch_kind = "conv"
    backend = "auto"

    def norm_silu(self, norm, x: torch.Tensor) -> torch.Tensor:
        return group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, backend=self.backend)

    def conv(self, conv, x: torch.Tensor, residual=None) -> torch.Tensor:
        return temporal_conv(x, conv.weight[:, :, :, 0, 0], conv.bias, residual=residual, padding=conv.padding[0],
                             backend=self.backend)
