"""The one timing and environment implementation, shared by ``fastvid bench`` and ``benchmarks/``.

- :func:`environment`: what a number was measured on (device, versions, commit, date).
- :func:`synchronize`: waits for the device's queued work (a no-op on CPU).
- :func:`time_ms`: median milliseconds of a callable after warm-up (triton's do_bench on CUDA).
- :func:`time_runs`: seconds of each of several synchronised runs, for long runs (a sampling loop).
- :func:`peak_memory_bytes`: peak CUDA memory a callable allocates (None on CPU).
"""
from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch

Device = Union[str, torch.device]


def _device(device: Device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def commit() -> str:
    """The short commit this fastvid was built from: the checkout it runs from when git tracks this very
    file (a wheel installed into a virtual environment inside some checkout is not that checkout's
    code), else the commit recorded in ``BUILD_COMMIT`` when the package was built, else "unknown"."""
    here = Path(__file__).resolve()
    try:
        git = dict(capture_output=True, text=True, timeout=5, cwd=here.parent, check=True)
        subprocess.run(["git", "ls-files", "--error-unmatch", here.name], **git)
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        recorded = here.parent / "BUILD_COMMIT"
        return recorded.read_text().strip() if recorded.is_file() else "unknown"


def environment(device: Device) -> Dict[str, Optional[str]]:
    """Device type and name, torch/triton/CUDA/cuDNN/Python/fastvid versions, commit and UTC date."""
    from . import __version__

    dev = _device(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else f"cpu ({platform.processor() or platform.machine()})"
    return {
        "device": dev.type,
        "device_name": name,
        "gpu": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "python": platform.python_version(),
        "fastvid": __version__,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def synchronize(device: Device) -> None:
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_ms(fn: Callable[[], object], device: Device, *, warmup: int = 3, rep: int = 10) -> float:
    """Median milliseconds of ``fn()``: triton's do_bench on CUDA, perf_counter after ``warmup`` calls on CPU."""
    if _device(device).type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return 1e3 * statistics.median(time_runs(fn, device, warmup=warmup, repeats=rep))


def time_runs(fn: Callable[[], object], device: Device, *, warmup: int = 0, repeats: int = 1) -> List[float]:
    """Seconds of each of ``repeats`` synchronised calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_memory_bytes(fn: Callable[[], object], device: Device) -> Optional[int]:
    """Peak memory allocated while ``fn`` runs, above what was allocated before (CUDA only)."""
    dev = _device(device)
    if dev.type != "cuda":
        return None
    synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    fn()
    synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - base
