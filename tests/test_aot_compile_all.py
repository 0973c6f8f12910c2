"""Every fastvid Triton kernel compiles for sm_90 (no GPU needed) with the launch configs its
launcher chooses at the benchmark shapes, in bf16 (benchmarks/kernel_resources.py captures the
launches; autotuned kernels give every config of their list). The interpreter runs none of the
compiler passes that break on a GPU; this does."""
import json
import os
import subprocess
import sys
from pathlib import Path

from fastvid.registry import OPS

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import json, sys
sys.path.insert(0, "benchmarks")
from benchmarks import kernel_resources as kr
launches = kr.capture(quick=True)
launches += kr.capture(["temporal_attention"])
# past 16 frames (no benchmark shape has them): the backward's key-block kernel
launches += kr.capture(["temporal_attention"], table={"temporal_attention": (kr.SWEEP["temporal_attention"][0],
                                                                             {"F24-d72": (2, 24, 1024, 8, 72)})})
out = []
for launch, code in kr.compile_all(launches):
    out.append(dict(kernel=launch.name, module=launch.kernel.__module__, config=launch.config(), cases=launch.cases,
                    regs=code.regs, spills=code.spills, shared=code.shared))
print(json.dumps(out))
"""


def _compile_all():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


def _kernel_names():
    """Every launchable kernel (``*_kernel``) of every registered op's kernel file, read from the source."""
    names = set()
    for op in OPS:
        for line in (ROOT / "kernels" / f"{op}.py").read_text().splitlines():
            if line.startswith("def ") and line.split("(")[0].endswith("_kernel"):
                names.add(line[4:].split("(")[0])
    return names


def test_every_kernel_compiles_for_sm90_with_its_launch_configs():
    rows = _compile_all()
    compiled = {row["kernel"] for row in rows}
    assert _kernel_names() <= compiled, f"never launched by a launcher: {_kernel_names() - compiled}"
    assert all(row["regs"] > 0 and row["shared"] >= 0 for row in rows)
    # The temporal attention tile heuristic keeps its register tiles spill-free at the benchmark shapes
    # (spills read from the real cubin: local-memory instructions, whatever the Triton version's ptxas options).
    spilling = [r for r in rows if r["kernel"].startswith("temporal_attention") and r["spills"]]
    assert not spilling, spilling
