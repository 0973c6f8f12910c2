"""TemporalAttention module: the reference twin's parameters, fastvid's kernel."""
from __future__ import annotations

from .. import reference
from ..ops.temporal_attention import temporal_attention
from ._autocast import call_under_autocast
from ._fused_qkv import FusedQKV


class TemporalAttention(FusedQKV, reference.TemporalAttention):
    """VDM temporal attention (T5-bucketed relative-position bias, optional causal mask).

    Same parameters and state_dict keys as ``fastvid.reference.TemporalAttention``. q, k and v
    come from one fused projection and reach the kernel as strided slices, without copies.
    Input: (B, F, N, dim) tokens or a (B, dim, F, H, W) feature map. Under autocast the attention
    (bias included) computes in the autocast dtype, as SDPA does.
    """

    patch_kind = "temporal_attention"
    backend = "auto"

    def attend(self, q, k, v):
        bias = self.position_bias(q.shape[1], q.device)
        return call_under_autocast(temporal_attention, q, k, v, bias=bias, fp32_op=False, causal=self.causal,
                                   backend=self.backend)
