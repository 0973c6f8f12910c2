"""What torch Inductor generates for one call of each released pipeline's denoiser, diffusers as it is and
``fastvid.patch``-ed: the kernels it writes and runs, the library calls it makes (convolutions, matmuls,
attention, fastvid's ops), and how many of fastvid's video-op inputs arrive in a convolution's channels-last
layout (read in place) rather than copied back to the strides seen while tracing.

    TRITON_INTERPRET=1 python benchmarks/inductor_code.py                   # CPU: tiny denoisers, fp32
    python benchmarks/inductor_code.py --size released --pipelines modelscope   # CUDA: released sizes, bf16

On CPU Inductor writes C++ kernels and fastvid runs its Triton kernels in the interpreter (the backend forced to
"triton", so the graph holds the same ops as on a GPU); compiling a tiny denoiser takes a minute or two. The
counts are of the code, not a time. Layout optimisation (channels-last convolutions) is forced on so that the
CPU and the GPU compile the same way (on a GPU Inductor turns it on by itself for a U-Net's inference graph).
"""
import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastvid  # noqa: E402

KERNEL = re.compile(r"^\s+(cpp_fused_\w+\(|triton_\w+\.run\()")  # a generated kernel's launch in call()
EXTERN = re.compile(r"(extern_kernels\.\w+|torch\.ops\.\w+\.\w+)[.\w]*\(")  # a library call
VIDEO_OPS = ("group_norm_silu_fwd", "temporal_conv_fwd", "alpha_blend_fwd")


def _call_body(code: str) -> List[str]:
    """The lines of the generated module's ``call`` (what one call runs)."""
    lines = code.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("def call(self, args)")
                 or line.strip().startswith("def call(args)"))
    return lines[start + 1:]


def count(code: str) -> Dict[str, int]:
    body = _call_body(code)
    kernels = sum(1 for line in body if KERNEL.match(line))
    externs: Dict[str, int] = {}
    for line in body:
        if line.lstrip().startswith("#"):
            continue
        for name in EXTERN.findall(line):
            externs[name] = externs.get(name, 0) + 1
    return {"kernels": kernels, "library calls": sum(externs.values()),
            "fastvid calls": sum(n for name, n in externs.items() if name.startswith("torch.ops.fastvid"))}


def channels_last_inputs(model, kwargs) -> Dict[str, int]:
    """fastvid video-op calls of one compiled call, and how many took x with channels innermost (stride 1 on C)."""
    from fastvid.ops._library import TRITON_OPS

    seen = {"video-op calls": 0, "channels-last x": 0}
    originals = {}
    for name in VIDEO_OPS:
        op = TRITON_OPS[f"fastvid::{name}"]
        originals[name] = op.planned

        def recording(*args, _planned=op.planned):
            seen["video-op calls"] += 1
            seen["channels-last x"] += int(args[0].dim() == 5 and args[0].stride(1) == 1 and args[0].shape[1] > 1)
            return _planned(*args)

        op.planned = recording
    try:
        model(**kwargs)
    finally:
        for name, planned in originals.items():
            TRITON_OPS[f"fastvid::{name}"].planned = planned
    return seen


def main(argv=None) -> None:
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code

    from fastvid.integrations import released

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default="all", help="comma-separated released pipelines, or 'all'")
    parser.add_argument("--size", default="tiny", choices=("tiny", "released"))
    parser.add_argument("--variants", default="compile,fastvid+compile", help="comma-separated, of the two")
    args = parser.parse_args(argv)
    names = list(released.RELEASED) if args.pipelines == "all" else args.pipelines.split(",")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    print("| pipeline | variant | generated kernels per call | library calls | of them fastvid | fastvid video ops "
          "given channels-last x | max abs diff vs eager |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        with torch.no_grad(), inductor_config.patch(force_layout_optimization=True):
            model = released.build_denoiser(name, size=args.size, device=device, dtype=dtype).eval()
            kwargs = released.denoiser_inputs(name, model, size=args.size, device=device, dtype=dtype)
            patched = copy.deepcopy(model)
            fastvid.patch(patched, backend="triton")
            for variant, denoiser in (("compile", model), ("fastvid+compile", patched)):
                if variant not in args.variants.split(","):
                    continue
                eager = denoiser(**kwargs).sample
                torch._dynamo.reset()
                compiled = torch.compile(denoiser, fullgraph=True)
                out, codes = run_and_get_code(lambda: compiled(**kwargs).sample)
                counts = [count(code) for code in codes]  # one module per graph
                counts = {key: sum(c[key] for c in counts) for key in counts[0]}
                layouts = channels_last_inputs(compiled, kwargs) if variant != "compile" else None
                given = f"{layouts['channels-last x']} of {layouts['video-op calls']}" if layouts else "-"
                print(f"| {name} | {variant} | {counts['kernels']} | {counts['library calls']} | "
                      f"{counts['fastvid calls']} | {given} | {(out - eager).abs().max().item():.2e} |", flush=True)
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
