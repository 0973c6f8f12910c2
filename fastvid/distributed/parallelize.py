"""``parallelize()`` / ``unparallelize()``: sequence-parallel (and classifier-free-guidance-parallel)
sampling of a video model, by swapping module classes in place as ``fastvid.patch`` does."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch.distributed as dist
from torch import nn

from .. import reference
from ..frame_modes import FRAME_MODES
from ..models.dit import VideoDiT
from ..models.layers import CrossAttention, TimestepEmbedding
from ..models.video_ldm import TemporalDecoder
from ..validation import check_choice, fail
from . import layers
from .comm import Comm, FastvidDistributedError
from .layers import ParallelState

STRATEGIES = ("dsp", "ulysses", "allgather", "cfg", "cfg+dsp", "cfg+ulysses", "cfg+allgather")
# sequence strategy -> (temporal attention, full attention)
SEQUENCE_MODES = {"dsp": ("switch", "ulysses"), "ulysses": ("ulysses", "ulysses"),
                  "allgather": ("allgather", "allgather")}
GROUP_NORM_HOW = "GroupNorm: partial statistics all-reduced wherever it spans frames or pixels of other ranks"
# computed in full on every rank: timestep (and SVD micro-conditioning) embeddings, DiT modulation
REPLICATED = ("time_embed", "temb", "modulation", "modulation_out", "add_embedding", "time_embedding")
_ORIGINAL = layers.ORIGINAL
# the diffusers denoisers parallelize shards (by a class in the model's MRO), with the mixin for the model itself
DIFFUSERS_DENOISERS = {"UNet3DConditionModel": layers.ParallelDenoiser,
                       "UNetSpatioTemporalConditionModel": layers.ParallelFrameFirstDenoiser,
                       "UNetMotionModel": layers.ParallelMotionDenoiser}
_CLASSES: Dict[Tuple[type, type], type] = {}


@dataclass
class ParallelReport:
    """What ``parallelize()`` sharded how, what every rank computes in full, and the group sizes."""

    strategy: str
    sequence_ranks: int
    cfg_ranks: int
    sharded: Dict[str, List[str]] = field(default_factory=dict)
    replicated: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def add(self, how: str, name: str) -> None:
        self.sharded.setdefault(how, []).append(name or "<model>")

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sharded.values())

    def __str__(self) -> str:
        lines = [f"ParallelReport: strategy {self.strategy!r}, {self.sequence_ranks} sequence rank(s) x "
                 f"{self.cfg_ranks} cfg rank(s), {self.total} module(s) swapped"]
        for how, names in self.sharded.items():
            lines.append(f"  {how}: {len(names)}  {', '.join(names)}")
        if self.replicated:
            lines.append(f"  replicated (every rank computes in full): {', '.join(self.replicated)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _groups(group, strategy: str) -> Tuple[Optional[dist.ProcessGroup], Optional[dist.ProcessGroup]]:
    """(sequence group, cfg group) from a process group, None (the default group) or a DeviceMesh."""
    mesh_dims = getattr(group, "ndim", None)
    combined = strategy.startswith("cfg+")
    if combined:
        if mesh_dims != 2:
            fail("parallelize", "group", f"is {type(group).__name__}",
                 f"a 2-D DeviceMesh (cfg, sequence) for {strategy!r}")
        return group.get_group(1), group.get_group(0)
    if mesh_dims is not None:
        if mesh_dims != 1:
            fail("parallelize", "group", f"is a {mesh_dims}-D DeviceMesh",
                 f"a 1-D mesh or a process group for {strategy!r}")
        group = group.get_group(0)
    return (None, group) if strategy == "cfg" else (group, None)


def parallelize(model: nn.Module, group=None, *, strategy: str = "dsp") -> ParallelReport:
    """Makes ``model`` (a fastvid reference model, patched or not, or diffusers' UNet3DConditionModel,
    UNetSpatioTemporalConditionModel or UNetMotionModel, unpatched or fastvid-patched) compute only its shard on
    each rank.

    Every rank then calls ``model(x, t, context)`` (or ``fastvid.models.sample``) with the full,
    identical inputs and gets the full output. ``strategy``:

    - "dsp": spatial stages shard frames, temporal attention / temporal conv shard tokens / pixels,
      one all-to-all at each switch; full attention ("all") by Ulysses (heads), or by a K/V all-gather
      when there are fewer heads than ranks;
    - "ulysses": as "dsp", but temporal attention by Ulysses too; "allgather": every attention reads
      all-gathered K/V (both for comparison: they move more bytes);
    - "cfg": the batch (the conditional and unconditional halves of a guided call) split over the ranks;
    - "cfg+dsp" (…+ulysses, …+allgather): both, ``group`` a 2-D DeviceMesh (cfg, sequence).

    ``group``: a process group, a DeviceMesh, or None (the default group); its timeout (set by
    ``init_process_group(timeout=...)``) bounds every collective. Calls with fewer model frames than
    sequence ranks run replicated (``parallel_state(model).calls`` counts each kind of call).
    Returns a :class:`ParallelReport`.
    """
    check_choice("parallelize", "strategy", strategy, STRATEGIES)
    if not isinstance(model, nn.Module):
        fail("parallelize", "model", f"is a {type(model).__name__}", "a torch.nn.Module (a fastvid reference model)")
    if not dist.is_initialized():
        raise FastvidDistributedError("parallelize: torch.distributed is not initialised; start the processes with "
                                      "torchrun and call torch.distributed.init_process_group first")
    if _ORIGINAL in model.__dict__:
        fail("parallelize", "model", "is already parallelized", "a model not yet parallelized (call unparallelize)")
    _root(model)  # an unsupported diffusers model is refused before any group is made
    sp_group, cfg_group = _groups(group, strategy)
    sequence = strategy.split("+")[-1]
    sp = Comm(sp_group, "sequence") if sequence != "cfg" else None
    cfg = Comm(cfg_group, "cfg") if strategy.startswith("cfg") else None
    temporal, full = SEQUENCE_MODES.get(sequence, ("switch", "ulysses"))
    st = ParallelState(sp, cfg, temporal, full)
    report = ParallelReport(strategy, sp.size if sp else 1, cfg.size if cfg else 1)
    root = _root(model)
    _swap(model, root, st)
    report.add("model: full inputs in, " + ("batch" if sp is None else "frames") + " sharded, output all-gathered", "")
    if sp is None:
        report.replicated += [name for name, module in model.named_modules() if _frame_positions(module, name, model)]
        report.notes.append("the frame-position embeddings (independent of the batch) run on every rank")
    else:
        try:
            _swap_stages(model, st, report)
        except FastvidDistributedError:
            unparallelize(model)  # leave the model as it was
            raise
    return report


def _root(model: nn.Module) -> type:
    """The mixin for the model itself; a diffusers model other than :data:`DIFFUSERS_DENOISERS` is refused."""
    if isinstance(model, VideoDiT):
        return layers.ParallelVideoDiT
    classes = _diffusers_classes(model)
    if not classes:
        return layers.ParallelDenoiser
    for name, mixin in DIFFUSERS_DENOISERS.items():
        if name in classes:
            return mixin
    raise FastvidDistributedError(f"parallelize: model is a {type(model).__name__}, whose frame-mixing layers "
                                  "fastvid.distributed does not know; it shards diffusers' "
                                  + ", ".join(DIFFUSERS_DENOISERS) + " and fastvid.models")


def _swap_stages(model: nn.Module, st: ParallelState, report: ParallelReport) -> None:
    owners: List[str] = []
    stages: List[str] = []  # pixel-sharded stages: only their GroupNorms are swapped
    # diffusers' denoisers normalise over frames only inside their temporal stages; elsewhere a GroupNorm sees one
    # frame's map and stays as it is (so fastvid's fused ResNets keep reading it)
    per_frame_norms = bool(_diffusers_classes(model))
    for name, module in model.named_modules():
        if module is model or any(name.startswith(o + ".") for o in owners):
            continue
        if any(name.startswith(s + ".") for s in stages):
            if isinstance(module, nn.GroupNorm):
                _swap(module, layers.ParallelGroupNorm, st)
                report.add(GROUP_NORM_HOW, name)
            continue
        if per_frame_norms and isinstance(module, nn.GroupNorm):
            continue
        if _frame_positions(module, name, model):
            _swap(module, layers.ParallelFramePositions, st)
            report.add("frame-position embedding: local frame indices offset to global ones", name)
            continue
        how = _diffusers_stage(module)
        if how is not None:
            mixin, text = how
            stages.append(name)
            _swap(module, mixin, st)
            report.add(text, name)
            continue
        if isinstance(module, TemporalDecoder):
            _swap(module, layers.ParallelFrameDecoder, st)
            report.add("decoder: full latents in, frames sharded, output all-gathered", name)
            continue
        how = _stage(module, st, name)
        if isinstance(module, CrossAttention):
            report.replicated += [f"{name}.to_k", f"{name}.to_v"]
        elif name.split(".")[-1] in REPLICATED:
            report.replicated.append(name)
        if how is None:
            continue
        mixin, text = how
        owners.append(name)
        _swap(module, mixin, st)
        report.add(text, name)
    report.notes.append("spatial stages (per-frame convs, spatial attention, LayerNorm, cross-attention, MLPs) "
                        "run unchanged on each rank's frames")
    report.notes.append("calls with fewer model frames than sequence ranks run replicated on every rank")


def _diffusers_classes(module: nn.Module) -> set:
    return {c.__name__ for c in type(module).__mro__ if c.__module__.startswith("diffusers")}


def _frame_positions(module: nn.Module, name: str, model: nn.Module) -> bool:
    """The frame-position embedding of a temporal transformer: fastvid's SpatioTemporalTransformer.time_pos_embed
    (SVD, Video LDM), diffusers' TransformerSpatioTemporalModel.time_proj; both called on the frame indices."""
    if isinstance(module, TimestepEmbedding) and name.endswith(".time_pos_embed"):
        return True
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return name.endswith(".time_proj") and "TransformerSpatioTemporalModel" in _diffusers_classes(parent)


def _diffusers_stage(module: nn.Module):
    """(mixin, description) for the temporal stages of diffusers' UNet3DConditionModel (ModelScope:
    TemporalConvLayer, TransformerTemporalModel), UNetSpatioTemporalConditionModel (SVD: TemporalResnetBlock,
    TemporalBasicTransformerBlock) and UNetMotionModel (AnimateDiff: AnimateDiffTransformer3D), None otherwise."""
    names = _diffusers_classes(module)
    fused = callable(getattr(module, "norm_silu", None))  # fastvid-patched: GroupNorm+SiLU fused with its convs
    if names & {"TemporalConvLayer", "TransformerTemporalModel", "AnimateDiffTransformer3D"}:
        return (layers.ParallelFusedFramesStage if fused else layers.ParallelFramesStage,
                "temporal stage (B*F, C, H, W): frames -> pixels all-to-all")
    if "TemporalResnetBlock" in names:
        return (layers.ParallelFusedResnetBlock if fused else layers.ParallelPixelStage,
                "temporal res block (B, C, F, H, W): frames -> pixels all-to-all")
    if "TemporalBasicTransformerBlock" in names:
        return layers.ParallelTokenStage, "temporal transformer block (B*F, N, C): frames -> tokens all-to-all"
    return None


def _stage(module: nn.Module, st: ParallelState, name: str):
    """(mixin, description) for a module that needs communication, None for a local one."""
    if isinstance(module, nn.GroupNorm):
        return layers.ParallelGroupNorm, GROUP_NORM_HOW
    if isinstance(module, reference.TemporalAttention):
        how = {"switch": "frames -> tokens all-to-all", "ulysses": "Ulysses heads all-to-all",
               "allgather": "K/V all-gather"}[st.temporal]
        if st.temporal == "ulysses" and not st.heads_shardable(module.heads):
            how = "K/V all-gather (fewer heads than ranks)"
        return layers.ParallelTemporalAttention, f"temporal attention: {how}"
    if isinstance(module, reference.FrameAttention):
        sharded = [mode.name for mode in FRAME_MODES.values() if mode.distributed in layers.FRAME_STRATEGIES]
        if not isinstance(module.frames, str):
            raise FastvidDistributedError(f"parallelize: {name} attends an explicit frame table, which has no "
                                          f"sharded form; use one of the modes {', '.join(map(repr, sharded))}")
        strategy = FRAME_MODES[module.frames].distributed
        if strategy not in layers.FRAME_STRATEGIES:
            raise FastvidDistributedError(f"parallelize: {name} attends frames={module.frames!r}, whose distributed "
                                          f"strategy {strategy!r} is not one of {', '.join(layers.FRAME_STRATEGIES)}")
        if strategy == "local":
            return None
        how = layers.FRAME_STRATEGIES[strategy]
        if strategy == "full":
            how = ("Ulysses heads all-to-all" if st.full == "ulysses" and st.heads_shardable(module.heads)
                   else "K/V all-gather")
        return layers.ParallelFrameAttention, f"frame attention ({module.frames}): {how}"
    if isinstance(module, reference.PseudoConv3d):
        return layers.ParallelPseudoConv3d, "pseudo-3D conv: temporal conv on a pixel shard (frames -> pixels)"
    if isinstance(module, reference.TemporalResBlock):
        return layers.ParallelTemporalResBlock, "temporal res block: (3, 1, 1) convs on a pixel shard (frames -> " \
            "pixels)"
    if isinstance(module, reference.TemporalConvBlock) or (
            isinstance(module, nn.Conv3d) and module.kernel_size[0] > 1 and module.kernel_size[0] != module.stride[0]):
        raise FastvidDistributedError(f"parallelize: {name} ({type(module).__name__}) mixes frames in a way "
                                      "fastvid.distributed does not shard yet")
    return None


def _swap(module: nn.Module, mixin: type, st: ParallelState) -> None:
    cls = type(module)
    key = (mixin, cls)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"Parallel{cls.__name__}", (mixin, cls), {"__module__": __name__})
    module.__dict__[_ORIGINAL] = cls
    module.__dict__[layers._STATE] = st
    module.__class__ = _CLASSES[key]


def parallel_state(model: nn.Module) -> ParallelState:
    """The groups, strategy and call counts of a parallelized model."""
    if _ORIGINAL not in model.__dict__:
        fail("parallel_state", "model", "is not parallelized", "a model returned by parallelize()")
    return layers.state(model)


def unparallelize(model: nn.Module) -> int:
    """Restores the classes ``parallelize()`` swapped. Returns how many modules it restored."""
    restored = 0
    for module in model.modules():
        original = module.__dict__.pop(_ORIGINAL, None)
        if original is None:
            continue
        module.__dict__.pop(layers._STATE, None)
        module.__class__ = original
        restored += 1
    return restored
