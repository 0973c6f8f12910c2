"""TemporalAttention module: the reference twin's parameters, fastvid's kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as Fn

from .. import reference
from ..ops.temporal_attention import temporal_attention


class TemporalAttention(reference.TemporalAttention):
    """VDM temporal attention (T5-bucketed relative-position bias, optional causal mask).

    Same parameters and state_dict keys as ``fastvid.reference.TemporalAttention``. q, k and v
    come from one fused projection and reach the kernel as strided slices, without copies.
    Input: (B, F, N, dim) tokens or a (B, dim, F, H, W) feature map.
    """

    patch_kind = "temporal_attention"
    backend = "auto"

    def project_qkv(self, x: torch.Tensor):
        weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        qkv = Fn.linear(x, weight).unflatten(-1, (3, self.heads, self.dim_head))
        return qkv.unbind(dim=-3)

    def attend(self, q, k, v):
        bias = self.position_bias(q.shape[1], q.device)
        return temporal_attention(q, k, v, bias=bias, causal=self.causal, backend=self.backend)
