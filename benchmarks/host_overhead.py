"""What one fastvid op call costs the host, next to what allocating its outputs costs.

    TRITON_INTERPRET=1 python benchmarks/host_overhead.py            # CPU: launches stubbed
    python benchmarks/host_overhead.py --out "$OUT"                   # CUDA: real host time vs device time

On CPU (``TRITON_INTERPRET=1``, every Triton kernel object's launch replaced by a no-op, fp16
inputs) it times, for every op of ``fastvid.registry.OPS`` on its example inputs, the forward (the
public function, backend "triton", no grad) and the backward (the op's backward entry on the
arguments its autograd formula passes it) against ``torch.empty_strided`` of the same outputs: the
ratio says how many output allocations fastvid's own Python costs per call. That is the host cost a
repeated call pays besides the launches themselves.

On CUDA (bf16) it queues CALLS calls without synchronising (host us per call) and reads the
kernels' device time per call from torch.profiler, for every op beside its eager peer on the same
inputs (SDPA, eager GroupNorm + SiLU, cuDNN's (3, 1, 1) conv3d, ...), then fastvid's forward through the
fixed-argument launcher against the same calls through ``kernel.run`` (Triton's own launch cost). A call
whose host us exceeds its device us is bound by the host. Writes host_overhead.md to --out.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402
from fastvid.testing import stubbed_launches  # noqa: E402

CALLS = 200  # calls per timing repeat
REPEATS = 15  # the fastest of these repeats is reported (the least disturbed by other processes)
N_CPU = 64  # tokens per frame (attention), the video's height (the others): the example inputs' size
DENOISER_CALLS, DENOISER_REPEATS = 5, 5  # a tiny denoiser call takes tens of ms on CPU


def _side_by_side_us(*fns: Callable[[], object], calls: int = CALLS, repeats: int = REPEATS) -> List[float]:
    """us per call of each of ``fns``: repeats interleaved (a, b, a, b ...) so that both see the same
    machine load, the fastest repeat of each kept."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / calls * 1e6)
    return best


def _outputs(result) -> List[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for t in result if isinstance(t, torch.Tensor)]


def _allocator(result) -> Callable[[], None]:
    """Allocates tensors of the same sizes, strides and dtypes as ``result``'s."""
    specs = [(tuple(t.shape), t.stride(), t.dtype, t.device) for t in _outputs(result)]

    def allocate():
        for shape, stride, dtype, device in specs:
            torch.empty_strided(shape, stride, dtype=dtype, device=device)
    return allocate


def _backward_call(spec, inputs: Dict[str, torch.Tensor]) -> Optional[Callable[[], object]]:
    """The op's backward entry (``_bwd_op``) called on the arguments its autograd formula passes it, recorded
    from one backward of the public function (every floating input requiring a gradient); None for an op
    without one."""
    module = spec.module
    bwd = getattr(module, "_bwd_op", None)
    if bwd is None:
        return None
    seen = []

    def record(*args):
        seen.append(args)
        return bwd(*args)

    leaves = {name: t.detach().requires_grad_(t.is_floating_point()) for name, t in inputs.items()}
    module._bwd_op = record
    try:
        outs = _outputs(spec.function(**leaves, **spec.examples.kwargs, backend="triton"))
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    finally:
        module._bwd_op = bwd
    args = seen[0]
    return lambda: bwd(*args)


def cpu_cases(dtype=torch.float16) -> Dict[str, Tuple[Callable, Optional[Callable]]]:
    """op -> (forward call, backward call or None): every op of ``fastvid.registry.OPS`` on its Triton path,
    on the op's example inputs (``examples.make(1, N_CPU)``), and GroupNorm+SiLU as a spatial ResNet calls it
    (16 frames, 4 groups of 10 channels, its time embedding added: the one-launch forward)."""
    from fastvid.registry import OPS

    cases = {}
    for name, spec in OPS.items():
        inputs = spec.examples.make(1, N_CPU, device="cpu", dtype=dtype)
        kwargs = dict(spec.examples.kwargs, backend="triton")
        with torch.enable_grad():
            backward = _backward_call(spec, inputs)
        cases[name] = (lambda fn=spec.function, inputs=inputs, kwargs=kwargs: fn(**inputs, **kwargs), backward)
    # what a video U-Net calls most: a spatial ResNet's norm, on (B*F, C, H, W) frames with its time embedding
    frames, temb, w = (torch.randn(*shape, dtype=dtype) for shape in ((16, 40, 8, 8), (16, 40), (40,)))
    cases["group_norm_silu, frames + add"] = (
        lambda: fastvid.group_norm_silu(frames, 4, w, w, add=temb, backend="triton"), None)
    return cases


def _library_args(spec, inputs: Dict[str, torch.Tensor], kwargs) -> tuple:
    """The arguments the public call passes the op's forward torch.library op, recorded from a first call of
    the signature with every floating input requiring a gradient (where the op plans), detached."""
    op, seen = spec.module._fwd_op, []
    plan = op.plan
    op.plan = lambda *args: (seen.append(args), plan(*args))[1]
    spec.dispatcher.calls.clear()
    op.plans.clear()
    leaves = {name: t.detach().requires_grad_(t.is_floating_point()) for name, t in inputs.items()}
    try:
        with torch.enable_grad():
            spec.function(**leaves, **kwargs)
    finally:
        op.plan = plan
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in seen[0])


def custom_op_table() -> List[str]:
    """The forward library op called as torch.ops.fastvid.<op>_fwd (torch.library's dispatch) and through
    fastvid's eager path (``TritonOp.__call__``: the implementation with the plan bound), same arguments."""
    from fastvid.registry import OPS

    lines = ["| op | torch.ops.fastvid us | eager path us | ratio |", "|---|---|---|---|"]
    with stubbed_launches(), torch.no_grad():
        for name, spec in OPS.items():
            inputs = spec.examples.make(1, N_CPU, device="cpu", dtype=torch.float16)
            op = spec.module._fwd_op
            args = _library_args(spec, inputs, dict(spec.examples.kwargs, backend="triton"))
            library, eager = _side_by_side_us(lambda: op.op(*args), lambda: op(*args))
            lines.append(f"| {name} | {library:.1f} | {eager:.1f} | {library / eager:.1f} |")
            print(lines[-1], flush=True)
    return lines


def cpu_table() -> List[str]:
    lines = ["| op | pass | fastvid us | allocation us | ratio |", "|---|---|---|---|---|"]
    with stubbed_launches():
        cases = cpu_cases()
        with torch.no_grad():
            for op, calls in cases.items():
                for mode, fn in zip(("forward", "backward"), calls):
                    if fn is None:
                        continue
                    alloc = _allocator(fn())
                    ours, base = _side_by_side_us(fn, alloc)
                    lines.append(f"| {op} | {mode} | {ours:.1f} | {base:.1f} | {ours / base:.1f} |")
                    print(lines[-1], flush=True)
    return lines


def denoiser_table() -> List[str]:
    """One call of each released pipeline's tiny denoiser (``fastvid.integrations.released``, fp32, no grad),
    diffusers as it is next to a ``fastvid.patch``-ed copy on the same inputs. On CPU fastvid runs its torch
    backends, so the difference is fastvid's own Python around the ops (module forwards, the per-call checks
    of hooks on fused submodules, dispatch) plus the ops it runs differently; not GPU time."""
    try:
        from fastvid.integrations import released
    except ImportError:
        return ["(diffusers is not installed: no denoiser table)"]
    lines = ["| pipeline (tiny denoiser) | diffusers ms per call | fastvid.patch ms per call | ratio |",
             "|---|---|---|---|"]
    with torch.no_grad():
        for name in released.RELEASED:
            model = released.build_denoiser(name, size="tiny", device="cpu", dtype=torch.float32)
            kwargs = released.denoiser_inputs(name, model, size="tiny", device="cpu", dtype=torch.float32)
            patched = copy.deepcopy(model)
            fastvid.patch(patched)
            plain, fast = _side_by_side_us(lambda: model(**kwargs), lambda: patched(**kwargs),
                                           calls=DENOISER_CALLS, repeats=DENOISER_REPEATS)
            lines.append(f"| {name} | {plain / 1e3:.2f} | {fast / 1e3:.2f} | {fast / plain:.2f} |")
            print(lines[-1], flush=True)
    return lines


# ---- CUDA: real host time per call next to device time, fastvid and its peers -------------------

def _gpu_cases(dtype):
    """Every op at one ModelScope layer (2 x 16 frames of 32x32 latents, C 320), fastvid beside its eager peer."""
    device = "cuda"
    B, F, N, H, D = 2, 16, 1024, 5, 64  # C 320 as 5 heads x 64
    C = H * D
    q, k, v = (torch.randn(B, F, N, H, D, dtype=dtype, device=device) for _ in range(3))
    bias = torch.randn(H, F, F, dtype=dtype, device=device)
    qs, ks, vs = (t.permute(0, 2, 3, 1, 4).reshape(B * N, H, F, D).contiguous() for t in (q, k, v))
    x = torch.randn(B, C, F, 32, 32, dtype=dtype, device=device)
    w = torch.randn(C, C, 3, dtype=dtype, device=device) / 31
    cb, gw, gb = (torch.randn(C, dtype=dtype, device=device) for _ in range(3))
    w5 = w[:, :, :, None, None].contiguous()
    tokens, residual = (torch.randn(B * F, N, C, dtype=dtype, device=device) for _ in range(2))
    proj = torch.randn(B * F, N, 8 * C, dtype=dtype, device=device)
    w_geglu = torch.randn(8 * C, C, dtype=dtype, device=device) / C ** 0.5
    b_geglu = torch.randn(8 * C, dtype=dtype, device=device)
    w_out = torch.randn(C, 4 * C, dtype=dtype, device=device) / (4 * C) ** 0.5
    hidden = torch.randn(B * F, N, 4 * C, dtype=dtype, device=device)
    alpha = torch.rand(B, 1, F, 1, 1, dtype=dtype, device=device)
    x_temporal = torch.randn_like(x)
    mix, images = torch.randn(1, dtype=dtype, device=device), torch.zeros(B, F, dtype=dtype, device=device)
    frames = torch.randn(B * F, C, 32, 32, dtype=dtype, device=device)  # (B*F, C, H, W), as spatial ResNets hold them
    temb = torch.randn(B * F, C, dtype=dtype, device=device)

    def eager_geglu(p):
        a, gate = p.chunk(2, dim=-1)
        return a * Fn.gelu(gate)

    return {
        "temporal_attention": {
            "fastvid": lambda: fastvid.temporal_attention(q, k, v, bias=bias),
            "sdpa": lambda: Fn.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias)},
        "frame_attention first": {  # no peer reads frame 0's keys in place
            "fastvid": lambda: fastvid.frame_attention(q, k, v, frames="first", backend="triton")},
        "temporal_conv": {
            "fastvid": lambda: fastvid.temporal_conv(x, w, cb),
            "cudnn conv3d": lambda: Fn.conv3d(x, w5, cb, padding=(1, 0, 0))},
        "group_norm_silu": {
            "fastvid": lambda: fastvid.group_norm_silu(x, 32, gw, gb),
            "eager": lambda: Fn.silu(Fn.group_norm(x, 32, gw, gb, 1e-5))},
        "group_norm_silu, frames + add": {  # a spatial ResNet's second norm: the one-launch forward
            "fastvid": lambda: fastvid.group_norm_silu(frames, 32, gw, gb, add=temb),
            "eager": lambda: Fn.silu(Fn.group_norm(frames + temb[:, :, None, None], 32, gw, gb, 1e-5))},
        "add_layer_norm": {
            "fastvid": lambda: fastvid.add_layer_norm(tokens, residual, gw, gb),
            "eager": lambda: Fn.layer_norm(tokens + residual, (C,), gw, gb)},
        "alpha_blend": {
            "fastvid": lambda: fastvid.alpha_blend(x, x_temporal, alpha),
            "eager": lambda: alpha * x + (1 - alpha) * x_temporal},
        "learned_alpha_blend": {  # diffusers' AlphaBlender ("learned_with_images"): get_alpha, then the mix
            "fastvid": lambda: fastvid.learned_alpha_blend(x, x_temporal, mix, images),
            "eager": lambda: fastvid.reference.alpha_blend(
                x, x_temporal, fastvid.reference.blender_alpha(mix, images, 5, "learned_with_images", dtype))},
        "geglu": {
            "fastvid": lambda: fastvid.geglu(proj),
            "eager": lambda: eager_geglu(proj)},
        "geglu_linear": {
            "fastvid": lambda: fastvid.geglu_linear(tokens, w_geglu, b_geglu),
            "eager": lambda: eager_geglu(Fn.linear(tokens, w_geglu, b_geglu))},
        "linear": {
            "fastvid": lambda: fastvid.linear(hidden, w_out, cb, residual=residual),
            "eager": lambda: Fn.linear(hidden, w_out, cb) + residual},
    }


def _host_and_device_us(fn: Callable[[], object]) -> Tuple[float, float]:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    calls = 100
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    device = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()
                 if e.device_type != torch.autograd.DeviceType.CPU)
    return host, device / 10


def gpu_table(dtype=torch.bfloat16) -> List[str]:
    lines = ["| op | provider | host us per call (queued, no sync) | device us per call | host / device |",
             "|---|---|---|---|---|"]
    with torch.no_grad():
        for op, providers in _gpu_cases(dtype).items():
            for provider, fn in providers.items():
                host, dev = _host_and_device_us(fn)
                lines.append(f"| {op} | {provider} | {host:.1f} | {dev:.1f} | {host / max(dev, 1e-9):.2f} |")
                print(lines[-1], flush=True)
    return lines


def launches_of(fn: Callable[[], object]) -> list:
    """The ``_launch.Launch`` objects one call of ``fn`` runs (the plans' launches, whichever cache holds them)."""
    from fastvid.ops._launch import Launch

    seen, call = [], Launch.__call__

    def recording(launch, *tensors):
        seen.append(launch)
        return call(launch, *tensors)

    Launch.__call__ = recording
    try:
        fn()
    finally:
        Launch.__call__ = call
    return list(dict.fromkeys(seen))


def launch_path_table(dtype=torch.bfloat16) -> List[str]:
    """fastvid's forward host time per call through the fixed-argument launcher (the compiled kernel's own
    launcher, as torch Inductor calls it) against the same calls through ``kernel.run`` (what ``kernel[grid]``
    runs: binder, specialisation key, cache lookup) on the same plans: Triton's own launch cost."""
    lines = ["| op | fixed-argument launch: host us per call | kernel.run: host us per call | ratio |",
             "|---|---|---|---|"]
    with torch.no_grad():
        for case, providers in _gpu_cases(dtype).items():
            fn = providers["fastvid"]
            fn()
            launches = launches_of(fn)
            fixed, _ = _host_and_device_us(fn)
            saved = [(launch.fixed, launch.tried) for launch in launches]
            for launch in launches:
                launch.fixed, launch.tried = None, True
            try:
                through_run, _ = _host_and_device_us(fn)
            finally:
                for launch, (f, tried) in zip(launches, saved):
                    launch.fixed, launch.tried = f, tried
            lines.append(f"| {case} | {fixed:.1f} | {through_run:.1f} | {through_run / max(fixed, 1e-9):.2f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="folder for host_overhead.md (default: print only)")
    args = p.parse_args(argv)
    if torch.cuda.is_available():
        title = f"# Host cost per call on {torch.cuda.get_device_name()} (bf16, no grad)"
        lines = gpu_table() + ["", "Triton's launch: fastvid's forward through each path, same plans", ""]
        lines += launch_path_table()
    else:
        from fastvid.ops._launch import interpreting

        if not interpreting():
            raise SystemExit("on CPU run with TRITON_INTERPRET=1 (the launches are stubbed)")
        title = "# Host cost per call on CPU, launches stubbed (TRITON_INTERPRET=1, fp16)"
        lines = cpu_table() + ["", "Forward library op: torch.library's dispatch vs fastvid's eager path", ""]
        lines += custom_op_table()
        lines += ["", "A whole denoiser call on CPU (fastvid's torch backends; not GPU time)", ""]
        lines += denoiser_table()
    from fastvid.timing import environment

    env = environment("cuda" if torch.cuda.is_available() else "cpu")
    header = [title, "", f"{env['device_name']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda'] or '-'}; "
              f"fastvid {env['fastvid']} at {env['commit']}; {env['date']}; `python benchmarks/host_overhead.py`", ""]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "host_overhead.md").write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
