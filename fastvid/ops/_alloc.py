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


def dim_order(t: torch.Tensor):
    """t's dims from outermost to innermost in memory (ties, e.g. size-1 dims, keep their order)."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def video_order(t: torch.Tensor):
    """:func:`dim_order` of a (B, C, F, H, W) tensor with H and W kept adjacent (H outer), so that
    a tensor allocated in this order always views as (B, C, F, H * W)."""
    order = [d for d in dim_order(t) if d != 4]
    order.insert(order.index(3) + 1, 4)
    return order


def empty_in_order(shape, order, *, dtype, device) -> torch.Tensor:
    """A dense tensor of ``shape`` whose dims lie in memory in ``order`` (see :func:`dim_order`),
    e.g. the memory format of an input (contiguous, channels_last_3d or a frame-major view)."""
    t = empty(*[shape[d] for d in order], dtype=dtype, device=device)
    return t.permute(*sorted(range(len(order)), key=lambda d: order[d]))
