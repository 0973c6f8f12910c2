"""Output allocation for every launcher. Tests switch on poisoning so that an output element
a kernel forgets to write shows up as NaN instead of passing by luck."""
from __future__ import annotations

import torch

_poison = False


def set_poison(enabled: bool) -> bool:
    global _poison
    previous, _poison = _poison, enabled
    return previous


def empty(*shape, dtype, device) -> torch.Tensor:
    if _poison:
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
