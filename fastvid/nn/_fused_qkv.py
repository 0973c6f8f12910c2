"""One fused q/k/v projection for the attention twins: a single GEMM whose q, k and v reach the
kernels as strided slices, without copies; hooked or wrapped projections are called one by one."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as Fn

from ._hooks import unfused_reason


class FusedQKV:
    """Mixin for subclasses of ``reference.modules._TokenAttention`` (adds no parameters)."""

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, ("to_q", "to_k", "to_v"))

    def project_qkv(self, x: torch.Tensor):
        if self.unfused_reason() is not None:
            return super().project_qkv(x)
        weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        qkv = Fn.linear(x, weight).unflatten(-1, (3, self.heads, self.dim_head))
        return qkv.unbind(dim=-3)
