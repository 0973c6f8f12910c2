"""One set of input checks shared by every public op and module.

Every failure raises :class:`FastvidInputError` (a ``ValueError``) whose message names the op,
the argument, what it got and what was expected.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class FastvidInputError(ValueError):
    """A public fastvid function was called with an argument it cannot take. Raised by :func:`fail`, it
    carries ``op``, ``argument`` and ``detail`` ("<what it got>; expected <what>") for callers that word
    the message themselves (the command line)."""

    def __init__(self, message: str, *, op: str = "", argument: str = "", detail: str = ""):
        super().__init__(message)
        self.op, self.argument, self.detail = op, argument, detail or message


def fail(op: str, name: str, got: str, expected: str) -> None:
    detail = f"{got}; expected {expected}"
    raise FastvidInputError(f"{op}: argument '{name}' {detail}", op=op, argument=name, detail=detail)


def check_tensor(
    op: str,
    name: str,
    t,
    *,
    ndim: Optional[int] = None,
    layout: str = "",
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
) -> torch.Tensor:
    """Checks type, rank and dtype; ``layout`` names the dims, e.g. "(B, F, N, heads, head_dim)"."""
    if not isinstance(t, torch.Tensor):
        fail(op, name, f"is a {type(t).__name__}", f"a torch.Tensor {layout}".rstrip())
    if ndim is not None and t.dim() != ndim:
        fail(op, name, f"has rank {t.dim()} (shape {tuple(t.shape)})", f"rank {ndim} {layout}".rstrip())
    if dtypes and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        fail(op, name, f"has dtype {str(t.dtype).replace('torch.', '')}", f"one of {names}")
    return t


def check_shape(op: str, name: str, t: torch.Tensor, expected: Sequence[Optional[int]], layout: str = "") -> None:
    """``expected`` holds an int per dim, or None where any size is fine."""
    ok = t.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        fail(op, name, f"has shape {tuple(t.shape)}", f"shape {want} {layout}".rstrip())


def check_same_device(op: str, **tensors: Optional[torch.Tensor]) -> torch.device:
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {k: v.device for k, v in present.items()}
    first_name, first = next(iter(devices.items()))
    for k, d in devices.items():
        if d != first:
            fail(op, k, f"is on {d}", f"the device of '{first_name}' ({first})")
    return first


def check_same_dtype(op: str, **tensors: Optional[torch.Tensor]) -> torch.dtype:
    present = {k: v for k, v in tensors.items() if v is not None}
    first_name, first = next(iter(present.items()))
    for k, v in present.items():
        if v.dtype != first.dtype:
            fail(op, k, f"has dtype {v.dtype}", f"the dtype of '{first_name}' ({first.dtype})")
    return first.dtype


def check_gemm_operands(op: str, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
                        weight_layout: str, bias_layout: str) -> None:
    """x (..., K) of rank >= 1, weight (rows, K) matching x's last dim, bias (rows,) or None: the operands of
    ``x @ weight.T + bias``, float dtypes (float64 for the torch backends)."""
    dtypes = FLOAT_DTYPES + (torch.float64,)
    check_tensor(op, "x", x, layout="(..., K)", dtypes=dtypes)
    check_tensor(op, "weight", weight, ndim=2, layout=weight_layout, dtypes=dtypes)
    if x.dim() < 1:
        fail(op, "x", f"has rank {x.dim()} (shape {tuple(x.shape)})", "rank >= 1 (..., K)")
    if weight.shape[1] != x.shape[-1]:
        fail(op, "weight", f"has shape {tuple(weight.shape)}", f"K = {x.shape[-1]} columns (x's last dim) {weight_layout}")
    if bias is not None:
        check_tensor(op, "bias", bias, ndim=1, layout=bias_layout, dtypes=dtypes)
        if bias.shape[0] != weight.shape[0]:
            fail(op, "bias", f"has shape {tuple(bias.shape)}", f"({weight.shape[0]},), weight's rows {bias_layout}")


def check_choice(op: str, name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(op, name, f"is {value!r}", "one of " + ", ".join(repr(c) for c in choices))


def check_head_dim(op: str, name: str, head_dim: int) -> None:
    """What every backend needs of head_dim; a backend's own limit is in its ``Limits``."""
    if head_dim < 1:
        fail(op, name, f"has head_dim {head_dim}", "head_dim >= 1")


def check_index_table(op: str, name: str, table, rows: int, num_targets: int, layout: str = "(rows, K)") -> None:
    """An int64/int32 ``(rows, K)`` table of indices in ``[0, num_targets)``, -1 padding short rows;
    every row lists at least one index. Reads the values (a device sync for a CUDA table)."""
    check_tensor(op, name, table, ndim=2, layout=layout, dtypes=(torch.int64, torch.int32))
    if table.shape[0] != rows or table.shape[1] < 1:
        fail(op, name, f"has shape {tuple(table.shape)}", f"shape ({rows}, K) with K >= 1 {layout}")
    if table.numel() == 0:
        return
    bad = (table < -1) | (table >= num_targets)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        fail(op, name, f"holds {int(table[row, col])} at [{row}, {col}]",
             f"indices in [0, {num_targets - 1}], or -1 to pad a row")
    empty = (table < 0).all(dim=1)
    if empty.any():
        row = int(empty.nonzero()[0, 0])
        fail(op, name, f"row {row} lists no index (all -1)", "at least one index per row")


def check_module_input(op: str, name: str, x, module, *, ranks: Sequence[int], channel_dim, channels: int,
                       layout: str) -> None:
    """An input of a module: a tensor of one of ``ranks``, ``channels`` at ``channel_dim(rank)``, on the device
    of the module's parameters and, outside autocast, of their dtype."""
    check_tensor(op, name, x, layout=layout, dtypes=FLOAT_DTYPES + (torch.float64,))
    if x.dim() not in ranks:
        fail(op, name, f"has rank {x.dim()} (shape {tuple(x.shape)})",
             " or ".join(f"rank {r}" for r in ranks) + f": {layout}")
    param = next(module.parameters(), None)
    if param is not None:
        if x.device != param.device:
            fail(op, name, f"is on {x.device}", f"the device of the module's parameters ({param.device})")
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            fail(op, name, f"has dtype {x.dtype}", f"the dtype of the module's parameters ({param.dtype})")
    dim = channel_dim(x.dim())
    if x.shape[dim] != channels:
        fail(op, name, f"has shape {tuple(x.shape)}", f"{channels} channels at dim {dim}: {layout}")
