"""The toolkit every launcher in fastvid.ops shares: output allocation, grid helpers, the
precision rule, the SM count, interpreter detection and the reasons Triton refuses a call.

Tests switch on poisoning so that an output element a kernel forgets to write shows up as NaN
instead of passing by luck. Nothing here queries the GPU or imports triton at import time.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Optional

import torch

from .._interpreter import interpreting
from ..validation import FLOAT_DTYPES

LOG2E = 1.4426950408889634  # kernels take exp2 and log2: scores are scaled by log2(e)

_poison = False
_meta_as_cuda = False


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


_CONTIGUOUS, _CHANNELS_LAST_3D = (0, 1, 2, 3, 4), (0, 2, 3, 4, 1)


def empty_like_video(x: torch.Tensor, shape=None) -> torch.Tensor:
    """An output of ``shape`` (default x's) laid out in x's memory order, see :func:`video_order`."""
    if x.is_contiguous():  # the two common layouts skip the order sort (this runs on every call)
        order = _CONTIGUOUS
    elif x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        order = _CHANNELS_LAST_3D
    else:
        order = video_order(x)
    return empty_in_order(x.shape if shape is None else shape, order, dtype=x.dtype, device=x.device)


def in_video_order(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` laid out like :func:`empty_like_video` lays out x's outputs (a copy only when it is not
    already): the torch backends' results keep the documented memory order of the fused ones."""
    if out.is_contiguous() and x.is_contiguous():
        return out
    laid = empty_like_video(x, out.shape)
    if laid.stride() == out.stride():
        return out
    return laid.copy_(out)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1): a tile that covers x elements."""
    return 1 << max(0, (x - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints: the host-side grid arithmetic (triton.cdiv is a ConstexprFunction:
    ~20 us a call under cProfile on a 2-core CPU)."""
    return -(-a // b)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of tl.dot: fp32 inputs use TF32 tensor cores only where torch's own
    matmuls would (``torch.backends.cuda.matmul.allow_tf32``); "tf32" changes nothing for fp16/bf16."""
    return "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device: read when a launcher first needs it, never at import."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(t: torch.Tensor, per_sm: int, off_gpu: int) -> int:
    """How many programs fill the GPU holding ``t`` (``per_sm`` per SM); ``off_gpu`` under the interpreter."""
    return per_sm * sm_count(t.device.index or 0) if t.is_cuda else off_gpu


# ---- why Triton refuses a call (checked per call, never at import) ------------------------------

@contextlib.contextmanager
def meta_as_cuda() -> Iterator[None]:
    """Within: meta tensors are routed as CUDA tensors would be (Triton backends take them, the
    fused modules read meta parameters instead of treating them as offloaded), so a model run on the
    meta device reaches the same torch.library ops, and their fake implementations, as a GPU run.
    The step model (``fastvid.roofline``) counts a GPU step this way; no kernel is launched."""
    global _meta_as_cuda
    previous, _meta_as_cuda = _meta_as_cuda, True
    try:
        yield
    finally:
        _meta_as_cuda = previous


def on_gpu(t: torch.Tensor) -> bool:
    """t is a CUDA tensor, or a meta tensor within :func:`meta_as_cuda`."""
    return t.device.type == "cuda" or (_meta_as_cuda and t.device.type == "meta")


@functools.lru_cache(maxsize=None)
def _triton_missing() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def triton_reason(*tensors: Optional[torch.Tensor]) -> Optional[str]:
    """Why Triton cannot run on these tensors, or None."""
    missing = _triton_missing()
    if missing:
        return missing
    for t in tensors:
        if t is None:
            continue
        if on_gpu(t):
            continue
        if t.device.type == "cpu" and interpreting():
            continue
        return f"tensors are on {t.device.type}; Triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU testing)"
    return None


def triton_auto_reason(*tensors: Optional[torch.Tensor]) -> Optional[str]:
    """"auto" takes Triton on CUDA only; the interpreter is slower than the torch paths."""
    for t in tensors:
        if t is not None and not on_gpu(t):
            return "auto uses Triton only on CUDA (the CPU interpreter is for testing)"
    return None


def dtype_reason(t: torch.Tensor) -> Optional[str]:
    """Why the Triton kernels cannot take t's dtype, or None."""
    if t.dtype not in FLOAT_DTYPES:
        return f"dtype {t.dtype} is not supported by the Triton kernel (float32, float16, bfloat16)"
    return None
