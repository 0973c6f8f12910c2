"""GEGLU module: the reference twin with its projection and activation fused."""
from __future__ import annotations

from .. import reference
from ..ops.geglu import geglu
from ..ops.geglu_linear import geglu_linear
from ._autocast import call_under_autocast
from ._hooks import unfused_reason


class GEGLU(reference.GEGLU):
    """diffusers' GEGLU, fused. A plain ``proj`` Linear: one GEMM whose epilogue applies the activation
    (``fastvid.geglu_linear``: the (..., 2 * dim_out) projection output is never written); under autocast
    x, weight and bias are cast to the autocast dtype as ``F.linear`` would be. A wrapped or hooked
    ``proj`` (LoRA, offload, quantization; :meth:`unfused_reason` says which): ``proj`` runs as it is,
    then ``fastvid.geglu`` reads both halves of its output in one pass. Same parameters and state_dict
    keys as ``fastvid.reference.GEGLU``."""

    patch_kind = "feed_forward"
    backend = "auto"

    def unfused_reason(self):
        return unfused_reason(self, ("proj",))

    def forward(self, hidden_states):
        if self.unfused_reason() is not None:
            return super().forward(hidden_states)
        self.check_input(hidden_states)
        return call_under_autocast(geglu_linear, hidden_states, self.proj.weight, self.proj.bias, fp32_op=False,
                                   approximate=self.approximate, backend=self.backend)

    def activation(self, proj_out):
        return geglu(proj_out, approximate=self.approximate, backend=self.backend)
