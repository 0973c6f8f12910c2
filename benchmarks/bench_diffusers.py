"""diffusers video models with random weights: diffusers' default (SDPA) vs ``fastvid.patch``, and
both under torch.compile where it compiles. UNet forward and a 25-step sampling loop (with
classifier-free guidance, batch 2), time and peak memory: DDIM, except for SVD, which runs the EDM
sampler of ``fastvid.models.svd`` (Karras sigmas, Euler, v preconditioning, per-frame guidance).

    python benchmarks/bench_diffusers.py                  # realistic configs on CUDA, tiny ones on CPU
    python benchmarks/bench_diffusers.py --models svd --no-compile --steps 10

Realistic cases: the released denoisers and sizes of ``fastvid.integrations.released`` (SVD-XT,
AnimateDiff, ModelScope T2V, I2VGenXL, Text2Video-Zero); tiny ones on CPU. The whole pipelines, with
their own loops, are timed by ``fastvid bench --diffusers`` (docs/pipelines.md). Each row's note gives the
fastvid output's max difference from diffusers' output on the same inputs. The sampling loop is
timed once after one warm-up run (it is seconds long), the UNet forward with the harness.
Rows go to benchmarks/results/diffusers.jsonl.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402
from fastvid.integrations import released  # noqa: E402

OP = "diffusers"
STEPS = 25


def build(name: str, device: str, dtype: torch.dtype, tiny: bool):
    """(model, inputs(latents, t) -> denoiser kwargs, latent shape, frames, loop(model, latents, steps)) for one
    pipeline of ``fastvid.integrations.released`` (its released configs and call inputs, or its tiny ones)."""
    size = "tiny" if tiny else "released"
    model = released.build_denoiser(name, size=size, device=device, dtype=dtype)
    kwargs = released.denoiser_inputs(name, model, size=size, device=device, dtype=dtype)
    frames = released.row(name).size(size).frames
    if name == "svd":  # the sampled latents are the noise channels; the image latents stay as they are
        noise = released.row(name).latent_channels
        image_latents = kwargs["sample"][:, :, noise:]

        def svd_inputs(x, t):
            return dict(kwargs, sample=torch.cat([x, image_latents], dim=2), timestep=t)

        def svd_loop(fn, latents, steps):
            return svd_sample(fn, latents[:1], image_latents[:1], kwargs["encoder_hidden_states"][1:],
                              kwargs["added_time_ids"][:1], steps)
        return model, svd_inputs, kwargs["sample"][:, :, :noise].shape, frames, svd_loop

    def inputs(x, t):
        return dict(kwargs, sample=x, timestep=t)

    def loop(fn, latents, steps):
        return sample(fn, inputs, latents, steps)
    return model, inputs, kwargs["sample"].shape, frames, loop


def sample(model, inputs, latents, steps=STEPS):
    """DDIM with classifier-free guidance: the batch holds the unconditional and conditional halves."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps, device=latents.device)
    for t in scheduler.timesteps:
        pred = model(**inputs(latents, t)).sample
        uncond, cond = pred.chunk(2)
        guided = uncond + 7.5 * (cond - uncond)
        latents = scheduler.step(torch.cat([guided, guided]), t, latents).prev_sample
    return latents


def svd_sample(unet, latents, image_latents, embedding, time_ids, steps=STEPS):
    """``fastvid.models.svd``'s EDM sampler driving a diffusers UNetSpatioTemporalConditionModel on
    (B, F, C, H, W) latents: the image latents concatenated to every frame, guidance 1 -> 3 over the frames."""
    from fastvid.models.svd import SIGMA_MAX, SIGMA_MIN, image_to_video_denoiser
    from fastvid.samplers import euler_sample, karras_sigmas

    def model(x, t, context, added_time_ids):  # fastvid's (B, C, F, H, W) convention <-> diffusers'
        return unet(sample=x.transpose(1, 2), timestep=t, encoder_hidden_states=context,
                    added_time_ids=added_time_ids).sample.transpose(1, 2)

    frames = latents.shape[1]
    guidance = torch.linspace(1.0, 3.0, frames, device=latents.device, dtype=latents.dtype).view(1, 1, frames, 1, 1)
    denoised = image_to_video_denoiser(model, image_latents.transpose(1, 2), embedding, time_ids, guidance)
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX)
    return euler_sample(denoised, latents.transpose(1, 2) * sigmas[0], sigmas).transpose(1, 2)


def providers(model, backend, compile_):
    """(name, callable model, prepare) where prepare() puts ``model`` into that provider's state."""
    def plain():
        fastvid.unpatch(model)

    def patched():
        fastvid.unpatch(model)
        report = fastvid.patch(model, backend=backend)
        print(f"# {type(model).__name__}: {report.counts()} swapped, {len(report.skipped)} skipped")

    yield "diffusers", model, plain
    yield "fastvid", model, patched
    if compile_:
        yield "diffusers+compile", torch.compile(model), plain
        yield "fastvid+compile", torch.compile(model), patched


def _cuda_ms(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def run_case(name, args, device, dtype, env, ceilings):
    model, inputs, shape, frames, sampling_loop = build(name, device, dtype, tiny=device != "cuda")
    g = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(shape, generator=g, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)
    shape_d = dict(model=name, frames=frames, latent_h=shape[-2], latent_w=shape[-1], batch=2)
    rows, reference = [], {}
    for provider, fn, prepare in providers(model, args.backend, args.compile):
        prepare()
        if provider.endswith("compile"):
            torch._dynamo.reset()
        loop = lambda: sampling_loop(fn, latents, args.steps)  # noqa: E731
        try:
            with torch.no_grad():
                outputs = {"unet": fn(**inputs(latents, t)).sample, f"sampling_{args.steps}": loop()}
        except Exception as exc:  # e.g. a model torch.compile cannot compile
            for mode in ("unet", f"sampling_{args.steps}"):
                rows.append(harness.missing(op=f"{OP}_{mode}", shape=shape_d, dtype=dtype, mode="fwd",
                                            provider=provider, reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                                            env=env))
            continue
        notes = {}
        for mode, out in outputs.items():
            gold = reference.setdefault(mode, out).float()
            diff = (out.float() - gold).abs().max().item() / max(gold.abs().max().item(), 1e-6)
            notes[mode] = f"max|out - diffusers| / max|diffusers| = {diff:.2e}"
        workload = harness.Workload(provider, lambda x, tt: fn(**inputs(x, tt)).sample, note=notes["unet"])
        rows.append(harness.bench(op=f"{OP}_unet", shape=shape_d, dtype=dtype, mode="fwd", workload=workload,
                                  input_sets=[(latents, t)], device=device, env=env, ceilings=ceilings))
        with torch.no_grad():  # the loop is seconds long: timed once, after the warm-up run above
            ms = harness.time_ms(loop, device, warmup=0, rep=1) if device != "cuda" else _cuda_ms(loop)
            peak = harness.peak_memory_bytes(loop, device)
        rows.append(dict(env, op=f"{OP}_sampling_{args.steps}", shape=shape_d, dtype=str(dtype).replace("torch.", ""),
                         mode="loop", provider=provider, note=notes[f"sampling_{args.steps}"], status="ok", ms=ms,
                         peak_mem_mb=None if peak is None else peak / 2**20))
    fastvid.unpatch(model)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv=None):
    parser = harness.parser(__doc__, modes=None, no_compile=None)
    parser.add_argument("--models", default=",".join(released.RELEASED))
    parser.add_argument("--backend", default="auto", help="fastvid backend for the patched model")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd models (default: on CUDA only)")
    args = harness.parse(parser, argv)
    device, dtype = args.device, args.dtype
    args.compile = device == "cuda" if args.compile is None else args.compile
    env = harness.environment(device)
    ceilings = harness.measure_ceilings(device)
    harness.announce(OP, env, ceilings, what=" on tiny configs")
    rows = []
    for name in args.models.split(","):
        rows += run_case(name, args, device, dtype, env, ceilings)
    harness.finish(OP, rows, args.out)


if __name__ == "__main__":
    main()
