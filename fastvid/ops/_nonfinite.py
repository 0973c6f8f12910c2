"""The torch backends' rule for NaN and Inf inputs to attention on CPU.

Which fused CPU SDPA kernel runs depends on the CPU and on the mask, and they differ on a query
row without a finite score: some return zeros, the math kernel and the reference return NaN.
So on CPU an attention call with a non-finite input runs the reference instead, and NaN/Inf
propagate exactly as in ``fastvid.reference`` on every CPU. Inside ``torch.compile`` the check is
skipped: a branch on tensor values would break the graph (``fullgraph=True`` fails).
"""
from __future__ import annotations

from typing import Optional

import torch


def has_nonfinite_on_cpu(*tensors: Optional[torch.Tensor]) -> bool:
    """True when a CPU tensor among ``tensors`` holds a NaN or an Inf (None entries are skipped);
    always False while torch.compile traces."""
    if torch.compiler.is_compiling():
        return False
    return any(t is not None and t.device.type == "cpu" and t.numel() and not bool(torch.isfinite(t).all())
               for t in tensors)
