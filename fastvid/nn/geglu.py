"""GEGLU module: the reference twin's projection, then fastvid's fused activation."""
from __future__ import annotations

from .. import reference
from ..ops.geglu import geglu


class GEGLU(reference.GEGLU):
    """diffusers' GEGLU with the activation fused (``fastvid.geglu``): ``proj`` runs as it is (a
    Linear, or whatever wraps it: LoRA, hooks, quantization), and hidden * gelu(gate) reads both
    halves of its output in one pass. Same parameters and state_dict keys as
    ``fastvid.reference.GEGLU``. Under autocast the projection's output is in the autocast dtype
    and the activation keeps it, as torch's gelu and multiply do."""

    patch_kind = "feed_forward"
    backend = "auto"

    def activation(self, proj_out):
        return geglu(proj_out, approximate=self.approximate, backend=self.backend)
