"""Which peers are installed, and which kernels a call launched, asked per run (never at import)."""
from __future__ import annotations

import importlib
from typing import Optional

import torch


def import_reason(module: str) -> Optional[str]:
    """None when ``module`` imports, else why not."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary extension
        return f"{module} not available: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return None


def sdpa_backend_context(name: str):
    """A context manager forcing one SDPA backend ("flash", "efficient", "cudnn", "math")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    return sdpa_kernel([backends[name]])


def kernel_path(fn, device: str, limit: int = 4) -> str:
    """Which kernels one call of ``fn`` ran: CUDA kernel names in launch order on CUDA (e.g. which
    cuDNN algorithm, or layout-transpose kernels around it), else the CPU ops with the most self time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        names = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
    else:
        ranked = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        names = [e.key for e in ranked]
    unique = list(dict.fromkeys(n[:60] for n in names))
    return " | ".join(unique[:limit]) + (" | ..." if len(unique) > limit else "")
