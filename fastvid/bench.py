"""The sampler benchmark behind ``fastvid bench``: every chosen model sampled with its reference
modules, then patched with fastvid, timed, peak memory read, and the two samples compared."""
from __future__ import annotations

import datetime
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import models
from .patching import patch, unpatch
from .validation import FastvidInputError, check_choice

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Samples agree when max |patched - reference| <= TOLERANCE * max |reference| (the whole sampling run).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 1e-1}


@dataclass
class BenchRow:
    model: str
    size: str
    shape: List[int]  # latents (B, C, F, H, W)
    steps: int
    evals: int  # model evaluations per run (CFG batches count once)
    reference_s: float
    fastvid_s: float
    reference_peak_mb: Optional[float]
    fastvid_peak_mb: Optional[float]
    max_abs_error: float
    rel_error: float
    agree: bool
    swapped: Dict[str, int]
    skipped: int

    @property
    def speedup(self) -> float:
        return self.reference_s / self.fastvid_s if self.fastvid_s > 0 else float("nan")

    @property
    def reference_step_ms(self) -> float:
        return 1e3 * self.reference_s / max(self.evals, 1)

    @property
    def fastvid_step_ms(self) -> float:
        return 1e3 * self.fastvid_s / max(self.evals, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(speedup=self.speedup, reference_step_ms=self.reference_step_ms, fastvid_step_ms=self.fastvid_step_ms)
        return d


@dataclass
class BenchResult:
    rows: List[BenchRow]
    env: Dict[str, object]
    settings: Dict[str, object] = field(default_factory=dict)

    @property
    def all_agree(self) -> bool:
        return all(r.agree for r in self.rows)

    def to_dict(self) -> dict:
        return {"env": self.env, "settings": self.settings, "rows": [r.to_dict() for r in self.rows]}


def environment(device: torch.device) -> Dict[str, object]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    from . import __version__

    return {"device": device.type, "device_name": name, "torch": torch.__version__, "triton": triton_version,
            "fastvid": __version__, "commit": commit, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else CPU. Asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FastvidInputError(f"fastvid bench: argument 'device' is {device!r} but CUDA is not available "
                                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    if dev.type not in ("cpu", "cuda"):
        raise FastvidInputError(f"fastvid bench: argument 'device' is {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_sample(name: str, model, size: models.ModelSize, *, seed: int, device: torch.device, dtype: torch.dtype,
                 progress: Optional[bool]):
    """(sample, seconds, peak MB or None on CPU, model evaluations)."""
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        out = models.sample(name, model, size, seed=seed, device=device, dtype=dtype, progress=progress)
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        handle.remove()
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return out, seconds, peak, calls[0]


def plan(model_names: Sequence[str], size_name: str, **overrides) -> Dict[str, models.ModelSize]:
    """Checks every model name and size before anything runs."""
    for name in model_names:
        check_choice("fastvid bench", "model", name, models.MODELS)
    return {name: models.size(name, size_name, **overrides) for name in model_names}


def bench_model(name: str, size: models.ModelSize, size_name: str, *, device: torch.device, dtype: torch.dtype,
                seed: int = 0, backend: str = "auto", warmup: Optional[bool] = None,
                progress: Optional[bool] = None, after: Optional[Callable[[str, object], None]] = None) -> BenchRow:
    """Reference run, ``fastvid.patch``, fastvid run, comparison. ``warmup`` (default: on CUDA) first runs
    a 2-step sample of each variant so that compilation and autotuning stay out of the timing.
    ``after(variant, model)`` is called after each timed run ("reference", then "fastvid")."""
    warmup = device.type == "cuda" if warmup is None else warmup
    model = models.build(name, size, seed=seed).to(device=device, dtype=dtype)
    runs = {}
    report = None
    for variant in ("reference", "fastvid"):
        if variant == "fastvid":
            report = patch(model, backend=backend)
        if warmup:
            models.sample(name, model, size.with_(steps=2), seed=seed, device=device, dtype=dtype, progress=False)
        runs[variant] = timed_sample(name, model, size, seed=seed, device=device, dtype=dtype, progress=progress)
        if after is not None:
            after(variant, model)
    unpatch(model)
    ref, fast = runs["reference"][0].double(), runs["fastvid"][0].double()
    err = (fast - ref).abs().max().item()
    rel = err / max(ref.abs().max().item(), 1e-12)
    agree = bool(torch.isfinite(fast).all()) and rel <= TOLERANCE[dtype]
    del model
    return BenchRow(model=name, size=size_name, shape=list(size.latent_shape), steps=size.steps,
                    evals=runs["fastvid"][3], reference_s=runs["reference"][1], fastvid_s=runs["fastvid"][1],
                    reference_peak_mb=runs["reference"][2], fastvid_peak_mb=runs["fastvid"][2],
                    max_abs_error=err, rel_error=rel, agree=agree, swapped=report.counts(),
                    skipped=len(report.skipped))


def run_bench(model_names: Sequence[str], size_name: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0,
              backend: str = "auto", overrides: Optional[dict] = None, progress: Optional[bool] = None,
              log: Callable[[str], None] = lambda s: None) -> BenchResult:
    sizes = plan(model_names, size_name, **(overrides or {}))
    rows = []
    for i, (name, size) in enumerate(sizes.items(), 1):
        log(f"[{i}/{len(sizes)}] {name}: latents {tuple(size.latent_shape)}, {size.steps} steps ...")
        rows.append(bench_model(name, size, size_name, device=device, dtype=dtype, seed=seed, backend=backend,
                                progress=progress))
    settings = {"size": size_name, "dtype": str(dtype).replace("torch.", ""), "seed": seed, "backend": backend,
                "tolerance": TOLERANCE[dtype], "overrides": overrides or {}}
    return BenchResult(rows=rows, env=environment(device), settings=settings)
