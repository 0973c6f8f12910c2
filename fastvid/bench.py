"""The sampler benchmark behind ``fastvid bench``: every chosen model sampled with its reference
modules, then patched with fastvid, timed, peak memory read, and the two samples compared."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import models, timing
from .patching import patch, unpatch
from .validation import check_choice, fail

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Samples agree when max |patched - reference| <= TOLERANCE * max |reference| (the whole sampling run).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 1e-1}
# A speed-up is reported only from at least this many timed runs of each variant after a warm-up run.
MIN_REPEATS_FOR_SPEEDUP = 3
CPU_SPEED_LABEL = "CPU, not GPU speed"
environment = timing.environment
_sync = timing.synchronize


@dataclass
class BenchRow:
    model: str
    size: str
    shape: List[int]  # latents (B, C, F, H, W)
    steps: int
    evals: int  # model evaluations per run (CFG batches count once)
    reference_runs_s: List[float]  # each timed sampling run
    fastvid_runs_s: List[float]
    warmup: bool  # a 2-step run of each variant came first (compilation, autotuning, caches)
    reference_peak_mb: Optional[float]
    fastvid_peak_mb: Optional[float]
    max_abs_error: float
    rel_error: float
    agree: bool
    swapped: Dict[str, int]
    skipped: int

    @property
    def reference_s(self) -> float:
        return statistics.median(self.reference_runs_s)

    @property
    def fastvid_s(self) -> float:
        return statistics.median(self.fastvid_runs_s)

    @property
    def speedup(self) -> Optional[Dict[str, float]]:
        """Median reference / fastvid time and its range over the runs (slowest reference / fastest
        fastvid and back), or None when the runs were too few or not warmed up to be a measurement."""
        if not self.warmup or min(len(self.reference_runs_s), len(self.fastvid_runs_s)) < MIN_REPEATS_FOR_SPEEDUP:
            return None
        return {"median": self.reference_s / self.fastvid_s,
                "low": min(self.reference_runs_s) / max(self.fastvid_runs_s),
                "high": max(self.reference_runs_s) / min(self.fastvid_runs_s)}

    @property
    def reference_step_ms(self) -> float:
        return 1e3 * self.reference_s / max(self.evals, 1)

    @property
    def fastvid_step_ms(self) -> float:
        return 1e3 * self.fastvid_s / max(self.evals, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(reference_s=self.reference_s, fastvid_s=self.fastvid_s, speedup=self.speedup,
                 reference_step_ms=self.reference_step_ms, fastvid_step_ms=self.fastvid_step_ms)
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


def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else CPU. Asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "'auto', 'cpu' or 'cuda[:N]'"
    try:
        dev = torch.device(device)
    except RuntimeError:
        fail("fastvid bench", "device", f"is {device!r}", expected)
    if dev.type not in ("cpu", "cuda"):
        fail("fastvid bench", "device", f"is {device!r}", expected)
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail("fastvid bench", "device", f"is {device!r} but CUDA is not available (torch {torch.__version__}, "
             f"built with CUDA {torch.version.cuda})", "'auto' or 'cpu' on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        fail("fastvid bench", "device", f"is {device!r} but this machine has {torch.cuda.device_count()} GPU(s)",
             f"an index below {torch.cuda.device_count()}")
    return dev


def timed_sample(name: str, model, size: models.ModelSize, *, seed: int, device: torch.device, dtype: torch.dtype,
                 progress: Optional[bool], repeats: int = 1):
    """(sample, seconds of each of ``repeats`` runs, peak MB or None on CPU, model evaluations per run)."""
    calls = [0]
    samples = []

    def run():
        samples.append(models.sample(name, model, size, seed=seed, device=device, dtype=dtype, progress=progress))

    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timing.time_runs(run, device, repeats=repeats)
    finally:
        handle.remove()
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return samples[0], seconds, peak, calls[0] // repeats


def plan(model_names: Sequence[str], size_name: str, **overrides) -> Dict[str, models.ModelSize]:
    """Checks every model name and size before anything runs."""
    for name in model_names:
        check_choice("fastvid bench", "model", name, models.MODELS)
    return {name: models.size(name, size_name, **overrides) for name in model_names}


def bench_model(name: str, size: models.ModelSize, size_name: str, *, device: torch.device, dtype: torch.dtype,
                seed: int = 0, backend: str = "auto", warmup: Optional[bool] = None, repeats: int = 1,
                progress: Optional[bool] = None, after: Optional[Callable[[str, object], None]] = None) -> BenchRow:
    """Reference runs, ``fastvid.patch``, fastvid runs, comparison. ``warmup`` (default: on CUDA or with
    ``repeats`` > 1) first runs a 2-step sample of each variant so that compilation, autotuning and cold
    caches stay out of the timing; each variant is then timed ``repeats`` times.
    ``after(variant, model)`` is called after each variant's timed runs ("reference", then "fastvid")."""
    warmup = (device.type == "cuda" or repeats > 1) if warmup is None else warmup
    model = models.build(name, size, seed=seed).to(device=device, dtype=dtype)
    runs = {}
    report = None
    for variant in ("reference", "fastvid"):
        if variant == "fastvid":
            report = patch(model, backend=backend)
        if warmup:
            models.sample(name, model, size.with_(steps=2), seed=seed, device=device, dtype=dtype, progress=False)
        runs[variant] = timed_sample(name, model, size, seed=seed, device=device, dtype=dtype, progress=progress,
                                     repeats=repeats)
        if after is not None:
            after(variant, model)
    unpatch(model)
    ref, fast = runs["reference"][0].double(), runs["fastvid"][0].double()
    err = (fast - ref).abs().max().item()
    rel = err / max(ref.abs().max().item(), 1e-12)
    agree = bool(torch.isfinite(fast).all()) and rel <= TOLERANCE[dtype]
    del model
    return BenchRow(model=name, size=size_name, shape=list(size.latent_shape), steps=size.steps,
                    evals=runs["fastvid"][3], reference_runs_s=runs["reference"][1], fastvid_runs_s=runs["fastvid"][1],
                    warmup=warmup, reference_peak_mb=runs["reference"][2], fastvid_peak_mb=runs["fastvid"][2],
                    max_abs_error=err, rel_error=rel, agree=agree, swapped=report.counts(),
                    skipped=len(report.skipped))


def default_repeats(device: torch.device) -> int:
    """Timed runs per variant: enough for a speed-up on CUDA; one on CPU, where the run only shows
    that the pipeline works (``--repeats`` 3 or more measures a "CPU, not GPU speed" speed-up)."""
    return MIN_REPEATS_FOR_SPEEDUP if device.type == "cuda" else 1


def run_bench(model_names: Sequence[str], size_name: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0,
              backend: str = "auto", overrides: Optional[dict] = None, repeats: Optional[int] = None,
              progress: Optional[bool] = None, log: Callable[[str], None] = lambda s: None) -> BenchResult:
    sizes = plan(model_names, size_name, **(overrides or {}))
    repeats = default_repeats(device) if repeats is None else repeats
    rows = []
    for i, (name, size) in enumerate(sizes.items(), 1):
        log(f"[{i}/{len(sizes)}] {name}: latents {tuple(size.latent_shape)}, {size.steps} steps ...")
        rows.append(bench_model(name, size, size_name, device=device, dtype=dtype, seed=seed, backend=backend,
                                repeats=repeats, progress=progress))
    settings = {"size": size_name, "dtype": str(dtype).replace("torch.", ""), "seed": seed, "backend": backend,
                "tolerance": TOLERANCE[dtype], "overrides": overrides or {}, "repeats": repeats}
    return BenchResult(rows=rows, env=environment(device), settings=settings)
