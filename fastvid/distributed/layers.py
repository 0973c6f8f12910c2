"""Mixins that ``parallelize`` puts in front of a module's class, in place.

While a parallelized model runs a sharded call, activations are sharded by **frames** (spatial
stages run unchanged on their frames); the mixins add the communication the other stages need:

- temporal attention / temporal conv / temporal residual blocks: switch to a shard of the **tokens /
  pixels** with all frames (one all-to-all), run, switch back (one all-to-all); or, for comparison,
  Ulysses (heads) or a K/V all-gather;
- GroupNorm over (C/G, F, H, W): partial sums all-reduced, then partial squared deviations;
- cross-frame attention, by the strategy ``fastvid.frame_modes`` gives each mode (:data:`FRAME_STRATEGIES`):
  frame 0's K/V broadcast ("first", and "sparse_causal" with the previous frame's K/V from the
  neighbouring rank); "all": Ulysses head all-to-all or K/V all-gather;
- frame-position embeddings (SVD, Video LDM): the local frames' indices offset to their global ones;
- the model itself: takes the full inputs, keeps its shard (of the batch for "cfg", of the frames
  otherwise), runs, all-gathers the full output.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import List, Optional

import torch
from torch import nn

from ..frame_modes import FRAME_MODES
from ..nn._hooks import unfused_reason
from ..reference import functional as ref
from .comm import Comm, offsets, shard_sizes

_STATE = "_fastvid_parallel"
ORIGINAL = "_fastvid_parallel_original"  # a swapped module's own class, kept for unparallelize


class ParallelState:
    """Shared by all the swapped modules of one model: the groups, the strategy, and the frame shards
    of the call in flight (None between calls and in calls too short to shard)."""

    def __init__(self, sp: Optional[Comm], cfg: Optional[Comm], temporal: str, full: str):
        self.sp, self.cfg = sp, cfg
        self.temporal = temporal  # "switch" | "ulysses" | "allgather"
        self.full = full  # "ulysses" | "allgather"
        self.frames: Optional[List[int]] = None
        self.in_stage = False  # inside a pixel-sharded temporal stage: every GroupNorm spans the shards
        self.calls = {"frames_sharded": 0, "batch_split": 0, "replicated": 0}

    @property
    def active(self) -> bool:
        return self.frames is not None

    @property
    def local_offset(self) -> int:
        return offsets(self.frames)[self.sp.rank]

    def heads_shardable(self, heads: int) -> bool:
        return heads >= self.sp.size


def state(module: nn.Module) -> ParallelState:
    return module.__dict__[_STATE]


def sharded_group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float, comm: Comm) -> torch.Tensor:
    """GroupNorm of a tensor sharded along any dim but the channels: statistics over the whole group,
    from all-reduced partial sums (two passes: the mean, then the squared deviations)."""
    b, c = x.shape[:2]
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xg = x.reshape(b, groups, -1).to(acc)
    count = torch.tensor([xg.shape[-1]], dtype=acc, device=x.device)
    stats = comm.all_reduce(torch.cat([xg.sum(-1).flatten(), count]), "group_norm")
    mean = (stats[:-1] / stats[-1]).view(b, groups, 1)
    dev = xg - mean
    var = comm.all_reduce((dev * dev).sum(-1), "group_norm").unsqueeze(-1) / stats[-1]
    y = (dev * torch.rsqrt(var + eps)).view(x.shape).to(x.dtype)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    return y if bias is None else y + bias.view(shape)


class ParallelGroupNorm:
    """GroupNorm: 5-D (B, C, F, H, W) inputs, and any input inside a pixel-sharded stage, normalise over
    frames or pixels held by other ranks too; 4-D (B * F, C, H, W) frames elsewhere are per frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = state(self)
        if not st.active or (x.dim() < 5 and not st.in_stage):
            return super().forward(x)
        return sharded_group_norm(x, self.num_groups, self.weight, self.bias, self.eps, st.sp)


class ParallelTemporalAttention:
    """Temporal attention on frame-sharded tokens (B, F_local, N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = state(self)
        if not st.active or x.dim() != 4 or st.temporal != "switch":
            return super().forward(x)  # a 5-D input comes back here as tokens
        tokens = shard_sizes(x.shape[2], st.sp.size)
        h = st.sp.switch(x, 1, 2, st.frames, tokens, "temporal_switch")
        h = super().forward(h)
        return st.sp.switch(h, 2, 1, tokens, st.frames, "temporal_switch")

    def position_bias(self, num_frames: int, device):
        bias = super().position_bias(num_frames, device)
        heads = self.__dict__.get("_fastvid_heads")
        return bias if bias is None or heads is None else bias[heads]

    def attend(self, q, k, v):
        st = state(self)
        if not st.active or st.temporal == "switch":
            return super().attend(q, k, v)
        if st.temporal == "ulysses" and st.heads_shardable(q.shape[3]):
            heads = shard_sizes(q.shape[3], st.sp.size)
            start = offsets(heads)[st.sp.rank]
            with _set(self, "_fastvid_heads", slice(start, start + heads[st.sp.rank])):
                return ulysses(st, q, k, v, lambda *qkv: super(ParallelTemporalAttention, self).attend(*qkv))
        return self.attend_gathered(st, q, k, v)

    def attend_gathered(self, st: ParallelState, q, k, v):
        """Local queries against all-gathered K/V, with the bias / causal mask rows of the local frames."""
        k_all, v_all = st.sp.gather(torch.stack([k, v]), 2, st.frames, "temporal_allgather").unbind(0)
        frames, local = k_all.shape[1], slice(st.local_offset, st.local_offset + q.shape[1])
        bias = self.position_bias(frames, q.device)
        bias = None if bias is None else bias[:, local].to(q.dtype)
        mask = torch.ones(frames, frames, dtype=torch.bool, device=q.device).tril()[local] if self.causal else None
        qt, kt, vt = (t.permute(0, 2, 3, 1, 4) for t in (q, k_all, v_all))  # (B, N, h, F, d)
        return ref.attention(qt, kt, vt, bias=bias, mask=mask).permute(0, 3, 1, 2, 4)


class ParallelPseudoConv3d:
    """Pseudo-3D conv: the spatial conv on the local frames, the temporal conv on a shard of the pixels."""

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        st = state(self)
        if not st.active:
            return super().temporal(h)
        height, width = h.shape[-2:]
        pixels = shard_sizes(height * width, st.sp.size)
        t = st.sp.switch(h.flatten(3), 2, 3, st.frames, pixels, "temporal_conv_switch")
        t = super().temporal(t.unsqueeze(-1)).squeeze(-1)
        return st.sp.switch(t, 3, 2, pixels, st.frames, "temporal_conv_switch").unflatten(3, (height, width))


class ParallelFramesStage:
    """A temporal stage taking (B * F, C, H, W) frames and ``num_frames`` (diffusers' TemporalConvLayer and
    TransformerTemporalModel): run on a pixel shard with all frames, as (B * F, C, pixels, 1) "images"."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        st = state(self)
        if not st.active:
            return super().forward(hidden_states, *args, **kwargs)
        local = st.frames[st.sp.rank]
        height, width = hidden_states.shape[-2:]
        pixels = shard_sizes(height * width, st.sp.size)
        x = hidden_states.unflatten(0, (-1, local)).flatten(3)  # (B, F_local, C, H*W)
        x = st.sp.switch(x, 1, 3, st.frames, pixels, "temporal_stage_switch")
        call = inspect.signature(super().forward).bind(x.flatten(0, 1).unsqueeze(-1), *args, **kwargs)
        call.arguments["num_frames"] = sum(st.frames)
        with _set(st, "in_stage", True):
            out = super().forward(*call.args, **call.kwargs)

        def back(y: torch.Tensor) -> torch.Tensor:
            y = st.sp.switch(y.squeeze(-1).unflatten(0, (-1, sum(st.frames))), 3, 1, pixels, st.frames,
                             "temporal_stage_switch")
            return y.flatten(0, 1).unflatten(-1, (height, width))

        return map_sample(out, back)


class ParallelPixelStage:
    """A temporal block on (B, C, F, H, W) with (3, 1, 1) convs and GroupNorms over (C/G, F, H, W)
    (diffusers' TemporalResnetBlock, SVD's): run on a pixel shard with all frames, as (B, C, F, pixels, 1);
    a per-frame (B, F, T) timestep embedding is all-gathered over the frames."""

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None, *args, **kwargs):
        st = state(self)
        if not st.active:
            return super().forward(x, temb, *args, **kwargs)
        if temb is not None and temb.dim() == 3:
            temb = st.sp.gather(temb, 1, st.frames, "temb_gather")
        height, width = x.shape[-2:]
        pixels = shard_sizes(height * width, st.sp.size)
        h = st.sp.switch(x.flatten(3), 2, 3, st.frames, pixels, "temporal_block_switch")
        with _set(st, "in_stage", True):
            h = super().forward(h.unsqueeze(-1), temb, *args, **kwargs)
        h = st.sp.switch(h.squeeze(-1), 3, 2, pixels, st.frames, "temporal_block_switch")
        return h.unflatten(3, (height, width))


def original_class(module: nn.Module) -> type:
    """The class ``parallelize`` swapped out of ``module`` (its own class where none was)."""
    return module.__dict__.get(ORIGINAL, type(module))


class ShardedNormSilu:
    """A temporal block whose ``norm_silu(norm, x, add)`` method computes silu(norm(x + add)) (fastvid's
    TemporalResBlock; diffusers' TemporalConvLayer and TemporalResnetBlock as ``fastvid.patch`` fuses them):
    on a pixel shard its statistics are all-reduced."""

    def norm_silu(self, norm: nn.GroupNorm, x: torch.Tensor, add: Optional[torch.Tensor] = None) -> torch.Tensor:
        """silu(norm(x + add)), add a (B, C) or (B, C, F) time embedding or None; statistics all-reduced over
        the shard."""
        st = state(self)
        if not st.in_stage:
            return super().norm_silu(norm, x, add)
        if add is not None:
            x = x + add.view(*add.shape, *[1] * (x.dim() - add.dim()))
        return nn.functional.silu(sharded_group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, st.sp))


class ShardedFusedBlock(ShardedNormSilu):
    """A fastvid-fused diffusers temporal block inside a pixel-sharded stage, whose GroupNorms ``parallelize``
    swapped (so that its unfused path, which calls them, is sharded too): its fused path judges them as the
    plain GroupNorms they were, since it runs their sharded form itself (:class:`ShardedNormSilu`); its
    convs stay fused."""

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, self.fused_submodules(), judge=original_class)


class ParallelTemporalResBlock(ShardedNormSilu, ParallelPixelStage):
    """fastvid's TemporalResBlock (SVD, Video LDM), reference or patched: as :class:`ParallelPixelStage`;
    its GroupNorm+SiLU all-reduces statistics on the pixel shard (the patched convs stay fused)."""


class ParallelFusedResnetBlock(ShardedFusedBlock, ParallelPixelStage):
    """diffusers' TemporalResnetBlock (SVD) patched by fastvid: as :class:`ParallelPixelStage`, GroupNorm+SiLU
    all-reducing statistics on the pixel shard, the temporal convs fused."""


class ParallelFusedFramesStage(ShardedFusedBlock, ParallelFramesStage):
    """diffusers' TemporalConvLayer (ModelScope, I2VGen-XL) patched by fastvid: as :class:`ParallelFramesStage`,
    GroupNorm+SiLU all-reducing statistics on the pixel shard, the temporal convs fused."""


class ParallelTokenStage:
    """diffusers' TemporalBasicTransformerBlock (SVD): (B * F, N, C) tokens and ``num_frames``, attending over
    the frames; run on a token shard with all frames, the (B * N, L, D) per-token context narrowed to it."""

    def forward(self, hidden_states: torch.Tensor, num_frames: int, encoder_hidden_states=None):
        st = state(self)
        if not st.active:
            return super().forward(hidden_states, num_frames, encoder_hidden_states)
        tokens = shard_sizes(hidden_states.shape[1], st.sp.size)
        start, local = offsets(tokens)[st.sp.rank], tokens[st.sp.rank]
        x = hidden_states.unflatten(0, (-1, st.frames[st.sp.rank]))  # (B, F_local, N, C)
        x = st.sp.switch(x, 1, 2, st.frames, tokens, "temporal_block_switch")
        if encoder_hidden_states is not None:
            context = encoder_hidden_states.unflatten(0, (x.shape[0], -1)).narrow(1, start, local)
            encoder_hidden_states = context.flatten(0, 1)
        out = super().forward(x.flatten(0, 1), sum(st.frames), encoder_hidden_states)
        out = out.unflatten(0, (x.shape[0], -1))
        return st.sp.switch(out, 2, 1, tokens, st.frames, "temporal_block_switch").flatten(0, 1)


class ParallelFramePositions:
    """The frame-position embedding of a temporal transformer (fastvid's and diffusers' SVD blocks), called
    with the local frames' indices 0 .. F_local - 1: offset to their global indices."""

    def forward(self, frame_index: torch.Tensor):
        st = state(self)
        return super().forward(frame_index + st.local_offset if st.active else frame_index)


def map_sample(out, fn):
    """``fn`` applied to a model output: a tensor, a tuple whose first item is the sample, or an output
    object with ``.sample`` (diffusers)."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, tuple):
        return (fn(out[0]),) + tuple(out[1:])
    out.sample = fn(out.sample)
    return out


# The frame modes' distributed strategies (fastvid.frame_modes, FrameMode.distributed) -> what each sends.
FRAME_STRATEGIES = {
    "local": "no communication (each rank's own frames)",
    "broadcast_first": "frame 0's K/V broadcast from its owner",
    "first_and_previous": "frame 0's K/V broadcast + previous frame's K/V from the neighbour",
    "full": "Ulysses heads all-to-all, or a K/V all-gather where the heads do not shard",
}


class ParallelFrameAttention:
    """Cross-frame attention on frame-sharded tokens, by the mode's strategy in ``fastvid.frame_modes``:
    the remote keys/values each local frame reads are fetched and concatenated along the key tokens,
    then attended as "self" (same order as the one-process concatenation); the "full" strategy goes
    through Ulysses when the heads allow it."""

    def attend(self, q, k, v):
        st = state(self)
        strategy = FRAME_MODES[self.frames].distributed
        if not st.active or strategy == "local":
            return super().attend(q, k, v)
        if strategy == "full" and st.full == "ulysses" and st.heads_shardable(q.shape[3]):
            return ulysses(st, q, k, v, super().attend)
        b, f, m = k.shape[:3]
        if strategy == "full":
            kv = st.sp.gather(torch.stack([k, v]), 2, st.frames, "frame_allgather")  # (2, B, F, M, h, d)
            kv = kv.flatten(2, 3)[:, :, None].expand(-1, -1, f, -1, -1, -1)
        else:  # "broadcast_first", "first_and_previous": parallelize refuses any other strategy
            first = st.sp.broadcast(torch.stack([k[:, 0], v[:, 0]]) if st.sp.rank == 0 else None,
                                    (2, b) + tuple(k.shape[2:]), k.dtype, k.device, 0, "frame0_broadcast")
            kv = first[:, :, None].expand(-1, -1, f, -1, -1, -1)
            if strategy == "first_and_previous":
                received = st.sp.shift_right(torch.stack([k[:, -1], v[:, -1]]), "neighbour_kv")
                before = torch.stack([k[:, 0], v[:, 0]]) if received is None else received
                previous = torch.cat([before[:, :, None], torch.stack([k, v])[:, :, :-1]], dim=2)
                kv = torch.cat([kv, previous], dim=3)
        with _set(self, "frames", "self"):
            return super().attend(q, kv[0], kv[1])


def ulysses(st: ParallelState, q, k, v, attend):
    """Ulysses: one all-to-all from frame shards with all heads to all frames with a shard of the heads,
    ``attend`` there, one all-to-all back."""
    heads = shard_sizes(q.shape[3], st.sp.size)
    qkv = st.sp.switch(torch.stack([q, k, v], dim=3), 1, 4, st.frames, heads, "ulysses")
    out = attend(*qkv.unbind(3))
    return st.sp.switch(out, 3, 1, heads, st.frames, "ulysses")


class ParallelDenoiser:
    """The model: eps = model(x (B, C, F, H, W), t, context) with the full inputs on every rank."""

    frame_unit = 1  # input frames per model frame (a DiT's temporal patch)
    frame_dim = 2
    per_frame_rows = False  # conditioning tensors may hold one row per (sample, frame), sample-major

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Optional[torch.Tensor] = None, *args, **kwargs):
        st = state(self)
        if context is None and "encoder_hidden_states" in kwargs:  # diffusers' keyword
            context = kwargs.pop("encoder_hidden_states")
        if st.active:
            return super().forward(x, t, context, *args, **kwargs)
        batch = x.shape[0]
        for comm in (st.cfg, st.sp):
            if comm is not None:
                comm.check_same(tuple(x.shape) + (-1 if context is None else context.shape[1],), "input shapes",
                                x.device)
        split = st.cfg is not None and batch >= st.cfg.size
        if split:
            st.calls["batch_split"] += 1
            sizes = shard_sizes(batch, st.cfg.size)
            start, n = offsets(sizes)[st.cfg.rank], sizes[st.cfg.rank]
            values = (x, t, context, args, kwargs)
            if self.per_frame_rows and x.dim() == 5 and x.shape[self.frame_dim] > 1:
                frames = x.shape[self.frame_dim]
                values = _narrow_batch(values, batch * frames, start * frames, n * frames)
            x, t, context, args, kwargs = _narrow_batch(values, batch, start, n)
        out = self.forward_frames(st, x, t, context, *args, **kwargs)
        return map_sample(out, lambda y: st.cfg.gather(y, 0, sizes, "cfg_gather")) if split else out

    def forward_frames(self, st: ParallelState, x, *args, **kwargs):
        """The wrapped forward on this rank's frames of ``x`` (all of them without a sequence group, or when
        there are fewer frames than ranks); the output all-gathered over the frames."""
        unit, dim = self.frame_unit, self.frame_dim
        if st.sp is None:
            return super().forward(x, *args, **kwargs)
        if x.dim() != 5 or x.shape[dim] % unit or x.shape[dim] // unit < st.sp.size:
            st.calls["replicated"] += 1
            return super().forward(x, *args, **kwargs)
        st.calls["frames_sharded"] += 1
        frames = shard_sizes(x.shape[dim] // unit, st.sp.size)
        start = offsets(frames)[st.sp.rank]
        local = x.narrow(dim, start * unit, frames[st.sp.rank] * unit)
        if self.per_frame_rows:
            args, kwargs = _narrow_frames((args, kwargs), x.shape[0], sum(frames), start, frames[st.sp.rank])
        st.frames = frames
        try:
            out = super().forward(local, *args, **kwargs)
        finally:
            st.frames = None
        return map_sample(out, lambda y: st.sp.gather(y, dim, [n * unit for n in frames], "output_gather"))


class ParallelFrameDecoder(ParallelDenoiser):
    """A frame-wise decoder of (B, C, F, H, W) latents called after the denoising loop (Video LDM's temporal
    VAE decoder): the full latents in on every rank, frames sharded, the full frames all-gathered."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        st = state(self)
        if st.active:
            return super(ParallelDenoiser, self).forward(z)
        st.sp.check_same(tuple(z.shape), "decoder input shapes", z.device)
        return self.forward_frames(st, z)


class ParallelFrameFirstDenoiser(ParallelDenoiser):
    """diffusers' UNetSpatioTemporalConditionModel (SVD): (B, F, C, H, W) samples, frames on dim 1."""

    frame_dim = 1


class ParallelMotionDenoiser(ParallelDenoiser):
    """diffusers' UNetMotionModel (AnimateDiff): (B, C, F, H, W) samples and per-frame conditioning, one row
    per (sample, frame), sample-major (the text states its pipelines repeat per frame, SparseControlNet's
    residuals): those rows are narrowed with the batch (classifier-free guidance) and with the frames."""

    per_frame_rows = True


def _map_tensors(value, fn):
    """``fn`` applied to every tensor in ``value`` (nested tuples, lists and dicts); other values as they are."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _narrow_frames(value, batch: int, frames: int, start: int, n: int):
    """Every tensor in ``value`` with ``batch * frames`` rows (one per sample and frame, sample-major) narrowed to
    frames ``start`` .. ``start + n`` of each sample."""
    def narrow(t: torch.Tensor) -> torch.Tensor:
        if t.dim() and t.shape[0] == batch * frames:
            return t.unflatten(0, (batch, frames)).narrow(1, start, n).flatten(0, 1)
        return t

    return _map_tensors(value, narrow)


def _narrow_batch(value, batch: int, start: int, n: int):
    """Every tensor in ``value`` whose first dim is ``batch`` (> 1) narrowed to rows ``start`` .. ``start + n``:
    the conditional or unconditional half of a guided call (x, t, context, SVD's added_time_ids); a one-element
    timestep is shared."""
    return _map_tensors(value, lambda t: t.narrow(0, start, n) if t.dim() and t.shape[0] == batch > 1 else t)


class ParallelVideoDiT(ParallelDenoiser):
    """The DiT: frames sharded in whole temporal patches; each shard adds its frames' position embedding."""

    @property
    def frame_unit(self) -> int:
        return self.config.patch[0]

    def position_embedding(self, frames: int, tokens: int, device) -> torch.Tensor:
        st = state(self)
        if not st.active:
            return super().position_embedding(frames, tokens, device)
        full = super().position_embedding(sum(st.frames), tokens, device)
        return full[st.local_offset: st.local_offset + frames]


@contextmanager
def _set(obj, name: str, value):
    """Sets a plain attribute for the duration of one call."""
    had, old = name in obj.__dict__, obj.__dict__.get(name)
    obj.__dict__[name] = value
    try:
        yield
    finally:
        if had:
            obj.__dict__[name] = old
        else:
            del obj.__dict__[name]
