"""fastvid inside diffusers video models, installed by ``fastvid.patch(pipe_or_model)``.

What is swapped (each only where its preconditions hold; everything else is reported as skipped):

- temporal self-attention (TransformerTemporalModel blocks of ModelScope, attn1 of
  SVD's TemporalBasicTransformerBlock): :class:`TemporalAttnProcessor`, which reads the
  ``(B*H*W, F, C)`` projections in place through ``fastvid.temporal_attention``;
- TransformerTemporalModel and AnimateDiff's motion modules (AnimateDiffTransformer3D): their forward keeps
  the tokens frame-major ``(B*F, H*W, C)`` so the ``(b f) <-> (b h w)`` token reshapes disappear, the
  processors read ``(B, F, N, h, d)`` views and sinusoidal frame embeddings are added per frame;
- SVD's TransformerSpatioTemporalModel and its TemporalBasicTransformerBlocks: the temporal blocks run on
  the spatial blocks' frame-major tokens too (no rearrange copies around them), their cross-attention
  against each video's image context;
- Text2Video-Zero's CrossFrameAttnProcessor: :class:`FirstFrameAttnProcessor` projects K/V of the
  first frame only and runs ``fastvid.frame_attention(frames="first")`` (no repeated K/V);
- spatial self-attention, on request (``spatial_self_attention=True``): :class:`FrameAttnProcessor`;
- the self-attentions of AnimateDiff's motion modules (UNetMotionModel / MotionAdapter, reused by the
  SparseControlNet and video-to-video pipelines) and of I2VGenXL's image-latent temporal encoder get
  :class:`TemporalAttnProcessor`;
- Transformer2DModel, the temporal transformers above and SVD's TransformerSpatioTemporalModel: ``proj_in``
  reads the normed channel-first map as tokens in place and ``proj_out`` writes its output plus the input
  back into that layout in one GEMM (``fastvid.nn.tokens`` over ``fastvid.linear``);
- TemporalConvLayer (ModelScope, I2VGenXL) and TemporalResnetBlock (SVD, inside SpatioTemporalResBlock):
  fused GroupNorm+SiLU and ``fastvid.temporal_conv``, or, when their submodules carry hooks or are
  wrapped (offload, layerwise casting, LoRA), diffusers' own forward;
- BasicTransformerBlock (spatial and temporal transformers of every video UNet) and SVD's
  TemporalBasicTransformerBlock: each residual add and the LayerNorm after it in one pass
  (``fastvid.add_layer_norm``), the feed-forward's residual added in its last Linear's epilogue
  (``fastvid.linear``); spatial self- and cross-attention on diffusers' AttnProcessor2_0:
  :class:`SDPAAttnProcessor`, the same SDPA path without its divide by ``rescale_output_factor`` = 1;
- ResnetBlock2D (the spatial ResNets of every video U-Net): GroupNorm+SiLU per frame fused, the time
  embedding added inside the second one, the residual added in place; AlphaBlender (SVD): alpha made from
  ``mix_factor`` and the image-only indicator inside the one-pass mix (``fastvid.learned_alpha_blend``: one
  kernel a call);
- GEGLU (the feed-forward's first layer in every transformer block, spatial and temporal):
  :class:`FastvidGEGLU` computes the projection and the activation in one GEMM (``fastvid.geglu_linear``),
  or, when ``proj`` is hooked or wrapped (LoRA, offload, quantization), runs ``proj`` as it is and fuses
  the activation (``fastvid.geglu``).

Processors follow diffusers' protocol (``set_attn_processor``, ``attn_processors``) and keep the
processor they replaced in ``.original``; calls they cannot take (attention masks, 4D inputs,
extra kwargs) go to it unchanged. They stand in for FusedAttnProcessor2_0 too (after
``fuse_qkv_projections()``), projecting through its fused ``to_qkv`` / ``to_kv``. Modules are swapped by class, so weights and state_dict keys
stay as they are, and save under diffusers' class names; ``unpatch_diffusers`` restores both. The
UNet's ``set_default_attn_processor`` first hands back fastvid's attention, then runs diffusers'.
"""
from __future__ import annotations

import json
from typing import List, Optional

import torch
from torch import nn

from .. import reference
from ..nn._autocast import call_under_autocast
from ..nn.add_layer_norm import add_norm
from ..nn._hooks import unfused_modules, unfused_reason
from ..nn.resnet import add_residual
from ..nn.temporal_conv import TemporalConvStages, conv_frames, norm_silu
from ..nn.tokens import linear_add, tokens_in, tokens_out
from ..ops.alpha_blend import alpha_blend, indicator_matches, learned_alpha_blend
from ..ops.frame_attention import frame_attention
from ..ops.geglu import geglu
from ..ops.geglu_linear import geglu_linear
from ..ops.group_norm_silu import group_norm_silu
from ..ops.temporal_attention import temporal_attention
from ..patching import KINDS
from ..validation import fail

TESTED = "diffusers>=0.35,<0.43"
try:
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import (BasicTransformerBlock, FeedForward, TemporalBasicTransformerBlock,
                                           _chunked_feed_forward)
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0
    from diffusers.models.resnet import AlphaBlender, ResnetBlock2D, TemporalConvLayer, TemporalResnetBlock
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import (
        TransformerSpatioTemporalModel,
        TransformerTemporalModel,
        TransformerTemporalModelOutput,
    )
    from diffusers.models.unets.unet_i2vgen_xl import I2VGenXLTransformerTemporalEncoder
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
    from diffusers.utils.import_utils import is_torch_npu_available
except ImportError as exc:
    raise ImportError(
        f"fastvid's diffusers integration needs diffusers ({TESTED}): pip install 'fastvid[diffusers]'"
    ) from exc

OP = "patch"
# The processors fastvid's stand in for: diffusers' defaults and, after ``fuse_qkv_projections()``, the fused one
# (fastvid's processors then project through the fused ``to_qkv`` / ``to_kv`` GEMMs too).
SDPA_PROCESSORS = (AttnProcessor2_0, FusedAttnProcessor2_0)
DEFAULT_PROCESSORS = (AttnProcessor, *SDPA_PROCESSORS)
CROSS_FRAME_PROCESSORS = ("CrossFrameAttnProcessor", "CrossFrameAttnProcessor2_0")
VIDEO_PIPELINES = ("TextToVideoZeroPipeline", "TextToVideoZeroSDXLPipeline")
SET_ATTN_PROCESSOR_SWAP = "unet.set_attn_processor (CrossFrameAttnProcessor of each call)"


# ---- attention processors ---------------------------------------------------------------------

class _FastvidAttnProcessor:
    """Shared by the processors: the replaced processor, the backend, and hand-back of calls."""

    patch_kind = "frame_attention"

    def __init__(self, original, backend: str = "auto"):
        self.original = original
        self.backend = backend

    def scale(self, attn: Attention) -> Optional[float]:
        # The SDPA processors ("...2_0") use SDPA's default scale, the classic ones attn.scale.
        return None if type(self.original).__name__.endswith("2_0") else attn.scale

    def delegate(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs):
        if temb is not None:
            kwargs = dict(kwargs, temb=temb)
        return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                             attention_mask=attention_mask, **kwargs)

    def attend(self, op, attn: Attention, q, k, v, **kwargs) -> torch.Tensor:
        """``op`` on (B, F, N, h, d) q/k/v, in the autocast dtype under autocast (SDPA's rule)."""
        return call_under_autocast(op, q, k, v, fp32_op=False, scale=self.scale(attn), backend=self.backend, **kwargs)

    @staticmethod
    def project(attn: Attention, hidden_states: torch.Tensor, context: Optional[torch.Tensor] = None):
        """(q, k, v) of ``hidden_states`` (keys and values of ``context`` when given): after diffusers'
        ``fuse_qkv_projections()`` (``attn.fused_projections``) views of one GEMM's output, ``to_qkv`` (or
        ``to_q`` and ``to_kv`` for a context), as FusedAttnProcessor2_0 projects; else ``to_q``, ``to_k``, ``to_v``."""
        if getattr(attn, "fused_projections", False):
            if context is None and hasattr(attn, "to_qkv"):
                return attn.to_qkv(hidden_states).chunk(3, dim=-1)
            if context is not None and hasattr(attn, "to_kv"):
                return (attn.to_q(hidden_states), *attn.to_kv(context).chunk(2, dim=-1))
        context = hidden_states if context is None else context
        return attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

    @staticmethod
    def heads(attn: Attention, t: torch.Tensor) -> torch.Tensor:
        """(..., heads*d) -> (..., heads, d) view."""
        return t.unflatten(-1, (attn.heads, t.shape[-1] // attn.heads))

    @staticmethod
    def project_out(attn: Attention, t: torch.Tensor) -> torch.Tensor:
        return attn.to_out[1](attn.to_out[0](t))

    def __repr__(self):
        return f"{type(self).__name__}(original={type(self.original).__name__}, backend={self.backend!r})"


class TemporalAttnProcessor(_FastvidAttnProcessor):
    """Temporal self-attention through ``fastvid.temporal_attention``, read in place.

    hidden_states: ``(S, F, C)`` with S = B*H*W sequences of F frames (diffusers' layout), viewed
    as q/k/v ``(1, F, S, heads, d)``; or, when the patched TransformerTemporalModel passes
    ``fastvid_num_frames``, frame-major ``(B*F, N, C)`` viewed as ``(B, F, N, heads, d)``.
    """

    patch_kind = "temporal_attention"

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, fastvid_num_frames: Optional[int] = None, **kwargs):
        if fastvid_num_frames is None and (encoder_hidden_states is not None or attention_mask is not None
                                           or hidden_states.ndim != 3 or kwargs):
            return self.delegate(attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs)
        q, k, v = (self.heads(attn, t) for t in self.project(attn, hidden_states))
        # The op returns its output in q's memory order, so the reshapes back to the tokens' layout
        # are views of it (no copy before the output projection) for projections of any layout.
        if fastvid_num_frames is None:  # (S, F, h, d) -> (1, F, S, h, d)
            q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out = self.attend(temporal_attention, attn, q, k, v)[0].transpose(0, 1)
        else:  # (B*F, N, h, d) -> (B, F, N, h, d)
            q, k, v = (t.unflatten(0, (-1, fastvid_num_frames)) for t in (q, k, v))
            out = self.attend(temporal_attention, attn, q, k, v).flatten(0, 1)
        return self.project_out(attn, out.flatten(2))


class FirstFrameAttnProcessor(_FastvidAttnProcessor):
    """Text2Video-Zero cross-frame attention (every frame attends to the first frame).

    Same semantics as diffusers' CrossFrameAttnProcessor(batch_size): hidden_states ``(G*F, N, C)``
    holds ``batch_size`` groups of F frames. K/V are projected for the first frame of each group
    only and reach ``fastvid.frame_attention(frames="first")`` as stride-0 views, never repeated.
    Cross-attention calls (encoder_hidden_states given) go to the original processor.
    """

    def __init__(self, original, backend: str = "auto"):
        super().__init__(original, backend)
        self.batch_size = original.batch_size

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs):
        rows = hidden_states.shape[0]
        frames = max(1, rows // self.batch_size)
        if (encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3 or kwargs
                or rows % frames):
            return self.delegate(attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs)
        tokens = hidden_states.shape[1]
        q = self.heads(attn, attn.to_q(hidden_states)).unflatten(0, (-1, frames))  # (G, F, N, h, d)
        first = hidden_states.unflatten(0, (-1, frames))[:, :1]  # (G, 1, N, C)
        k, v = (self.heads(attn, proj(first)).expand(q.shape) for proj in (attn.to_k, attn.to_v))
        out = self.attend(frame_attention, attn, q, k, v, frames="first")
        return self.project_out(attn, out.view(rows, tokens, -1))


class FrameAttnProcessor(_FastvidAttnProcessor):
    """Spatial self-attention of ``(B*F, N, C)`` frames through ``fastvid.frame_attention(frames="self")``."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3 or kwargs:
            return self.delegate(attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs)
        q, k, v = (self.heads(attn, t).unsqueeze(1) for t in self.project(attn, hidden_states))
        out = self.attend(frame_attention, attn, q, k, v, frames="self")
        return self.project_out(attn, out.view(hidden_states.shape[0], hidden_states.shape[1], -1))


class SDPAAttnProcessor(_FastvidAttnProcessor):
    """diffusers' AttnProcessor2_0 (or FusedAttnProcessor2_0, projections fused) on (B, L, C) tokens without
    its no-op tail: installed only where ``residual_connection`` is False and ``rescale_output_factor`` is 1
    (every spatial and cross attention of the video UNets), so diffusers' residual add and ``/ 1.0`` (a full
    read and write of the output) are left out; the transformer block adds the output to the residual stream
    (fused with the next LayerNorm when the block is patched). Same ops otherwise, so the same values bit for
    bit. 4D inputs and deprecated extra arguments go to the original processor."""

    patch_kind = "transformer_block"

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs):
        if hidden_states.ndim != 3 or args or kwargs:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch_size = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = self.project(attn, hidden_states, None if encoder_hidden_states is None else context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                               dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        return self.project_out(attn, out)


# ---- module swaps (by class: same parameters, buffers and state_dict keys) ----------------------

class _Swap:
    """A diffusers module class's fastvid twin: the kind it reports and why a module cannot take it.
    The diffusers class is the last base."""

    patch_kind = "conv"
    backend = "auto"
    video_layer = True  # its presence makes a model a video model (not so ResnetBlock2D, GEGLU: image UNets have them)

    @classmethod
    def original(cls) -> type:
        return cls.__bases__[-1]

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        """Why ``module`` (of the original class) cannot be swapped, or None."""
        return _conv_reason(module)


class _FrameMajorTemporal(_Swap):
    """A temporal transformer (TransformerTemporalModel, AnimateDiff's motion module) that keeps its tokens
    frame-major ``(B*F, H*W, C)``: the (B*F, C, H, W) input is normalised as the (B, C, F, H, W) view diffusers
    normalises, ``proj_in`` reads the channel-first map in place, and ``proj_out`` writes its output plus the
    input straight back into the (B*F, C, H, W) layout (``fastvid.nn.tokens``). LayerNorms and feed-forwards act
    per token, so only the attention needs the frame axis, and :class:`TemporalAttnProcessor` reads it in
    place; sinusoidal positional embeddings over frames are added per frame by
    :class:`FastvidBasicTransformerBlock`. Falls back to diffusers' forward whenever a block cannot run
    frame-major (another attention processor, a block not fastvid's or hooked where it adds positions), or for
    encoder states / extra kwargs."""

    patch_kind = "temporal_attention"

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        for b in module.transformer_blocks:
            if b.norm_type != "layer_norm":
                return f"its blocks use norm_type {b.norm_type!r}, not 'layer_norm'"
            if b.pos_embed is not None and type(b.pos_embed) is not SinusoidalPositionalEmbedding:
                return f"its blocks use a {type(b.pos_embed).__name__} positional embedding"
        if not cls._frame_major(module, None, None):
            return "not every attention of its blocks runs fastvid's temporal processor"
        return None

    def _frame_major(self, encoder_hidden_states, cross_attention_kwargs) -> bool:
        if encoder_hidden_states is not None or cross_attention_kwargs:
            return False
        return all(isinstance(b.attn1.processor, TemporalAttnProcessor)
                   and (b.attn2 is None or isinstance(b.attn2.processor, TemporalAttnProcessor))
                   for b in self.transformer_blocks)

    def unfused_reason(self) -> Optional[str]:
        return self._blocks_reason() or unfused_reason(self, ("norm", "proj_in", "proj_out"))

    def _blocks_reason(self) -> Optional[str]:
        """Why a block cannot take frame-major tokens (then diffusers' forward runs), or None: blocks with
        positional embeddings add them per frame only on fastvid's fused path."""
        for i, b in enumerate(self.transformer_blocks):
            if b.pos_embed is None:
                continue
            if type(b) is not FastvidBasicTransformerBlock:
                why = ("the transformer_block kind is off" if type(b) is BasicTransformerBlock
                       else f"a {type(b).__name__}, e.g. FreeNoise's windowed block")
                return f"transformer_blocks.{i} is not fastvid's block ({why})"
            why = b.norms_reason()
            if why is not None:
                return f"transformer_blocks.{i}.{why}"
        return None

    def _blocks_frame_major(self) -> bool:
        return self._blocks_reason() is None

    def frame_major_forward(self, hidden_states, timestep, class_labels, num_frames) -> torch.Tensor:
        batch_frames, channels, height, width = hidden_states.shape
        video = hidden_states.view(-1, num_frames, channels, height, width).transpose(1, 2)  # (B, C, F, H, W) view
        x = tokens_in(self, "proj_in", _normed_frames(self, video), self.backend).view(batch_frames, height * width, -1)
        kwargs = {"fastvid_num_frames": num_frames}
        for block in self.transformer_blocks:
            x = block(x, timestep=timestep, class_labels=class_labels, cross_attention_kwargs=kwargs)
        return tokens_out(self, "proj_out", x, hidden_states, self.backend)


def _fused_norm(module: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``module.norm`` of x as ``fastvid.group_norm_silu(silu=False)`` (y in x's memory order) where the norm is a
    plain GroupNorm; None where it is hooked, wrapped or replaced (then the caller calls it)."""
    norm = module.norm
    if type(norm) is not nn.GroupNorm or unfused_reason(module, ("norm",)) is not None:
        return None
    return call_under_autocast(group_norm_silu, x, norm.num_groups, norm.weight, norm.bias, norm.eps,
                               fp32_op=True, silu=False, backend=module.backend)


def _normed_frames(module: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """``module.norm`` (a GroupNorm over (C/G, F, H, W)) of the frame-major (B, C, F, H, W) view ``video``, as a
    channel-first map whose tokens are frame-major. Fused (reads the view in place and writes its memory
    order): (B*F, C, H, W). A norm that is called copies the view to contiguous memory first: (B, C, F*H*W, 1)."""
    y = _fused_norm(module, video)
    if y is not None:
        return y.transpose(1, 2).flatten(0, 1)
    return module.norm(video).flatten(2).unsqueeze(-1)


def _normed_images(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``module.norm`` (a spatial transformer's GroupNorm) of (N, C, H, W) images, fused where it can be (one
    launch where the frames' groups are small)."""
    y = _fused_norm(module, images)
    return module.norm(images) if y is None else y


class FastvidTransformerTemporalModel(_FrameMajorTemporal, TransformerTemporalModel):
    """TransformerTemporalModel (ModelScope, I2VGenXL) on frame-major tokens (see :class:`_FrameMajorTemporal`).
    Its saved config names TransformerTemporalModel, so a saved patched model loads without fastvid."""

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        config["_class_name"] = self.original().__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, class_labels=None, num_frames=1,
                cross_attention_kwargs=None, return_dict=True):
        if not (self._frame_major(encoder_hidden_states, cross_attention_kwargs) and self._blocks_frame_major()):
            return super().forward(hidden_states, encoder_hidden_states, timestep, class_labels, num_frames,
                                   cross_attention_kwargs, return_dict)
        output = self.frame_major_forward(hidden_states, timestep, class_labels, num_frames)
        return TransformerTemporalModelOutput(sample=output) if return_dict else (output,)


class FastvidAnimateDiffTransformer3D(_FrameMajorTemporal, AnimateDiffTransformer3D):
    """AnimateDiff's motion module (UNetMotionModel, MotionAdapter) on frame-major tokens (see
    :class:`_FrameMajorTemporal`): diffusers' ``(b f) c h w -> (b h w) f c`` copies around it are gone."""

    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, class_labels=None, num_frames=1,
                cross_attention_kwargs=None):
        if not (self._frame_major(encoder_hidden_states, cross_attention_kwargs) and self._blocks_frame_major()):
            return super().forward(hidden_states, encoder_hidden_states, timestep, class_labels, num_frames,
                                   cross_attention_kwargs)
        return self.frame_major_forward(hidden_states, timestep, class_labels, num_frames)


class FastvidTransformerSpatioTemporalModel(_Swap, TransformerSpatioTemporalModel):
    """SVD's TransformerSpatioTemporalModel whose temporal blocks (:class:`FastvidTemporalBasicTransformerBlock`)
    take the spatial blocks' frame-major tokens as they are and each video's image context ``(B, L, C)``
    (diffusers broadcasts it to every position, ``(B*H*W, L, C)``, for its rearranged blocks); ``proj_in`` reads
    the normalised map as tokens in place and ``proj_out`` writes its output plus the input back into the
    (B*F, C, H, W) layout (``fastvid.nn.tokens``). diffusers'
    forward when a temporal block is not fastvid's (the "transformer_block" kind off, or the block sharded
    by fastvid.distributed) or cannot run frame-major (chunked feed-forward, hooked norms, another attention
    processor), or without encoder states."""

    patch_kind = "temporal_attention"

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        if not all(isinstance(b.attn1.processor, TemporalAttnProcessor) for b in module.temporal_transformer_blocks):
            return "not every temporal block's self-attention runs fastvid's temporal processor"
        return None

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, ("proj_in", "proj_out"))

    def forward(self, hidden_states, encoder_hidden_states=None, image_only_indicator=None, return_dict=True):
        # Exactly fastvid's block: a subclass (fastvid.distributed's token-sharded stage) expects diffusers' layout.
        if encoder_hidden_states is None or not all(
                type(b) is FastvidTemporalBasicTransformerBlock and b.frame_major()
                for b in self.temporal_transformer_blocks):
            return super().forward(hidden_states, encoder_hidden_states, image_only_indicator, return_dict)
        num_frames = image_only_indicator.shape[-1]
        batch_size = hidden_states.shape[0] // num_frames
        # Each video's context: that of its first frame, as diffusers takes it.
        context = encoder_hidden_states.unflatten(0, (batch_size, num_frames))[:, 0]
        x = tokens_in(self, "proj_in", _normed_images(self, hidden_states), self.backend)
        frame_index = torch.arange(num_frames, device=x.device).repeat(batch_size)
        emb = self.time_pos_embed(self.time_proj(frame_index).to(dtype=x.dtype))[:, None, :]
        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, None, encoder_hidden_states, None)
            else:
                x = block(x, encoder_hidden_states=encoder_hidden_states)
            mix = temporal_block(x + emb, num_frames=num_frames, encoder_hidden_states=context, fastvid_frame_major=True)
            x = self.time_mixer(x_spatial=x, x_temporal=mix, image_only_indicator=image_only_indicator)
        output = tokens_out(self, "proj_out", x, hidden_states, self.backend)
        return TransformerTemporalModelOutput(sample=output) if return_dict else (output,)


class FastvidTemporalConvLayer(_Swap, TemporalConvStages, TemporalConvLayer):
    """ModelScope's (and I2VGenXL's) TemporalConvLayer computed by fastvid's fused stages
    (:class:`fastvid.nn.temporal_conv.TemporalConvStages`): fused GroupNorm+SiLU, ``fastvid.temporal_conv``
    on the frame-major view, the residual fused in the last conv; diffusers' forward when its
    submodules are hooked or wrapped."""


class FastvidTemporalResnetBlock(_Swap, TemporalResnetBlock):
    """SVD's TemporalResnetBlock with fused GroupNorm+SiLU and ``fastvid.temporal_conv`` (the residual
    add fused in the second conv), on SpatioTemporalResBlock's frame-major view; diffusers' forward
    when its norms or convs are hooked or wrapped. The AlphaBlender mixing around it is not touched."""

    def fused_submodules(self) -> List[str]:
        """The submodules whose weights the fused forward reads."""
        return ["norm1", "conv1", "norm2", "conv2"]

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, self.fused_submodules())

    def norm_silu(self, norm: nn.GroupNorm, x: torch.Tensor, add: Optional[torch.Tensor] = None) -> torch.Tensor:
        return norm_silu(norm, x, self.backend, add=add)

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if self.unfused_reason() is not None:
            return super().forward(input_tensor, temb)
        h = conv_frames(self.conv1, self.norm_silu(self.norm1, input_tensor), self.backend)
        add = None
        if self.time_emb_proj is not None:  # (B, F, C) -> (B, C, F), added inside the second GroupNorm+SiLU
            add = self.time_emb_proj(self.nonlinearity(temb)).transpose(1, 2)
        h = self.dropout(self.norm_silu(self.norm2, h, add=add))
        shortcut = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        return conv_frames(self.conv2, h, self.backend, residual=shortcut)


def _norms_reason(module: nn.Module, names) -> Optional[str]:
    """Why the named norms of a transformer block cannot be fused with the adds before them, or None."""
    for name in names:
        norm = getattr(module, name)
        if type(norm) is not nn.LayerNorm or len(norm.normalized_shape) != 1:
            return f"{name} is a {type(norm).__name__}, not a LayerNorm over the last dim"
    return None


class _TransformerBlockSwap(_Swap):
    """A transformer block whose residual adds and the LayerNorms after them run as ``fastvid.add_layer_norm``;
    diffusers' forward when a norm is hooked or wrapped. ``NORMS``: the norms that follow an add."""

    patch_kind = "transformer_block"
    video_layer = False
    NORMS = ()

    def _norm_names(self):
        return [name for name in self.NORMS if getattr(self, name, None) is not None]

    def norms_reason(self) -> Optional[str]:
        """Why the adds and norms cannot be fused (diffusers' forward runs), or None."""
        return unfused_reason(self, self._norm_names())

    def unfused_reason(self) -> Optional[str]:
        """Why any part runs unfused: the norms (then the whole block) or the feed-forward's last Linear."""
        ff = getattr(self, "ff", None)
        last_linear = ["ff.net.2"] if type(ff) is FeedForward and len(ff.net) == 3 else []
        return self.norms_reason() or unfused_reason(self, last_linear)

    def feed_forward(self, ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self._chunk_size is not None:
            return _chunked_feed_forward(ff, x, self._chunk_dim, self._chunk_size)
        return ff(x)

    def feed_forward_add(self, ff: nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``ff(x) + residual``; for diffusers' FeedForward (activation, dropout, Linear) the add runs in the
        last Linear's epilogue (``fastvid.linear``) unless that Linear is hooked or wrapped."""
        if self._chunk_size is None and type(ff) is FeedForward and len(ff.net) == 3:
            return linear_add(ff, "net.2", ff.net[1](ff.net[0](x)), residual, self.backend)
        return self.feed_forward(ff, x) + residual


class FastvidBasicTransformerBlock(_TransformerBlockSwap, BasicTransformerBlock):
    """BasicTransformerBlock (norm_type "layer_norm") with ``h = attn1(..) + h; norm2(h)``,
    ``h = attn2(..) + h; norm3(h)`` each in one pass. A sinusoidal positional embedding over frames
    (AnimateDiff's motion modules) on frame-major tokens is added in the same pass as norm1 and norm2,
    after the norm as diffusers adds it; on other tokens it follows the norm. The last add
    (``ff(..) + h``) feeds the next block and stays as it is. diffusers' forward for GLIGEN inputs, 4D
    tokens and hooked norms."""

    NORMS = ("norm2", "norm3")

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        if module.norm_type != "layer_norm":
            return f"norm_type {module.norm_type!r}: only 'layer_norm' blocks are fused (ada-norms modulate the norm)"
        return _norms_reason(module, [n for n in ("norm1", *cls.NORMS) if getattr(module, n, None) is not None])

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                timestep=None, cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
        kwargs = dict(cross_attention_kwargs or {})
        if hidden_states.ndim != 3 or "gligen" in kwargs or "scale" in kwargs or self.norms_reason() is not None:
            return super().forward(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                   timestep, cross_attention_kwargs, class_labels, added_cond_kwargs)
        frames = kwargs.get("fastvid_num_frames")
        table = self.frame_table(frames)
        if table is not None and unfused_reason(self, ("norm1",)) is None:
            _, normed = add_norm(self.norm1, hidden_states, None, self.backend, frame_add=table)
        else:
            normed = self.positions(self.norm1(hidden_states), table)
        out = self.attn1(normed, encoder_hidden_states=encoder_hidden_states if self.only_cross_attention else None,
                         attention_mask=attention_mask, **kwargs)
        if self.attn2 is not None:
            hidden_states, normed = add_norm(self.norm2, out, hidden_states, self.backend, frame_add=table)
            if table is None:
                normed = self.positions(normed, table)
            out = self.attn2(normed, encoder_hidden_states=encoder_hidden_states,
                             attention_mask=encoder_attention_mask, **kwargs)
        hidden_states, normed = add_norm(self.norm3, out, hidden_states, self.backend)
        return self.feed_forward_add(self.ff, normed, hidden_states)

    def frame_table(self, frames: Optional[int]) -> Optional[torch.Tensor]:
        """The (F, C) rows of the sinusoidal positional embedding over frames, when the tokens are frame-major
        ((B*F, N, C), ``frames`` given); else None."""
        if frames is None or self.pos_embed is None:
            return None
        return self.pos_embed.pe.select(0, 0).narrow(0, 0, frames)  # pe[0, :frames], two views without indexing

    def positions(self, normed: torch.Tensor, table: Optional[torch.Tensor]) -> torch.Tensor:
        """The positional embedding over frames added to normed tokens: each frame's row of ``table`` on
        frame-major tokens, diffusers' module on (S, F, C) tokens."""
        if table is not None:
            return reference.add_per_frame(normed, table)
        return normed if self.pos_embed is None else self.pos_embed(normed)


class FastvidTemporalBasicTransformerBlock(_TransformerBlockSwap, TemporalBasicTransformerBlock):
    """SVD's TemporalBasicTransformerBlock with ``h = ff_in(..) + residual; norm1(h)`` (when its widths
    match), ``h = attn1(..) + h; norm2(h)`` and ``h = attn2(..) + h; norm3(h)`` each in one pass."""

    NORMS = ("norm1", "norm2", "norm3")

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        return _norms_reason(module, [n for n in cls.NORMS if getattr(module, n, None) is not None])

    def frame_major(self) -> bool:
        """Whether :class:`FastvidTransformerSpatioTemporalModel` may hand this block frame-major tokens."""
        return (self._chunk_size is None and self.norms_reason() is None
                and isinstance(self.attn1.processor, TemporalAttnProcessor))

    def forward(self, hidden_states, num_frames, encoder_hidden_states=None, fastvid_frame_major=False):
        """``fastvid_frame_major``: ``hidden_states`` stay the frame-major ``(B*F, N, C)`` tokens (diffusers
        rearranges them to ``(B*N, F, C)`` and back, two copies): LayerNorms and feed-forwards act per token,
        attn1's :class:`TemporalAttnProcessor` reads the frame axis in place, and attn2 attends ``(B, F*N)``
        queries to each video's context ``encoder_hidden_states`` ``(B, L, C)``, which diffusers broadcasts
        to every position. Only :class:`FastvidTransformerSpatioTemporalModel` passes it (see ``frame_major``)."""
        if not fastvid_frame_major and self.norms_reason() is not None:
            return super().forward(hidden_states, num_frames, encoder_hidden_states)
        batch_frames, seq_length, channels = hidden_states.shape
        batch_size = batch_frames // num_frames
        attn1_kwargs = {"fastvid_num_frames": num_frames} if fastvid_frame_major else {}
        if not fastvid_frame_major:
            hidden_states = hidden_states[None, :].reshape(batch_size, num_frames, seq_length, channels)
            hidden_states = hidden_states.permute(0, 2, 1, 3).reshape(batch_size * seq_length, num_frames, channels)
        residual = hidden_states
        hidden_states = self.feed_forward(self.ff_in, self.norm_in(hidden_states))
        if self.is_res:
            hidden_states, normed = add_norm(self.norm1, hidden_states, residual, self.backend)
        else:
            normed = self.norm1(hidden_states)
        out = self.attn1(normed, encoder_hidden_states=None, **attn1_kwargs)
        if self.attn2 is not None:
            hidden_states, normed = add_norm(self.norm2, out, hidden_states, self.backend)
            if fastvid_frame_major:  # (B, F*N, C) queries, a view
                normed = normed.reshape(encoder_hidden_states.shape[0], -1, channels)
            out = self.attn2(normed, encoder_hidden_states=encoder_hidden_states).view(hidden_states.shape)
        hidden_states, normed = add_norm(self.norm3, out, hidden_states, self.backend)
        hidden_states = (self.feed_forward_add(self.ff, normed, hidden_states) if self.is_res
                         else self.feed_forward(self.ff, normed))
        if fastvid_frame_major:
            return hidden_states
        hidden_states = hidden_states[None, :].reshape(batch_size, seq_length, num_frames, channels)
        return hidden_states.permute(0, 2, 1, 3).reshape(batch_size * num_frames, seq_length, channels)


class FastvidTransformer2DModel(_Swap, Transformer2DModel):
    """Transformer2DModel (the spatial transformers of every video UNet) on continuous inputs without its
    token rearrange copies: its GroupNorm runs as ``fastvid.group_norm_silu`` (silu=False),
    ``proj_in`` (a Linear or a 1x1 conv) reads the normalised (N, C, H, W) map as
    transposed tokens in place, and ``proj_out`` writes its output plus the block's input straight into the
    (N, C, H, W) layout (``fastvid.nn.tokens``). diffusers' code when a projection is hooked or wrapped."""

    patch_kind = "transformer_block"
    video_layer = False

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        if not module.is_input_continuous:
            return "its inputs are patches or vectorized latents, not a continuous feature map"
        return None

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, ("proj_in", "proj_out"))

    def _operate_on_continuous_inputs(self, hidden_states):
        tokens = tokens_in(self, "proj_in", _normed_images(self, hidden_states), self.backend)
        return tokens, tokens.shape[-1]

    def _get_output_for_continuous_inputs(self, hidden_states, residual, batch_size, height, width, inner_dim):
        return tokens_out(self, "proj_out", hidden_states, residual, self.backend)


class FastvidResnetBlock2D(_Swap, ResnetBlock2D):
    """diffusers' ResnetBlock2D (the spatial ResNet of every video U-Net, frames as images of the batch)
    with fused GroupNorm+SiLU per image: ``norm1`` + SiLU in one op, and ``conv1(h) + temb`` folded
    into the second one (the sum is never written); the residual added into conv2's output in place
    when nothing else can hold that tensor. The convs, the time projection and the up/down samplers are
    called as modules (their hooks and LoRA layers run); diffusers' forward when a norm is hooked or wrapped."""

    video_layer = False

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        if module.time_embedding_norm != "default":
            return (f"time_embedding_norm {module.time_embedding_norm!r} applies the embedding after the "
                    "GroupNorm; fastvid fuses 'default' (added before it)")
        if type(module.nonlinearity) is not nn.SiLU:
            return f"its nonlinearity is {type(module.nonlinearity).__name__}, not the SiLU fastvid fuses"
        return None

    def unfused_reason(self) -> Optional[str]:
        return unfused_reason(self, ("norm1", "norm2"))

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if (args or kwargs or self.unfused_reason() is not None or input_tensor.dim() != 4
                or (self.time_emb_proj is None and temb is not None)):
            return super().forward(input_tensor, temb, *args, **kwargs)
        h = norm_silu(self.norm1, input_tensor, self.backend)
        if self.upsample is not None:
            if h.shape[0] >= 64:  # as diffusers: upsample_nearest_nhwc fails with large batches
                input_tensor, h = input_tensor.contiguous(), h.contiguous()
            input_tensor, h = self.upsample(input_tensor), self.upsample(h)
        elif self.downsample is not None:
            input_tensor, h = self.downsample(input_tensor), self.downsample(h)
        h = self.conv1(h)
        if temb is not None:
            temb = self.time_emb_proj(temb if self.skip_time_act else self.nonlinearity(temb))
        h = self.conv2(self.dropout(norm_silu(self.norm2, h, self.backend, add=temb)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor.contiguous() if self.training else input_tensor)
        return add_residual(h, input_tensor, self.output_scale_factor, in_place=unfused_reason(self, ("conv2",)) is None)


class FastvidAlphaBlender(_Swap, AlphaBlender):
    """SVD's AlphaBlender (SpatioTemporalResBlock, TransformerSpatioTemporalModel) in one kernel
    (``fastvid.learned_alpha_blend``): alpha made from ``mix_factor`` (and the image-only indicator) inside the
    mix as ``get_alpha`` makes it, ``mix_factor``'s gradient from the backward, the output in x_spatial's memory
    order (SVD's frame-major view stays a view). An indicator of another shape: ``get_alpha``, then
    ``fastvid.alpha_blend``; inputs of different shapes, dtypes or devices: diffusers' expression."""

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor,
                image_only_indicator: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (x_spatial.shape != x_temporal.shape or x_spatial.dtype != x_temporal.dtype
                or x_spatial.device != x_temporal.device or self.mix_factor.device != x_spatial.device
                or self.mix_factor.numel() != 1):
            return super().forward(x_spatial, x_temporal, image_only_indicator)
        if self.merge_strategy != "learned_with_images" or indicator_matches(image_only_indicator, x_spatial):
            return learned_alpha_blend(x_spatial, x_temporal, self.mix_factor, image_only_indicator,
                                       merge_strategy=self.merge_strategy,
                                       switch=bool(self.switch_spatial_to_temporal_mix), backend=self.backend)
        alpha = self.get_alpha(image_only_indicator, x_spatial.ndim).to(x_spatial.dtype)
        if self.switch_spatial_to_temporal_mix:
            alpha = 1.0 - alpha
        return alpha_blend(x_spatial, x_temporal, alpha, backend=self.backend)


class FastvidGEGLU(_Swap, GEGLU):
    """diffusers' GEGLU fused. A plain ``proj`` Linear: ``fastvid.geglu_linear``, one GEMM whose epilogue
    applies the activation (the (..., 2 * inner) projection output is never written; under autocast x,
    weight and bias are cast as ``F.linear`` would be). A LoRA-wrapped, hooked, offloaded or quantized
    ``proj`` (reported by :meth:`unfused_reason`): ``self.proj(x)`` runs as it is, then ``fastvid.geglu``
    reads both halves of its output in one pass. diffusers' forward for its deprecated extra arguments."""

    patch_kind = "feed_forward"
    video_layer = False

    @classmethod
    def refusal(cls, module: nn.Module) -> Optional[str]:
        if is_torch_npu_available():
            return "diffusers runs torch_npu.npu_geglu (tanh GELU) on this NPU machine"
        return None

    def unfused_reason(self) -> Optional[str]:
        # accelerate's hooks replace forward on the instance and call the one they found (_old_forward).
        if "forward" in self.__dict__ and getattr(getattr(self, "_old_forward", None), "__func__", None) is not \
                FastvidGEGLU.forward:
            return "has its forward replaced on the instance"
        return unfused_reason(self, ("proj",))

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs:
            return super().forward(hidden_states, *args, **kwargs)
        if unfused_reason(self, ("proj",)) is None:
            return call_under_autocast(geglu_linear, hidden_states, self.proj.weight, self.proj.bias, fp32_op=False,
                                       backend=self.backend)
        return geglu(self.proj(hidden_states), backend=self.backend)



SWAPS = {swap.original(): swap for swap in (
    FastvidTransformerTemporalModel, FastvidAnimateDiffTransformer3D, FastvidTransformerSpatioTemporalModel,
    FastvidTemporalConvLayer, FastvidTemporalResnetBlock, FastvidResnetBlock2D, FastvidAlphaBlender, FastvidGEGLU,
    FastvidBasicTransformerBlock, FastvidTemporalBasicTransformerBlock, FastvidTransformer2DModel)}
ORIGINAL_CLASS = {swap: base for base, swap in SWAPS.items()}
# The swaps whose layers make a model a video model (GEGLU, ResnetBlock2D and transformer blocks are in image
# UNets too).
VIDEO_SWAPS = tuple(base for base, swap in SWAPS.items() if swap.video_layer)
# Modules whose (non-cross) attentions attend over frames, with the (S, F, C) layout TemporalAttnProcessor reads.
TEMPORAL_TRANSFORMERS = (TransformerTemporalModel, AnimateDiffTransformer3D, I2VGenXLTransformerTemporalEncoder)


# ---- methods kept in the UNet's __dict__ --------------------------------------------------------

class _UNetMethod:
    """Stands in for one of the UNet's methods from its ``__dict__``. A plain object, not a closure:
    the patched UNet deep-copies (the copy's method points at the copy) and pickles."""

    name = ""

    def __init__(self, unet: nn.Module, backend: str):
        self.unet = unet
        self.backend = backend

    def original(self):
        return getattr(type(self.unet), self.name).__get__(self.unet)


class _TranslatingSetAttnProcessor(_UNetMethod):
    """A pipeline that installs CrossFrameAttnProcessor on each call (Text2Video-Zero) gets fastvid's."""

    name = "set_attn_processor"

    def translate(self, proc):
        return FirstFrameAttnProcessor(proc, self.backend) if type(proc).__name__ in CROSS_FRAME_PROCESSORS else proc

    def __call__(self, processor):
        if isinstance(processor, dict):
            processor = {name: self.translate(p) for name, p in processor.items()}
        return self.original()(self.translate(processor))


class _SetDefaultAttnProcessor(_UNetMethod):
    """diffusers accepts only its own processor classes here: fastvid's attention is handed back
    first (the processors it replaced, and diffusers' TransformerTemporalModel forward), then
    diffusers' method runs. Conv swaps stay."""

    name = "set_default_attn_processor"

    def __call__(self):
        _unpatch_attention(self.unet)
        return self.original()()


# ---- patch / unpatch ---------------------------------------------------------------------------

def _block_attentions(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, Attention)]


def _unet(model) -> nn.Module:
    target = model if isinstance(model, nn.Module) else getattr(model, "unet", None)
    if not isinstance(target, nn.Module):
        fail(OP, "model", f"is a {type(model).__name__} with no UNet", "a diffusers video model or pipeline")
    return target


def _attention_reason(attn: Attention) -> Optional[str]:
    """Why a fastvid processor cannot stand in for this Attention's processor, or None."""
    features = {
        "spatial_norm": attn.spatial_norm is not None,
        "group_norm": attn.group_norm is not None,
        "norm_q/norm_k": attn.norm_q is not None or attn.norm_k is not None,
        "added K/V projections": getattr(attn, "add_k_proj", None) is not None,
        "residual_connection": attn.residual_connection,
        "rescale_output_factor": attn.rescale_output_factor != 1.0,
    }
    used = [name for name, on in features.items() if on]
    return f"uses {', '.join(used)}, which fastvid's processors do not implement" if used else None


def _processor_reason(attn: Attention, expected) -> Optional[str]:
    proc = attn.processor
    if isinstance(proc, _FastvidAttnProcessor):
        return f"already patched ({type(proc).__name__})"
    if type(proc) not in expected and type(proc).__name__ not in expected:
        return f"custom processor {type(proc).__name__} left alone"
    return _attention_reason(attn)


def _conv_reason(module: nn.Module) -> Optional[str]:
    for name, conv in module.named_modules():
        if not isinstance(conv, nn.Conv3d) or name == "conv_shortcut":
            continue
        k = conv.kernel_size[0]
        if (conv.kernel_size[1:], conv.padding, conv.stride, conv.dilation, conv.groups) != (
                (1, 1), ((k - 1) // 2, 0, 0), (1, 1, 1), (1, 1, 1), 1):
            return f"{name} is not a (k, 1, 1) 'same' Conv3d, which fastvid.temporal_conv computes"
    return None


def _roles(unet: nn.Module):
    """Every Attention of the UNet as "temporal", "cross_frame", "spatial" or "cross" (left alone)."""
    temporal = set()
    for module in unet.modules():
        if isinstance(module, TEMPORAL_TRANSFORMERS):
            temporal.update(id(a) for a in _block_attentions(module) if not a.is_cross_attention)
        elif isinstance(module, TemporalBasicTransformerBlock):
            temporal.add(id(module.attn1))
    roles = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        if type(module.processor).__name__ in CROSS_FRAME_PROCESSORS:
            roles[name] = "cross_frame"
        elif id(module) in temporal:
            roles[name] = "temporal"
        else:
            roles[name] = "cross" if module.is_cross_attention else "spatial"
    return roles


def _is_video(model, unet: nn.Module, roles) -> bool:
    return (type(model).__name__ in VIDEO_PIPELINES or any(r in ("temporal", "cross_frame") for r in roles.values())
            or any(isinstance(m, VIDEO_SWAPS) for m in unet.modules()))


def _install(unet: nn.Module, method: type, backend: str, report) -> bool:
    if method.name in unet.__dict__:
        report.skip(f"unet.{method.name}", "already patched")
        return False
    unet.__dict__[method.name] = method(unet, backend)
    return True


def patch_diffusers(model, report, *, temporal_attention: bool = True, frame_attention: bool = True,
                    conv: bool = True, feed_forward: bool = True, transformer_block: bool = True,
                    backend: str = "auto",
                    spatial_self_attention: bool = False) -> None:
    """Installs fastvid processors and modules in a diffusers video model or pipeline, in place.

    ``model``: a UNet3DConditionModel (ModelScope), a UNetSpatioTemporalConditionModel (SVD), a
    UNetMotionModel (AnimateDiff), an I2VGenXLUNet, a UNet with CrossFrameAttnProcessor, another
    model built from the same temporal layers, or a pipeline holding one as ``.unet``
    (TextToVideoZeroPipeline too: the processors it installs on each call are translated). Swaps go
    to ``report.add(kind, name)`` with kind "temporal_attention", "frame_attention", "conv",
    "feed_forward" (GEGLU) or "transformer_block" (fused add + LayerNorm blocks, :class:`SDPAAttnProcessor`);
    everything left alone goes to ``report.skip(name, reason)``, fused modules that will call their
    hooked submodules unfused to ``report.add_unfused(name, reason)``. Spatial self-attention stays on
    SDPA (:class:`SDPAAttnProcessor`) unless ``spatial_self_attention`` is True. Raises FastvidInputError for a model
    with no video layers.
    """
    unet = _unet(model)
    roles = _roles(unet)
    if not _is_video(model, unet, roles):
        known = ", ".join(dict.fromkeys(c.__name__ for c in TEMPORAL_TRANSFORMERS + (TemporalBasicTransformerBlock,
                                                                                     *VIDEO_SWAPS)))
        fail(OP, "model", f"is a {type(unet).__name__} with no temporal layers or cross-frame processors (fastvid "
             f"patches {known} and Text2Video-Zero's {' / '.join(CROSS_FRAME_PROCESSORS)})",
             "a diffusers video model (UNet3DConditionModel, UNetSpatioTemporalConditionModel, UNetMotionModel, "
             "I2VGenXLUNet) or a Text2Video-Zero pipeline")
    frame_spatial = frame_attention and spatial_self_attention
    installs = {
        "temporal": (TemporalAttnProcessor, DEFAULT_PROCESSORS) if temporal_attention else None,
        "cross_frame": (FirstFrameAttnProcessor, CROSS_FRAME_PROCESSORS) if frame_attention else None,
        "spatial": ((FrameAttnProcessor, DEFAULT_PROCESSORS) if frame_spatial
                    else (SDPAAttnProcessor, SDPA_PROCESSORS) if transformer_block else None),
        "cross": (SDPAAttnProcessor, SDPA_PROCESSORS) if transformer_block else None,
    }
    for name, attn in unet.named_modules():
        role = roles.get(name)
        if role not in installs or installs[role] is None:
            continue
        cls, expected = installs[role]
        why = _processor_reason(attn, expected)
        if why:
            report.skip(name, why)
            continue
        attn.set_processor(cls(attn.processor, backend))
        report.add(cls.patch_kind, name, processor=True)

    kinds_enabled = {"temporal_attention": temporal_attention, "frame_attention": frame_attention, "conv": conv,
                     "feed_forward": feed_forward, "transformer_block": transformer_block}
    for name, module in unet.named_modules():
        swap = SWAPS.get(type(module))
        if swap is None or not kinds_enabled[swap.patch_kind]:
            continue
        why = swap.refusal(module)
        if why:
            report.skip(name, why)
            continue
        module.__class__ = swap
        module.backend = backend
        report.add(swap.patch_kind, name)
    for name, why in unfused_modules(unet):
        report.add_unfused(name, why)

    _install(unet, _SetDefaultAttnProcessor, backend, report)
    if type(model).__name__ in VIDEO_PIPELINES and frame_attention and _install(
            unet, _TranslatingSetAttnProcessor, backend, report):
        report.add("frame_attention", SET_ATTN_PROCESSOR_SWAP, processor=True)


def describe_diffusers(model, report) -> None:
    """Adds to ``report`` what fastvid runs in the diffusers model or pipeline now."""
    unet = _unet(model)
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and isinstance(module.processor, _FastvidAttnProcessor):
            report.add(module.processor.patch_kind, name, processor=True)
        elif type(module) in ORIGINAL_CLASS:
            report.add(type(module).patch_kind, name)
    if isinstance(unet.__dict__.get("set_attn_processor"), _TranslatingSetAttnProcessor):
        report.add("frame_attention", SET_ATTN_PROCESSOR_SWAP, processor=True)
    for name, why in unfused_modules(unet):
        report.add_unfused(name, why)


def _unpatch(unet: nn.Module, kinds, processor_kinds=None) -> int:
    """Hands back the processors (of ``processor_kinds``, default ``kinds``) and module classes of the given
    patch kinds; returns how many."""
    restored = 0
    processor_kinds = kinds if processor_kinds is None else processor_kinds
    for module in unet.modules():
        processor = getattr(module, "processor", None) if isinstance(module, Attention) else None
        if isinstance(processor, _FastvidAttnProcessor) and processor.patch_kind in processor_kinds:
            module.set_processor(processor.original)
            restored += 1
        original = ORIGINAL_CLASS.get(type(module))
        if original is not None and type(module).patch_kind in kinds:
            module.__dict__.pop("backend", None)
            module.__class__ = original
            restored += 1
    return restored


def _unpatch_attention(unet: nn.Module) -> int:
    """Every fastvid processor, and the module classes that need fastvid's processors."""
    return _unpatch(unet, ("temporal_attention", "frame_attention"), processor_kinds=KINDS)


def unpatch_diffusers(model) -> int:
    """Restores every processor, module class and method ``patch_diffusers`` installed (processors
    replaced by the user since are left as they are). Returns how many swaps it restored, counted as
    the :class:`~fastvid.PatchReport` counts them."""
    unet = _unet(model)
    translating = isinstance(unet.__dict__.pop(_TranslatingSetAttnProcessor.name, None), _TranslatingSetAttnProcessor)
    unet.__dict__.pop(_SetDefaultAttnProcessor.name, None)
    return int(translating) + _unpatch(unet, KINDS)


__all__ = [
    "FastvidBasicTransformerBlock",
    "FastvidTemporalBasicTransformerBlock",
    "FastvidAlphaBlender",
    "FastvidResnetBlock2D",
    "FastvidGEGLU",
    "FastvidTemporalConvLayer",
    "FastvidTemporalResnetBlock",
    "FastvidTransformerSpatioTemporalModel",
    "FastvidTransformerTemporalModel",
    "FirstFrameAttnProcessor",
    "FrameAttnProcessor",
    "SDPAAttnProcessor",
    "TemporalAttnProcessor",
    "describe_diffusers",
    "patch_diffusers",
    "unpatch_diffusers",
]
