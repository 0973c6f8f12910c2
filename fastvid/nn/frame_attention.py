"""FrameAttention and SparseCausalAttention modules: the reference twins' parameters, fastvid's kernel."""
from __future__ import annotations

from .. import reference
from ..ops.frame_attention import frame_attention
from ._autocast import call_under_autocast
from ._fused_qkv import FusedQKV


class FrameAttention(FusedQKV, reference.FrameAttention):
    """Self-attention whose frame i attends to the frames of ``frames`` ("self", "first",
    "sparse_causal", "all" or an (F, K) index table; see ``fastvid.frame_attention``).

    Same parameters and state_dict keys as ``fastvid.reference.FrameAttention`` (q/k/v/out
    projections as diffusers' Attention: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``).
    Input: (B, F, N, dim) tokens or a (B, dim, F, H, W) feature map.
    """

    patch_kind = "frame_attention"
    backend = "auto"

    def attend(self, q, k, v):
        return call_under_autocast(frame_attention, q, k, v, fp32_op=False, frames=self.frames, backend=self.backend)


class SparseCausalAttention(FrameAttention, reference.SparseCausalAttention):
    """Tune-A-Video ST-Attn (frame i attends to frames 0 and i-1); ``train_query_only=True``
    leaves only ``to_q`` trainable. Twin of ``fastvid.reference.SparseCausalAttention``."""
