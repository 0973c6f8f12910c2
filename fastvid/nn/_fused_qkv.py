"""One fused q/k/v projection for the attention twins: a single GEMM whose q, k and v reach the
kernels as strided slices, without copies."""
from __future__ import annotations

import torch
import torch.nn.functional as Fn


class FusedQKV:
    """Mixin for subclasses of ``reference.modules._TokenAttention`` (adds no parameters)."""

    def project_qkv(self, x: torch.Tensor):
        weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        qkv = Fn.linear(x, weight).unflatten(-1, (3, self.heads, self.dim_head))
        return qkv.unbind(dim=-3)
