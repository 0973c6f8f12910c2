"""torch.autocast's dtype rules for fastvid's ops, applied in the module layer.

The ops validate that their tensors share one dtype and do not take part in autocast themselves;
the modules cast as autocast would cast the native op they replace, then run the op with autocast
off: GroupNorm (and the SiLU after it) in float32, convolutions and attention (matmuls, SDPA) in
the autocast dtype. Tensors autocast leaves alone (float64, non-floating, other devices) are left alone.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


# Device types autocast has in every torch fastvid supports: no availability query for them (torch 2.11's
# dynamo cannot trace torch.amp.is_autocast_available, so asking would break a compiled graph).
AUTOCAST_DEVICE_TYPES = ("cuda", "cpu")


def autocast_dtype(device_type: str, *, fp32_op: bool) -> Optional[torch.dtype]:
    """The dtype autocast computes the op in (float32 for its fp32 ops such as GroupNorm, the
    autocast dtype for convs and matmuls), or None when autocast is off for this device."""
    if device_type not in AUTOCAST_DEVICE_TYPES and not torch.amp.is_autocast_available(device_type):
        return None
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.float32 if fp32_op else torch.get_autocast_dtype(device_type)


def _cast(t, dtype: torch.dtype, device_type: str):
    if torch.is_tensor(t) and t.is_floating_point() and t.dtype != torch.float64 and t.device.type == device_type:
        return t.to(dtype)
    return t


def call_under_autocast(op: Callable, *tensors, fp32_op: bool, **kwargs):
    """``op(*tensors, **kwargs)``; under autocast the tensors (positional and keyword) are cast as
    autocast would cast them for the native op, and ``op`` runs with autocast off."""
    device_type = tensors[0].device.type
    dtype = autocast_dtype(device_type, fp32_op=fp32_op)
    if dtype is None:
        return op(*tensors, **kwargs)
    with torch.autocast(device_type, enabled=False):
        return op(*(_cast(t, dtype, device_type) for t in tensors),
                  **{name: _cast(t, dtype, device_type) for name, t in kwargs.items()})
