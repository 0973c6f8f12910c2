"""Compiles Triton kernels for an NVIDIA target without a GPU (run in a subprocess, without
TRITON_INTERPRET): catches what the interpreter lets through (typing of loop-carried values,
constexpr branches, dot operand layouts) on machines that have no GPU.

    python tests/aot_compile.py fastvid.kernels.temporal_conv '<json list of kernel specs>'

Each spec: {"kernel": name, "pointers": {arg: "bf16" | "fp32" ...}, "constexprs": {arg: value},
"floats": [arg, ...], "num_warps": n, "unit_axis": "p" | "c"}. Arguments not named are int32 scalars, marked divisible
by 16 like the JIT's own specialisation of aligned sizes; pointers are 16-byte aligned.
Prints one line per kernel: name, shared memory bytes.
"""
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parent.parent


def compile_kernel(fn, pointers, constexprs, floats=(), num_warps=4, unit_axis="", capability=90):
    """``unit_axis`` (e.g. "p" or "c"): every ``stride_<tensor><axis>`` argument is 1, as the JIT
    specialises the unit stride of a layout (pixels for contiguous, channels for channels_last_3d)."""
    names = fn.arg_names
    constexprs = dict(constexprs)
    if unit_axis:
        constexprs.update({n: 1 for n in names if re.fullmatch(f"stride_[a-z]{unit_axis}", n)})
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + pointers[name]
        else:
            signature[name] = "fp32" if name in floats else "i32"
    aligned = [n for n in names if signature[n] not in ("constexpr", "fp32")]
    return compile_signature(fn, signature, constexprs, aligned, num_warps, 3, capability)


def compile_signature(fn, signature, constexprs, aligned, num_warps=4, num_stages=3, capability=90):
    """Compiles ``fn`` for sm_<capability>: ``signature`` maps every argument to a Triton type or
    "constexpr"; ``aligned`` names the arguments marked divisible by 16."""
    names = fn.arg_names
    source = ASTSource(fn, signature, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                       attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def run_in_subprocess(module_name, specs):
    """Compiles ``specs`` in a fresh interpreter without TRITON_INTERPRET; returns its output lines."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, __file__, module_name, json.dumps(specs)], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.splitlines()


def main(module_name, specs_json):
    module = importlib.import_module(module_name)
    for spec in json.loads(specs_json):
        kernel = compile_kernel(getattr(module, spec["kernel"]), spec["pointers"], spec["constexprs"],
                                spec.get("floats", ()), spec.get("num_warps", 4), spec.get("unit_axis", ""))
        print(spec["kernel"], kernel.metadata.shared)


if __name__ == "__main__":
    main(*sys.argv[1:])
