"""diffusers video models with random weights: diffusers' default (SDPA) vs ``fastvid.patch``, and
both under torch.compile where it compiles. UNet forward and a 25-step sampling loop (with
classifier-free guidance, batch 2), time and peak memory: DDIM, except for SVD, which runs the EDM
sampler of ``fastvid.models.svd`` (Karras sigmas, Euler, v preconditioning, per-frame guidance).

    python benchmarks/bench_diffusers.py                  # realistic configs on CUDA, tiny ones on CPU
    python benchmarks/bench_diffusers.py --models svd --no-compile --steps 10

Realistic cases (diffusers' default configs are the released ones): ModelScope T2V
(UNet3DConditionModel) 16 frames at 256x256 (latents 32x32); SVD (UNetSpatioTemporalConditionModel)
14 frames at 576x1024 (latents 72x128); Text2Video-Zero (an SD 1.5 UNet2DConditionModel with
CrossFrameAttnProcessor2_0) 8 frames at 512x512 (latents 64x64). Each row's note gives the
fastvid output's max difference from diffusers' output on the same inputs. The sampling loop is
timed once after one warm-up run (it is seconds long), the UNet forward with the harness.
Rows go to benchmarks/results/diffusers.jsonl.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from benchmarks import harness  # noqa: E402

OP = "diffusers"
STEPS = 25


def _text2video_zero_processor():
    from diffusers.pipelines import TextToVideoZeroPipeline

    return importlib.import_module(TextToVideoZeroPipeline.__module__).CrossFrameAttnProcessor2_0(batch_size=2)


def build(name: str, device: str, dtype: torch.dtype, tiny: bool):
    """(model, inputs(latents, t) -> UNet kwargs, latent shape, frames, loop(model, latents, steps)) for one case."""
    from diffusers import UNet2DConditionModel, UNet3DConditionModel, UNetSpatioTemporalConditionModel

    small = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=8)
    frames, hw = {"modelscope": (16, (32, 32)), "svd": (14, (72, 128)), "t2v_zero": (8, (64, 64))}[name]
    if tiny:
        frames, hw = 4, (8, 12)
    with torch.device(device):
        if name == "modelscope":
            kw = dict(small, cross_attention_dim=32, attention_head_dim=8,
                      down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                      up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")) if tiny else {}
            model, ctx = UNet3DConditionModel(**kw), kw.get("cross_attention_dim", 1024)
            shape = (2, 4, frames) + hw

            def inputs(x, t):
                return dict(sample=x, timestep=t, encoder_hidden_states=cond)
        elif name == "svd":
            kw = dict(small, cross_attention_dim=32, num_attention_heads=(2, 4), addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=24,
                      down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                      up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal")) if tiny else {}
            model, ctx = UNetSpatioTemporalConditionModel(**kw), kw.get("cross_attention_dim", 1024)
            shape = (2, frames, 4) + hw
            image_latents = torch.randn((2, frames, 4) + hw)
            time_ids = torch.tensor([[6.0, 127.0, 0.02]] * 2)

            def inputs(x, t):
                return dict(sample=torch.cat([x, image_latents.to(x.dtype)], dim=2), timestep=t,
                            encoder_hidden_states=cond[:, :1], added_time_ids=time_ids.to(x.dtype))

            def svd_loop(fn, latents, steps):
                return svd_sample(fn, latents[:1], image_latents[:1].to(latents.dtype), cond[1:, :1],
                                  time_ids[:1].to(latents.dtype), steps)
        else:
            kw = dict(small, cross_attention_dim=32, attention_head_dim=8,
                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")) if tiny else dict(cross_attention_dim=768)
            model, ctx = UNet2DConditionModel(**kw), kw["cross_attention_dim"]
            model.set_attn_processor(_text2video_zero_processor())
            shape = (2 * frames, 4) + hw
            prompt = torch.randn(2, 77, ctx)

            def inputs(x, t):
                return dict(sample=x, timestep=t, encoder_hidden_states=prompt.repeat_interleave(frames, 0).to(x.dtype))
        cond = torch.randn(2, 77, ctx)
    model = model.to(dtype).eval()
    cond = cond.to(dtype)
    if name == "svd":
        return model, inputs, shape, frames, svd_loop

    def loop(fn, latents, steps):
        return sample(fn, inputs, latents, steps)
    return model, inputs, shape, frames, loop


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
    parser.add_argument("--models", default="modelscope,svd,t2v_zero")
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
