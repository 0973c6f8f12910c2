"""AddLayerNorm module and the add + LayerNorm step fused transformer blocks share."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import nn

from .. import reference
from ..ops.add_layer_norm import add_layer_norm
from ._autocast import autocast_dtype


def add_norm(norm: nn.LayerNorm, x: torch.Tensor, residual: Optional[torch.Tensor], backend: str,
             frame_add: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x + residual, norm(x + residual))`` for a LayerNorm over the last dim of (B, N, C) tokens, in one
    pass (``fastvid.add_layer_norm``); ``residual`` None: ``(x, norm(x))``; ``frame_add`` (F, C): added to
    the normed frame-major tokens per frame, as a positional embedding after the norm. Under autocast, or
    when the tensors and the norm's parameters differ in dtype, the add, the norm and the frame add run as
    eager ops, so autocast's rules (LayerNorm in float32) and type promotion give the dtypes the unfused
    code gives."""
    others = (residual, frame_add, norm.weight, norm.bias)
    mixed = any(t is not None and t.dtype != x.dtype for t in others)
    if mixed or autocast_dtype(x.device.type, fp32_op=True) is not None:
        s = x if residual is None else x + residual
        normed = Fn.layer_norm(s, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return s, normed if frame_add is None else reference.add_per_frame(normed, frame_add)
    return add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, frame_add=frame_add, backend=backend)


class AddLayerNorm(reference.AddLayerNorm):
    """``forward(x, residual) -> (x + residual, LayerNorm(x + residual))`` through ``fastvid.add_layer_norm``:
    x and residual read once, the sum written once and not read back. Same parameters and state_dict keys
    as ``fastvid.reference.AddLayerNorm`` (and ``nn.LayerNorm(C)``)."""

    patch_kind = "transformer_block"
    backend = "auto"

    def forward(self, x: torch.Tensor, residual: torch.Tensor):
        self.check_input(x)
        return add_norm(self, x, residual, self.backend)
