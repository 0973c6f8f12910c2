"""End-to-end speed of real diffusers video pipelines (``fastvid bench --diffusers NAMES``).

Each pipeline of :data:`fastvid.integrations.released.RELEASED` (StableVideoDiffusionPipeline,
AnimateDiffPipeline, TextToVideoSDPipeline, I2VGenXLPipeline, TextToVideoZeroPipeline) is built offline with
random weights: the released denoiser and VAE configs, small random CLIP text/image encoders whose output width
matches the denoiser's cross-attention, a tiny byte-level CLIP tokenizer, the released scheduler. The pipeline
runs its own denoising loop and guidance with ``output_type="latent"``; the VAE decode is timed apart.

Variants, in one process on the same inputs (same seed, weights rebuilt from the same seed and checked equal):

- ``diffusers``: diffusers' default attention processors (the reference every other variant is compared with);
- ``fastvid``: ``fastvid.patch(pipe)``;
- ``fastvid+captured``: ``fastvid.patch(pipe)``, then ``fastvid.capture_step(pipe)`` (the patched denoiser's call
  captured as a CUDA graph) where this fastvid has it;
- ``compile``: ``pipe.unet = torch.compile(pipe.unet, mode=MODE, fullgraph=True)``, the recipe of diffusers'
  "torch.compile" docs, with ``--compile-mode`` (default "default"; the docs' "max-autotune" compiles far longer);
- ``fastvid+compile``: patched, then compiled the same way.

A step is the time between the starts of two consecutive denoiser calls of the pipeline's loop (denoiser,
guidance and scheduler step; synchronised on CUDA). Each variant runs ``warmup`` untimed steps, ``timed`` timed
steps and one closing step; compiled and captured variants first make one untimed call of the pipeline
(compilation, capture). Text2Video-Zero's loop first denoises the first frame alone (``t0``/``t1`` are set so
that two calls do it); only its all-frame steps are timed. Rows: step median/min/max, on CUDA the summed kernel
time and kernel count of the loop's closing denoiser call (:class:`CallProfile`), peak memory above what
was allocated before the call (CUDA), ``rel_err`` = max|latents - diffusers latents| / max|diffusers latents|
after the whole loop, ``agree`` = rel_err <= ``fastvid.bench.TOLERANCE[dtype]`` (the rule of ``fastvid bench``),
and a speed-up over ``diffusers`` only for agreeing rows with at least 3 timed steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import timing
from .bench import CPU_SPEED_LABEL, MIN_REPEATS_FOR_SPEEDUP, TOLERANCE
from .integrations import released

VARIANTS = ("diffusers", "fastvid", "fastvid+fused_qkv", "fastvid+captured", "compile", "fastvid+compile")
CAPTURED = "fastvid+captured"
FUSED_QKV = "fastvid+fused_qkv"  # opt-in: diffusers' fuse_qkv_projections(), then fastvid.patch
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != FUSED_QKV)
COMPILED = ("compile", "fastvid+compile")
EAGER = ("diffusers", "fastvid")
SIZES = {"gpu": "released", "cpu": "tiny", "tiny": "tiny"}  # fastvid bench --size -> the table's sizes
STEM = "pipelines"  # <out>/pipelines.jsonl, .md, .png
PROMPT = "a cat"  # 7 tokens of the byte-level tokenizer: fits the tiny size's 8

# ---- the plan: a model of an H100's seconds (estimates, replaced by what a run measures) ----------------
PLAN_STARTUP_S = 25.0  # imports, CUDA context
PLAN_PIPELINE_S = {"released": 10.0, "tiny": 1.0}  # VAE, encoders, scheduler, moving to the device
PLAN_DENOISER_S = {"released": 5.0, "tiny": 0.3}  # one variant's denoiser built from the seed
PLAN_STEP_S = {"released": {"svd": 1.0, "animatediff": 0.4, "modelscope": 0.12, "i2vgenxl": 1.6, "t2v_zero": 0.2},
               "tiny": dict.fromkeys(released.RELEASED, 0.1)}
PLAN_DECODE_S = {"released": {"svd": 6.0, "animatediff": 2.0, "modelscope": 1.0, "i2vgenxl": 6.0, "t2v_zero": 1.0},
                 "tiny": dict.fromkeys(released.RELEASED, 0.1)}
PLAN_TRITON_S = 20.0  # the first fastvid variant's Triton kernels compile (once per process)
PLAN_CAPTURE_S = 10.0
PLAN_TORCH_COMPILE_S = {"default": 90.0, "reduce-overhead": 100.0, "max-autotune-no-cudagraphs": 300.0,
                        "max-autotune": 320.0}
PLAN_GRAPHS = {"t2v_zero": 2}  # its first-frame calls and all-frame calls have different batch sizes
DECODE_CHUNK = {"svd": 8, "animatediff": 16, "i2vgenxl": 1}  # the pipelines' documented decode_chunk_size


@dataclass(frozen=True)
class Settings:
    size: str = "tiny"  # "released" or "tiny"
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    seed: int = 0
    warmup: int = 1
    timed: int = 3
    backend: str = "auto"
    compile_mode: str = "default"

    def steps(self, name: str) -> int:
        """num_inference_steps: warm-up, timed and one closing step (Text2Video-Zero: one step more, see calls)."""
        loop = self.warmup + self.timed + 1
        return loop + 1 if name == "t2v_zero" else loop

    def calls(self, name: str) -> int:
        """Denoiser calls per pipeline call. Text2Video-Zero denoises the first frame alone for two calls (the
        steps before t1, then from t1 to t0), then from t1 on all frames: it calls its denoiser steps + 1 times."""
        return self.steps(name) + 1 if name == "t2v_zero" else self.steps(name)


# ---- the pipelines ----------------------------------------------------------------------------------

def tiny_clip_tokenizer(max_length: int):
    """A CLIPTokenizer over the 256 byte symbols (no merges), written to a temporary folder: offline."""
    import tempfile

    from transformers import CLIPTokenizer

    symbols = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
    symbols += [chr(256 + n) for n in range(256 - len(symbols))]  # GPT-2's byte -> unicode table
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    with tempfile.TemporaryDirectory(prefix="fastvid-clip-") as name:
        folder = Path(name)
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(name, model_max_length=max_length)  # transformers 4 and 5 alike


def _text_encoder(width: int, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, projection_dim=width,
                                        max_position_embeddings=tokenizer.model_max_length,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))


def _image_encoder(width: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                          num_attention_heads=2, image_size=224, patch_size=32,
                                                          projection_dim=width))


def build_pipeline(name: str, s: Settings):
    """The diffusers pipeline of ``name`` with random weights on ``s.device`` in ``s.dtype`` (progress bars off)."""
    import diffusers
    from transformers import CLIPImageProcessor

    r = released.row(name)
    size = r.size(s.size)
    unet = released.build_denoiser(name, size=s.size, device=s.device, dtype=s.dtype, seed=s.seed)
    width = unet.config.cross_attention_dim
    torch.manual_seed(s.seed + 1)
    parts = dict(vae=getattr(diffusers, r.vae)(**r.vae_kwargs(s.size)), unet=unet,
                 scheduler=getattr(diffusers, r.scheduler)(**r.scheduler_config))
    if name != "svd":
        parts["tokenizer"] = tiny_clip_tokenizer(size.text_tokens)
        parts["text_encoder"] = _text_encoder(width, parts["tokenizer"])
    if name in ("svd", "i2vgenxl"):
        parts.update(image_encoder=_image_encoder(width), feature_extractor=CLIPImageProcessor())
    if name == "animatediff":
        parts["motion_adapter"] = None  # already inside the UNetMotionModel
    if name == "t2v_zero":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, r.pipeline)(**parts)
    pipe.to(device=s.device, dtype=s.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_kwargs(name: str, s: Settings) -> dict:
    """The pipeline call: its own guidance, ``output_type="latent"``, a fresh generator of the seed."""
    size = released.row(name).size(s.size)
    common = dict(height=size.height, width=size.width, num_inference_steps=s.steps(name), output_type="latent",
                  generator=torch.Generator(device=s.device).manual_seed(s.seed))
    if name in ("svd", "i2vgenxl"):
        from PIL import Image

        image = Image.new("RGB", (size.width, size.height), (200, 120, 40))
        if name == "svd":
            return dict(common, image=image, num_frames=size.frames, decode_chunk_size=DECODE_CHUNK[name])
        # clip_skip=None: its default (1) reads CLIPTextModel.text_model, which transformers 5 no longer has
        return dict(common, image=image, prompt=PROMPT, num_frames=size.frames, clip_skip=None)
    if name == "t2v_zero":
        t1 = s.warmup + s.timed  # the all-frame loop runs t1 + 1 steps
        return dict(common, prompt=PROMPT, video_length=size.frames, t0=t1 - 1, t1=t1)
    return dict(common, prompt=PROMPT, num_frames=size.frames)


def call_pipeline(name: str, pipe, s: Settings) -> torch.Tensor:
    """One pipeline call; its latents. The global RNG is seeded too: I2VGenXL samples its image latents with it."""
    torch.manual_seed(s.seed)
    with torch.no_grad():
        out = pipe(**call_kwargs(name, s))
    return out.images if name == "t2v_zero" else out.frames


def decode(name: str, pipe, latents: torch.Tensor):
    """The pipeline's own VAE decode of its latent output."""
    if name == "svd":
        return pipe.decode_latents(latents, latents.shape[1], DECODE_CHUNK[name])
    if name in DECODE_CHUNK:
        return pipe.decode_latents(latents, DECODE_CHUNK[name])
    return pipe.decode_latents(latents)


def weights_fingerprint(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()).item())


# ---- variants ---------------------------------------------------------------------------------------

def unavailable_reason(variant: str) -> Optional[str]:
    import fastvid

    if variant == CAPTURED and not hasattr(fastvid, "capture_step"):
        return "fastvid.capture_step is not in this build of fastvid"
    return None


def apply_variant(pipe, variant: str, s: Settings) -> Dict[str, int]:
    """Puts ``pipe`` (with a freshly built denoiser) into ``variant``; returns fastvid's swap counts."""
    import fastvid

    swapped = {}
    if variant == FUSED_QKV:
        pipe.unet.fuse_qkv_projections()
    if variant.startswith("fastvid"):
        swapped = fastvid.patch(pipe, backend=s.backend).counts()
    if variant == CAPTURED:
        fastvid.capture_step(pipe)
    if variant in COMPILED:
        pipe.unet = torch.compile(pipe.unet, mode=s.compile_mode, fullgraph=True)
    return swapped


class StepClock:
    """Synchronised timestamps of the starts of the denoiser's calls (a forward pre-hook)."""

    def __init__(self, device: str):
        self.device, self.starts = device, []

    def __call__(self, *_):
        timing.synchronize(self.device)
        self.starts.append(time.perf_counter())


class CallProfile:
    """torch.profiler around one denoiser call (the ``call``-th, counted from 1): the sum of its ``device_type``
    kernels' durations (ms; kernels that overlap count twice) and how many there were. Registered after the
    StepClock, so the call's start is taken before the profiler starts; a profiler that fails leaves both None."""

    def __init__(self, call: int, activity=None, device_type=None):
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity

        self.call, self.seen, self.profiler = call, 0, None
        self.activity = ProfilerActivity.CUDA if activity is None else activity
        self.device_type = DeviceType.CUDA if device_type is None else device_type
        self.device_ms: Optional[float] = None
        self.kernels: Optional[int] = None

    def start(self, *_) -> None:
        self.seen += 1
        if self.seen == self.call:
            try:
                self.profiler = torch.profiler.profile(activities=[self.activity])
                self.profiler.__enter__()
            except Exception:  # noqa: BLE001 (no profiler here: the row goes without these fields)
                self.profiler = None

    def stop(self, *_) -> None:
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return
        try:
            if self.device_type.name == "CUDA":
                torch.cuda.synchronize()
            profiler.__exit__(None, None, None)
            events = [e for e in profiler.events() if e.device_type == self.device_type]
        except Exception:  # noqa: BLE001
            return
        self.kernels = len(events)
        self.device_ms = sum(e.time_range.elapsed_us() for e in events) / 1e3


def timed_call(name: str, pipe, s: Settings):
    """(latents, seconds of each timed step, peak MB above the memory before the call or None on CPU, and on
    CUDA the :class:`CallProfile` of the loop's closing (untimed) denoiser call, else None)."""
    clock = StepClock(s.device)
    cuda = torch.device(s.device).type == "cuda"
    profile = CallProfile(s.calls(name)) if cuda else None
    handles = [pipe.unet.register_forward_pre_hook(clock)]
    if profile is not None:
        handles += [pipe.unet.register_forward_pre_hook(profile.start), pipe.unet.register_forward_hook(profile.stop)]
    try:
        if cuda:
            timing.synchronize(s.device)
            torch.cuda.reset_peak_memory_stats(s.device)
            before = torch.cuda.memory_allocated(s.device)
        latents = call_pipeline(name, pipe, s)
        timing.synchronize(s.device)
        peak = (torch.cuda.max_memory_allocated(s.device) - before) / 2 ** 20 if cuda else None
    finally:
        for handle in handles:
            handle.remove()
        if profile is not None:
            profile.stop()  # a call that raised leaves its profiler running: stop it
    if len(clock.starts) != s.calls(name):
        raise RuntimeError(f"{name}: the denoiser was called {len(clock.starts)} times, not {s.calls(name)}: "
                           "its steps cannot be told apart")
    loop = clock.starts[-(s.warmup + s.timed + 1):]  # the all-frame loop (Text2Video-Zero's first frame left out)
    steps = [b - a for a, b in zip(loop[s.warmup:], loop[s.warmup + 1:])]
    return latents, steps, peak, profile


# ---- rows -------------------------------------------------------------------------------------------

def _row(env: dict, name: str, variant: str, s: Settings, **fields) -> dict:
    size = released.row(name).size(s.size)
    row = dict(env, pipeline=name, variant=variant, stage=fields.pop("stage", "step"), size=s.size,
               dtype=str(s.dtype).replace("torch.", ""), frames=size.frames, height=size.height, width=size.width,
               steps=s.steps(name), warmup_steps=s.warmup, timed_steps=s.timed, backend=s.backend,
               compile_mode=s.compile_mode if variant in COMPILED else None,
               label=None if env["device"] == "cuda" else CPU_SPEED_LABEL)
    row.update(fields)
    return row


def summarise_steps(seconds: Sequence[float]) -> dict:
    ms = [1e3 * x for x in seconds]
    return dict(step_ms=ms, step_ms_median=statistics.median(ms), step_ms_min=min(ms), step_ms_max=max(ms))


def compare(latents: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> dict:
    a, b = latents.double(), reference.double()
    rel = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)
    finite = bool(torch.isfinite(a).all())
    return dict(rel_err=rel if finite else float("inf"), agree=finite and rel <= TOLERANCE[dtype],
                tolerance=TOLERANCE[dtype])


def speedup(row: dict, reference: Optional[dict]) -> Optional[dict]:
    """diffusers median step / this variant's, with the range (slowest/fastest both ways); agreeing rows only."""
    if (reference is None or row["variant"] == "diffusers" or row.get("status") != "ok" or not row.get("agree")
            or min(len(row["step_ms"]), len(reference["step_ms"])) < MIN_REPEATS_FOR_SPEEDUP):
        return None
    return {"median": reference["step_ms_median"] / row["step_ms_median"],
            "low": reference["step_ms_min"] / row["step_ms_max"],
            "high": reference["step_ms_max"] / row["step_ms_min"]}


# ---- the plan and the budget ------------------------------------------------------------------------

def planned_seconds(name: str, variant: str, s: Settings, triton_compiled: bool) -> float:
    """A variant's estimated seconds on an H100 (the PLAN_* model): its denoiser build and its calls; for
    ``diffusers`` also the pipeline's build and the VAE decode."""
    steps = s.calls(name) * PLAN_STEP_S[s.size][name]
    seconds = PLAN_DENOISER_S[s.size] + steps
    if variant == "diffusers":
        seconds += PLAN_PIPELINE_S[s.size] + PLAN_DECODE_S[s.size][name]
    if variant.startswith("fastvid") and not triton_compiled:
        seconds += PLAN_TRITON_S
    if variant == CAPTURED:
        seconds += steps + PLAN_CAPTURE_S
    if variant in COMPILED:
        seconds += steps + PLAN_GRAPHS.get(name, 1) * PLAN_TORCH_COMPILE_S[s.compile_mode]
    return seconds


def plan(names: Sequence[str], variants: Sequence[str], s: Settings, budget: Optional[float] = None) -> List[dict]:
    """One entry per pipeline and variant in run order: estimated seconds, torch.compile graphs, and whether it
    is unavailable or would be skipped by ``budget`` (a pipeline whose diffusers reference does not fit is
    skipped whole, as in the run)."""
    items, triton, total = [], False, PLAN_STARTUP_S
    for name in names:
        reference_fits = True
        for variant in variants:
            seconds = planned_seconds(name, variant, s, triton)
            item = dict(pipeline=name, variant=variant, seconds=seconds,
                        compiles=PLAN_GRAPHS.get(name, 1) if variant in COMPILED else 0,
                        unavailable=unavailable_reason(variant))
            fits = reference_fits and (budget is None or total + seconds <= budget)
            reference_fits = reference_fits and (fits or variant != "diffusers")
            item["skipped"] = not fits and item["unavailable"] is None
            if fits and item["unavailable"] is None:
                total += seconds
                triton = triton or variant.startswith("fastvid")
            items.append(item)
    return items


def format_plan(items: List[dict], s: Settings, budget: Optional[float]) -> str:
    lines = [f"# plan (estimated seconds, a model of an H100, size '{s.size}', {s.warmup} warm-up + {s.timed} timed "
             f"steps, torch.compile mode '{s.compile_mode}'; diffusers includes building the pipeline and the VAE "
             "decode):"]
    for it in items:
        note = f", {it['compiles']} torch.compile graph(s)" if it["compiles"] else ""
        state = (f"  -> unavailable: {it['unavailable']}" if it["unavailable"] else
                 "  -> skipped by --budget" if it["skipped"] else "")
        lines.append(f"#   {it['pipeline']:12s} {it['variant']:16s} {it['seconds']:7.1f} s{note}{state}")
    run = [it for it in items if not it["skipped"] and not it["unavailable"]]
    lines.append(f"# total {PLAN_STARTUP_S + sum(it['seconds'] for it in run):.0f} s (startup {PLAN_STARTUP_S:.0f} s, "
                 f"{len(run)} rows, {sum(it['compiles'] for it in run)} torch.compile graphs); budget "
                 + ("none" if budget is None else f"{budget:.0f} s, {sum(it['skipped'] for it in items)} skipped"))
    return "\n".join(lines)


class Budget:
    """Skips an item whose estimate, scaled by actual / planned so far, would pass the budget (run_suite's rule)."""

    def __init__(self, budget: Optional[float]):
        self.budget, self.start = budget, time.perf_counter()
        self.planned = self.actual = 0.0
        self.skipped: List[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, planned: float, log: Callable[[str], None]) -> bool:
        scale = max(1.0, self.actual / self.planned) if self.planned else 1.0
        if self.budget is None or self.elapsed() + planned * scale <= self.budget:
            return True
        self.skipped.append(f"{what} (estimated {planned * scale:.0f} s; {self.elapsed():.0f} s of "
                            f"{self.budget:.0f} s used)")
        log(f"# budget: skipped {self.skipped[-1]}")
        return False

    def record(self, planned: float, actual: float) -> None:
        self.planned += planned
        self.actual += actual


# ---- the run ----------------------------------------------------------------------------------------

EXIT_DEVICE_LOST = 3  # main's exit status when a failure left the CUDA context unusable (see DeviceLost)


class DeviceLost(RuntimeError):
    """A failure left the CUDA context unusable (an illegal address, a kernel trap): every later CUDA call in
    this process would fail, so the run stops; a new process can run the pipelines that have no rows."""


def device_lost(device: str) -> bool:
    """Whether ``device`` (CUDA) no longer synchronises: its context is lost to this process."""
    if torch.device(device).type != "cuda":
        return False
    try:
        torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 (torch raises RuntimeError / AcceleratorError, by version)
        return True
    return False


def run_pipeline(name: str, variants: Sequence[str], s: Settings, env: dict, budget: Budget,
                 emit: Callable[[dict], None], log: Callable[[str], None], triton_compiled: bool) -> bool:
    """Every variant of one pipeline; rows go to ``emit`` as each finishes. Returns whether fastvid ran."""
    pipe, reference, fingerprint = None, None, None
    for variant in variants:
        planned = planned_seconds(name, variant, s, triton_compiled)
        reason = unavailable_reason(variant)
        if reason is not None:
            emit(_row(env, name, variant, s, status="unavailable", reason=reason))
            continue
        if variant != "diffusers" and reference is None:
            emit(_row(env, name, variant, s, status="skipped", reason="the diffusers reference did not run"))
            continue
        if not budget.allows(f"{name} {variant}", planned, log):
            emit(_row(env, name, variant, s, status="skipped", reason="--budget"))
            continue
        log(f"[{name}] {variant} ...")
        began = time.perf_counter()
        try:
            if variant == "diffusers":
                pipe = build_pipeline(name, s)
                fingerprint = weights_fingerprint(pipe.unet)
            else:  # the same weights again, from the seed
                pipe.unet = released.build_denoiser(name, size=s.size, device=s.device, dtype=s.dtype, seed=s.seed)
                if weights_fingerprint(pipe.unet) != fingerprint:
                    raise RuntimeError("the rebuilt denoiser's weights differ from the diffusers variant's")
            swapped = apply_variant(pipe, variant, s)
            triton_compiled = triton_compiled or variant.startswith("fastvid")
            setup_s = None
            if variant in COMPILED or variant == CAPTURED:  # compile / capture outside the timed call
                t = time.perf_counter()
                call_pipeline(name, pipe, s)
                timing.synchronize(s.device)
                setup_s = time.perf_counter() - t
            latents, steps, peak, profile = timed_call(name, pipe, s)
            row = _row(env, name, variant, s, status="ok", swapped=swapped, setup_s=setup_s,
                       peak_mem_mb=peak, latent_shape=list(latents.shape), **summarise_steps(steps),
                       call_device_ms=profile and profile.device_ms, call_kernels=profile and profile.kernels)
            if variant == "diffusers":
                reference = dict(row, latents=latents)
            row.update(compare(latents, reference["latents"], s.dtype))
            row["speedup"] = speedup(row, reference)
            emit(row)
            if variant == "diffusers":
                emit(_decode_row(name, pipe, latents, s, env))
        except Exception as exc:  # one failing variant is reported; the others still run
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            if variant == CAPTURED and torch.device(s.device).type != "cuda":  # CUDA graphs need CUDA
                emit(_row(env, name, variant, s, status="unavailable", reason=f"on {s.device}: {reason}"))
            else:
                traceback.print_exc()
                emit(_row(env, name, variant, s, status="error", reason=reason))
            if device_lost(s.device):
                for rest in variants[variants.index(variant) + 1:]:
                    emit(_row(env, name, rest, s, status="skipped", reason="the CUDA context was lost"))
                raise DeviceLost(f"{name} {variant}: {reason}") from exc
            if torch.device(s.device).type == "cuda":
                torch.cuda.empty_cache()
        finally:
            budget.record(planned, time.perf_counter() - began)
            if variant in COMPILED:
                torch._dynamo.reset()
    del pipe
    if torch.device(s.device).type == "cuda":
        torch.cuda.empty_cache()
    return triton_compiled


def _decode_row(name: str, pipe, latents: torch.Tensor, s: Settings, env: dict) -> dict:
    with torch.no_grad():
        seconds = timing.time_runs(lambda: decode(name, pipe, latents), s.device, repeats=1)
    return _row(env, name, "diffusers", s, stage="vae_decode", status="ok", decode_ms=1e3 * seconds[0],
                decode_chunk_size=DECODE_CHUNK.get(name))


def run(names: Sequence[str], variants: Sequence[str], s: Settings, out: Path, *, budget: Optional[float] = None,
        plot: bool = True, log: Callable[[str], None] = print) -> List[dict]:
    """Runs the plan; appends each row to ``<out>/pipelines.jsonl`` and rewrites the Markdown table and the plot
    after each pipeline, so that a run stopped midway keeps what it measured."""
    out.mkdir(parents=True, exist_ok=True)
    env = timing.environment(s.device)
    rows: List[dict] = []
    clock = Budget(None if budget is None else budget - PLAN_STARTUP_S)

    def emit(row: dict) -> None:
        rows.append(row)
        with (out / f"{STEM}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(format_row(row))

    triton = False
    for name in names:
        try:
            triton = run_pipeline(name, variants, s, env, clock, emit, log, triton)
        finally:
            write_report(rows, out, plot=plot, skipped=clock.skipped)
    return rows


# ---- the report -------------------------------------------------------------------------------------

COLUMNS = ("pipeline", "variant", "status", "ms/step median", "min-max", "GPU busy ms/call (kernels)", "peak MB",
           "rel_err", "agree", "speed-up (range)", "setup s")


def _speedup_text(row: dict) -> str:
    sp = row.get("speedup")
    return "-" if not sp else f"{sp['median']:.2f}x ({sp['low']:.2f}-{sp['high']:.2f}x)"


def table_cells(row: dict) -> List[str]:
    if row.get("stage") == "vae_decode":
        return [row["pipeline"], "VAE decode", "ok", f"{row['decode_ms']:.1f} (whole decode)"] + [""] * 7
    if row.get("status") != "ok":
        return [row["pipeline"], row["variant"], f"{row['status']}: {row.get('reason', '')}"] + [""] * 8
    peak = "n/a" if row.get("peak_mem_mb") is None else f"{row['peak_mem_mb']:.0f}"
    busy = "n/a" if row.get("call_device_ms") is None else f"{row['call_device_ms']:.1f} ({row['call_kernels']})"
    setup = "" if row.get("setup_s") is None else f"{row['setup_s']:.1f}"
    return [row["pipeline"], row["variant"], "ok", f"{row['step_ms_median']:.1f}",
            f"{row['step_ms_min']:.1f}-{row['step_ms_max']:.1f}", busy, peak, f"{row['rel_err']:.2e}",
            "yes" if row["agree"] else "NO", _speedup_text(row), setup]


def format_row(row: dict) -> str:
    return "  ".join(c for c in table_cells(row) if c)


def header(rows: List[dict]) -> str:
    e = rows[0]
    what = e["label"] or "GPU"
    return (f"diffusers pipelines on {e['device_name']} ({what}), {e['dtype']}, size '{e['size']}', "
            f"{e['warmup_steps']} warm-up + {e['timed_steps']} timed steps; torch {e['torch']}, triton {e['triton']}, "
            f"fastvid {e['fastvid']}, commit {e['commit']}, {e['date']}")


def to_markdown(rows: List[dict], skipped: Sequence[str] = ()) -> str:
    lines = ["# fastvid bench --diffusers", "", header(rows), "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    compiled = [r for r in rows if r.get("compile_mode")]
    lines += ["", "ms/step: time between the starts of consecutive denoiser calls in the pipeline's own loop "
              "(denoiser with its CFG batch, guidance, scheduler step). GPU busy ms/call (kernels): the device time "
              "of the kernels of the loop's closing, untimed denoiser call and their number (torch.profiler); where it "
              "is well below ms/step, the GPU waits for the host. peak MB: above what was allocated before the "
              "call. rel_err: max |latents - diffusers latents| / max |diffusers latents| after the whole loop; agree: "
              f"rel_err <= {TOLERANCE[_dtype(rows)]:g}. A speed-up (over diffusers, median and range) is given only "
              "for agreeing rows. setup s: the untimed first call of compiled and captured variants."]
    if compiled:
        lines.append(f"torch.compile: mode '{compiled[0]['compile_mode']}', fullgraph=True, on pipe.unet.")
    if rows[0]["label"]:
        lines.append(f"Measured on a CPU with tiny configs: {rows[0]['label']}.")
    if skipped:
        lines += ["", "Skipped by --budget:", *(f"- {s}" for s in skipped)]
    return "\n".join(lines) + "\n"


def _dtype(rows: List[dict]) -> torch.dtype:
    return getattr(torch, rows[0]["dtype"])


def write_plot(rows: List[dict], path: Path) -> None:
    """Median ms per step (min-max as error bars) per pipeline and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("stage") == "step"]
    names = list(dict.fromkeys(r["pipeline"] for r in ok))
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in ok)]
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(names) + 2), 4.5))
    for i, variant in enumerate(variants):
        got = {r["pipeline"]: r for r in ok if r["variant"] == variant}
        xs = [j + i * width for j, n in enumerate(names) if n in got]
        med = [got[n]["step_ms_median"] for n in names if n in got]
        err = [[got[n]["step_ms_median"] - got[n]["step_ms_min"] for n in names if n in got],
               [got[n]["step_ms_max"] - got[n]["step_ms_median"] for n in names if n in got]]
        ax.bar(xs, med, width, yerr=err, capsize=2, label=variant)
        for x, n in zip(xs, [n for n in names if n in got]):
            if got[n].get("speedup"):
                ax.annotate(f"{got[n]['speedup']['median']:.2f}x", (x, got[n]["step_ms_max"]), ha="center",
                            va="bottom", fontsize=7)
            elif not got[n].get("agree"):
                ax.annotate("disagrees", (x, got[n]["step_ms_max"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylabel("ms per denoising step (lower is better)")
    ax.set_title(header(rows), fontsize=6, wrap=True)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(rows: List[dict], out: Path, *, plot: bool = True, skipped: Sequence[str] = ()) -> Dict[str, Path]:
    """``<out>/pipelines.md`` and (with ``plot``) ``<out>/pipelines.png`` from the rows (the JSONL is appended as
    rows finish)."""
    paths = {"markdown": out / f"{STEM}.md"}
    if not rows:
        return paths
    paths["markdown"].write_text(to_markdown(rows, skipped))
    if plot and any(r.get("status") == "ok" and r.get("stage") == "step" for r in rows):
        paths["png"] = out / f"{STEM}.png"
        write_plot(rows, paths["png"])
    return paths


def load_rows(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- command line (``fastvid bench --diffusers ...``) --------------------------------------------------

def add_options(parser: argparse.ArgumentParser) -> None:
    """The ``--diffusers`` options of ``fastvid bench`` (the other options it shares with the default bench)."""
    g = parser.add_argument_group("diffusers pipelines (fastvid bench --diffusers NAMES)")
    g.add_argument("--diffusers", metavar="NAMES", default=None,
                   help=f"time real diffusers pipelines instead: comma-separated, or 'all': {', '.join(released.RELEASED)}"
                        " (--size gpu: the released configs; tiny or cpu: tiny ones)")
    g.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from {', '.join(VARIANTS)} (default: all but {FUSED_QKV}; diffusers "
                        "always runs first: the reference)")
    g.add_argument("--warmup-steps", type=int, default=1, help="untimed denoising steps per variant (default 1)")
    g.add_argument("--timed-steps", type=int, default=3, help="timed denoising steps per variant (default 3)")
    g.add_argument("--compile-mode", default="default", choices=sorted(PLAN_TORCH_COMPILE_S),
                   help="torch.compile mode of the compile variants (default 'default'; diffusers' docs: 'max-autotune')")
    g.add_argument("--plan-only", action="store_true", help="print the plan (estimated seconds) and exit")
    g.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="skip what would not fit in SECONDS (estimates scaled by the measured pace)")


def checked(args: argparse.Namespace) -> dict:
    """Every ``--diffusers`` argument checked (raises fastvid.cli.BadArgument)."""
    from .cli import BadArgument, check_device, check_diffusers, check_dtype, check_out, check_plot, check_positive

    names = check_diffusers(args.diffusers)
    asked = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in asked if v not in VARIANTS]
    if bad or not asked:
        raise BadArgument("--variants", f"{', '.join(map(repr, bad)) or repr(args.variants)} is not a variant; "
                                        f"expected a comma-separated list of: {', '.join(VARIANTS)}")
    variants = [v for v in VARIANTS if v == "diffusers" or v in asked]  # run order: eager first
    timed = check_positive("--timed-steps", args.timed_steps)
    warmup = args.warmup_steps
    if warmup < 0:
        raise BadArgument("--warmup-steps", f"is {warmup}; expected 0 or more")
    if args.budget is not None and args.budget <= 0:
        raise BadArgument("--budget", f"is {args.budget}; expected a positive number of seconds")
    if args.plan_only:  # the plan needs no device: --size gpu works anywhere
        device = torch.device("cuda" if (args.size or "gpu") == "gpu" else "cpu")
        dtype = torch.bfloat16
    else:
        device = check_device(args.device)
        dtype = torch.bfloat16 if args.dtype is None and device.type == "cuda" else check_dtype(args.dtype, device)
    size = SIZES[args.size or ("gpu" if device.type == "cuda" else "tiny")]
    settings = Settings(size=size, device=str(device), dtype=dtype, seed=args.seed, warmup=warmup, timed=timed,
                        backend=args.backend, compile_mode=args.compile_mode)
    out = None if args.plan_only else check_out(args.out)
    return dict(names=names, variants=variants, settings=settings, out=out,
                plot=not args.plan_only and check_plot(args.no_plot))


def main(args: argparse.Namespace) -> int:
    """Exit 0: every row that ran agrees with diffusers; 1: one does not or failed; EXIT_DEVICE_LOST: a failure
    left the CUDA context unusable, so the pipelines after it did not run (no rows)."""
    a = checked(args)
    s = a["settings"]
    log = lambda text: print(text, flush=True)  # noqa: E731
    log(format_plan(plan(a["names"], a["variants"], s, args.budget), s, args.budget))
    if args.plan_only:
        return 0
    try:
        rows = run(a["names"], a["variants"], s, a["out"], budget=args.budget, plot=a["plot"],
                   log=lambda text: print(text, file=sys.stderr, flush=True))
    except DeviceLost as exc:
        print(f"stopped: the CUDA context was lost ({exc}); the pipelines after it have no rows", flush=True)
        return EXIT_DEVICE_LOST
    print(to_markdown(rows) if rows else "no rows")
    print(f"wrote {a['out'] / (STEM + '.jsonl')}, {STEM}.md" + (f", {STEM}.png" if a["plot"] else ""))
    bad = [r for r in rows if r.get("status") == "error" or (r.get("status") == "ok" and r.get("agree") is False)]
    return 1 if bad else 0
