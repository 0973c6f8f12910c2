"""FLOPs and bytes of one op call from shapes alone (meta tensors work): the conventions shared by the
per-op cost formulas of ``fastvid.registry`` and the step model ``fastvid.roofline``.

Bytes: each tensor an op reads or writes crosses device memory once, every input read once and every
output written once (a lower bound: a kernel that reads a tensor twice, as GroupNorm's statistics and
apply passes do, moves more). A tensor's bytes are those of the elements it addresses: a broadcast
(stride-0) dimension counts once. FLOPs: one multiply-add is 2 FLOPs; only tensor-core work (matmuls,
convolutions, attention) is counted, elementwise math and reductions are bytes-bound and count 0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def tensor_bytes(t: Optional[torch.Tensor]) -> int:
    """Bytes of the elements ``t`` addresses (0 for None or an empty tensor)."""
    if t is None or t.numel() == 0:
        return 0
    return t.element_size() * math.prod(n for n, s in zip(t.shape, t.stride()) if s != 0)


def io_bytes(*tensors: Optional[torch.Tensor]) -> int:
    """Sum of :func:`tensor_bytes` (None entries are skipped)."""
    return sum(tensor_bytes(t) for t in tensors)


def new_bytes(shape, dtype: torch.dtype) -> int:
    """Bytes of a dense output of ``shape`` and ``dtype``."""
    return math.prod(shape) * torch.empty((), dtype=dtype, device="meta").element_size()


def attention_flops(groups: int, queries: int, keys: int, head_dim: int, value_dim: Optional[int] = None) -> int:
    """softmax(Q K^T) V for ``groups`` independent (batch x head) problems: two matmuls."""
    return 2 * groups * queries * keys * (head_dim + (head_dim if value_dim is None else value_dim))
