"""Transformers over channel-first feature maps without their token rearrange copies and residual passes.

diffusers' Transformer2DModel, TransformerTemporalModel and AnimateDiff's motion modules turn a normalised
(N, C, H, W) map into (N, H*W, C) tokens with a permute copy around ``proj_in``, turn the tokens back with
another copy around ``proj_out`` and add the block's input in a third pass; each feed-forward ends with
``ff(x) + h``, one more pass. ``fastvid.linear`` reads the channel-first map as transposed tokens in place
and writes ``proj_out(tokens) + residual`` straight into the residual's (channel-first) memory order, and a
feed-forward's last Linear adds its residual in the same epilogue.

Each helper takes the module as diffusers built it (an ``nn.Linear``, or a 1x1 ``nn.Conv2d`` where
``use_linear_projection`` is off) and falls back to the module call and diffusers' own reshapes when the
layer is hooked or wrapped (offload, casting, LoRA), under autocast, or when dtypes differ (type
promotion then decides the output dtype, as in diffusers' expression).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..ops.linear import linear
from ._autocast import autocast_dtype
from ._hooks import unfused_reason


def _is_pointwise_conv(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.groups == 1)


def linear_weight(owner: nn.Module, name: str) -> Tuple[nn.Module, Optional[torch.Tensor]]:
    """``owner.<name>`` and its (out, in) matrix (a Linear's weight, or a 1x1 Conv2d's viewed as one) when it may
    be read directly, else None (the layer must be called)."""
    layer = owner.get_submodule(name)
    if unfused_reason(owner, (name,)) is not None:
        return layer, None
    if isinstance(layer, nn.Linear):
        return layer, layer.weight
    return layer, (layer.weight.flatten(1) if _is_pointwise_conv(layer) else None)


def _fusable(*tensors: torch.Tensor) -> bool:
    """Same dtype everywhere and autocast off: the fused GEMM's single dtype gives diffusers' result dtype."""
    return (all(t.dtype == tensors[0].dtype for t in tensors)
            and autocast_dtype(tensors[0].device.type, fp32_op=False) is None)


def tokens_in(owner: nn.Module, name: str, x: torch.Tensor, backend: str) -> torch.Tensor:
    """``owner.<name>`` (proj_in) applied to the tokens of the channel-first map ``x`` (N, C, H, W) whose H and
    W are adjacent in memory. Returns (N, H*W, C_out) tokens, contiguous (what diffusers' permute-copy and
    projection give)."""
    layer, weight = linear_weight(owner, name)
    if weight is None or not _fusable(x, weight):
        if isinstance(layer, nn.Conv2d):
            return layer(x).flatten(2).transpose(1, 2).contiguous()
        return layer(x.flatten(2).transpose(1, 2).contiguous())
    return linear(x.flatten(2).transpose(1, 2), weight, layer.bias, backend=backend)


def tokens_out(owner: nn.Module, name: str, tokens: torch.Tensor, residual: torch.Tensor,
               backend: str) -> torch.Tensor:
    """``owner.<name>(tokens)`` (proj_out) rearranged to the channel-first layout, plus ``residual``.

    tokens: (N, H*W, C_in). residual: (N, C_out, H, W), H and W adjacent in memory. Returns residual's shape;
    fused, in residual's memory order (the GEMM's epilogue adds it and stores channel-first)."""
    layer, weight = linear_weight(owner, name)
    batch, _, height, width = residual.shape
    if weight is None or not _fusable(tokens, weight, residual):
        if isinstance(layer, nn.Conv2d):
            out = layer(tokens.transpose(1, 2).contiguous().view(batch, -1, height, width))
        else:
            out = layer(tokens).transpose(1, 2).contiguous().view(residual.shape)
        return out + residual
    out = linear(tokens, weight, layer.bias, residual=residual.flatten(2).transpose(1, 2), backend=backend)
    return out.transpose(1, 2).unflatten(2, (height, width))


def linear_add(owner: nn.Module, name: str, x: torch.Tensor, residual: torch.Tensor, backend: str) -> torch.Tensor:
    """``owner.<name>(x) + residual`` (a feed-forward's last Linear and the block's residual), the add in the
    GEMM's epilogue; the module call and an eager add when the Linear is hooked or wrapped, under autocast, or
    with mixed dtypes."""
    layer, weight = linear_weight(owner, name)
    if weight is None or not isinstance(layer, nn.Linear) or not _fusable(x, weight, residual) \
            or residual.shape[:-1] != x.shape[:-1]:
        return layer(x) + residual
    return linear(x, weight, layer.bias, residual=residual, backend=backend)
