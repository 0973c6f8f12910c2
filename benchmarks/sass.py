"""sm_90a machine code (SASS) of a compiled Triton kernel, read without a GPU: the ``nvdisasm`` and
``cuobjdump`` that ship with Triton disassemble the cubin Triton produced (the real one, with the
compiler options of the Triton version in use).

- ``resources(cubin)``: registers, stack frame, shared and local memory (cuobjdump's resource usage).
- ``disassemble(cubin)``: the instructions, with their addresses and branch targets.
- ``loops(instructions)``: every loop (a branch back to an earlier address), innermost ones marked.
- ``LoopStats``: instruction count and mix of a stretch of code; tensor-core instructions
  (HMMA, HGMMA), global loads and stores by width, cp.async (LDGSTS), TMA (UTMA*, UBLKCP), shared
  memory, barriers, shuffles, special functions; spills are local-memory instructions (LDL/STL).
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

# Opcode (before the first ".") -> category of the instruction mix.
CATEGORIES = {
    "tensor core": ("HMMA", "HGMMA", "IMMA", "IGMMA", "QGMMA", "BGMMA", "DMMA"),
    "global load": ("LDG",),
    "global store": ("STG", "RED", "ATOM", "ATOMG", "REDG"),
    "cp.async": ("LDGSTS", "LDGDEPBAR"),
    "tma": ("UTMALDG", "UTMASTG", "UTMAPF", "UTMACCTL", "UBLKCP", "UBLKRED"),
    "shared": ("LDS", "LDSM", "STS", "STSM", "ATOMS"),
    "local (spill)": ("LDL", "STL"),
    "barrier/sync": ("BAR", "SYNCS", "DEPBAR", "WARPSYNC", "MEMBAR", "WARPGROUP", "ARRIVES", "ERRBAR"),
    "shuffle": ("SHFL",),
    "special function": ("MUFU",),
    "fp32": ("FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "FSETP", "FSET", "FCHK", "FRND", "FSWZADD"),
    "fp16x2": ("HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSETP2", "HSET2"),
    "convert": ("F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP"),
    "integer/address": ("IMAD", "IADD3", "IADD", "LOP3", "SHF", "LEA", "ISETP", "IMNMX", "SEL", "IABS", "LOP",
                        "SHL", "SHR", "IMUL", "FLO", "POPC", "BMSK", "PRMT", "VIADD", "VIMNMX", "PLOP3", "P2R", "R2P",
                        "UIMAD", "UIADD3", "ULOP3", "USHF", "ULEA", "UISETP", "USEL", "UPRMT", "UPLOP3"),
    "move/constant": ("MOV", "LDC", "ULDC", "S2R", "S2UR", "CS2R", "R2UR", "MOVM", "UMOV"),
    "control": ("BRA", "BRX", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "YIELD", "NOP", "BPT", "JMP"),
}
_CATEGORY = {op: name for name, ops in CATEGORIES.items() for op in ops}
TENSOR_CORE = CATEGORIES["tensor core"]

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:(@!?U?P[T0-9]+)\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass
class Instruction:
    address: int
    opcode: str  # with its modifiers, e.g. "LDG.E.128"
    predicate: str
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def width(self) -> int:
        """Bits per thread of a memory instruction (32 unless a modifier says otherwise)."""
        for token in self.opcode.split(".")[1:]:
            if token in ("U8", "S8"):
                return 8
            if token in ("U16", "S16"):
                return 16
            if token in ("64", "128"):
                return int(token)
        return 32


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _run(tool: str, cubin: bytes, *args: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([_tool(tool), *args, str(path)], capture_output=True, text=True, check=True).stdout


def resources(cubin: bytes) -> Dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the (single) kernel in ``cubin``: cuobjdump --dump-resource-usage."""
    text = _run("cuobjdump", cubin, "--dump-resource-usage")
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if match is None:
        raise RuntimeError(f"no resource usage in cuobjdump output:\n{text[-2000:]}")
    return dict(zip(("regs", "stack", "shared", "local"), map(int, match.groups())))


def disassemble(cubin: bytes) -> List[Instruction]:
    """The kernel's instructions in address order; a branch's ``operands`` name its target's address
    as ``target=0x...``."""
    labels, instructions, pending = {}, [], []
    for line in _run("nvdisasm", cubin, "-c").splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        match = _INSTRUCTION.search(line)
        if match is None:
            continue
        address = int(match.group(1), 16)
        for name in pending:
            labels[name] = address
        pending = []
        instructions.append(Instruction(address, match.group(3), match.group(2) or "", match.group(4)))
    for ins in instructions:
        target = _TARGET.search(ins.operands)
        if target and target.group(1) in labels:
            ins.operands = f"target={labels[target.group(1)]:#x}"
    return instructions


@dataclass
class Loop:
    start: int  # index of the first instruction (the branch target)
    end: int  # index of the backward branch
    innermost: bool = True


def loops(instructions: List[Instruction]) -> List[Loop]:
    """Each backward branch (to an earlier address, not to itself) closes a loop; a loop that holds
    another loop is not innermost."""
    index = {ins.address: i for i, ins in enumerate(instructions)}
    found = []
    for i, ins in enumerate(instructions):
        if ins.base in ("BRA", "BRX") and ins.operands.startswith("target="):
            target = index.get(int(ins.operands[len("target="):], 16))
            if target is not None and target < i:
                found.append(Loop(target, i))
    for outer in found:
        outer.innermost = not any(o is not outer and outer.start <= o.start and o.end <= outer.end for o in found)
    return found


@dataclass
class LoopStats:
    """What a stretch of code issues, per warp and pass (NOPs left out)."""
    instructions: int = 0
    mix: Counter = field(default_factory=Counter)  # category -> count
    tensor_core: Counter = field(default_factory=Counter)  # HMMA / HGMMA ... -> count
    global_loads: Counter = field(default_factory=Counter)  # bits per thread -> count
    global_stores: Counter = field(default_factory=Counter)
    cp_async: int = 0
    tma: int = 0

    @classmethod
    def of(cls, instructions: List[Instruction]) -> "LoopStats":
        stats = cls()
        for ins in instructions:
            if ins.base == "NOP":
                continue
            stats.instructions += 1
            category = _CATEGORY.get(ins.base, "other")
            stats.mix[category] += 1
            if category == "tensor core":
                stats.tensor_core[ins.base] += 1
            elif ins.base == "LDG":
                stats.global_loads[ins.width] += 1
            elif ins.base == "STG":
                stats.global_stores[ins.width] += 1
            elif category == "cp.async" and ins.base == "LDGSTS":
                stats.cp_async += 1
            elif category == "tma":
                stats.tma += 1
        return stats

    def as_dict(self) -> Dict[str, object]:
        return dict(instructions=self.instructions, mix=dict(self.mix.most_common()),
                    tensor_core=dict(self.tensor_core), global_loads=dict(sorted(self.global_loads.items())),
                    global_stores=dict(sorted(self.global_stores.items())), cp_async=self.cp_async, tma=self.tma)


def spill_bytes(instructions: List[Instruction]) -> tuple:
    """(stored, loaded) bytes of the local-memory instructions (STL/LDL) in the code: register spills
    (fastvid's kernels keep no local arrays)."""
    stored = sum(ins.width // 8 for ins in instructions if ins.base == "STL")
    loaded = sum(ins.width // 8 for ins in instructions if ins.base == "LDL")
    return stored, loaded
